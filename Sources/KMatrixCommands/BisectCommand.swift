import ArgumentParser
import Foundation
import KMatrixCore
import KMatrixRuntime
import Logging

/// `kmatrix bisect`: from "this kernel flipped" to the release or commit that flipped it
/// (docs/architecture.md, "Bisect"). Every step boots a kernel with kmatrix's rootfs exactly as
/// `run --kernel` does and runs the scenario `--repeat` times, with the same proof per cell.
struct BisectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bisect",
        abstract: "Find the packaged kernel or the commit where a scenario's outcome flips.",
        discussion: """
        Packaged kernels: --kernel FILE[,FILE…] (repeatable) or --kernels DIR, ordered by release.
        A kernel tree: --git PATH --good REV --bad REV, built in a worktree under the cache.
        The ends are measured first; their outcomes define "old" and "new".
        """)

    @Option(help: "The scenario whose outcome flips.") var scenario: String
    @Option(name: .customLong("kernel"), help: ArgumentHelp("A kernel to order and search (repeatable); split packages comma-separated.", valueName: "file[,file…]"))
    var kernels: [String] = []
    @Option(name: .customLong("kernels"), help: "Every .deb, .rpm and bzImage in this folder (split packages grouped by release).")
    var kernelFolder: String?
    @Option(help: "Modules directory for bare bzImages.") var modules: String?
    @Option(help: "A kernel git tree to bisect.") var git: String?
    @Option(help: "With --git: the older end.") var good: String?
    @Option(help: "With --git: the newer end.") var bad: String?
    @Option(help: "With --git: the base kernel config (default: tinyconfig plus what kmatrix's rootfs needs).") var config: String?
    @Option(name: .customLong("make-jobs"), parsing: .unconditional, help: "With --git: make -j (default: the cores).") var makeJobs: Int?
    @Option(parsing: .unconditional, help: "Runs of the scenario per step (1-20); runs that disagree make the step a skip.") var `repeat` = 3
    @Flag(help: "With --git: also revert the culprit on the newer end, build, and expect the older outcome.") var verifyRevert = false
    @Flag(help: "Measure cached steps again instead of reusing their results (builds are always reused).") var remeasure = false
    @Flag(help: "Reuse the results of steps a previous (interrupted) bisect finished; this is also the default.") var resume = false
    @Option(help: "The matrix whose defaults (memory, timeouts) the steps use.") var matrix: String?
    @Option(help: "Output directory (default: results/<UTC timestamp>/).") var out: String?
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if !(1...20).contains(`repeat`) { throw ValidationError("--repeat must be from 1 to 20") }
        if let makeJobs, !(1...256).contains(makeJobs) { throw ValidationError("--make-jobs must be from 1 to 256") }
        let packaged = !kernels.isEmpty || kernelFolder != nil
        if packaged && git != nil { throw ValidationError("give either kernels (--kernel, --kernels) or a tree (--git), not both") }
        if !packaged && git == nil { throw ValidationError("give the kernels to search (--kernel FILE…, --kernels DIR) or a tree (--git PATH --good REV --bad REV)") }
        if git != nil && (good == nil || bad == nil) { throw ValidationError("--git needs --good REV and --bad REV") }
        if git == nil && (good != nil || bad != nil || config != nil || verifyRevert) {
            throw ValidationError("--good, --bad, --config and --verify-revert go with --git")
        }
    }

    func run() async throws {
        let context = CommandContext.current
        let logger = Logs.logger(verbose: global.verbose, context: context)
        guard let scenario = Scenario.named(self.scenario) else {
            throw KMatrixError(.invalidInput, Selection.unknown(self.scenario, known: Scenario.catalogue.map(\.name), what: "scenario"))
        }
        let loaded = try MatrixLoading.load(matrix, context: context)
        let started = Date()
        let probeCommands = context.commands(nil)
        let steps: any BisectSteps
        if let git, let good, let bad {
            steps = try await GitSteps.make(path: context.path(git), good: good, bad: bad, config: config.map { context.path($0) },
                                            makeJobs: makeJobs ?? ProcessInfo.processInfo.activeProcessorCount, cache: context.cache,
                                            checkout: try context.checkout(), commands: probeCommands, verifyRevert: verifyRevert)
        } else {
            let candidates = try await KernelCandidates.collect(kernels: kernels, directory: kernelFolder, modules: modules, context: context,
                                                                commands: probeCommands)
            steps = PackageSteps(candidates: candidates)
        }
        let candidates = steps.candidates
        guard candidates.count >= 2 else {
            throw KMatrixError(.invalidInput, "bisect needs at least two \(steps.mode == .git ? "commits" : "kernels"); got \(candidates.count)")
        }
        context.print("\(candidates.count) \(steps.mode == .git ? "commits" : "kernels"), oldest first:\n")
        for candidate in candidates { context.print("  \(candidate.index). \(candidate.label)  \(candidate.detail)\n") }

        let outDirectory = try OutputDirectory.prepare(out, relativeTo: context.workingDirectory, startedAt: started)
        let engine = try await RunEngine.start(context: context, hosts: try global.hosts(loaded.matrix), needsVirtualMachines: true, defaults: loaded.matrix.defaults,
                                               outDirectory: outDirectory, started: started, logger: logger)
        let search = BisectSearch(steps: steps, engine: engine, matrix: loaded.matrix, scenario: scenario, repeats: `repeat`,
                                  reuse: !remeasure, out: outDirectory, context: context)
        let task = Task { try await search.run() }
        let interrupted = InterruptFlag()
        let interrupts = context.interrupts {
            interrupted.set()
            task.cancel()
        }
        let outcome = await task.result
        interrupts.disarm()
        await engine.close()
        if interrupted.isSet {
            throw KMatrixExit(.infrastructure, "the bisect was interrupted; finished steps are cached, run it again to go on")
        }
        let report = try outcome.get()
        context.print("\n\(SafeText.terminal(report.answer))\n")
        if let verification = report.verification { context.print("verification: \(SafeText.terminal(verification.text))\n") }
        context.printError("bisect: \(outDirectory.path)/bisect.json, bisect.md\n")
        switch report.result {
        case .found?:
            if report.verification?.verdict == .disagrees { throw KMatrixExit(.differs, "the culprit did not verify") }
            throw KMatrixExit(.allMatched)
        case .inconclusive?: throw KMatrixExit(.differs, "the bisect is inconclusive")
        case .endsDoNotDiffer?: throw KMatrixError(.invalidInput, report.answer)
        case nil: throw KMatrixExit(.infrastructure, "the bisect ended without an answer")
        }
    }
}

