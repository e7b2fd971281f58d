import Foundation
import KMatrixCore
import KMatrixRuntime
import Libvirt
import Synchronization

/// `Hypervisor` over one libvirt connection (`qemu:///system` by default).
///
/// Guests are transient and started with libvirt's autodestroy: if this process dies
/// or drops the connection, libvirt kills its guests, so a crash leaves no VM behind.
/// A libvirtd that stops or restarts mid-run closes the connection: a graceful stop destroys the
/// run's guests with it (their cells become `hypervisor-lost`, and the orchestrator boots them
/// once more); one that crashed keeps them but forgets the autodestroy. Either way every call
/// then reconnects, waiting out the restart, and guests are found and destroyed by name through
/// the new connection. `kmatrixDomains`/`destroyDomain` find leftovers of other connections by
/// their metadata (docs/architecture.md, "Errors").
public final class LibvirtHypervisor: Hypervisor {
    /// Checked against kmatrix's whitelist (`HostURI`) before it reaches libvirt.
    public let uri: HostURI
    private let live: Mutex<Connection>
    /// Where the accelerator probe puts its tiny payload and console (kmatrix's cache).
    private let scratch: URL
    let commands: any CommandRunner
    /// The host's SSH login, for a hypervisor on another machine; nil for this one.
    public let jump: SSHJump?
    public let hostName: String
    /// What the reconnection window and a remote console's mirror wait on.
    let clock: WaitClock

    /// Opens the connection. Blocks a libvirt thread, not the caller's. A libvirt that cannot be
    /// reached is `hostNotReady`, with how to start it.
    public init(uri: HostURI, scratch: URL, commands: any CommandRunner, clock: WaitClock) async throws {
        self.uri = uri
        self.clock = clock
        self.scratch = scratch
        self.commands = commands
        if case .ssh(let login) = uri.location { self.jump = login } else { self.jump = nil }
        self.hostName = uri.hostName
        let text = uri.text
        do {
            self.live = Mutex(try await LibvirtQueue.run { try Connection(uri: text) })
        } catch {
            throw KMatrixError(.hostNotReady, "cannot connect to libvirt at \(SafeText.terminal(text)): \(Self.sentence(error)); start it with scripts/host-setup.sh (or check `kmatrix doctor`)", cause: error)
        }
    }

    /// libvirt's message without its error numbers.
    static func sentence(_ error: any Error) -> String {
        (error as? LibvirtError)?.message ?? String(describing: error)
    }

    public func versions() async throws -> HypervisorVersions {
        try await Self.mapped("asking libvirt for its versions") {
            try await withConnection { connection in
                HypervisorVersions(libvirt: try connection.libvirtVersion, qemu: try connection.hypervisorVersion)
            }
        }
    }

    /// Runs `body` on a libvirt thread with the current connection; when it fails because the
    /// connection died (libvirtd restarted), opens a new one and runs `body` once more.
    func withConnection<T: Sendable>(_ body: @escaping @Sendable (Connection) throws -> T) async throws -> T {
        let connection = current
        do {
            return try await LibvirtQueue.run { try body(connection) }
        } catch {
            guard await LibvirtQueue.run({ !connection.isAlive }) else { throw error }
            let fresh = try await reconnect(replacing: connection)
            return try await LibvirtQueue.run { try body(fresh) }
        }
    }

    /// The connection calls go through now.
    var current: Connection { live.withLock { $0 } }

    /// How long a lost connection is retried: a libvirtd restart (a package upgrade, scripts/host-setup.sh)
    /// takes a few seconds here, and a run that gave up sooner would lose every guest it has left.
    static let reconnectWindow = Duration.seconds(30)

