import Foundation

/// What a kernel file given by the user is, decided from its first bytes (never its name), so a
/// wrong file is refused before anything boots.
public enum KernelFileFormat: String, Sendable, Hashable {
    case deb
    case rpm
    case bzImage

    /// Bytes `identify` needs from the start of a file.
    public static let headerLength = 1024

    public static func identify(header: Data) -> KernelFileFormat? {
        let bytes = [UInt8](header.prefix(headerLength))
        // ar archive whose first member is debian-binary (dpkg's format).
        if bytes.starts(with: Array("!<arch>\ndebian-binary".utf8)) { return .deb }
        // RPM lead magic.
        if bytes.starts(with: [0xED, 0xAB, 0xEE, 0xDB]) { return .rpm }
        // x86 boot protocol: "HdrS" at 0x202 of a bzImage.
        if bytes.count >= 0x206, Array(bytes[0x202..<0x206]) == Array("HdrS".utf8) { return .bzImage }
        return nil
    }

    /// The release a bzImage names in its setup header (`kernel_version` at 0x20E + 0x200), if any.
    public static func bzImageRelease(_ data: Data) -> String? {
        let bytes = [UInt8](data)
        guard bytes.count >= 0x210, identify(header: data) == .bzImage else { return nil }
        let offset = Int(bytes[0x20E]) | Int(bytes[0x20F]) << 8
        guard offset > 0, offset + 0x200 < bytes.count else { return nil }
        let text = bytes[(offset + 0x200)...].prefix { $0 != 0 && $0 != 0x20 }.prefix(128)
        let release = String(decoding: text, as: UTF8.self)
        return InputRules.releaseProblem(release) == nil ? release : nil
    }

    public var description: String {
        switch self {
        case .deb: "a Debian package"
        case .rpm: "an RPM package"
        case .bzImage: "a bzImage"
        }
    }
}