/// What one step measured.
struct StepMeasurement: Sendable {
    var cell: CellResult?
    /// Set when the step could not measure at all (a build that failed, a config that lost an option).
    var skip: String?
    var buildS: Double?
    var logTail: String?
    var cached = false
    var durationS: Double = 0
}

/// How the candidates of one bisect mode are measured.
protocol BisectSteps: Sendable {
    var mode: BisectReport.Mode { get }
    var candidates: [BisectReport.Candidate] { get }
    /// Builds what is needed and returns the kernel to boot, or a skip.
    func kernel(at index: Int, progress: @escaping @Sendable (String) -> Void) async throws -> (source: KernelSource?, measurement: StepMeasurement)
    /// Where a step's result is kept between runs (nil: not cached).
    func resultCache(at index: Int, scenario: String, repeats: Int) async -> URL?
    /// After the answer: culprit details, verification; nil when the mode has none.
    func conclude(_ report: inout BisectReport, lastOld: Int, firstNew: Int, measure: (KernelSource, String) async throws -> CellResult) async throws
}

/// The search loop, shared by both modes.
struct BisectSearch: Sendable {
    let steps: any BisectSteps
    let engine: RunEngine
    let matrix: Matrix
    let scenario: Scenario
    let repeats: Int
    let reuse: Bool
    let out: URL
    let context: CommandContext

    func run() async throws -> BisectReport {
        let started = ContinuousClock.now
        var report = BisectReport(mode: steps.mode, scenario: scenario.name, repeats: repeats, candidates: steps.candidates)
        var bisection = Bisection(count: report.candidates.count)
        var durations: [Double] = []
        var number = 0
        while let index = bisection.next {
            try Task.checkCancellation()
            number += 1
            let label = report.candidates[index].label
            let estimate = durations.isEmpty ? "" : ", ~\(Int(Double(bisection.estimatedRemaining) * (durations.reduce(0, +) / Double(durations.count)))) s left"
            let stepNumber = number
            let total = number - 1 + bisection.estimatedRemaining
            let line: @Sendable (String) -> Void = { [context] phase in
                context.printError("bisect: step \(stepNumber) of ~\(total): \(label): \(phase) [\(Int((ContinuousClock.now - started).seconds)) s\(estimate)]\n")
            }
            let measured = try await measure(index, number: number, phase: .search, progress: line)
            durations.append(measured.durationS)
            let verdict: Bisection.Verdict
            if let skip = measured.skip {
                verdict = .skip(skip)
            } else if let cell = measured.cell {
                if index == 0 { report.oldOutcome = cell.outcome }
                if index == report.candidates.count - 1 { report.newOutcome = cell.outcome }
                verdict = try Self.verdict(cell, index: index, report: report)
            } else {
                verdict = .skip("no measurement")
            }
            bisection.record(verdict, at: index)
            report.steps.append(BisectReport.Step(
                number: number, phase: .search, candidate: index, label: label, outcome: measured.cell?.outcome, verdict: verdict.label,
                reason: { if case .skip(let why) = verdict { return why } else { return measured.cell?.reason ?? "" } }(),
                cells: measured.cell.map { [$0] } ?? [], durationS: measured.durationS, buildS: measured.buildS, logTail: measured.logTail,
                cached: measured.cached))
            line("\(verdict.label)\(measured.cell.map { " (\($0.outcome.rawValue))" } ?? "")")
            try write(report)
            if bisection.answer == .endsDoNotDiffer { break }
        }
        let answer = bisection.answer
        if case .found(let lastOld, let firstNew) = answer {
            var verified: [BisectReport.Step] = []
            let candidates = report.candidates
            var next = number
            try await steps.conclude(&report, lastOld: lastOld, firstNew: firstNew) { source, label in
                next += 1
                let measured = try await runKernel(source, label: "verify-\(label)")
                verified.append(BisectReport.Step(
                    number: next, phase: .verify, candidate: label == candidates[lastOld].label ? lastOld : firstNew, label: label,
                    outcome: measured.outcome, verdict: measured.outcome.rawValue, reason: measured.reason, cells: [measured],
                    durationS: measured.durationS))
                return measured
            }
            report.steps += verified
        }
        report.conclude(answer)
        report.durationS = (ContinuousClock.now - started).seconds
        try write(report)
        return report
    }

