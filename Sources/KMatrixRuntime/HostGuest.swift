import Foundation
import KMatrixCore

/// The `host` guest: this machine's own kernel, with every netfilter change confined to a
/// network namespace that exists only for the guest's lifetime.
public struct HostGuestLauncher: GuestLauncher {
    let commands: any CommandRunner
    let digests: FileDigests

    public init(commands: any CommandRunner, digests: FileDigests = FileDigests()) {
        self.commands = commands
        self.digests = digests
    }

    public func unavailability(_ guest: GuestSpec, context: RunContext) async -> CellFailure? {
        func unavailable(_ message: String) -> CellFailure { CellFailure(.hostUnavailable, phase: .prepare, message) }
        if geteuid() != 0 {
            return unavailable("the host guest needs root (CAP_NET_ADMIN) to create a network namespace; run kmatrix as root")
        }
        if !FileManager.default.fileExists(atPath: "/proc/self/ns/net") {
            return unavailable("this kernel has no network namespaces (CONFIG_NET_NS); the host guest cannot run isolated")
        }
        if !FileManager.default.isExecutableFile(atPath: context.probe.path) {
            return unavailable("the probe is not built at \(context.probe.path); run `make -C probe`")
        }
        if Self.firstTool(["iptables-legacy", "iptables", "iptables-nft", "nft"]) == nil {
            return unavailable("no iptables or nft on this host; install them with `apt-get install iptables nftables`")
        }
        return nil
    }

    static func firstTool(_ tools: [String]) -> String? {
        let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
        return tools.first { tool in directories.contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)") } }
    }

    public func launch(_ guest: GuestSpec, context: RunContext, progress: @escaping @Sendable (GuestPhase) -> Void) async throws -> any GuestSession {
        progress(.booting)
        let namespace = "kmatrix-\(context.runID)-\(guest.name)"
        // Recorded first: should the run die right after `ip netns add`, gc still knows it is ours.
        try context.ledger.recordNamespace(namespace)
        try await commands.checked("ip", ["netns", "add", namespace], timeout: .seconds(10))
        let probeSha256 = try? await digests.sha256(of: context.probe)
        let session = HostGuestSession(namespace: namespace, probe: context.probe, commands: commands,
                                       identity: Self.localIdentity(), probeSha256: probeSha256)
        do {
            // Loopback stays down in a new namespace; the probe's datagrams need it.
            try await commands.checked("ip", ["-n", namespace, "link", "set", "lo", "up"], timeout: .seconds(10))
        } catch {
            await session.shutdown()
            throw error
        }
        return session
    }

    static func localIdentity() -> GuestIdentity {
        let kernel = (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown"
        return GuestIdentity(kernel: kernel, distro: OSRelease.prettyName(from: (try? String(contentsOfFile: "/etc/os-release", encoding: .utf8)) ?? ""))
    }
}

struct HostGuestSession: GuestSession {
    let namespace: String
    let probe: URL
    let commands: any CommandRunner
    let identity: GuestIdentity
    let probeSha256: String?

    var consoleLog: URL? { nil }
    var provenance: Provenance { Provenance(probeSha256: probeSha256, accelerator: "none (host kernel)") }

    func runProbe(_ arguments: [String], scenario: Scenario, timeout: Duration) async throws -> CommandResult {
        if scenario.touchesGlobalSysctls {
            // `net.core.rmem_*` are global and refuse writes from a child namespace, so the probe
            // starts in the initial namespace, opens them, then joins ours (it restores them itself).
            let sysctls = try SysctlGuard(names: ["net.core.rmem_default", "net.core.rmem_max"])
            defer { sysctls.restoreIfChanged() }
            return try await commands.run(probe.path, arguments + ["--netns", "/run/netns/\(namespace)"], input: nil, timeout: timeout)
        }
        return try await commands.run("ip", ["netns", "exec", namespace, probe.path] + arguments, input: nil, timeout: timeout)
    }

    func crashLine() async -> String? { nil }

    func shutdown() async {
        _ = try? await commands.run("ip", ["netns", "del", namespace], timeout: .seconds(10))
    }
}

/// Remembers sysctl values and puts them back if something (a killed probe) left them changed.
struct SysctlGuard {
    let saved: [(path: String, value: String)]

    init(names: [String]) throws {
        saved = try names.map { name in
            let path = "/proc/sys/" + name.replacingOccurrences(of: ".", with: "/")
            do {
                return (path, try String(contentsOfFile: path, encoding: .utf8))
            } catch {
                throw KMatrixError.from(error, whileDoing: "reading \(name)")
            }
        }
    }

    func restoreIfChanged() {
        for (path, value) in saved where (try? String(contentsOfFile: path, encoding: .utf8)) != value {
            try? value.write(toFile: path, atomically: false, encoding: .utf8)
        }
    }
}

enum OSRelease {
    static func prettyName(from text: String) -> String {
        for line in text.split(separator: "\n") where line.starts(with: "PRETTY_NAME=") {
            return String(line.dropFirst("PRETTY_NAME=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\"' "))
        }
        return "unknown"
    }
}
