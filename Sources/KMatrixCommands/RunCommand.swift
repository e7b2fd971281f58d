import ArgumentParser
import Foundation
import KMatrixCore
import KMatrixEngine
import KMatrixRuntime
import Logging
import Synchronization

/// `kmatrix run`: every input is checked before the first boot (a mistake is exit 2 with one
/// sentence); then guests boot, scenarios run, and results are written as they come.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Boot every guest of the matrix, run the scenarios, write the result matrix.")

    @Option(help: "The matrix file (default: ./matrix.yaml if present, else the embedded default matrix).")
    var matrix: String?

    @Option(name: .customLong("guest"), help: "Run only this guest (repeatable).")
    var guests: [String] = []

    @Option(name: .customLong("scenario"), help: "Run only this scenario (repeatable).")
    var scenarios: [String] = []

    @Option(name: .customLong("kernel"), help: ArgumentHelp(
        "Also boot this kernel with kmatrix's rootfs (repeatable): a .deb, a .rpm or a bzImage; split packages comma-separated; NAME= names the row.",
        valueName: "[name=]file[,file…]"))
    var kernels: [String] = []

    @Option(help: "Modules directory (/lib/modules/<release> or its parent) for the bare bzImages given with --kernel.")
    var modules: String?

    @Option(name: .customLong("consumer"), help: "Also run this consumer of the matrix's `consumers:` in the --kernel guests (repeatable).")
    var consumers: [String] = []

    @Option(parsing: .unconditional, help: "Guests booted at once (default: from cores and memory).")
    var jobs: Int?

    @Option(name: .customLong("max-vcpus"), parsing: .unconditional, help: "Most guest vCPUs running at once (default: no limit beyond --jobs).")
    var maxVCPUs: Int?

    @Option(parsing: .unconditional, help: "Run each cell this many times (1-100); disagreeing runs make the cell flaky.")
    var `repeat` = 1

    @Option(help: "Compare with this earlier results.json at the end; exit 1 on a regression.")
    var baseline: String?

    @Option(help: "Output directory (default: results/<UTC timestamp>/, with results/latest pointing at it).")
    var out: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("Run only shard K of N: a deterministic share of the guests, balanced by boot cost (CI engines).", valueName: "K/N"))
    var shard: String?

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if let jobs, !(1...64).contains(jobs) { throw ValidationError("--jobs must be from 1 to 64") }
        if let maxVCPUs, !(1...1024).contains(maxVCPUs) { throw ValidationError("--max-vcpus must be from 1 to 1024") }
        if !(1...100).contains(`repeat`) { throw ValidationError("--repeat must be from 1 to 100") }
        if let shard, Shard.parse(shard) == nil { throw ValidationError("--shard must be K/N with 1 ≤ K ≤ N, e.g. 2/4") }
    }

    func run() async throws {
        let context = CommandContext.current
        let logger = Logs.logger(verbose: global.verbose, context: context)
        let request = RunRequest(matrix: matrix, guests: guests, scenarios: scenarios, kernels: kernels, modules: modules, shard: shard, baseline: baseline,
                                 consumers: consumers)
        let plan = try await RunPlan.make(request, environment: context.engine)
        let started = Date()
        let outDirectory = try OutputDirectory.prepare(out, relativeTo: context.workingDirectory, startedAt: started)
        let engine = try await RunEngine.start(environment: context.engine, hosts: try global.hosts(plan.matrix), needsVirtualMachines: plan.guests.contains { $0.image != .host },
                                               defaults: plan.matrix.defaults, outDirectory: outDirectory, consumers: plan.consumers, started: started,
                                               logger: logger)
        logger.notice("run \(engine.runID): \(plan.guests.count) guests × \(plan.scenarios.count) scenarios → \(outDirectory.path)")
        let store = ResultStore(directory: outDirectory, scenarios: plan.scenarios.map(\.name), metadata: engine.metadata(matrix: plan.matrixName),
                                logger: logger)
        let (repeats, jobs, maxVCPUs) = (`repeat`, self.jobs, self.maxVCPUs)
        let interrupted = InterruptFlag()
        let task = Task {
            await engine.run(matrix: plan.matrix, guests: plan.guests, scenarios: plan.scenarios, repeats: repeats, jobs: jobs, maxVCPUs: maxVCPUs) { cells in
                await store.add(cells)
            }
        }
        let interrupts = context.interrupts {
            interrupted.set()
            task.cancel()
        }
        let cells = await task.value
        interrupts.disarm()
        await engine.close()

        var writeFailure: KMatrixError?
        let result: RunResult
        do {
            result = try await store.finish(cells)
        } catch {
            writeFailure = KMatrixError.from(error)
            result = await store.current(cells)
        }
        context.print(Report.table(result))
        if let writeFailure { throw writeFailure }
        context.printError("results: \(outDirectory.path)/results.json, matrix.md, results.xml, report.html\n")
        if interrupted.isSet {
            throw KMatrixExit(.infrastructure, "the run was interrupted; results.json holds what was measured")
        }
        var status = result.exitStatus
        var sentence = result.statusSentence
        if let baseline = plan.baseline {
            let comparison = Comparison.compare(base: baseline, new: result)
            context.printError(comparison.text)
            if comparison.hasRegression && status == .allMatched {
                status = .differs
                sentence = "a cell regressed against the baseline \(SafeText.terminal(plan.baselineName ?? ""))"
            }
        }
        throw KMatrixExit(status, sentence)
    }
}

/// Set once, from a signal handler.
final class InterruptFlag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}
