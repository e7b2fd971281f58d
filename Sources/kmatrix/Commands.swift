import ArgumentParser
import Foundation
import KMatrixCore
import KMatrixRuntime

struct Doctor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check this host: libvirtd, QEMU, KVM or TCG, tools, disk; each with a fix.")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let commands = SystemCommandRunner()
        let layout = try? Layout.discover()
        let uri = global.connect
        let doctor = KMatrixRuntime.Doctor(commands: commands, layout: layout) {
            await Self.libvirtChecks(uri: uri)
        }
        let checks = await doctor.run()
        let width = checks.map { $0.name.count }.max() ?? 0
        for check in checks {
            let mark: String = switch check.status {
            case DoctorCheck.Status.ok: "ok  "
            case DoctorCheck.Status.warning: "warn"
            case DoctorCheck.Status.missing: "FAIL"
            }
            var line = "\(mark)  \(check.name)\(String(repeating: " ", count: width - check.name.count))  \(check.detail)"
            if let fix = check.fix, check.status != .ok { line += "\n      fix: \(fix)" }
            print(line)
        }
        let failed = checks.filter { $0.status == DoctorCheck.Status.missing }.count
        print(failed == 0 ? "\nthis host is ready" : "\n\(failed) problem(s); scripts/host-setup.sh fixes most of them")
        if failed > 0 { throw ExitCode(ExitStatus.infrastructure.rawValue) }
    }

    static func libvirtChecks(uri: String) async -> [DoctorCheck] {
        let hypervisor: LibvirtHypervisor
        do {
            hypervisor = try await LibvirtHypervisor(uri: uri)
        } catch {
            return [DoctorCheck("libvirt", .missing, "cannot connect to \(uri): \(error)",
                                fix: "run scripts/host-setup.sh (installs libvirt, starts virtlogd and libvirtd under tini)")]
        }
        var checks: [DoctorCheck] = []
        if let versions = try? await hypervisor.versions() {
            checks.append(DoctorCheck("libvirt", .ok, "\(uri): libvirt \(versions.libvirt), QEMU \(versions.qemu)"))
        }
        let accelerator = await hypervisor.detectAccelerator()
        checks.append(accelerator == .kvm
            ? DoctorCheck("accelerator", .ok, "KVM works")
            : DoctorCheck("accelerator", .warning, "KVM unusable here, guests run under TCG (slower, still correct)",
                          fix: "enable nested virtualisation or hardware KVM for faster runs"))
        if let leftovers = try? await hypervisor.kmatrixDomains(runID: nil), !leftovers.isEmpty {
            checks.append(DoctorCheck("leftovers", .warning, "\(leftovers.count) kmatrix domain(s) running: \(leftovers.joined(separator: ", "))",
                                      fix: "kmatrix gc"))
        }
        return checks
    }
}

struct GC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc", abstract: "Remove leftovers of interrupted runs (domains, overlays, namespaces) and stale cached images. Not while a run is in progress.")

    @Option(help: "Also remove images built for --kernel files that no run used for this many days.")
    var unusedDays = 30

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let commands = SystemCommandRunner()
        var removed = 0
        if let hypervisor = try? await LibvirtHypervisor(uri: global.connect) {
            for name in try await hypervisor.kmatrixDomains(runID: nil) {
                try await hypervisor.destroyDomain(named: name)
                print("destroyed domain \(name)")
                removed += 1
            }
        } else {
            FileHandle.standardError.write(Data("kmatrix: libvirt at \(global.connect) is not reachable; skipping domains\n".utf8))
        }
        let namespaces = try await commands.run("ip", ["netns", "list"], timeout: .seconds(10))
        for line in namespaces.stdoutText.split(separator: "\n") {
            guard let name = line.split(separator: " ").first, name.hasPrefix("kmatrix-") else { continue }
            try await commands.checked("ip", ["netns", "del", String(name)], timeout: .seconds(10))
            print("deleted network namespace \(name)")
            removed += 1
        }
        if let layout = try? Layout.discover() {
            let runs = layout.cache.appendingPathComponent("runs")
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: runs.path)) ?? [] {
                try FileManager.default.removeItem(at: runs.appendingPathComponent(entry))
                print("removed overlays of run \(entry)")
                removed += 1
            }
            for entry in ImageStore(layout: layout, commands: commands).prune(unusedDays: unusedDays) {
                print("removed \(entry)")
                removed += 1
            }
        }
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? [] where entry.hasPrefix("kmatrix-") {
            try? FileManager.default.removeItem(atPath: "/tmp/\(entry)")
        }
        print(removed == 0 ? "nothing to remove" : "removed \(removed) leftover(s)")
    }
}

struct CompareCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare", abstract: "Show what changed between two results.json files; exit 1 on a regression.")

    @Argument(help: "The earlier results.json.") var base: String
    @Argument(help: "The newer results.json.") var new: String
    @Option(help: "Relative change of a count that is reported (0.10 = 10 %).") var tolerance = Comparison.defaultTolerance

    func run() async throws {
        let comparison = Comparison.compare(base: try Self.load(base), new: try Self.load(new), tolerance: tolerance)
        print(comparison.text, terminator: "")
        throw ExitCode(comparison.hasRegression ? ExitStatus.differs.rawValue : ExitStatus.allMatched.rawValue)
    }

    static func load(_ path: String) throws -> RunResult {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KMatrixError(.invalidInput, "cannot read \(path)")
        }
        do {
            return try RunResult.decode(data)
        } catch {
            throw KMatrixError(.invalidInput, "\(path) is not a kmatrix results.json: \(error)")
        }
    }

    static func compare(baseline: String, with result: RunResult) throws -> Comparison {
        Comparison.compare(base: try load(baseline), new: result)
    }
}

typealias Compare = CompareCommand

struct PrintMatrix: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "matrix", abstract: "Print the embedded default matrix.yaml.")

    func run() throws {
        print(DefaultMatrix.text, terminator: "")
    }
}