    /// A new connection in place of `dead`, or the one another task already opened in its place.
    /// Retried until `reconnectWindow` ends, then the last error. Once a window passed without
    /// libvirtd, later calls try once: a host that died costs the run one window, not one per call
    /// (the console and SSH waits ask every second).
    func reconnect(replacing dead: Connection) async throws -> Connection {
        let window = gaveUp.withLock { $0 } ? Duration.zero : Self.reconnectWindow
        let uri = self.uri.text
        var lastError: (any Error)?
        let fresh = try await poll(clock: clock, within: window, every: .seconds(1)) { _ -> Connection? in
            let now = current
            if now !== dead { return now }
            do {
                let fresh = try await LibvirtQueue.run { try Connection(uri: uri) }
                gaveUp.withLock { $0 = false }
                return live.withLock { slot in
                    if slot === dead { slot = fresh }
                    return slot
                }
            } catch {
                lastError = error
                return nil
            }
        }
        if let fresh { return fresh }
        if !Task.isCancelled { gaveUp.withLock { $0 = true } }
        throw lastError ?? KMatrixError(.interrupted, "interrupted while reconnecting to libvirt")
    }

    /// Set when a whole reconnect window passed without libvirtd; cleared by the next connection.
    private let gaveUp = Mutex(false)

    /// Every libvirt failure leaves here as a `KMatrixError(.hypervisor)` with libvirt's error as cause.
    static func mapped<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as KMatrixError {
            throw error
        } catch {
            throw KMatrixError(.hypervisor, "\(what) failed: \(sentence(error))", cause: error)
        }
    }

    /// Every libvirt failure of this hypervisor, naming its host when that is another machine.
    func onHost<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        try await Self.mapped(jump == nil ? what : "\(what) on \(hostName)", body)
    }

    /// Probed once per process and URI; see `LibvirtAcceleratorProbe`.
    public func detectAccelerator() async -> Accelerator {
        let task = Self.acceleratorCache.withLock { cache in
            if let task = cache[uri.text] { return task }
            let connection = self.live.withLock { $0 }
            let scratch = self.scratch
            let storage: any GuestStorage = jump == nil ? LocalStorage(commands: commands) : PoolStorage(hypervisor: self, runID: "probe\(getpid())")
            let clock = self.clock
            let task = Task { await LibvirtAcceleratorProbe.run(on: connection, storage: storage, scratch: scratch, clock: clock) }
            cache[uri.text] = task
            return task
        }
        return await task.value
    }

    private static let acceleratorCache = Mutex<[String: Task<Accelerator, Never>]>([:])

    public func start(_ spec: MachineSpec) async throws -> any VirtualMachine {
        let xml = LibvirtDomainXML.make(for: spec)
        // QEMU creates the console log but not its directory (a remote host's pool has one).
        if jump == nil {
            do {
                try FileManager.default.createDirectory(at: spec.consoleLog.deletingLastPathComponent(), withIntermediateDirectories: true)
            } catch {
                throw KMatrixError.from(error, whileDoing: "creating the console log's folder")
            }
        }
        let (domain, connection) = try await onHost("starting domain \(spec.name)") {
            try await withConnection { connection in (try connection.createTransientDomain(xml: xml, autodestroy: true), connection) }
        }
        return LibvirtVirtualMachine(domain: domain, startedOn: connection, hypervisor: self)
    }

    public func capacity() async -> (cpus: Int?, freeMemoryMiB: Int?) {
        let cpus = try? await withConnection { try $0.hostCPUs }
        let free = try? await withConnection { try $0.freeMemory }
        return (cpus, free.map { Int($0 >> 20) })
    }

    public func storage(runID: String) -> any GuestStorage {
        jump == nil ? LocalStorage(commands: commands) : PoolStorage(hypervisor: self, runID: runID)
    }

    public func collectRunFiles(ofRuns dead: Set<String>) async -> [String] {
        guard jump != nil, !dead.isEmpty else { return [] }
        return (try? await withConnection { connection in PoolStorage.collect(on: connection, ofRuns: dead) }) ?? []
    }

    public func kmatrixDomains() async throws -> [DomainRecord] {
        try await onHost("listing libvirt's domains") {
            try await withConnection { connection in
                var found: [DomainRecord] = []
                for domain in try connection.listAllDomains() {
                    let element: String?
                    do {
                        element = try domain.metadataElement(uri: LibvirtDomainXML.metadataNamespace)
                    } catch let error as LibvirtError where error.code == .noDomain {
                        continue  // stopped between listing and asking: transient ones vanish
                    }
                    guard let element else { continue }
                    let mark = LibvirtDomainXML.runMark(fromMetadata: element)
                    found.append(DomainRecord(name: domain.name, runID: mark?.runID, owner: mark?.owner))
                }
                return found.sorted { $0.name < $1.name }
            }
        }
    }

    /// Destroys the named domain; one that is already gone or stopped is not an error.
    public func destroyDomain(named name: String) async throws {
        try await onHost("destroying domain \(name)") {
            try await withConnection { connection in
                let domain: Domain
                do {
                    domain = try connection.domain(named: name)
                } catch let error as LibvirtError where error.code == .noDomain {
                    return
                }
                try LibvirtVirtualMachine.destroyIgnoringGone(domain)
            }
        }
    }
}

