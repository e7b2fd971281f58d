import Foundation
import Synchronization
import Testing
import KMatrixCore
import KMatrixRuntime
import KMatrixTestSupport
@testable import KMatrixCommands

/// The commands when everything works, end to end through the engine but on fakes — a
/// hypervisor that starts nothing, commands that run nothing — with no root and no libvirtd:
/// the files they write and the status they exit with.
struct CommandSuccessTests {
    static let probeFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("KMatrixCoreTests/Fixtures/probe")

    static func fixture(_ name: String) throws -> Data {
        try Data(contentsOf: probeFixtures.appendingPathComponent("\(name).json"))
    }

    /// Plays a host where kernels boot: ssh-keygen writes a key, the rootfs recipe writes an
    /// image whose "kernel" names its release, the guest answers SSH with that release, and the
    /// probe prints what `probeOutput` gives for that release and scenario.
    static func playGuests(in world: CLIWorld, hypervisor: FakeHypervisor, release: @escaping @Sendable ([String]) -> String,
                           probeOutput: @escaping @Sendable (_ release: String, _ arguments: String) throws -> Data) {
        let commands = world.commands
        commands.on("ssh-keygen") { call in
            guard let index = call.arguments.firstIndex(of: "-f") else { return .failed(1, "no -f") }
            let key = URL(fileURLWithPath: call.arguments[index + 1])
            try Data("private".utf8).write(to: key)
            try Data("ssh-ed25519 AAAAC3Nz kmatrix-test\n".utf8).write(to: key.appendingPathExtension("pub"))
            return .ok()
        }
        commands.on("bash") { call in
            guard let index = call.arguments.firstIndex(of: "--out") else { return .ok() }
            let out = URL(fileURLWithPath: call.arguments[index + 1])
            let kernel = release(call.arguments)
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            try Data(kernel.utf8).write(to: out.appendingPathComponent("vmlinuz"))
            try Data("initramfs".utf8).write(to: out.appendingPathComponent("initramfs.gz"))
            try Data(#"{"build_id": "b1d", "kernel_release": "\#(kernel)", "deb_sha256": "d3b"}"#.utf8).write(to: out.appendingPathComponent("manifest.json"))
            return .ok()
        }
        commands.playSSHMasters()
        // Which guest an ssh call is for: its forward port names the domain the fake started.
        let kernelOf: @Sendable (FakeCommands.Call) -> String = { call in
            guard let index = call.arguments.firstIndex(of: "-p"), let port = Int(call.arguments[index + 1]),
                  let spec = hypervisor.started.last(where: { $0.sshPort == port }), case .kernel(let kernel, _, _) = spec.boot,
                  let text = try? String(contentsOf: kernel, encoding: .utf8) else { return "?" }
            return text
        }
        commands.on("ssh", where: { $0.arguments.last?.hasPrefix("uname -r") == true }) { call in .ok("\(kernelOf(call))\nkmatrix initramfs\n") }
        commands.on("ssh", where: { $0.arguments.last?.contains("kmatrix-probe") == true }) { call in
            CommandResult(status: 0, stdout: try probeOutput(kernelOf(call), call.arguments.last ?? ""), stderr: "")
        }
    }

    @Test func aRunMeasuresWritesEveryReportAndLeavesNothing() async throws {
        let hypervisor = FakeHypervisor()
        let world = try CLIWorld(hypervisor: hypervisor, fakeCheckout: true)
        Self.playGuests(in: world, hypervisor: hypervisor, release: { _ in "6.1.0-57-cloud-amd64" }) { _, _ in
            try Self.fixture("failopen-socket-overflow-6.18")
        }
        _ = try world.file("matrix.yaml", """
            guests:
              - { name: debian-12-6.1, image: { kind: kernel, suite: bookworm } }
            expect:
              failopen-socket-overflow:
                - { when: "kernel < 4.6", outcome: dropped }
                - { outcome: reinjected }
            """)
        let status = await world.run(["run", "--scenario", "failopen-socket-overflow", "--out", "out"])
        #expect(status == 0, "\(world.stderr)")
        let out = world.root.url.appendingPathComponent("out")
        let result = try RunResult.decode(Data(contentsOf: out.appendingPathComponent("results.json")))
        #expect(result.cells.map(\.outcome) == [.reinjected])
        #expect(result.cells.first?.kernel == "6.1.0-57-cloud-amd64")
        #expect(result.cells.first?.evidence?.consoleLog == "console/debian-12-6.1.log")
        for report in ["matrix.md", "results.xml", "report.html", "console/debian-12-6.1.log"] {
            #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent(report).path), "\(report)")
        }
        #expect(world.stdout.contains("1 of 1 cells matched their expectation"), "\(world.stdout)")
        #expect(world.stderr.contains("results: \(out.path)/results.json"))
        // Everything of the run is gone: domain, run folder, registry record.
        #expect(hypervisor.started.count == 1)
        #expect(hypervisor.destroyed == hypervisor.started.map(\.name))
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: world.cache.appendingPathComponent("runs").path)) ?? []).isEmpty)
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: world.root.url.appendingPathComponent("registry").path)) ?? []).isEmpty)
        // The domain named its owner: this process, this boot.
        let owner = try ProcessTable(proc: URL(fileURLWithPath: "/proc"), clock: .continuous).currentOwner()
        #expect(hypervisor.started.first?.owner == owner)
    }

    @Test func aRunWhoseCellDiffersExitsOneAndSaysWhich() async throws {
        let hypervisor = FakeHypervisor()
        let world = try CLIWorld(hypervisor: hypervisor, fakeCheckout: true)
        Self.playGuests(in: world, hypervisor: hypervisor, release: { _ in "6.1.0-57-cloud-amd64" }) { _, _ in
            try Self.fixture("failopen-socket-overflow-legacy-6.1")
        }
        _ = try world.file("matrix.yaml", """
            guests:
              - { name: debian-12-6.1, image: { kind: kernel, suite: bookworm } }
            expect:
              failopen-socket-overflow:
                - { outcome: reinjected }
            """)
        #expect(await world.run(["run", "--scenario", "failopen-socket-overflow", "--out", "out"]) == 1)
        #expect(world.stderr.contains("1 of 1 cells do not match: 1 differ from their expectation"), "\(world.stderr)")
        let result = try RunResult.decode(Data(contentsOf: world.root.url.appendingPathComponent("out/results.json")))
        #expect(result.cells.first?.outcome == .dropped)
        #expect(result.cells.first?.evidence?.consoleTail == "KMATRIX-READY", "a differing cell keeps its console's tail")
    }

    @Test func aBisectOverPackagedKernelsNamesThePair() async throws {
        let hypervisor = FakeHypervisor()
        let world = try CLIWorld(hypervisor: hypervisor, fakeCheckout: true)
        let releases = ["5.10.0-46-cloud-amd64", "6.1.0-56-cloud-amd64", "6.1.0-57-cloud-amd64"]
        var debs: [String] = []
        for release in releases {
            debs.append(try world.file("linux-image-\(release).deb", "!<arch>\ndebian-binary   fake \(release)").path)
        }
        world.commands.on("dpkg-deb") { call in
            let release = releases.first { release in call.arguments.contains { $0.contains(release) } } ?? "?"
            return .ok("Package: linux-image-\(release)\nVersion: 1\n")
        }
        // The change lies between 6.1.0-56 (re-injects) and 6.1.0-57 (drops).
        Self.playGuests(in: world, hypervisor: hypervisor, release: { arguments in
            releases.first { release in arguments.contains { $0.contains(release) } } ?? "?"
        }) { release, _ in
            try Self.fixture(release == "6.1.0-57-cloud-amd64" ? "failopen-socket-overflow-legacy-6.1" : "failopen-socket-overflow-6.18")
        }
        let status = await world.run(["bisect", "--scenario", "failopen-socket-overflow", "--repeat", "1", "--out", "b"]
                                     + debs.reversed().flatMap { ["--kernel", $0] })
        #expect(status == 0, "\(world.stdout)\n\(world.stderr)")
        let report = try BisectReport.decode(Data(contentsOf: world.root.url.appendingPathComponent("b/bisect.json")))
        #expect(report.result == .found)
        #expect(report.candidates.map(\.label) == releases)
        #expect(report.lastOld == 1 && report.firstNew == 2)
        #expect(world.stdout.contains("reinjected on 6.1.0-56-cloud-amd64 and dropped on 6.1.0-57-cloud-amd64"), "\(world.stdout)")
        #expect(FileManager.default.fileExists(atPath: world.root.url.appendingPathComponent("b/bisect.md").path))
        #expect(hypervisor.destroyed.count == hypervisor.started.count)
    }

    @Test func aMergeWritesOneResultAndItsReports() async throws {
        let world = try CLIWorld()
        let a = ResultCommandsTests.sample()
        var b = ResultCommandsTests.sample()
        b.run.id = "120000abcdef02"
        b.run.host = "ci-b"
        b.guests = ["other"]
        b.cells[0].guest = "other"
        _ = try world.file("a/results.json", String(decoding: try a.encoded(), as: UTF8.self))
        _ = try world.file("b/results.json", String(decoding: try b.encoded(), as: UTF8.self))
        #expect(await world.run(["merge", "a", "b", "--out", "m"]) == 0, "\(world.stderr)")
        let merged = try RunResult.decode(Data(contentsOf: world.root.url.appendingPathComponent("m/results.json")))
        #expect(merged.guests == ["host", "other"])
        #expect(merged.run.distinct(\.host) == ["ci", "ci-b"])
        for report in ["matrix.md", "results.xml", "report.html"] {
            #expect(FileManager.default.fileExists(atPath: world.root.url.appendingPathComponent("m/\(report)").path), "\(report)")
        }
        #expect(world.stderr.contains("merged 2 runs"), "\(world.stderr)")
    }
}
