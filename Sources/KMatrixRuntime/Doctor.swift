import Foundation

/// One host prerequisite: whether it holds, what was seen, and how to fix it when it does not.
public struct DoctorCheck: Sendable {
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

/// Host readiness, one check per prerequisite.
public struct Doctor: Sendable {
    let commands: any CommandRunner
    let layout: Layout?
    let hypervisor: (@Sendable () async -> [DoctorCheck])?

    public init(commands: any CommandRunner, layout: Layout?, hypervisor: (@Sendable () async -> [DoctorCheck])?) {
        self.commands = commands
        self.layout = layout
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
        let tools: [(String, String, String)] = [
            ("ip", "iproute2", "netns for the host guest"),
            ("iptables", "iptables", "NFQUEUE rules in the host guest"),
            ("nft", "nftables", "nft fallback in the host guest"),
            ("make", "make", "builds the probe"),
            ("musl-gcc", "musl-tools", "builds the static probe"),
            ("ssh", "openssh-client", "reaches guests"),
            ("ssh-keygen", "openssh-client", "per-run SSH keys"),
            ("qemu-system-x86_64", "qemu-system-x86", "runs guests"),
            ("qemu-img", "qemu-utils", "copy-on-write overlays for cloud guests"),
            ("cpio", "cpio", "builds the initramfs rootfs"),
            ("busybox", "busybox-static", "the initramfs rootfs"),
            ("dropbear", "dropbear-bin", "SSH server in the initramfs rootfs"),
            ("genisoimage", "genisoimage", "cloud-init NoCloud seeds"),
            ("virsh", "libvirt-clients", "inspecting leftovers by hand"),
        ]
        for (tool, package, why) in tools {
            let found = (try? await commands.run("sh", ["-c", "command -v \(tool) || test -x /usr/sbin/\(tool) || test -x /sbin/\(tool)"]))?.succeeded ?? false
            checks.append(found
                ? DoctorCheck(tool, .ok, why)
                : DoctorCheck(tool, .missing, "not found (\(why))", fix: "apt-get install \(package), or run \(Self.setup)"))
        }
        if let layout {
            let probe = layout.probeBinary.path
            checks.append(FileManager.default.isExecutableFile(atPath: probe)
                ? DoctorCheck("probe", .ok, probe)
                : DoctorCheck("probe", .warning, "not built yet", fix: "make -C \(layout.probeSource.path) (kmatrix run does it)"))
            checks.append(diskCheck(layout.cache))
        } else {
            checks.append(DoctorCheck("checkout", .missing, "cannot find probe/kmatrix-probe.c", fix: "run kmatrix from the repository or set KMATRIX_ROOT"))
        }
        if let hypervisor { checks += await hypervisor() }
        return checks
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
