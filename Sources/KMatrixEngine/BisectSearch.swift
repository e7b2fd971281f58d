import Foundation
import KMatrixCore
import KMatrixRuntime
import Logging

/// What a user asked a bisect to do, as given.
public struct BisectRequest: Sendable {
    public var scenario: String
    public var kernels: [String]
    public var kernelFolder: String?
    public var modules: String?
    public var git: String?
    public var good: String?
    public var bad: String?
    public var config: String?
    public var makeJobs: Int?
    public var repeats: Int
    public var verifyRevert: Bool
    public var reuse: Bool
    public var matrix: String?

    public init(scenario: String, kernels: [String], kernelFolder: String?, modules: String?, git: String?, good: String?, bad: String?,
                config: String?, makeJobs: Int?, repeats: Int, verifyRevert: Bool, reuse: Bool, matrix: String?) {
        self.scenario = scenario
        self.kernels = kernels
        self.kernelFolder = kernelFolder
        self.modules = modules
        self.git = git
        self.good = good
        self.bad = bad
        self.config = config
        self.makeJobs = makeJobs
        self.repeats = repeats
        self.verifyRevert = verifyRevert
        self.reuse = reuse
        self.matrix = matrix
    }
}

/// A bisect checked and ready (docs/architecture.md, "Bisect"): its candidates ordered, every
/// input refused or accepted before the first boot.
public struct Bisect: Sendable {
    public let matrix: Matrix
    public let scenario: Scenario
    let steps: any BisectSteps
    let request: BisectRequest

    public var mode: BisectReport.Mode { steps.mode }
    public var candidates: [BisectReport.Candidate] { steps.candidates }

    public static func prepare(_ request: BisectRequest, environment: EngineEnvironment) async throws -> Bisect {
        guard let scenario = Scenario.named(request.scenario) else {
            throw KMatrixError(.invalidInput, Selection.unknown(request.scenario, known: Scenario.catalogue.map(\.name), what: "scenario"))
        }
        let loaded = try MatrixLoading.load(request.matrix, environment: environment)
        let commands = environment.commands(nil)
        let steps: any BisectSteps
        if let git = request.git, let good = request.good, let bad = request.bad {
            steps = try await GitSteps.make(path: environment.path(git), good: good, bad: bad, config: request.config.map(environment.path),
                                            makeJobs: request.makeJobs ?? ProcessInfo.processInfo.activeProcessorCount, cache: environment.cache,
                                            checkout: try environment.checkout(), commands: commands, verifyRevert: request.verifyRevert,
                                            clock: environment.clock)
        } else {
            let candidates = try await KernelCandidates.collect(kernels: request.kernels, directory: request.kernelFolder, modules: request.modules,
                                                                environment: environment, commands: commands)
            steps = PackageSteps(candidates: candidates)
        }
        guard steps.candidates.count >= 2 else {
            throw KMatrixError(.invalidInput, "bisect needs at least two \(steps.mode == .git ? "commits" : "kernels"); got \(steps.candidates.count)")
        }
        return Bisect(matrix: loaded.matrix, scenario: scenario, steps: steps, request: request)
    }

    /// The search, on `engine`'s guests, writing bisect.json and bisect.md to `out`.
    public func search(engine: RunEngine, out: URL, environment: EngineEnvironment) -> BisectSearch {
        BisectSearch(steps: steps, engine: engine, matrix: matrix, scenario: scenario, repeats: request.repeats, reuse: request.reuse, out: out,
                     environment: environment)
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
public struct BisectSearch: Sendable {
    let steps: any BisectSteps
    let engine: RunEngine
    let matrix: Matrix
    let scenario: Scenario
    let repeats: Int
    let reuse: Bool
    let out: URL
    let environment: EngineEnvironment

    public func run() async throws -> BisectReport {
        let clock = environment.clock
        let started = clock.now
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
            let line: @Sendable (String) -> Void = { [environment] phase in
                environment.say("bisect: step \(stepNumber) of ~\(total): \(label): \(phase) [\(Int((clock.now - started).seconds)) s\(estimate)]\n")
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
        report.durationS = (clock.now - started).seconds
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
        let clock = environment.clock
        let started = clock.now
        if reuse, let cache = await steps.resultCache(at: index, scenario: scenario.name, repeats: repeats),
           let data = FileManager.default.contents(atPath: cache.path), let cell = try? JSONCoding.decoder.decode(CellResult.self, from: data) {
            progress("cached result")
            return StepMeasurement(cell: cell, cached: true, durationS: 0)
        }
        var (source, measurement) = try await steps.kernel(at: index, progress: progress)
        if let source, measurement.skip == nil {
            progress("boot and \(scenario.name) ×\(repeats)")
            let cell = try await runKernel(source, label: "step\(number)")
            measurement.cell = cell
            if let cache = await steps.resultCache(at: index, scenario: scenario.name, repeats: repeats), cell.outcome != .error || cell.failure?.kind != .interrupted {
                try? JSONCoding.encoder.encode(cell).write(to: cache, options: .atomic)
            }
        }
        measurement.durationS = (clock.now - started).seconds
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
