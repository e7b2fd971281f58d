import Foundation
import KMatrixCore

/// One host prerequisite: whether it holds, what was seen, and how to fix it when it does not.
public struct DoctorCheck: Sendable, Equatable {
    public enum Status: String, Sendable {
        case ok
        case warning
        case missing
    }

    public var name: String
    public var status: Status
    public var detail: String
    public var fix: String?

    public init(_ name: String, _ status: Status, _ detail: String, fix: String? = nil) {
        self.name = name
        self.status = status
        self.detail = detail
        self.fix = fix
    }
}

/// One line of `scripts/prerequisites`: a Debian package, a command it provides, and why.
public struct Prerequisite: Sendable, Equatable {
    public var package: String
    public var command: String?
    public var purpose: String

    /// Only the test suite needs it (chromium, rpm): its absence is no problem for a run.
    public var testsOnly: Bool { purpose.starts(with: "tests:") }

    public static func parse(_ text: String) -> [Prerequisite] {
        text.split(separator: "\n").compactMap { line in
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = content.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 3 else { return nil }
            return Prerequisite(package: String(fields[0]), command: fields[1] == "-" ? nil : String(fields[1]),
                                purpose: fields[2...].joined(separator: " "))
        }
    }
}

/// Host readiness, one check per prerequisite.
public struct Doctor: Sendable {
    let checkout: Checkout?
    let cache: CacheLayout
    let hypervisor: (@Sendable () async -> [DoctorCheck])?

    public init(checkout: Checkout?, cache: CacheLayout, hypervisor: (@Sendable () async -> [DoctorCheck])?) {
        self.checkout = checkout
        self.cache = cache
        self.hypervisor = hypervisor
    }

    static let setup = "scripts/host-setup.sh"

    public func run() async -> [DoctorCheck] {
        var checks: [DoctorCheck] = []
        checks.append(geteuid() == 0
            ? DoctorCheck("root", .ok, "running as root")
            : DoctorCheck("root", .missing, "running as uid \(geteuid()); netns, iptables and SO_RCVBUFFORCE need root", fix: "run kmatrix as root"))
        checks.append(FileManager.default.fileExists(atPath: "/proc/self/ns/net")
            ? DoctorCheck("network namespaces", .ok, "/proc/self/ns/net present")
            : DoctorCheck("network namespaces", .missing, "kernel lacks CONFIG_NET_NS", fix: "the host guest cannot run here; use VM guests only (--guest)"))
        guard let checkout else {
            checks.append(DoctorCheck("checkout", .missing, "cannot find probe/kmatrix-probe.c", fix: "run kmatrix from the repository or set KMATRIX_ROOT"))
            return checks + (await hypervisor?() ?? [])
        }
        let list = (try? String(contentsOf: checkout.prerequisites, encoding: .utf8)).map(Prerequisite.parse) ?? []
        if list.isEmpty {
            checks.append(DoctorCheck("prerequisites", .missing, "cannot read \(checkout.prerequisites.path)", fix: "restore it from the repository"))
        }
        var seen = Set<String>()
        for prerequisite in list {
            guard let command = prerequisite.command, seen.insert(command).inserted else { continue }
            if Self.findCommand(command) {
                checks.append(DoctorCheck(command, .ok, prerequisite.purpose))
            } else {
                checks.append(DoctorCheck(command, prerequisite.testsOnly ? .warning : .missing, "not found (\(prerequisite.purpose))",
                                          fix: "apt-get install \(prerequisite.package), or run \(Self.setup)\(prerequisite.testsOnly ? " --with-tests" : "")"))
            }
        }
        let probe = checkout.probeBinary.path
        checks.append(FileManager.default.isExecutableFile(atPath: probe)
            ? DoctorCheck("probe", .ok, probe)
            : DoctorCheck("probe", .warning, "not built yet", fix: "make -C \(checkout.probeSource.path) (kmatrix run does it)"))
        checks.append(diskCheck(cache.root))
        if let hypervisor { checks += await hypervisor() }
        return checks
    }

    static func findCommand(_ command: String) -> Bool {
        let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
        return directories.contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(command)") }
    }

    func diskCheck(_ cache: URL) -> DoctorCheck {
        var directory = cache
        while !FileManager.default.fileExists(atPath: directory.path), directory.path != "/" { directory.deleteLastPathComponent() }
        guard let attributes = try? FileManager.default.attributesOfFileSystem(forPath: directory.path),
              let free = (attributes[.systemFreeSize] as? NSNumber)?.int64Value else {
            return DoctorCheck("disk", .warning, "cannot read free space at \(directory.path)")
        }
        let gib = Double(free) / Double(1 << 30)
        let text = "\((gib * 10).rounded() / 10) GiB free for \(cache.path)"
        return gib >= 4
            ? DoctorCheck("disk", .ok, text)
            : DoctorCheck("disk", .warning, text + "; images and kernel builds need about 4 GiB", fix: "free space or set KMATRIX_CACHE")
    }
}
