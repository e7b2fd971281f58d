import ArgumentParser
import Foundation
import KMatrixCore
import KMatrixEngine
import KMatrixRuntime

/// `kmatrix doctor`: host readiness, each problem with its fix.
struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor", abstract: "Check this host: libvirtd, QEMU, KVM or TCG, tools, disk; each with a fix.")

    @Option(help: "The matrix whose hosts: to check (default: ./matrix.yaml if present).") var matrix: String?
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let context = CommandContext.current
        let hosts = try global.hosts(try MatrixLoading.load(matrix, environment: context.engine).matrix)
        let cache = context.cache
        let doctor = Doctor(checkout: try? context.checkout(), cache: cache) {
            var checks: [DoctorCheck] = []
            for host in hosts { checks += await Self.hypervisorChecks(uri: host.uri, context: context, scratch: cache.root, label: hosts.count > 1) }
            checks.append(Self.registryCheck(context.registry))
            return checks
        }
        let checks = await doctor.run()
        let width = checks.map { $0.name.count }.max() ?? 0
        for check in checks {
            let mark = switch check.status {
            case .ok: "ok  "
            case .warning: "warn"
            case .missing: "FAIL"
            }
            var line = "\(mark)  \(check.name)\(String(repeating: " ", count: width - check.name.count))  \(check.detail)"
            if let fix = check.fix, check.status != .ok { line += "\n      fix: \(fix)" }
            context.print(line + "\n")
        }
        let failed = checks.filter { $0.status == .missing }.count
        context.print(failed == 0 ? "\nthis host is ready\n" : "\n\(failed) problem(s); scripts/host-setup.sh fixes most of them\n")
        if failed > 0 { throw KMatrixExit(.infrastructure) }
    }

    /// The machine-wide run registry must be a private folder of this user, or no run can start.
    static func registryCheck(_ registry: RunRegistry) -> DoctorCheck {
        guard FileManager.default.fileExists(atPath: registry.root.path) else {
            return DoctorCheck("run registry", .ok, "\(registry.root.path) (created by the first run)")
        }
        if let problem = registry.problem() {
            return DoctorCheck("run registry", .missing, "\(registry.root.path) \(problem)", fix: "remove it; the next run recreates it (0700, owned by you)")
        }
        return DoctorCheck("run registry", .ok, registry.root.path)
    }

    static func hypervisorChecks(uri: HostURI, context: CommandContext, scratch: URL, label: Bool) async -> [DoctorCheck] {
        try? FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        let hypervisor: any Hypervisor
        do {
            hypervisor = try await context.connect(uri, scratch)
        } catch {
            return [DoctorCheck("libvirt", .missing, KMatrixError.from(error).message,
                                fix: !uri.isLocal
                                    ? "the host needs libvirt and QEMU, and an SSH login (key, no password) that can reach libvirt's socket"
                                    : "run scripts/host-setup.sh (installs libvirt, starts virtlogd and libvirtd under tini)")]
        }
        let checks = await checks(of: hypervisor, uri: uri)
        guard label else { return checks }
        return checks.map { check in
            var named = check
            named.name = "\(check.name) (\(hypervisor.hostName))"
            return named
        }
    }

    static func checks(of hypervisor: any Hypervisor, uri: HostURI) async -> [DoctorCheck] {
        var checks: [DoctorCheck] = []
        if let versions = try? await hypervisor.versions() {
            checks.append(DoctorCheck("libvirt", .ok, "\(uri.text): libvirt \(versions.libvirt), QEMU \(versions.qemu)"))
        }
        let accelerator = await hypervisor.detectAccelerator()
        checks.append(accelerator == .kvm
            ? DoctorCheck("accelerator", .ok, "KVM works")
            : DoctorCheck("accelerator", .warning, "KVM unusable here, guests run under TCG (slower, still correct)",
                          fix: "enable nested virtualisation or hardware KVM for faster runs"))
        if let leftovers = try? await hypervisor.kmatrixDomains(), !leftovers.isEmpty {
            checks.append(DoctorCheck("kmatrix domains", .ok, "\(leftovers.count) running: \(leftovers.map(\.name).joined(separator: ", ")) "
                                      + "(live runs' guests; `kmatrix gc` removes those whose run is proven dead)"))
        }
        return checks
    }
}
