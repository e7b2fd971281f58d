import Foundation
import Libvirt
import Synchronization

/// `Hypervisor` over one libvirt connection (`qemu:///system` by default).
///
/// Guests are transient and started with libvirt's autodestroy: if this process dies
/// or drops the connection, libvirt kills its guests, so a crash leaves no VM behind.
/// `kmatrixDomains`/`destroyDomain` remain for leftovers of other connections.
public final class LibvirtHypervisor: Hypervisor {
    public let uri: String
    private let connection: Connection

    /// Opens the connection. Blocks a libvirt thread, not the caller's.
    public init(uri: String = "qemu:///system") async throws {
        self.uri = uri
        self.connection = try await LibvirtQueue.run { try Connection(uri: uri) }
    }

    public func versions() async throws -> HypervisorVersions {
        let connection = self.connection
        return try await LibvirtQueue.run {
            HypervisorVersions(libvirt: try connection.libvirtVersion, qemu: try connection.hypervisorVersion)
        }
    }

    /// Probed once per process and URI; see `LibvirtAcceleratorProbe`.
    public func detectAccelerator() async -> Accelerator {
        let task = Self.acceleratorCache.withLock { cache in
            if let task = cache[uri] { return task }
            let connection = self.connection
            let task = Task { await LibvirtAcceleratorProbe.run(on: connection) }
            cache[uri] = task
            return task
        }
        return await task.value
    }

    private static let acceleratorCache = Mutex<[String: Task<Accelerator, Never>]>([:])

    public func start(_ spec: MachineSpec) async throws -> any VirtualMachine {
        let xml = LibvirtDomainXML.make(for: spec)
        let connection = self.connection
        let domain = try await LibvirtQueue.run {
            // QEMU creates the console log but not its directory.
            try FileManager.default.createDirectory(
                at: spec.consoleLog.deletingLastPathComponent(), withIntermediateDirectories: true)
            return try connection.createTransientDomain(xml: xml, autodestroy: true)
        }
        return LibvirtVirtualMachine(domain: domain)
    }

    public func kmatrixDomains(runID: String?) async throws -> [String] {
        let connection = self.connection
        return try await LibvirtQueue.run {
            var names: [String] = []
            for domain in try connection.listAllDomains() {
                let element: String?
                do {
                    element = try domain.metadataElement(uri: LibvirtDomainXML.metadataNamespace)
                } catch let error as LibvirtError where error.code == .noDomain {
                    continue  // stopped between listing and asking: transient ones vanish
                }
                guard let element else { continue }
                if let runID, LibvirtDomainXML.runID(fromMetadata: element) != runID { continue }
                names.append(domain.name)
            }
            return names.sorted()
        }
    }

    /// Destroys the named domain; one that is already gone or stopped is not an error.
    public func destroyDomain(named name: String) async throws {
        let connection = self.connection
        try await LibvirtQueue.run {
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

/// One guest started by `LibvirtHypervisor`.
public struct LibvirtVirtualMachine: VirtualMachine {
    let domain: Domain

    public var name: String { domain.name }

    public func isRunning() async throws -> Bool {
        let domain = self.domain
        return try await LibvirtQueue.run {
            do {
                switch try domain.state {
                case .running, .blocked: return true
                // Paused covers "KVM internal error": QEMU stops the CPUs but stays up.
                case .noState, .paused, .shuttingDown, .shutOff, .crashed, .suspended, .other: return false
                }
            } catch let error as LibvirtError where error.code == .noDomain {
                return false  // a transient domain that stopped no longer exists
            }
        }
    }

    public func destroy() async throws {
        let domain = self.domain
        try await LibvirtQueue.run { try Self.destroyIgnoringGone(domain) }
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