/// One guest started by `LibvirtHypervisor`.
struct LibvirtVirtualMachine: VirtualMachine {
    let domain: Domain
    /// The connection whose autodestroy owns the guest: once it is dead, libvirtd stopped or restarted.
    let startedOn: Connection
    let hypervisor: LibvirtHypervisor

    var name: String { domain.name }

    func definition() async -> String? {
        let domain = self.domain
        return try? await LibvirtQueue.run { try domain.xmlDescription }
    }

    func stopped() async -> MachineStop? {
        let domain = self.domain
        let state: Result<Domain.State, LibvirtError> = await LibvirtQueue.run {
            Result { () throws(LibvirtError) in try domain.state }
        }
        switch state {
        case .success(let state):
            return Self.stop(state, name: domain.name, byHypervisor: false)
        case .failure(let error) where error.code == .noDomain:
            return MachineStop("domain \(domain.name) no longer exists: its QEMU process ended")
        case .failure:
            break
        }
        let connection = startedOn
        guard await LibvirtQueue.run({ !connection.isAlive }) else { return nil }
        // The connection that owns the guest is gone: ask libvirtd's successor by name.
        let name = domain.name
        do {
            // Waits for libvirtd's return like every other call: asked too early, a restarting daemon
            // would leave the guest's fate unknown and its cells plain SSH errors.
            let state = try await hypervisor.withConnection { try $0.domain(named: name).state }
            return Self.stop(state, name: name, byHypervisor: true)
        } catch let error as LibvirtError where error.code == .noDomain {
            return MachineStop("libvirtd stopped or restarted under the run and destroyed domain \(name) "
                               + "with the connection that started it", byHypervisor: true)
        } catch {
            return nil  // libvirtd is still away: nothing is known about the guest
        }
    }

    static func stop(_ state: Domain.State, name: String, byHypervisor: Bool) -> MachineStop? {
        switch state {
        case .shutOff, .crashed:
            MachineStop("libvirt reports domain \(name) shut off: its QEMU process ended", byHypervisor: byHypervisor)
        default:
            nil
        }
    }

    /// Through its own handle; if that connection died, by name through a new one.
    func destroy() async throws {
        let domain = self.domain
        do {
            try await LibvirtQueue.run { try Self.destroyIgnoringGone(domain) }
        } catch {
            try await hypervisor.destroyDomain(named: domain.name)
        }
    }

    static func destroyIgnoringGone(_ domain: Domain) throws(LibvirtError) {
        do {
            try domain.destroy()
        } catch where error.code == .noDomain || error.code == .operationInvalid {
            // Already gone (transient) or not running (persistent): the goal is reached.
        }
    }
}

/// Where blocking libvirt calls run.
///
/// Every libvirt call is a synchronous RPC to libvirtd that can take from a millisecond
/// to seconds (creating a domain spawns QEMU; destroying one waits for it to exit).
/// Run on Swift's cooperative pool, which has one thread per core (two here), a few
/// parallel starts would stall every other task in the process. A concurrent dispatch
/// queue lets GCD add threads for blocked work instead; libvirt's client is thread-safe
/// and pipelines concurrent calls over the one connection.
enum LibvirtQueue {
    private static let queue = DispatchQueue(label: "kmatrix.libvirt", qos: .userInitiated, attributes: .concurrent)

    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result(catching: body)) }
        }
    }

    static func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: body()) }
        }
    }
}
