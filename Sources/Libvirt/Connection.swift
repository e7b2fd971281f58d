import CLibvirt

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An open connection to a libvirt driver (`qemu:///system`, `test:///default`, `qemu+ssh://host/system`).
///
/// Every call blocks the calling thread until libvirt answers: callers in async code
/// should run them off Swift's cooperative pool.
///
/// `@unchecked Sendable` is sound: libvirt's public API is thread-safe and a
/// `virConnectPtr` may be used from several threads at once (libvirt docs, "Thread
/// safety"); the only per-thread state is the last error, which each wrapper reads on
/// the same thread right after the failing call. The pointer is immutable and closed
/// exactly once, in `deinit`, when no Swift reference is left.
public final class Connection: @unchecked Sendable {
    private let handle: OpaquePointer
    public let uri: String

    /// For this module's other wrappers (pools, streams); never leaves the module.
    var rawHandle: OpaquePointer { handle }

    /// Opens a read-write connection (`virConnectOpen`).
    public init(uri: String) throws(LibvirtError) {
        try libvirtSetup.get()
        guard let handle = virConnectOpen(uri) else {
            throw LibvirtError.takeLast(operation: "virConnectOpen")
        }
        self.handle = handle
        self.uri = uri
    }

    /// Same as `init(uri:)`, for call sites that read better as a factory.
    public static func open(uri: String) throws(LibvirtError) -> Connection {
        try Connection(uri: uri)
    }

    deinit {
        // Domains hold their own reference inside libvirt, so closing here never
        // invalidates a live `Domain`: libvirt frees the connection after the last one.
        virConnectClose(handle)
    }

    /// Whether the connection still reaches its daemon (`virConnectIsAlive`): false once
    /// libvirtd restarted or the socket closed.
    public var isAlive: Bool {
        virConnectIsAlive(handle) == 1
    }

    /// Version of the libvirt daemon serving this connection, e.g. "9.0.0".
    public var libvirtVersion: String {
        get throws(LibvirtError) {
            var packed: UInt = 0
            guard virConnectGetLibVersion(handle, &packed) == 0 else {
                throw LibvirtError.takeLast(operation: "virConnectGetLibVersion")
            }
            return versionString(packed)
        }
    }

    /// Version of the hypervisor behind the driver (QEMU's for `qemu://`), e.g. "7.2.0".
    public var hypervisorVersion: String {
        get throws(LibvirtError) {
            var packed: UInt = 0
            guard virConnectGetVersion(handle, &packed) == 0 else {
                throw LibvirtError.takeLast(operation: "virConnectGetVersion")
            }
            return versionString(packed)
        }
    }

    /// The driver's name for its hypervisor, e.g. "QEMU" or "TEST".
    public var hypervisorType: String {
        get throws(LibvirtError) {
            // The string is static inside libvirt: copied, never freed.
            guard let type = virConnectGetType(handle) else {
                throw LibvirtError.takeLast(operation: "virConnectGetType")
            }
            return String(cString: type)
        }
    }

    /// Defines and starts a domain that disappears once it stops (`virDomainCreateXML`).
    ///
    /// - Parameter autodestroy: libvirt kills the domain when this connection closes,
    ///   including when the process dies: a guest can never outlive its owner.
    public func createTransientDomain(xml: String, autodestroy: Bool = false) throws(LibvirtError) -> Domain {
        let flags = autodestroy ? UInt32(VIR_DOMAIN_START_AUTODESTROY.rawValue) : 0
        guard let domain = virDomainCreateXML(handle, xml, flags) else {
            throw LibvirtError.takeLast(operation: "virDomainCreateXML")
        }
        return Domain(taking: domain)
    }

    /// Looks a domain up by name; throws `LibvirtError` with code `.noDomain` if there is none.
    public func domain(named name: String) throws(LibvirtError) -> Domain {
        guard let domain = virDomainLookupByName(handle, name) else {
            throw LibvirtError.takeLast(operation: "virDomainLookupByName")
        }
        return Domain(taking: domain)
    }

    /// All domains of this driver, running or defined (`virConnectListAllDomains`).
    public func listAllDomains() throws(LibvirtError) -> [Domain] {
        var list: UnsafeMutablePointer<virDomainPtr?>?
        let count = virConnectListAllDomains(handle, &list, 0)
        guard count >= 0 else {
            throw LibvirtError.takeLast(operation: "virConnectListAllDomains")
        }
        guard let list else { return [] }
        // libvirt allocates the array and hands each element's reference to us:
        // the `Domain`s now own the elements, the array itself is freed here.
        defer { free(list) }
        return (0..<Int(count)).compactMap { index in list[index].map(Domain.init(taking:)) }
    }
}
