import Foundation
import KMatrixCore
import KMatrixRuntime
import Logging

/// What every command that boots guests shares (`run`, `bisect`): the run's id and folder,
/// its command runner, the probe, the image catalog, the hypervisor wiring, and one orchestrator
/// call per batch of guests. `close` releases everything; the run folder goes with it.
final class RunEngine: Sendable {
    let runID: String
    let started: Date
    let run: RunDirectory
    let commands: any CommandRunner
    let checkout: Checkout
    let images: ImageCatalog
    let runContext: RunContext
    let wiring: RunWiring
    let logger: Logger
    let isTerminal: Bool

    static func start(context: CommandContext, uri: String, needsVirtualMachines: Bool, defaults: Defaults, outDirectory: URL,
                      started: Date, logger: Logger) async throws -> RunEngine {
        let runID = RunIdentifier.make(at: started)
        let checkout = try context.checkout()
        let commands = context.commands(runID)
        let run = try RunDirectory(cache: context.cache.root, runID: runID)
        do {
            // A killed run's keys, namespaces and processes go before this one adds its own.
            _ = await Collector(cache: context.cache.root, commands: commands, logger: logger).collectDeadRuns(keeping: runID, hypervisor: nil)
            let probe = try await checkout.ensureProbe(commands: commands)
            let runContext = RunContext(runID: runID, outputDirectory: outDirectory, probe: probe, defaults: defaults, ledger: run)
            let images = ImageCatalog(checkout: checkout, cache: context.cache, commands: commands)
            let wiring = try await RunWiring.make(needsVirtualMachines: needsVirtualMachines, uri: uri, run: run, images: images,
                                                  context: runContext, commands: commands, environment: context, logger: logger)
            return RunEngine(runID: runID, started: started, run: run, commands: commands, checkout: checkout, images: images,
                             runContext: runContext, wiring: wiring, logger: logger, isTerminal: context.standardErrorIsTerminal)
        } catch {
            run.remove()
            throw error
        }
    }

    private init(runID: String, started: Date, run: RunDirectory, commands: any CommandRunner, checkout: Checkout, images: ImageCatalog,
                 runContext: RunContext, wiring: RunWiring, logger: Logger, isTerminal: Bool) {
        self.runID = runID
        self.started = started
        self.run = run
        self.commands = commands
        self.checkout = checkout
        self.images = images
        self.runContext = runContext
        self.wiring = wiring
        self.logger = logger
        self.isTerminal = isTerminal
    }

    func metadata(matrix: String) -> RunMetadataSource {
        RunMetadataSource(runID: runID, started: started, matrix: matrix, versions: wiring.versions, accelerator: wiring.accelerator)
    }

    /// Boots `guests` (at most `jobs` at once), runs `scenarios`, tears everything down.
    func run(matrix: Matrix, guests: [GuestSpec], scenarios: [Scenario], repeats: Int, jobs: Int? = nil, maxVCPUs: Int? = nil,
             progress: (any ProgressReporter)? = nil, guestFinished: @escaping @Sendable ([CellResult]) async -> Void = { _ in }) async -> [CellResult] {
        let reporter = progress ?? (isTerminal ? LiveProgress() : PlainProgress())
        let orchestrator = Orchestrator(jobs: jobs ?? wiring.defaultJobs, vcpuBudget: maxVCPUs, progress: reporter, logger: logger,
                                        launcher: wiring.launcher)
        let cells = await orchestrator.run(matrix: matrix, guests: guests, scenarios: scenarios, context: runContext, repeats: repeats,
                                           guestFinished: guestFinished)
        reporter.finish()
        return cells
    }

    func close() async {
        await wiring.cleanup()
        run.remove()
    }
}
