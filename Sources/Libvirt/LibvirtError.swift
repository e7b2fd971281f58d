import CLibvirt

/// A failed libvirt call: libvirt's own error code, the subsystem that raised it and its message.
public struct LibvirtError: Error, Sendable, Equatable, CustomStringConvertible {
    /// libvirt's `virErrorNumber`. Only the codes callers branch on are named.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        /// Set when libvirt failed without recording an error (should not happen).
        public static let unknown = Code(rawValue: Int32(VIR_ERR_OK.rawValue))
        public static let internalError = Code(rawValue: Int32(VIR_ERR_INTERNAL_ERROR.rawValue))
        public static let noSupport = Code(rawValue: Int32(VIR_ERR_NO_SUPPORT.rawValue))
        public static let noConnect = Code(rawValue: Int32(VIR_ERR_NO_CONNECT.rawValue))
        public static let invalidArgument = Code(rawValue: Int32(VIR_ERR_INVALID_ARG.rawValue))
        public static let operationFailed = Code(rawValue: Int32(VIR_ERR_OPERATION_FAILED.rawValue))
        public static let xmlError = Code(rawValue: Int32(VIR_ERR_XML_ERROR.rawValue))
        public static let xmlDetail = Code(rawValue: Int32(VIR_ERR_XML_DETAIL.rawValue))
        public static let systemError = Code(rawValue: Int32(VIR_ERR_SYSTEM_ERROR.rawValue))
        public static let noDomain = Code(rawValue: Int32(VIR_ERR_NO_DOMAIN.rawValue))
        /// E.g. destroying a domain that is not running.
        public static let operationInvalid = Code(rawValue: Int32(VIR_ERR_OPERATION_INVALID.rawValue))
        public static let configUnsupported = Code(rawValue: Int32(VIR_ERR_CONFIG_UNSUPPORTED.rawValue))
        public static let operationTimeout = Code(rawValue: Int32(VIR_ERR_OPERATION_TIMEOUT.rawValue))
        public static let noDomainMetadata = Code(rawValue: Int32(VIR_ERR_NO_DOMAIN_METADATA.rawValue))
        public static let noStoragePool = Code(rawValue: Int32(VIR_ERR_NO_STORAGE_POOL.rawValue))
        public static let noStorageVolume = Code(rawValue: Int32(VIR_ERR_NO_STORAGE_VOL.rawValue))

        public var description: String { "\(rawValue)" }
    }

    /// The libvirt function that failed, e.g. `virDomainCreateXML`.
    public var operation: String
    public var code: Code
    /// libvirt's `virErrorDomain`: which part of libvirt raised the error (QEMU driver, XML parser, RPC...).
    public var domain: Int32
    public var message: String

    public init(operation: String, code: Code, domain: Int32, message: String) {
        self.operation = operation
        self.code = code
        self.domain = domain
        self.message = message
    }

    public var description: String {
        "\(operation) failed: \(message) (libvirt error \(code.rawValue), domain \(domain))"
    }

    /// Takes the calling thread's last libvirt error and clears it.
    ///
    /// libvirt keeps the last error per thread and overwrites it on the next call, so this
    /// must run on the thread that made the failing call, before any other libvirt call:
    /// every wrapper in this module calls it right after the failure, synchronously.
    static func takeLast(operation: String) -> LibvirtError {
        defer { virResetLastError() }
        guard let error = virGetLastError() else {
            return LibvirtError(operation: operation, code: .unknown, domain: 0,
                                message: "\(operation) failed without an error report from libvirt")
        }
        let message = error.pointee.message.map { String(cString: $0) } ?? "no message"
        return LibvirtError(operation: operation, code: Code(rawValue: error.pointee.code),
                            domain: error.pointee.domain, message: message)
    }
}
