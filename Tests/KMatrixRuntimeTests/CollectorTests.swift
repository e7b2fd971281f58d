import Foundation
import Logging
import Testing
import KMatrixCore
import KMatrixTestSupport
@testable import KMatrixRuntime

/// Nothing of another run is touched unless it is proven dead: another cache, another user,
/// another machine sharing a libvirt host, and whatever a cache folder merely names.
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

    struct World {
        let root: TemporaryDirectory
        var cache: URL { root.url.appendingPathComponent("cache") }
        var netns: URL { root.url.appendingPathComponent("netns") }
        var registry: RunRegistry { RunRegistry(root: root.url.appendingPathComponent("registry")) }
        let commands = FakeCommands()

        init() throws {
            root = try TemporaryDirectory("collector")
            try FileManager.default.createDirectory(at: netns, withIntermediateDirectories: true)
        }

        func collector(cache: URL? = nil) -> Collector {
            Collector(cache: cache ?? self.cache, registry: registry, commands: commands, processes: ProcessTable(proc: URL(fileURLWithPath: "/proc"), clock: .continuous),
                      logger: Logger.silent, namespaces: netns)
        }

        func spec(_ name: String, runID: String, owner: RunOwner) -> MachineSpec {
            MachineSpec(name: name, runID: runID, owner: owner, boot: .disk(overlay: root.url, seed: nil), memoryMiB: 1, vcpus: 1, sshPort: 1,
                        consoleLog: root.url.appendingPathComponent("c.log"), accelerator: .tcg, translationCacheMiB: nil)
        }
    }

    static var me: RunOwner { get throws { try ProcessTable(proc: URL(fileURLWithPath: "/proc"), clock: .continuous).currentOwner() } }

    @Test func onlyDeadRunsThingsGoAndLiveRunsAreUntouched() async throws {
        let world = try World()
        defer { world.root.remove() }
        let me = try Self.me
        let gone = RunOwner(boot: me.boot, pid: me.pid, start: me.start + 1)
        // A dead run: registered, its lock released; its namespace, folder, process and domain.
        let deadID = "dead\(UUID().uuidString.prefix(6).lowercased())"
        do {
            let dead = try world.registry.register(runID: deadID, owner: gone, cache: world.cache)
            _ = try RunDirectory(cache: world.cache, runID: deadID)
            try dead.recordNamespace("kmatrix-\(deadID)-host")
            _ = try world.root.file("netns/kmatrix-\(deadID)-host", "")
        }
        let orphan = try markedSleeper(deadID)
        // A live run (this process holds its locks) with a process of its own.
        let liveID = "live\(UUID().uuidString.prefix(6).lowercased())"
        let live = try world.registry.register(runID: liveID, owner: me, cache: world.cache)
        let liveFolder = try RunDirectory(cache: world.cache, runID: liveID)
        try live.recordNamespace("kmatrix-\(liveID)-host")
        _ = try world.root.file("netns/kmatrix-\(liveID)-host", "")
        let child = try markedSleeper(liveID)
        // Something kmatrix did not make, with a kmatrix-looking name.
        _ = try world.root.file("netns/kmatrix-not-ours", "")

        let hypervisor = FakeHypervisor()
        _ = try await hypervisor.start(world.spec("kmatrix-\(deadID)-a", runID: deadID, owner: gone))
        _ = try await hypervisor.start(world.spec("kmatrix-\(liveID)-b", runID: liveID, owner: me))
        let collector = world.collector()
        #expect(collector.liveRuns().map(\.runID) == [liveID])
        let removed = await collector.collectDeadRuns(hypervisors: [hypervisor]).removed

        #expect(removed.contains(Collector.Removal(kind: .runFolder, name: deadID)))
        #expect(removed.contains(Collector.Removal(kind: .namespace, name: "kmatrix-\(deadID)-host")))
        #expect(removed.contains(Collector.Removal(kind: .domain, name: "kmatrix-\(deadID)-a")))
        #expect(removed.contains(Collector.Removal(kind: .record, name: deadID)))
        #expect(world.commands.calls(of: "ip").map(\.arguments) == [["netns", "del", "kmatrix-\(deadID)-host"]])
        #expect(hypervisor.destroyed == ["kmatrix-\(deadID)-a"])
        orphan.waitUntilExit()
        #expect(orphan.terminationReason == .uncaughtSignal)
        #expect(child.isRunning, "a live run's process stays")
        #expect(FileManager.default.fileExists(atPath: liveFolder.url.path))
        #expect(!FileManager.default.fileExists(atPath: world.cache.appendingPathComponent("runs/\(deadID)").path))
        child.terminate()
        withExtendedLifetime((live, liveFolder)) {}
    }

    /// The repro of the first hostile pass: a process whose marker names a run this machine never
    /// registered (another cache, another kmatrix, or just an environment variable) is not dead.
    @Test func aMarkedProcessOfAnUnknownRunIsLeftAlone() async throws {
        let world = try World()
        defer { world.root.remove() }
        let victim = try markedSleeper("victim01")
        defer { victim.terminate() }
        let otherCache = world.root.url.appendingPathComponent("other-cache")
        let report = await world.collector(cache: otherCache).collectDeadRuns(hypervisors: [])
        #expect(report.removed.isEmpty, "\(report.removed)")
        #expect(victim.isRunning)
    }

    /// Another machine's domains on a shared host, an older kmatrix's without an owner, and a
    /// live run's of this machine are none of this gc's business.
    @Test func domainsNotProvenDeadStay() async throws {
        let world = try World()
        defer { world.root.remove() }
        let me = try Self.me
        let otherMachine = RunOwner(boot: "00000000-0000-4000-8000-000000000000", pid: 1, start: 1)
        let hypervisor = FakeHypervisor()
        _ = try await hypervisor.start(world.spec("kmatrix-elsewhere-a", runID: "elsewhere", owner: otherMachine))
        _ = try await hypervisor.start(world.spec("kmatrix-mine-b", runID: "mine", owner: me))
        let report = await world.collector().collectDeadRuns(hypervisors: [hypervisor])
        #expect(hypervisor.destroyed.isEmpty)
        #expect(report.notes.contains { $0.contains("kmatrix-elsewhere-a") && $0.contains("left alone") })
        #expect(world.collector().provenDead(DomainRecord(name: "old", runID: "x", owner: nil)) == nil)
    }

    /// `runs -> /some/dir` must not turn gc into `rm -rf /some/dir/*`.
    @Test func aRunsFolderThatIsALinkIsNotFollowed() async throws {
        let world = try World()
        defer { world.root.remove() }
        let target = world.root.url.appendingPathComponent("precious")
        try FileManager.default.createDirectory(at: target.appendingPathComponent("abc123"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: world.cache, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(at: world.cache.appendingPathComponent("runs"), withDestinationURL: target)
        let report = await world.collector().collectDeadRuns(hypervisors: [])
        #expect(report.removed.isEmpty)
        #expect(FileManager.default.fileExists(atPath: target.appendingPathComponent("abc123").path))
        #expect(throws: KMatrixError.self) { _ = try RunDirectory(cache: world.cache, runID: "new1") }
    }

    /// A ledger names only namespaces with its run's prefix; anything else it names stays.
    @Test func aLedgerCannotNameSomeoneElsesNamespace() async throws {
        let world = try World()
        defer { world.root.remove() }
        let me = try Self.me
        let runID = "led\(UUID().uuidString.prefix(6).lowercased())"
        do {
            let run = try world.registry.register(runID: runID, owner: RunOwner(boot: me.boot, pid: me.pid, start: me.start + 1), cache: world.cache)
            #expect(throws: KMatrixError.self) { try run.recordNamespace("production") }
        }
        // A ledger edited by hand.
        let ledger = world.registry.root.appendingPathComponent("\(runID)/namespaces")
        try Data("production\nkmatrix-other-host\nkmatrix-\(runID)-host\n".utf8).write(to: ledger)
        for name in ["production", "kmatrix-other-host", "kmatrix-\(runID)-host"] { _ = try world.root.file("netns/\(name)", "") }
        _ = await world.collector().collectDeadRuns(hypervisors: [])
        #expect(world.commands.calls(of: "ip").map(\.arguments) == [["netns", "del", "kmatrix-\(runID)-host"]])
    }

    @Test func aRunFolderIsPrivateAndItsRegistrationSaysItLives() throws {
        let world = try World()
        defer { world.root.remove() }
        let run = try RunDirectory(cache: world.cache, runID: "abc123")
        let attributes = try FileManager.default.attributesOfItem(atPath: run.url.path)
        #expect((attributes[.posixPermissions] as? Int) == 0o700)
        let registration = try world.registry.register(runID: "abc123", owner: try Self.me, cache: world.cache)
        #expect(world.registry.records().map(\.alive) == [true])
        #expect(world.registry.records().first?.owner == (try Self.me))
        #expect(throws: KMatrixError.self) { _ = try RunDirectory(cache: world.cache, runID: "../escape") }
        withExtendedLifetime((run, registration)) {}
    }

    @Test func anOwnerIsAliveOnlyWhilePidAndStartTimeAgree() throws {
        let table = ProcessTable(proc: URL(fileURLWithPath: "/proc"), clock: .continuous)
        let me = try table.currentOwner()
        #expect(table.isAlive(me) == true)
        #expect(table.isAlive(RunOwner(boot: me.boot, pid: me.pid, start: me.start + 1)) == false)
        #expect(table.isAlive(RunOwner(boot: "00000000-0000-4000-8000-000000000000", pid: me.pid, start: me.start)) == nil)
    }

    /// The soak's third cache once removed a run's record and folder while the run was being
    /// born (created, not yet locked). Runs are born and end here while a gc sweeps without
    /// pause: it must never remove anything, and must never make a birth fail.
    @Test func aGcNeverCatchesARunBeingBorn() async throws {
        let world = try World()
        defer { world.root.remove() }
        let me = try Self.me
        let finished = LockedFlag()
        let births = Task.detached { () throws -> Int in
            defer { finished.set() }
            for index in 0..<400 {
                let runID = "born\(index)"
                let registration = try world.registry.register(runID: runID, owner: me, cache: world.cache)
                let folder = try RunDirectory(cache: world.cache, runID: runID)
                folder.remove()
                registration.remove()
            }
            return 400
        }
        let collector = world.collector()
        var removed: [Collector.Removal] = []
        var sweeps = 0
        while !finished.isSet {
            removed += await collector.collectDeadRuns(hypervisors: []).removed
            sweeps += 1
        }
        #expect(try await births.value == 400)
        #expect(removed.isEmpty, "\(removed)")
        #expect(sweeps > 5)
    }

    final class LockedFlag: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        func set() { lock.withLock { value = true } }
        var isSet: Bool { lock.withLock { value } }
    }

    /// What a kmatrix killed mid-birth or mid-removal leaves is hidden from every sweep, and
    /// removed once it is older than any birth or removal lasts, unless someone holds its lock.
    @Test func anAbandonedBirthIsInvisibleThenCollected() async throws {
        let world = try World()
        defer { world.root.remove() }
        let birth = try world.root.file("registry/.birth-x/lock", "").deletingLastPathComponent()
        let removal = try world.root.file("cache/runs/.gone-y-1/lock", "").deletingLastPathComponent()
        let held = try world.root.file("cache/runs/.birth-z/lock", "")
        let lock = try OwnedFolder.takeLock(held)
        defer { close(lock) }
        #expect(world.registry.records().isEmpty)
        #expect(await world.collector().collectDeadRuns(hypervisors: []).removed.isEmpty)
        let later = Date().addingTimeInterval(3600)
        #expect(OwnedFolder.abandonedHiddenFolders(in: world.registry.root, lockName: "lock", now: later) == [birth])
        #expect(OwnedFolder.abandonedHiddenFolders(in: RunDirectory.runsDirectory(cache: world.cache), lockName: "lock", now: later) == [removal])
        #expect(OwnedFolder.abandonedHiddenFolders(in: world.registry.root, lockName: "lock").isEmpty)
    }

    /// A published folder whose lock file is missing is being removed (or was, since it was
    /// listed): no run's to judge while young, a dead run's when old.
    @Test func aFolderWithoutItsLockIsJudgedByItsAge() throws {
        let world = try World()
        defer { world.root.remove() }
        let folder = try world.root.file("registry/run1/run.json", "{}").deletingLastPathComponent()
        #expect(OwnedFolder.isDead(folder, lockName: "lock") == nil)
        #expect(OwnedFolder.isDead(folder, lockName: "lock", now: Date().addingTimeInterval(3600)) == true)
        #expect(world.registry.records().isEmpty)
        let lock = try OwnedFolder.takeLock(folder.appendingPathComponent("lock"))
        #expect(OwnedFolder.isDead(folder, lockName: "lock") == false)
        close(lock)
        #expect(OwnedFolder.isDead(folder, lockName: "lock") == true)
    }

    /// A run id met twice is refused, and the refused birth leaves nothing.
    @Test func aRunIDMetTwiceIsRefusedAndLeavesNoBirth() throws {
        let world = try World()
        defer { world.root.remove() }
        let me = try Self.me
        let first = try world.registry.register(runID: "twice", owner: me, cache: world.cache)
        defer { first.remove() }
        #expect(throws: KMatrixError.self) { try world.registry.register(runID: "twice", owner: me, cache: world.cache) }
        let names = try FileManager.default.contentsOfDirectory(atPath: world.registry.root.path)
        #expect(names == ["twice"])
        #expect(world.registry.records().map(\.alive) == [true])
        #expect(world.registry.records().first?.owner == me)
    }
}
