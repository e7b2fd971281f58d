import Foundation
import Logging
import Synchronization
import Testing
@testable import KMatrixCore
@testable import KMatrixRuntime

/// A probe output with the shape of a real fail-open overflow on 6.18.
let reinjectedProbeOutput = Data(#"""
{"probe":1,"kernel":"6.1.0-27-cloud-amd64","firewall":"iptables-legacy","rcvbuf_effective":8192,
 "sent":2000,"received":2000,"lost":0,"lost_ranges":[],"messages_read":10,"verdicts":10,"enobufs":1,
 "queue_before":{"queue_total":0,"queue_dropped":0,"queue_user_dropped":0,"id_sequence":0},
 "queue_paused":{"queue_total":10,"queue_dropped":0,"queue_user_dropped":0,"id_sequence":2000},
 "queue_after":{"queue_total":0,"queue_dropped":0,"queue_user_dropped":0,"id_sequence":2000},
 "netlink_drops_before":0,"netlink_drops_after":1990,"tcp":{"attempted":0,"succeeded":0},"rmem":null,"duration_ms":15,"error":null}
"""#.utf8)

/// Records what the orchestrator did to guests.
final class Ledger: Sendable {
    struct State {
        var launched: [String] = []
        var shutDown: [String] = []
        var running = 0
        var maxRunning = 0
        var probes = 0
        var boots = 0
    }

    let state = Mutex(State())
    func launched(_ name: String) { state.withLock { $0.launched.append(name); $0.running += 1; $0.maxRunning = max($0.maxRunning, $0.running) } }
    func probeStarted() { state.withLock { $0.probes += 1 } }
    /// Counts launch attempts; returns this one's number, from 1.
    func boot() -> Int { state.withLock { $0.boots += 1; return $0.boots } }
    func shutDown(_ name: String) { state.withLock { $0.shutDown.append(name); $0.running -= 1 } }
    var snapshot: State { state.withLock { $0 } }
}

struct FakeLauncher: GuestLauncher {
    var ledger: Ledger
    var unavailable: String?
    var launchFailure: String?
    var launchError: KMatrixError?
    var probeError: KMatrixError?
    var launchDelay: Duration = .zero
    var probeDelay: Duration = .zero
    var probeOutput = reinjectedProbeOutput
    var crashAfterFirstScenario = false
    /// The machine stops under the probe: SSH fails, and the hypervisor says why.
    var stop: MachineStop?
    /// How many boots the hypervisor destroys under the first probe (libvirtd restarted); 0: none.
    var bootsLost = 0
    /// Boots whose launch the hypervisor destroys before they are ready.
    var launchesLost = 0
    /// Boots whose kernel crashes before the guest is ready.
    var bootsCrashed = 0

    func unavailability(_ guest: GuestSpec, context: RunContext) async -> CellFailure? {
        unavailable.map { CellFailure(.imageMissing, phase: .prepare, $0) }
    }

    func launch(_ guest: GuestSpec, context: RunContext, progress: @escaping @Sendable (GuestPhase) -> Void) async throws -> any GuestSession {
        progress(.booting)
        try await Task.sleep(for: launchDelay)
        if let launchFailure { throw KMatrixError(.boot, launchFailure) }
        if let launchError { throw launchError }
        let boot = ledger.boot()
        if boot <= bootsCrashed {
            progress(.waitingForReady)
            throw KMatrixError(.guestPanic, "guest crashed: [    1.13] kernel BUG at kernel/irq_work.c:245!",
                               consoleLine: "[    1.13] kernel BUG at kernel/irq_work.c:245!")
        }
        if boot <= launchesLost {
            throw MachineStop("libvirtd stopped or restarted under the run and destroyed domain kmatrix-x", byHypervisor: true)
                .error("before the rootfs ready marker appeared")
        }
        ledger.launched(guest.name)
        return FakeSession(name: guest.name, launcher: self, lost: boot - launchesLost <= bootsLost)
    }
}

final class FakeSession: GuestSession {
    let name: String
    let launcher: FakeLauncher
    let ran = Mutex(0)
    /// The hypervisor destroys this boot under its first probe.
    let lost: Bool

    init(name: String, launcher: FakeLauncher, lost: Bool = false) {
        self.name = name
        self.launcher = launcher
        self.lost = lost
    }
    var identity: GuestIdentity { GuestIdentity(kernel: "6.1.0-27-cloud-amd64", distro: "fake") }
    var consoleLog: URL? { nil }
    var provenance: Provenance { Provenance(accelerator: "tcg") }

    func runProbe(_ arguments: [String], scenario: Scenario, timeout: Duration) async throws -> CommandResult {
        ran.withLock { $0 += 1 }
        launcher.ledger.probeStarted()
        if let error = launcher.probeError { throw error }
        if lost { throw KMatrixError(.ssh, "ssh to root@127.0.0.1:2222 failed: Connection closed by remote host") }
        let delay = launcher.probeDelay
        let output = launcher.probeOutput
        return try await withTimeout(timeout, clock: .continuous, what: "probe") {
            try await Task.sleep(for: delay)
            return CommandResult(status: 0, stdout: output, stderr: "")
        }
    }

    func crashLine() async -> String? {
        launcher.crashAfterFirstScenario && ran.withLock({ $0 }) >= 1 ? "Kernel panic - not syncing: Fatal exception in interrupt" : nil
    }

    func stopped() async -> MachineStop? {
        guard ran.withLock({ $0 }) >= 1 else { return nil }
        if lost { return MachineStop("libvirtd stopped or restarted under the run and destroyed domain kmatrix-x", byHypervisor: true) }
        return launcher.stop
    }

    func shutdown() async { launcher.ledger.shutDown(name) }
}

final class CellBox: Sendable {
    let cells = Mutex<[CellResult]>([])
    func add(_ new: [CellResult]) { cells.withLock { $0 += new } }
    var count: Int { cells.withLock { $0.count } }
}

@Suite struct OrchestratorTests {
    static let scenarios = [Scenario.failopenSocketOverflow, .strictSocketOverflow]

    func context(scenarioTimeout: Double = 30) -> RunContext {
        var defaults = Defaults()
        defaults.timeouts.scenario = scenarioTimeout
        return RunContext(runID: "test", owner: .test, outputDirectory: URL(fileURLWithPath: "/tmp/kmatrix-orchestrator-test"), probe: URL(fileURLWithPath: "/bin/true"), defaults: defaults, ledger: UnrecordedRun(), clock: .continuous)
    }

    func matrix(_ names: [String]) -> Matrix {
        Matrix(guests: names.map { GuestSpec(name: $0, image: .kernel(.debian(suite: "bookworm"))) },
               expectations: ["failopen-socket-overflow": [ExpectationRule(outcome: .reinjected)],
                              "strict-socket-overflow": [ExpectationRule(outcome: .dropped)]])
    }

    func orchestrator(jobs: Int = 2, _ lookup: @escaping Orchestrator.LauncherLookup) -> Orchestrator {
        Orchestrator(jobs: jobs, progress: SilentProgress(), logger: Logger.silent, launcher: lookup)
    }

    @Test func oneFailingGuestDoesNotStopTheOthers() async {
        let ledger = Ledger()
        let good = FakeLauncher(ledger: ledger)
        let bad = FakeLauncher(ledger: ledger, launchFailure: "KMATRIX-READY not seen on the console within 240 s")
        let matrix = matrix(["a", "b"])
        let cells = await orchestrator { $0.name == "b" ? bad : good }
            .run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context())
        #expect(cells.map(\.guest) == ["a", "a", "b", "b"])
        #expect(cells[0].outcome == .reinjected)
        #expect(cells[0].matches == true)
        // The strict expectation is dropped, the fake probe says reinjected: an honest mismatch.
        #expect(cells[1].outcome == .reinjected && cells[1].matches == false)
        #expect(cells[2].outcome == .error)
        #expect(cells[2].reason.contains("KMATRIX-READY not seen"))
        #expect(cells[2].failure?.kind == .boot)
        #expect(ledger.snapshot.shutDown == ["a"])
    }

    @Test func unavailableGuestsAreSkippedWithTheReason() async {
        let ledger = Ledger()
        let launcher = FakeLauncher(ledger: ledger, unavailable: "image rhel.qcow2 is not present; download it from the vendor")
        let matrix = matrix(["rhel"])
        let cells = await orchestrator { _ in launcher }.run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context())
        #expect(cells.allSatisfy { $0.outcome == .skipped && $0.matches == nil })
        #expect(cells.first?.reason.contains("download it from the vendor") == true)
        #expect(ledger.snapshot.launched.isEmpty)
    }

    @Test func aScenarioThatHangsTimesOutAndTheGuestIsStillTornDown() async {
        let ledger = Ledger()
        let launcher = FakeLauncher(ledger: ledger, probeDelay: .seconds(30))
        let matrix = matrix(["slow"])
        let cells = await orchestrator { _ in launcher }
            .run(matrix: matrix, guests: matrix.guests, scenarios: [.failopenSocketOverflow], context: context(scenarioTimeout: 0.2))
        #expect(cells.first?.outcome == .error)
        #expect(cells.first?.reason.contains("did not finish within") == true)
        #expect(ledger.snapshot.shutDown == ["slow"])
    }

    @Test func aGuestCrashEndsItsRemainingScenarios() async {
        let ledger = Ledger()
        let launcher = FakeLauncher(ledger: ledger, crashAfterFirstScenario: true)
        let matrix = matrix(["panicky"])
        let cells = await orchestrator { _ in launcher }.run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context())
        #expect(cells.count == 2)
        #expect(cells[0].outcome == .error)
        #expect(cells[0].reason == "guest crashed: Kernel panic - not syncing: Fatal exception in interrupt")
        #expect(cells[1].outcome == .error)
        #expect(cells[1].reason.hasPrefix("not run: guest crashed"))
        #expect(cells[0].failure?.kind == .guestPanic)
        #expect(cells[1].failure?.kind == .notRun)
        #expect(ledger.snapshot.shutDown == ["panicky"])
    }

    @Test func aMachineThatStopsUnderAScenarioSaysSoInsteadOfBlamingSSH() async {
        let ledger = Ledger()
        let launcher = FakeLauncher(ledger: ledger, probeError: KMatrixError(.ssh, "ssh to root@127.0.0.1:2222 failed"),
                                    stop: MachineStop("domain kmatrix-x no longer exists: its QEMU process ended"))
        let matrix = matrix(["killed"])
        let cells = await orchestrator { _ in launcher }.run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context())
        #expect(cells.count == 2)
        #expect(cells[0].failure?.kind == .guestStopped)
        #expect(cells[0].reason == "the guest stopped while the scenario ran: domain kmatrix-x no longer exists: its QEMU process ended")
        #expect(cells[1].failure?.kind == .notRun)
        #expect(cells[1].reason.hasPrefix("not run: the guest stopped"))
        #expect(ledger.snapshot.probes == 1)
    }

    @Test func aGuestTheHypervisorDestroyedIsBootedOnceMoreAndKeepsItsMeasuredCells() async {
        let ledger = Ledger()
        let launcher = FakeLauncher(ledger: ledger, bootsLost: 1)
        let matrix = matrix(["restarted"])
        let cells = await orchestrator { _ in launcher }.run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context())
        #expect(cells.map(\.outcome) == [.reinjected, .reinjected])
        #expect(cells.allSatisfy { $0.failure == nil })
        #expect(ledger.snapshot.launched == ["restarted", "restarted"])
        #expect(ledger.snapshot.shutDown == ["restarted", "restarted"])
        // The lost probe, then both scenarios on the second boot.
        #expect(ledger.snapshot.probes == 3)
    }

    @Test func aSecondBootLostTheSameWaySaysSoInEveryRemainingCell() async {
        let ledger = Ledger()
        let launcher = FakeLauncher(ledger: ledger, bootsLost: 2)
        let matrix = matrix(["unlucky"])
        let cells = await orchestrator { _ in launcher }.run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context())
        #expect(cells.count == 2)
        #expect(cells[0].failure?.kind == .hypervisorLost)
        #expect(cells[0].reason == "the guest stopped while the scenario ran: libvirtd stopped or restarted under the run and destroyed domain kmatrix-x")
        #expect(cells[1].failure?.kind == .notRun)
        #expect(cells[1].reason.hasPrefix("not run: the guest stopped while the scenario ran: libvirtd"))
        #expect(ledger.snapshot.boots == 2)
        #expect(ledger.snapshot.shutDown == ["unlucky", "unlucky"])
    }

    @Test func aBootTheHypervisorDestroyedBeforeReadyIsTriedOnceMore() async {
        let ledger = Ledger()
        let once = FakeLauncher(ledger: ledger, launchesLost: 1)
        let matrix = matrix(["a"])
        let cells = await orchestrator { _ in once }.run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context())
        #expect(cells.map(\.outcome) == [.reinjected, .reinjected])
        #expect(ledger.snapshot.boots == 2)

        let twice = FakeLauncher(ledger: Ledger(), launchesLost: 2)
        let lost = await orchestrator { _ in twice }.run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context())
        #expect(lost.map(\.failure?.kind) == [.hypervisorLost, .hypervisorLost])
        #expect(lost[0].reason.hasPrefix("the guest stopped before the rootfs ready marker appeared: libvirtd stopped or restarted"))
        #expect(twice.ledger.snapshot.boots == 2)
    }

    @Test func aKernelThatCrashedWhileBootingIsBootedOnceMoreAndItsCellsSaySo() async {
        let once = FakeLauncher(ledger: Ledger(), bootsCrashed: 1)
        let matrix = matrix(["a"])
        let cells = await orchestrator { _ in once }.run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context())
        #expect(cells.map(\.outcome) == [.reinjected, .reinjected])
        #expect(cells.allSatisfy { $0.reason.hasSuffix("The guest was booted twice: its first boot crashed ([    1.13] kernel BUG at kernel/irq_work.c:245!).") })
        #expect(once.ledger.snapshot.boots == 2)

        let twice = FakeLauncher(ledger: Ledger(), bootsCrashed: 2)
        let crashed = await orchestrator { _ in twice }.run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context())
        #expect(crashed.map(\.failure?.kind) == [.guestPanic, .guestPanic])
        #expect(twice.ledger.snapshot.boots == 2)
    }

    @Test func aGuestThatStopsByItselfIsNotBootedAgain() async {
        let ledger = Ledger()
        let launcher = FakeLauncher(ledger: ledger, probeError: KMatrixError(.ssh, "ssh to root@127.0.0.1:2222 failed"),
                                    stop: MachineStop("libvirt reports domain kmatrix-x shut off: its QEMU process ended"))
        let matrix = matrix(["stopped"])
        _ = await orchestrator { _ in launcher }.run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context())
        #expect(ledger.snapshot.boots == 1)
    }

    @Test func parallelismIsBoundedByJobs() async {
        let ledger = Ledger()
        let launcher = FakeLauncher(ledger: ledger, launchDelay: .milliseconds(50), probeDelay: .milliseconds(50))
        let matrix = matrix(["a", "b", "c", "d", "e"])
        let cells = await orchestrator(jobs: 2) { _ in launcher }
            .run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context())
        #expect(cells.count == 10)
        #expect(ledger.snapshot.maxRunning == 2)
        #expect(Set(ledger.snapshot.shutDown) == ["a", "b", "c", "d", "e"])
    }

    @Test func cancellationTearsDownEveryStartedGuestAndKeepsCells() async throws {
        let ledger = Ledger()
        let launcher = FakeLauncher(ledger: ledger, probeDelay: .seconds(60))
        let matrix = matrix(["a", "b", "c"])
        let saved = CellBox()
        let task = Task {
            await orchestrator(jobs: 2) { _ in launcher }
                .run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context()) { cells in
                    saved.add(cells)
                }
        }
        while ledger.snapshot.launched.count < 2 { try await Task.sleep(for: .milliseconds(10)) }
        task.cancel()
        let cells = await task.value
        #expect(cells.count == 6)
        #expect(cells.allSatisfy { $0.outcome == .error && $0.reason.contains("interrupted") })
        #expect(Set(ledger.snapshot.shutDown) == Set(ledger.snapshot.launched))
        #expect(ledger.snapshot.launched.count == 2)
        #expect(saved.count == 6)
    }
}

extension OrchestratorTests {
    /// What happens to a guest follows the error's code; rewording a message changes nothing.
    @Test func theErrorCodeNotTheMessageDecidesWhetherTheGuestStops() async {
        let ledger = Ledger()
        let panic = FakeLauncher(ledger: ledger, probeError: KMatrixError(.guestPanic, "the kernel fell over", consoleLine: "Kernel panic - x"))
        let lookalike = FakeLauncher(ledger: ledger, probeError: KMatrixError(.probe, "guest crashed: but this is only the probe's own failure"))
        let matrix = matrix(["a", "b"])
        let cells = await orchestrator { $0.name == "a" ? panic : lookalike }
            .run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context())
        #expect(cells[0].failure?.kind == .guestPanic)
        #expect(cells[0].failure?.consoleLine == "Kernel panic - x")
        #expect(cells[1].failure?.kind == .notRun)
        #expect(cells[2].failure?.kind == .probe)
        // Not a panic: the second scenario still ran, and failed on its own.
        #expect(cells[3].failure?.kind == .probe)
        #expect(cells[3].reason == "guest crashed: but this is only the probe's own failure")
    }

    @Test func aLaunchFailureKeepsItsKindAndConsoleLine() async {
        let ledger = Ledger()
        let launcher = FakeLauncher(ledger: ledger, launchError: KMatrixError(.noNetwork, "no NIC", consoleLine: "KMATRIX-MISSING eth0"))
        let matrix = matrix(["bare"])
        let cells = await orchestrator { _ in launcher }.run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context())
        #expect(cells.allSatisfy { $0.outcome == .error && $0.failure?.kind == .noNetwork && $0.failure?.phase == .boot })
        #expect(cells[0].reason == "no NIC (console: KMATRIX-MISSING eth0)")
    }

    @Test func anUnreachableSSHEndsTheGuestQuickly() async {
        let ledger = Ledger()
        let launcher = FakeLauncher(ledger: ledger, probeError: KMatrixError(.ssh, "ssh to root@127.0.0.1:1 failed: Connection refused"))
        let matrix = matrix(["gone"])
        let cells = await orchestrator { _ in launcher }.run(matrix: matrix, guests: matrix.guests, scenarios: Self.scenarios, context: context())
        #expect(cells[0].failure?.kind == .ssh)
        #expect(cells[1].failure?.kind == .notRun)
        #expect(ledger.snapshot.shutDown == ["gone"])
    }

    @Test func aTimeoutIsTypedAsOne() async {
        let ledger = Ledger()
        let launcher = FakeLauncher(ledger: ledger, probeDelay: .seconds(30))
        let matrix = matrix(["slow"])
        let cells = await orchestrator { _ in launcher }
            .run(matrix: matrix, guests: matrix.guests, scenarios: [.failopenSocketOverflow], context: context(scenarioTimeout: 0.2))
        #expect(cells.first?.failure?.kind == .timeout)
    }

    @Test func interruptedRepetitionsAreInterruptedNeverFlaky() async throws {
        let ledger = Ledger()
        let launcher = FakeLauncher(ledger: ledger, probeDelay: .milliseconds(200))
        let matrix = matrix(["a"])
        let task = Task {
            await orchestrator { _ in launcher }
                .run(matrix: matrix, guests: matrix.guests, scenarios: [.failopenSocketOverflow], context: context(), repeats: 3)
        }
        // Cancel while the second run is under way: the first has finished.
        while ledger.snapshot.probes < 2 { try await Task.sleep(for: .milliseconds(5)) }
        task.cancel()
        let cells = await task.value
        #expect(cells.count == 1)
        #expect(cells[0].outcome == .error)
        #expect(cells[0].failure?.kind == .interrupted)
        #expect(cells[0].reason.contains("interrupted after 1 finished run (1× reinjected)"), "\(cells[0].reason)")
    }
}
