import Foundation
import KMatrixCore
import Logging
import Synchronization

/// Runs every selected guest through boot → scenarios → teardown, at most `jobs` guests at once
/// and, with a vCPU budget, at most that many guest vCPUs at once (a guest that alone exceeds it
/// still runs, alone).
/// One guest's failure never stops the others, and every guest is torn down on every path,
/// cancellation (Ctrl-C) included (docs/architecture.md, "Data flow").
public struct Orchestrator: Sendable {
    public typealias LauncherLookup = @Sendable (GuestSpec) -> any GuestLauncher

    let launcher: LauncherLookup
    let progress: any ProgressReporter
    let jobs: Int
    let vcpuBudget: Int?
    let logger: Logger

    public init(jobs: Int, vcpuBudget: Int? = nil, progress: any ProgressReporter, logger: Logger, launcher: @escaping LauncherLookup) {
        self.jobs = max(1, jobs)
        self.vcpuBudget = vcpuBudget
        self.progress = progress
        self.logger = logger
        self.launcher = launcher
    }

    /// Returns the cells in guest order, scenario order (each guest runs the scenarios that apply
    /// to it: the probe's, and its own consumers'). `guestFinished` sees each guest's cells as
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
            }.map(\.element)
            var running: [String: Int] = [:]
            func vcpus(_ guest: GuestSpec) -> Int {
                guest.image == .host ? 0 : guest.vcpus ?? context.defaults.vcpus
            }
            func startReady() {
                while running.count < jobs, let index = pending.firstIndex(where: { guest in
                    guard let budget = vcpuBudget else { return true }
                    return running.isEmpty || running.values.reduce(0, +) + vcpus(guest) <= budget
                }) {
                    let guest = pending.remove(at: index)
                    running[guest.name] = vcpus(guest)
                    group.addTask {
                        let cells = await runGuest(guest, matrix: matrix, scenarios: scenarios, context: context, repeats: repeats, labels: labels)
                        await guestFinished(cells)
                        return (guest.name, cells)
                    }
                }
            }
            startReady()
            while let (name, cells) = await group.next() {
                byGuest[name] = cells
                running[name] = nil
                startReady()
            }
        }
        return guests.flatMap { byGuest[$0.name] ?? [] }
    }

    func runGuest(_ guest: GuestSpec, matrix: Matrix, scenarios all: [Scenario], context: RunContext, repeats: Int, labels: RowLabels) async -> [CellResult] {
        let scenarios = all.filter { $0.applies(to: guest) }
        let clock = context.clock
        let started = clock.now
        let launcher = launcher(guest)
        let phase = Mutex(GuestPhase.queued)
        let report: @Sendable (GuestPhase) -> Void = { [progress] next in
            phase.withLock { $0 = next }
            progress.update(guest: guest.name, phase: next)
        }
        let console = context.consoleLog(for: guest.name)
        let evidence = ConsoleEvidence(file: console, name: context.consoleLogName(for: guest.name))
        var builder = CellBuilder(matrix: matrix, facts: GuestFacts(guest: guest))
        func unmeasured(_ outcome: Outcome, _ failure: CellFailure) -> [CellResult] {
            scenarios.map { evidence.attach(to: builder.unmeasured(outcome, $0, failure: failure)) }
        }
        func finish(_ cells: [CellResult]) -> [CellResult] {
            let counts = Dictionary(grouping: cells, by: \.outcome).map { "\($0.value.count) \($0.key.rawValue)" }.sorted()
            report(.finished(summary: "done in \(Int((clock.now - started).seconds)) s: " + counts.joined(separator: ", ")))
            return cells
        }

        if Task.isCancelled {
            return finish(unmeasured(.error, CellFailure(.interrupted, phase: .prepare, "interrupted before this guest started")))
        }
        report(.preparing)
        if let unavailable = await launcher.unavailability(guest, context: context) {
            logger.warning("skipping guest", metadata: ["guest": "\(guest.name)", "reason": "\(unavailable.reason)"])
            return finish(unmeasured(.skipped, unavailable))
        }

        // A guest the hypervisor destroyed (libvirtd restarted) is booted once more and its
        // remaining scenarios run on the new boot: the host's fault must not cost a night's cells.
        var cells: [CellResult] = []
        var bootsLeft = 2
        // A kernel that crashed while it booted, before it ran anything of ours, is booted once
        // more: under TCG on a loaded host some kernels (seen: Debian's 6.12.95 and 6.12.100,
        // 2 of 64 boots of a kernel set, never when booted alone) trip over timing in early boot.
        // Every cell of the second boot says so; a second crash is the cells' error.
        var firstBootCrash: String?
        while true {
            bootsLeft -= 1
            let session: any GuestSession
            do {
                session = try await launcher.launch(guest, context: context, progress: report)
            } catch {
                let error = KMatrixError.from(error)
                var failure = CellFailure(error, phase: phase.withLock { $0 }.failurePhase)
                if Task.isCancelled && error.code != .interrupted {
                    failure = CellFailure(.interrupted, phase: failure.phase, "interrupted while starting the guest")
                }
                // Preparing the image can find out that it cannot exist (a kernel set's package its
                // archive's pool no longer has): that is `skipped`, with why, not an error.
                if error.code == .image, cells.isEmpty, let unavailable = await launcher.unavailability(guest, context: context) {
                    return finish(unmeasured(.skipped, unavailable))
                }
                if failure.kind == .guestPanic && [.boot, .ready].contains(failure.phase) && cells.isEmpty && bootsLeft > 0 && !Task.isCancelled {
                    firstBootCrash = failure.consoleLine ?? failure.message
                    logger.warning("the guest's kernel crashed while it booted; booting it once more",
                                   metadata: ["guest": "\(guest.name)", "crash": "\(firstBootCrash ?? "")"])
                    if let text = try? String(contentsOf: console, encoding: .utf8) {
                        try? Data(text.utf8).write(to: console.deletingPathExtension().appendingPathExtension("first-boot.log"))
                    }
                    continue
                }
                if failure.kind == .hypervisorLost && bootsLeft > 0 {
                    logger.warning("the hypervisor destroyed the guest while it booted; booting it once more",
                                   metadata: ["guest": "\(guest.name)", "error": "\(error.message)"])
                    continue
                }
                builder.facts.missingFeatures = ConsoleLog.missingFeatures(in: ConsoleLog.read(console)).map(\.text)
                builder.facts.consoleLog = evidence.exists ? evidence.name : nil
                logger.error("guest did not come up", metadata: ["guest": "\(guest.name)", "error": "\(error.detailedDescription)"])
                return finish(cells + unmeasured(.error, failure).dropFirst(cells.count))
            }
            builder.facts = GuestFacts(guest: guest, row: builder.facts.row, kernel: session.identity.kernel, distro: session.identity.distro,
                                       provenance: session.provenance, missingFeatures: session.missingFeatures.map(\.text),
                                       consoleLog: session.consoleLog == nil ? nil : evidence.name)
            // An unnamed --kernel's row is its observed release, claimed once per guest (a boot
            // once more keeps the row its first boot claimed).
            if guest.labelledByKernel && builder.facts.row == guest.name {
                builder.facts.row = labels.claim(session.identity.kernel)
            }
            builder.facts.consumers = await consumerIdentities(guest, matrix: matrix, session: session, context: context)

            var stop: CellFailure?
            var bootAgain = false
            for (index, scenario) in scenarios.enumerated().dropFirst(cells.count) {
                report(.running(scenario: scenario.name, index: index + 1, of: scenarios.count))
                var attempts: [CellResult] = []
                for _ in 0..<max(1, repeats) {
                    let cell = await measure(scenario, builder: builder, session: session, context: context)
                    attempts.append(cell)
                    if cell.outcome == .error { break }
                }
                var cell = evidence.attach(to: Repetition.combine(attempts))
                if let crash = firstBootCrash, cell.failure == nil {
                    cell.finding += " The guest was booted twice: its first boot crashed (\(crash))."
                }
                if cell.failure?.kind == .hypervisorLost && bootsLeft > 0 && !Task.isCancelled {
                    logger.warning("the hypervisor destroyed the guest during a scenario; booting it once more",
                                   metadata: ["guest": "\(guest.name)", "scenario": "\(scenario.name)", "error": "\(cell.reason)"])
                    bootAgain = true
                    break
                }
                cells.append(cell)
                if let failure = cell.failure, failure.endsGuest {
                    stop = failure
                    break
                }
                if Task.isCancelled {
                    stop = CellFailure(.interrupted, phase: .scenario, "interrupted")
                    break
                }
            }
            report(.tearingDown)
            // Teardown runs in an unstructured task so a cancelled run still releases the guest.
            await Task { await session.shutdown() }.value
            if bootAgain { continue }
            // Whatever stopped the loop early is the reason for the scenarios that never ran.
            for scenario in scenarios.dropFirst(cells.count) {
                let failure: CellFailure = stop?.kind == .interrupted
                    ? CellFailure(.interrupted, phase: .scenario, "interrupted before this scenario ran")
                    : CellFailure(.notRun, phase: .scenario, "not run: \(stop?.reason ?? "the guest stopped")", consoleLine: stop?.consoleLine)
                cells.append(evidence.attach(to: builder.unmeasured(.error, scenario, failure: failure)))
            }
            return finish(cells)
        }
    }

    /// A killed QEMU closes its SSH forward at once, while libvirt learns of the death a moment
    /// later (seen in scripts/soak: the scenario's ssh failed first): ask for a few seconds.
    static func stop(of session: any GuestSession, clock: WaitClock, within limit: Duration = .seconds(5)) async -> MachineStop? {
        (try? await poll(clock: clock, within: limit, every: .milliseconds(250)) { _ in await session.stopped() }) ?? nil
    }

    func measure(_ scenario: Scenario, builder: CellBuilder, session: any GuestSession, context: RunContext) async -> CellResult {
        let clock = context.clock
        let started = clock.now
        func errorCell(_ failure: CellFailure) -> CellResult {
            builder.unmeasured(.error, scenario, failure: failure, durationS: (clock.now - started).seconds)
        }
        func crashed() async -> CellFailure? {
            guard let crash = await session.crashLine() else { return nil }
            return CellFailure(.guestPanic, phase: .scenario, "guest crashed: \(crash)", consoleLine: crash)
        }
        var arguments = scenario.parameters.arguments
        if let consumer = scenario.consumer {
            guard let placement = session.consumerPlacement, let bundle = placement.bundles[consumer.name] else {
                return errorCell(CellFailure(.probe, phase: .scenario, "consumer \(consumer.name) is not deployed in this guest"))
            }
            arguments = scenario.probeArguments(bundle: bundle, workRoot: placement.workRoot)
        }
        let output: CommandResult
        do {
            output = try await session.runProbe(arguments, scenario: scenario, timeout: .seconds(context.timeouts.scenario))
        } catch {
            if let crash = await crashed() { return errorCell(crash) }
            let error = KMatrixError.from(error)
            if Task.isCancelled || error.code == .interrupted {
                return errorCell(CellFailure(.interrupted, phase: .scenario, "interrupted while the scenario ran"))
            }
            if error.code == .ssh, let stop = await Self.stop(of: session, clock: clock) {
                return errorCell(CellFailure(stop.error("while the scenario ran"), phase: .scenario))
            }
            return errorCell(CellFailure(error, phase: .scenario))
        }
        if let crash = await crashed() { return errorCell(crash) }
        let probe: ProbeResult
        do {
            probe = try ProbeResult.decode(output.stdout)
        } catch {
            let stderr = output.stderr.split(separator: "\n").suffix(3).joined(separator: " / ")
            return errorCell(CellFailure(.probe, phase: .scenario,
                                         "probe exited with \(output.status) without a readable result\(stderr.isEmpty ? "" : ": \(stderr)")"))
        }
        logger.debug("probe result", metadata: ["guest": "\(builder.facts.row)", "scenario": "\(scenario.name)", "stdout": "\(output.stdoutText)"])
        return builder.measured(scenario, probe: probe, durationS: (clock.now - started).seconds)
    }
}

