import Foundation
import KMatrixCore
import Logging
import Synchronization

/// Runs every selected guest through boot → scenarios → teardown, at most `jobs` guests at once.
/// One guest's failure never stops the others, and every guest is torn down on every path,
/// cancellation (Ctrl-C) included.
public struct Orchestrator: Sendable {
    public typealias LauncherLookup = @Sendable (GuestSpec) -> any GuestLauncher

    let launcher: LauncherLookup
    let progress: any ProgressReporter
    let jobs: Int
    let logger: Logger

    public init(jobs: Int, progress: any ProgressReporter, logger: Logger, launcher: @escaping LauncherLookup) {
        self.jobs = max(1, jobs)
        self.progress = progress
        self.logger = logger
        self.launcher = launcher
    }

    /// Returns the cells in guest order, scenario order. `guestFinished` sees each guest's cells as
    /// soon as they exist, so a caller can save partial results.
    public func run(
        matrix: Matrix, guests: [GuestSpec], scenarios: [Scenario], context: RunContext, repeats: Int = 1,
        guestFinished: @escaping @Sendable ([CellResult]) async -> Void = { _ in }
    ) async -> [CellResult] {
        for guest in guests { progress.update(guest: guest.name, phase: .queued) }
        let labels = RowLabels(taken: guests.filter { !$0.labelledByKernel }.map(\.name))
        var byGuest: [String: [CellResult]] = [:]
        await withTaskGroup(of: (String, [CellResult]).self) { group in
            // Slowest boots first, so the long ones overlap the many short ones.
            var pending = guests.enumerated().sorted {
                ($0.element.image.bootCost, -$0.offset) > ($1.element.image.bootCost, -$1.offset)
            }.map(\.element)[...]
            func startNext() {
                guard let guest = pending.popFirst() else { return }
                group.addTask {
                    var cells = await runGuest(guest, matrix: matrix, scenarios: scenarios, context: context, repeats: repeats)
                    if guest.labelledByKernel, let kernel = cells.first(where: { $0.kernel != nil })?.kernel {
                        let label = labels.claim(kernel)
                        for index in cells.indices { cells[index].guest = label }
                    }
                    await guestFinished(cells)
                    return (guest.name, cells)
                }
            }
            for _ in 0..<min(jobs, guests.count) { startNext() }
            while let (name, cells) = await group.next() {
                byGuest[name] = cells
                startNext()
            }
        }
        return guests.flatMap { byGuest[$0.name] ?? [] }
    }

    func runGuest(_ guest: GuestSpec, matrix: Matrix, scenarios: [Scenario], context: RunContext, repeats: Int) async -> [CellResult] {
        let started = ContinuousClock.now
        let launcher = launcher(guest)
        let report: @Sendable (GuestPhase) -> Void = { [progress] phase in progress.update(guest: guest.name, phase: phase) }
        func unmeasured(_ outcome: Outcome, _ reason: String, kernel: String? = nil, consoleLog: URL? = nil) -> [CellResult] {
            scenarios.map {
                CellBuilder.unmeasured(guest: guest, scenario: $0, matrix: matrix, kernel: kernel, outcome: outcome, reason: reason,
                                       consoleLog: consoleLog?.path)
            }
        }
        func finish(_ cells: [CellResult]) -> [CellResult] {
            let counts = Dictionary(grouping: cells, by: \.outcome).map { "\($0.value.count) \($0.key.rawValue)" }.sorted()
            report(.finished(summary: "done in \(Int((ContinuousClock.now - started).seconds)) s: " + counts.joined(separator: ", ")))
            return cells
        }

        if Task.isCancelled { return finish(unmeasured(.error, "interrupted before this guest started")) }
        report(.preparing)
        if let reason = await launcher.unavailableReason(guest, context: context) {
            logger.warning("skipping guest", metadata: ["guest": "\(guest.name)", "reason": "\(reason)"])
            return finish(unmeasured(.skipped, reason))
        }

        let session: any GuestSession
        do {
            session = try await launcher.launch(guest, context: context, progress: report)
        } catch {
            logger.error("guest did not come up", metadata: ["guest": "\(guest.name)", "error": "\(error)"])
            let reason = Task.isCancelled ? "interrupted while starting the guest" : "guest did not come up: \(error)"
            return finish(unmeasured(.error, reason, consoleLog: context.consoleLog(for: guest.name)))
        }

        var cells: [CellResult] = []
        for (index, scenario) in scenarios.enumerated() {
            report(.running(scenario: scenario.name, index: index + 1, of: scenarios.count))
            var attempts: [CellResult] = []
            for _ in 0..<max(1, repeats) {
                let cell = await runScenario(scenario, guest: guest, matrix: matrix, session: session, context: context)
                attempts.append(cell)
                if cell.outcome == .error { break }
            }
            cells.append(Repetition.combine(attempts))
            if cells.last?.reason.hasPrefix("guest crashed") == true || Task.isCancelled { break }
        }
        // Whatever stopped the loop early is the reason for the scenarios that never ran.
        if cells.count < scenarios.count {
            let reason = Task.isCancelled ? "interrupted before this scenario ran" : "not run: \(cells.last?.reason ?? "the guest stopped")"
            for scenario in scenarios.dropFirst(cells.count) {
                cells.append(CellBuilder.unmeasured(guest: guest, scenario: scenario, matrix: matrix, kernel: session.identity.kernel,
                                                    distro: session.identity.distro, outcome: .error, reason: reason,
                                                    provenance: session.provenance, consoleLog: session.consoleLog?.path))
            }
        }
        report(.tearingDown)
        // Teardown runs in an unstructured task so a cancelled run still releases the guest.
        await Task { await session.shutdown() }.value
        return finish(cells)
    }

