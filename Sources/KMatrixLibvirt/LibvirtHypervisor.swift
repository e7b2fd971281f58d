import Foundation
import KMatrixCore
import KMatrixRuntime
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
    /// Where the accelerator probe puts its tiny payload and console (kmatrix's cache).
    private let scratch: URL

    /// Opens the connection. Blocks a libvirt thread, not the caller's. A libvirt that cannot be
    /// reached is `hostNotReady`, with how to start it.
    public init(uri: String = "qemu:///system", scratch: URL = FileManager.default.temporaryDirectory) async throws {
        self.uri = uri
        self.scratch = scratch
        do {
            self.connection = try await LibvirtQueue.run { try Connection(uri: uri) }
        } catch {
            throw KMatrixError(.hostNotReady, "cannot connect to libvirt at \(uri): \(Self.sentence(error)); start it with scripts/host-setup.sh (or check `kmatrix doctor`)", cause: error)
        }
    }

    /// libvirt's message without its error numbers.
    static func sentence(_ error: any Error) -> String {
        (error as? LibvirtError)?.message ?? String(describing: error)
    }

    public func versions() async throws -> HypervisorVersions {
        let connection = self.connection
        return try await Self.mapped("asking libvirt for its versions") {
            try await LibvirtQueue.run {
                HypervisorVersions(libvirt: try connection.libvirtVersion, qemu: try connection.hypervisorVersion)
            }
        }
    }

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

    /// Probed once per process and URI; see `LibvirtAcceleratorProbe`.
    public func detectAccelerator() async -> Accelerator {
        let task = Self.acceleratorCache.withLock { cache in
            if let task = cache[uri] { return task }
            let connection = self.connection
            let scratch = self.scratch
            let task = Task { await LibvirtAcceleratorProbe.run(on: connection, scratch: scratch) }
            cache[uri] = task
            return task
        }
        return await task.value
    }

    private static let acceleratorCache = Mutex<[String: Task<Accelerator, Never>]>([:])

    public func start(_ spec: MachineSpec) async throws -> any VirtualMachine {
        let xml = LibvirtDomainXML.make(for: spec)
        let connection = self.connection
        // QEMU creates the console log but not its directory.
        do {
            try FileManager.default.createDirectory(at: spec.consoleLog.deletingLastPathComponent(), withIntermediateDirectories: true)
        } catch {
            throw KMatrixError.from(error, whileDoing: "creating the console log's folder")
        }
        let domain = try await Self.mapped("starting domain \(spec.name)") {
            try await LibvirtQueue.run { try connection.createTransientDomain(xml: xml, autodestroy: true) }
        }
        return LibvirtVirtualMachine(domain: domain)
    }

    public func kmatrixDomains() async throws -> [DomainRecord] {
        let connection = self.connection
        return try await Self.mapped("listing libvirt's domains") {
            try await LibvirtQueue.run {
                var found: [DomainRecord] = []
                for domain in try connection.listAllDomains() {
                    let element: String?
                    do {
                        element = try domain.metadataElement(uri: LibvirtDomainXML.metadataNamespace)
                    } catch let error as LibvirtError where error.code == .noDomain {
                        continue  // stopped between listing and asking: transient ones vanish
                    }
                    guard let element else { continue }
                    found.append(DomainRecord(name: domain.name, runID: LibvirtDomainXML.runID(fromMetadata: element)))
                }
                return found.sorted { $0.name < $1.name }
            }
        }
    }

    /// Destroys the named domain; one that is already gone or stopped is not an error.
    public func destroyDomain(named name: String) async throws {
        let connection = self.connection
        try await Self.mapped("destroying domain \(name)") {
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
}

/// One guest started by `LibvirtHypervisor`.
struct LibvirtVirtualMachine: VirtualMachine {
    let domain: Domain

    var name: String { domain.name }

    func destroy() async throws {
        let domain = self.domain
        try await LibvirtHypervisor.mapped("destroying domain \(domain.name)") {
            try await LibvirtQueue.run { try Self.destroyIgnoringGone(domain) }
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
