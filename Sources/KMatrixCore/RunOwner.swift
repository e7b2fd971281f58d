/// The process that owns a run, named so that any kmatrix on any machine can tell whether it
/// still lives (docs/architecture.md, "Cleanup"): the boot it runs in (the kernel's random
/// `boot_id`, new at every boot and different on every machine), its pid, and the time it
/// started (clock ticks since boot, so a pid reused by another process does not pass for it).
/// A run's domains carry it in their libvirt metadata; the machine-wide run registry records it.
public struct RunOwner: Sendable, Hashable, Codable, CustomStringConvertible {
    public var boot: String
    public var pid: Int32
    public var start: UInt64

    public init(boot: String, pid: Int32, start: UInt64) {
        self.boot = boot
        self.pid = pid
        self.start = start
    }

    public var description: String { "pid \(pid) of boot \(boot.prefix(8))" }

    /// A boot id as the kernel prints it: 36 characters of hex digits and dashes. Anything else
    /// read back from a domain's metadata is no owner at all.
    public static func bootProblem(_ boot: String) -> String? {
        guard boot.utf8.count == 36, boot.unicodeScalars.allSatisfy({ $0.properties.isASCIIHexDigit || $0 == "-" }) else {
            return "is not a kernel boot id"
        }
        return nil
    }
}