    func runScenario(_ scenario: Scenario, guest: GuestSpec, matrix: Matrix, session: any GuestSession, context: RunContext) async -> CellResult {
        var cell = await measure(scenario, guest: guest, matrix: matrix, session: session, context: context)
        // A failed measurement on a kernel that lacks what the scenarios need: that is the likely cause.
        if cell.outcome == .error && !session.missingFeatures.isEmpty {
            cell.reason += "; the kernel lacks: \(session.missingFeatures.joined(separator: ", "))"
        }
        return cell
    }

    func measure(_ scenario: Scenario, guest: GuestSpec, matrix: Matrix, session: any GuestSession, context: RunContext) async -> CellResult {
        let started = ContinuousClock.now
        let identity = session.identity
        func errorCell(_ reason: String) -> CellResult {
            CellBuilder.unmeasured(guest: guest, scenario: scenario, matrix: matrix, kernel: identity.kernel, distro: identity.distro,
                                   outcome: .error, reason: reason, durationS: (ContinuousClock.now - started).seconds,
                                   provenance: session.provenance, consoleLog: session.consoleLog?.path)
        }
        let output: CommandResult
        do {
            output = try await session.runProbe(scenario.parameters.arguments, scenario: scenario, timeout: .seconds(context.timeouts.scenario))
        } catch {
            if let crash = await session.crashLine() { return errorCell("guest crashed: \(crash)") }
            return errorCell(Task.isCancelled ? "interrupted while the scenario ran" : "\(error)")
        }
        if let crash = await session.crashLine() { return errorCell("guest crashed: \(crash)") }
        let probe: ProbeResult
        do {
            probe = try ProbeResult.decode(output.stdout)
        } catch {
            let stderr = output.stderr.split(separator: "\n").suffix(3).joined(separator: " / ")
            return errorCell("probe exited with \(output.status) without a readable result\(stderr.isEmpty ? "" : ": \(stderr)")")
        }
        logger.debug("probe result", metadata: ["guest": "\(guest.name)", "scenario": "\(scenario.name)", "stdout": "\(output.stdoutText)"])
        return CellBuilder.measured(guest: guest, scenario: scenario, matrix: matrix, kernel: identity.kernel, distro: identity.distro,
                                    probe: probe, durationS: (ContinuousClock.now - started).seconds, provenance: session.provenance,
                                    consoleLog: session.consoleLog?.path)
    }
}

/// Row labels taken so far in one run: two kernels reporting the same `uname -r` get `-2`, `-3`.
final class RowLabels: Sendable {
    private let taken: Mutex<Set<String>>

    init(taken: [String]) {
        self.taken = Mutex(Set(taken))
    }

    func claim(_ wanted: String) -> String {
        taken.withLock { taken in
            var label = wanted
            var counter = 2
            while taken.contains(label) {
                label = "\(wanted)-\(counter)"
                counter += 1
            }
            taken.insert(label)
            return label
        }
    }
}