    /// Ends define the outcomes; an end that proves nothing, or ends that agree, stop the search.
    static func verdict(_ cell: CellResult, index: Int, report: BisectReport) throws -> Bisection.Verdict {
        let last = report.candidates.count - 1
        if index == 0 || index == last {
            guard cell.outcome.isMeasurement && cell.outcome != .notTriggered else {
                return .skip("an end must prove something: \(cell.outcome.rawValue): \(cell.reason)")
            }
            if let old = report.oldOutcome, let new = report.newOutcome, old == new { return index == 0 ? .old : .skip("the ends agree: both \(old.rawValue)") }
            return index == 0 ? .old : .new
        }
        guard let old = report.oldOutcome, let new = report.newOutcome else { return .skip("the ends are not measured") }
        return Bisection.verdict(for: cell, old: old, new: new)
    }

    func measure(_ index: Int, number: Int, phase: BisectReport.Phase, progress: @escaping @Sendable (String) -> Void) async throws -> StepMeasurement {
        let started = ContinuousClock.now
        if reuse, let cache = await steps.resultCache(at: index, scenario: scenario.name, repeats: repeats),
           let data = FileManager.default.contents(atPath: cache.path), let cell = try? RunResult.decoder.decode(CellResult.self, from: data) {
            progress("cached result")
            return StepMeasurement(cell: cell, cached: true, durationS: 0)
        }
        var (source, measurement) = try await steps.kernel(at: index, progress: progress)
        if let source, measurement.skip == nil {
            progress("boot and \(scenario.name) ×\(repeats)")
            let cell = try await runKernel(source, label: "step\(number)")
            measurement.cell = cell
            if let cache = await steps.resultCache(at: index, scenario: scenario.name, repeats: repeats), cell.outcome != .error || cell.failure?.kind != .interrupted {
                try? RunResult.encoder.encode(cell).write(to: cache, options: .atomic)
            }
        }
        measurement.durationS = (ContinuousClock.now - started).seconds
        return measurement
    }

    /// One guest with this kernel, the scenario `repeats` times; the combined cell.
    func runKernel(_ source: KernelSource, label: String) async throws -> CellResult {
        let guest = GuestSpec(name: String(label.prefix(InputRules.maximumNameLength)), image: .kernel(source))
        let cells = await engine.run(matrix: matrix, guests: [guest], scenarios: [scenario], repeats: repeats, progress: SilentProgress())
        try Task.checkCancellation()
        guard let cell = cells.first else { throw KMatrixError(.command, "the step produced no cell") }
        if cell.failure?.kind == .interrupted { throw KMatrixError(.interrupted, "interrupted") }
        return cell
    }

    func write(_ report: BisectReport) throws {
        do {
            try report.encoded().write(to: out.appendingPathComponent("bisect.json"), options: .atomic)
            try Data(report.markdown().utf8).write(to: out.appendingPathComponent("bisect.md"), options: .atomic)
        } catch {
            throw KMatrixError.from(error, whileDoing: "writing \(out.path)/bisect.json")
        }
    }
}

extension RunResult {
    static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}

/// Packaged kernels: nothing to build, nothing to cache beyond the images.
struct PackageSteps: BisectSteps {
    let kernelCandidates: [KernelCandidate]

    init(candidates: [KernelCandidate]) {
        self.kernelCandidates = candidates
    }

    var mode: BisectReport.Mode { .packages }

    var candidates: [BisectReport.Candidate] {
        kernelCandidates.enumerated().map { index, candidate in
            BisectReport.Candidate(index: index, label: candidate.release,
                                   detail: candidate.files.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ", "))
        }
    }

    func kernel(at index: Int, progress: @escaping @Sendable (String) -> Void) async throws -> (source: KernelSource?, measurement: StepMeasurement) {
        (kernelCandidates[index].source, StepMeasurement())
    }

    func resultCache(at index: Int, scenario: String, repeats: Int) async -> URL? { nil }

    func conclude(_ report: inout BisectReport, lastOld: Int, firstNew: Int, measure: (KernelSource, String) async throws -> CellResult) async throws {}
}