extension Orchestrator {
    /// What each of the guest's consumers is there: the bundle's packages and digests, and the
    /// first line its version command prints in this guest (bounded, cleaned; none if it fails).
    func consumerIdentities(_ guest: GuestSpec, matrix: Matrix, session: any GuestSession, context: RunContext) async -> [String: ConsumerIdentity] {
        var identities: [String: ConsumerIdentity] = [:]
        for name in guest.consumers {
            guard var identity = context.consumers[name]?.identity else { continue }
            if let command = matrix.consumer(named: name)?.version, let placement = session.consumerPlacement,
               let bundle = placement.bundles[name] {
                let arguments = ConsumerSpec.expand(command, bundle: bundle, dir: placement.workRoot, queue: Scenario.consumerQueue)
                do {
                    let result = try await session.runConsumerCommand(arguments, timeout: .seconds(context.timeouts.deploy))
                    let line = (result.stdoutText + "\n" + result.stderr).split(whereSeparator: \.isNewline).first.flatMap { ConsoleTail.make(String($0)) }
                    if result.succeeded, let line {
                        identity.version = String(line.prefix(120))
                    } else { logger.warning("consumer version command failed", metadata: ["guest": "\(guest.name)", "consumer": "\(name)", "status": "\(result.status)"]) }
                } catch {
                    logger.warning("consumer version command failed", metadata: ["guest": "\(guest.name)", "consumer": "\(name)", "error": "\(error)"])
                }
            }
            identities[name] = identity
        }
        return identities
    }
}

/// A guest's console as a cell's evidence: the log's name in the results folder on every cell,
/// and its last lines on the cells that differ from their expectation (the reports show them;
/// they never open the file themselves).
struct ConsoleEvidence: Sendable {
    let file: URL
    let name: String

    var exists: Bool { FileManager.default.fileExists(atPath: file.path) }

    func attach(to cell: CellResult) -> CellResult {
        guard cell.matches != true, cell.evidence?.consoleLog != nil,
              let text = FileManager.default.contents(atPath: file.path).map({ String(decoding: $0.suffix(64 << 10), as: UTF8.self) }) else { return cell }
        var cell = cell
        cell.evidence?.consoleTail = ConsoleTail.make(text)
        return cell
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
