import Foundation
import Logging
import Testing
import KMatrixCore
import KMatrixTestSupport
@testable import KMatrixRuntime

struct CollectorTests {
    /// A child process that carries a run's marker, as every child of a run does.
    func markedSleeper(_ runID: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sleep")
        process.arguments = ["30"]
        process.environment = ["KMATRIX_RUN": runID]
        try process.run()
        return process
    }

    @Test func onlyDeadRunsThingsGoAndLiveRunsAreUntouched() async throws {
        let root = try TemporaryDirectory("collector")
        defer { root.remove() }
        let cache = root.url.appendingPathComponent("cache")
        let netns = root.url.appendingPathComponent("netns")
        try FileManager.default.createDirectory(at: netns, withIntermediateDirectories: true)
        // A dead run: its folder, its namespace in the ledger, a process with its marker.
        let deadID = "dead\(UUID().uuidString.prefix(6).lowercased())"
        do {
            let dead = try RunDirectory(cache: cache, runID: deadID)
            try dead.recordNamespace("kmatrix-\(deadID)-host")
            _ = try root.file("netns/kmatrix-\(deadID)-host", "")
        }
        let orphan = try markedSleeper(deadID)
        // A live run (this process holds its lock) with a process of its own.
        let liveID = "live\(UUID().uuidString.prefix(6).lowercased())"
        let live = try RunDirectory(cache: cache, runID: liveID)
        try live.recordNamespace("kmatrix-\(liveID)-host")
        _ = try root.file("netns/kmatrix-\(liveID)-host", "")
        let child = try markedSleeper(liveID)
        // Something kmatrix did not make, with a kmatrix-looking name.
        _ = try root.file("netns/kmatrix-not-ours", "")

        let commands = FakeCommands()
        let hypervisor = FakeHypervisor()
        _ = try await hypervisor.start(MachineSpec(name: "kmatrix-\(deadID)-a", runID: deadID, boot: .disk(overlay: root.url, seed: nil), memoryMiB: 1,
                                                   vcpus: 1, sshPort: 1, consoleLog: root.url.appendingPathComponent("c.log"), accelerator: .tcg))
        _ = try await hypervisor.start(MachineSpec(name: "kmatrix-\(liveID)-b", runID: liveID, boot: .disk(overlay: root.url, seed: nil), memoryMiB: 1,
                                                   vcpus: 1, sshPort: 1, consoleLog: root.url.appendingPathComponent("c.log"), accelerator: .tcg))
        let collector = Collector(cache: cache, commands: commands, logger: Logger(label: "t"), namespaces: netns)
        #expect(collector.liveRuns().map(\.runID) == [liveID])
        let removed = await collector.collectDeadRuns(hypervisor: hypervisor)

        #expect(removed.contains(Collector.Removal(kind: .runFolder, name: deadID)))
        #expect(removed.contains(Collector.Removal(kind: .namespace, name: "kmatrix-\(deadID)-host")))
        #expect(removed.contains(Collector.Removal(kind: .domain, name: "kmatrix-\(deadID)-a")))
        #expect(commands.calls(of: "ip").map(\.arguments) == [["netns", "del", "kmatrix-\(deadID)-host"]])
        #expect(hypervisor.destroyed == ["kmatrix-\(deadID)-a"])
        orphan.waitUntilExit()
        #expect(orphan.terminationReason == .uncaughtSignal)
        #expect(child.isRunning, "a live run's process stays")
        #expect(FileManager.default.fileExists(atPath: live.url.path))
        #expect(!FileManager.default.fileExists(atPath: cache.appendingPathComponent("runs/\(deadID)").path))
        child.terminate()
        withExtendedLifetime(live) {}
    }

    @Test func aRunFolderIsPrivateAndItsLockSaysItLives() throws {
        let root = try TemporaryDirectory("rundir")
        defer { root.remove() }
        let run = try RunDirectory(cache: root.url, runID: "abc123")
        let attributes = try FileManager.default.attributesOfItem(atPath: run.url.path)
        #expect((attributes[.posixPermissions] as? Int) == 0o700)
        #expect(RunRecord.all(cache: root.url).map(\.alive) == [true])
        #expect(throws: KMatrixError.self) { _ = try RunDirectory(cache: root.url, runID: "../escape") }
    }
}
