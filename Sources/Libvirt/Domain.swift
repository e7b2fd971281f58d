import CLibvirt

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A libvirt domain handle. Holding one keeps libvirt's handle and its connection
/// alive, not the guest: the guest may stop or vanish meanwhile, and calls then throw.
///
/// `@unchecked Sendable` for the same reason as `Connection`: `virDomainPtr` calls are
/// thread-safe in libvirt, the pointer is immutable and freed once, in `deinit`.
public final class Domain: @unchecked Sendable {
    private let handle: OpaquePointer
    /// Read once at lookup: a domain's name cannot change while it exists.
    public let name: String

    /// Takes ownership of one libvirt reference to `handle`.
    init(taking handle: OpaquePointer) {
        self.handle = handle
        self.name = virDomainGetName(handle).map { String(cString: $0) } ?? ""
    }

    deinit {
        virDomainFree(handle)
    }

    public enum State: Sendable, Equatable {
        case noState
        case running
        case blocked
        case paused
        case shuttingDown
        case shutOff
        case crashed
        case suspended
        case other(Int32)

        init(raw: Int32) {
            switch UInt32(bitPattern: raw) {
            case VIR_DOMAIN_NOSTATE.rawValue: self = .noState
            case VIR_DOMAIN_RUNNING.rawValue: self = .running
            case VIR_DOMAIN_BLOCKED.rawValue: self = .blocked
            case VIR_DOMAIN_PAUSED.rawValue: self = .paused
            case VIR_DOMAIN_SHUTDOWN.rawValue: self = .shuttingDown
            case VIR_DOMAIN_SHUTOFF.rawValue: self = .shutOff
            case VIR_DOMAIN_CRASHED.rawValue: self = .crashed
            case VIR_DOMAIN_PMSUSPENDED.rawValue: self = .suspended
            default: self = .other(raw)
            }
        }
    }

    /// The domain's current state (`virDomainGetState`).
    public var state: State {
        get throws(LibvirtError) {
            var state: Int32 = 0
            var reason: Int32 = 0
            guard virDomainGetState(handle, &state, &reason, 0) == 0 else {
                throw LibvirtError.takeLast(operation: "virDomainGetState")
            }
            return State(raw: state)
        }
    }

    /// The live domain XML (`virDomainGetXMLDesc`).
    public var xmlDescription: String {
        get throws(LibvirtError) {
            guard let xml = virDomainGetXMLDesc(handle, 0) else {
                throw LibvirtError.takeLast(operation: "virDomainGetXMLDesc")
            }
            defer { free(xml) }
            return String(cString: xml)
        }
    }

    /// The `<metadata>` child element in namespace `uri`, serialised as XML, or nil if the
    /// domain has none (`virDomainGetMetadata` with `VIR_DOMAIN_METADATA_ELEMENT`).
    public func metadataElement(uri: String) throws(LibvirtError) -> String? {
        let type = Int32(VIR_DOMAIN_METADATA_ELEMENT.rawValue)
        guard let xml = virDomainGetMetadata(handle, type, uri, 0) else {
            let error = LibvirtError.takeLast(operation: "virDomainGetMetadata")
            if error.code == .noDomainMetadata { return nil }
            throw error
        }
        defer { free(xml) }
        return String(cString: xml)
    }

    /// Stops the guest at once, like pulling the plug (`virDomainDestroy`). A transient
    /// domain is gone afterwards.
    public func destroy() throws(LibvirtError) {
        guard virDomainDestroy(handle) == 0 else {
            throw LibvirtError.takeLast(operation: "virDomainDestroy")
        }
    }
}
