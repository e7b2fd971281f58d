import ArgumentParser
import Foundation
import KMatrixCore
import KMatrixEngine
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
        let request = BisectRequest(scenario: scenario, kernels: kernels, kernelFolder: kernelFolder, modules: modules, git: git, good: good, bad: bad,
                                    config: config, makeJobs: makeJobs, repeats: `repeat`, verifyRevert: verifyRevert, reuse: !remeasure, matrix: matrix)
        let bisect = try await Bisect.prepare(request, environment: context.engine)
        let candidates = bisect.candidates
        context.print("\(candidates.count) \(bisect.mode == .git ? "commits" : "kernels"), oldest first:\n")
        for candidate in candidates { context.print("  \(candidate.index). \(candidate.label)  \(candidate.detail)\n") }

        let started = Date()
        let outDirectory = try OutputDirectory.prepare(out, relativeTo: context.workingDirectory, startedAt: started)
        let engine = try await RunEngine.start(environment: context.engine, hosts: try global.hosts(bisect.matrix), needsVirtualMachines: true,
                                               defaults: bisect.matrix.defaults, outDirectory: outDirectory, started: started, logger: logger)
        let search = bisect.search(engine: engine, out: outDirectory, environment: context.engine)
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

