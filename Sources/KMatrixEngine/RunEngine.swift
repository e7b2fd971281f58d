import Foundation
import KMatrixCore
import KMatrixRuntime
import Logging

/// What every command that boots guests shares (`run`, `bisect`): the run's id and folder,
/// its command runner, the probe, the image catalog, the hypervisor wiring, and one orchestrator
/// call per batch of guests. `close` releases everything; the run folder goes with it.
public final class RunEngine: Sendable {
    public let runID: String
    let started: Date
    let registration: RunRegistration
    let run: RunDirectory
    let commands: any CommandRunner
    let checkout: Checkout
    let images: ImageCatalog
    let runContext: RunContext
    let wiring: RunWiring
    let logger: Logger
    let makeProgress: @Sendable () -> any ProgressReporter

    /// `consumers` are built (or found up to date) before anything boots: a package the suite
    /// lacks is the user's mistake, reported before the first guest starts.
    public static func start(environment: EngineEnvironment, hosts: [HostEntry], needsVirtualMachines: Bool, defaults: Defaults, outDirectory: URL,
                             consumers: [ConsumerSpec] = [], started: Date, logger: Logger) async throws -> RunEngine {
        let runID = RunIdentifier.make(at: started)
        let checkout = try environment.checkout()
        let commands = environment.commands(runID)
        let owner = try environment.processes.currentOwner()
        // Registered before anything is created, so a run killed at any later point is known
        // to every kmatrix on this machine as dead (docs/architecture.md, "Cleanup").
        let registration = try environment.registry.register(runID: runID, owner: owner, cache: environment.cache.root)
        let run: RunDirectory
        do {
            run = try RunDirectory(cache: environment.cache.root, runID: runID)
        } catch {
            registration.remove()
            throw error
        }
        do {
            // A killed run's keys, namespaces and processes go before this one adds its own.
            _ = await environment.collector(commands: commands, logger: logger).collectDeadRuns(keeping: runID, hypervisors: [])
            let probe = try await checkout.ensureProbe(commands: commands)
            var runContext = RunContext(runID: runID, owner: owner, outputDirectory: outDirectory, probe: probe, defaults: defaults, ledger: registration,
                                        clock: environment.clock)
            let images = ImageCatalog(checkout: checkout, cache: environment.cache, commands: commands)
            for consumer in consumers {
                let started = environment.clock.now
                let bundle = try await images.consumerBundle(consumer)
                runContext.consumers[consumer.name] = bundle
                let contents = (bundle.identity.packages.map { "\($0.name) \($0.version)" } + bundle.identity.files.map(\.path)).joined(separator: ", ")
                logger.notice("consumer \(consumer.name): \(contents) (layer \(bundle.layerBytes >> 10) KiB, ready in \(Int((environment.clock.now - started).seconds)) s)")
            }
            let wiring = try await RunWiring.make(needsVirtualMachines: needsVirtualMachines, uris: hosts, run: run, images: images,
                                                  context: runContext, commands: commands, environment: environment, logger: logger)
            return RunEngine(runID: runID, started: started, registration: registration, run: run, commands: commands, checkout: checkout,
                             images: images, runContext: runContext, wiring: wiring, logger: logger, progress: environment.progress)
        } catch {
            run.remove()
            registration.remove()
            throw error
        }
    }

    private init(runID: String, started: Date, registration: RunRegistration, run: RunDirectory, commands: any CommandRunner, checkout: Checkout,
                 images: ImageCatalog, runContext: RunContext, wiring: RunWiring, logger: Logger,
                 progress: @escaping @Sendable () -> any ProgressReporter) {
        self.runID = runID
        self.started = started
        self.registration = registration
        self.run = run
        self.commands = commands
        self.checkout = checkout
        self.images = images
        self.runContext = runContext
        self.wiring = wiring
        self.logger = logger
        self.makeProgress = progress
    }

    public func metadata(matrix: String) -> RunMetadataSource {
        RunMetadataSource(runID: runID, started: started, matrix: matrix, versions: wiring.versions, accelerator: wiring.accelerator)
    }

    /// Boots `guests` — the host guest here, VM guests spread over the run's hosts, each host
    /// booting at most its `jobs` (or `jobs` each, when given) at once — runs `scenarios`, tears
    /// everything down. Cells come back in the order of `guests`.
    public func run(matrix: Matrix, guests: [GuestSpec], scenarios: [Scenario], repeats: Int, jobs: Int? = nil, maxVCPUs: Int? = nil,
             progress: (any ProgressReporter)? = nil, guestFinished: @escaping @Sendable ([CellResult]) async -> Void = { _ in }) async -> [CellResult] {
        let reporter = progress ?? makeProgress()
        let hostGuests = guests.filter { $0.image == .host }
        let machines = guests.filter { $0.image != .host }
        let defaults = matrix.defaults
        let shares = HostAssignment.assign(machines, to: wiring.hosts.map { HostCapacity(name: $0.name, jobs: jobs ?? $0.jobs, freeMemoryMiB: $0.freeMemoryMiB) },
                                           memoryMiB: { $0.memoryMiB ?? defaults.memoryMiB })
        var batches: [(guests: [GuestSpec], launcher: any GuestLauncher, jobs: Int)] = []
        if !hostGuests.isEmpty { batches.append((hostGuests, wiring.host, 1)) }
        for (index, share) in shares.enumerated() where !share.isEmpty {
            let host = wiring.hosts[index]
            if wiring.hosts.count > 1 { logger.notice("\(host.name): \(share.map(\.name).joined(separator: ", "))") }
            batches.append((share, host.launcher, jobs ?? host.jobs))
        }
        let context = runContext
        let logger = self.logger
        // A kernel set's rows fetch and build their images ahead of their boots, a few at once:
        // downloads overlap boots instead of queuing behind them (each build is shared with the
        // guest that asks for it later).
        let images = self.images
        let ahead = machines.compactMap { guest -> KernelSource? in
            if case .kernel(let source) = guest.image, case .archive(let kernel) = source, kernel.unavailable == nil { return source }
            return nil
        }
        let prefetch = Task {
            await withTaskGroup(of: Void.self) { group in
                var pending = ahead[...]
                for _ in 0..<min(Self.prefetchWidth, pending.count) {
                    let source = pending.removeFirst()
                    group.addTask { _ = try? await images.kernelImage(source, probe: context.probe) }
                }
                while await group.next() != nil, !Task.isCancelled, let source = pending.popFirst() {
                    group.addTask { _ = try? await images.kernelImage(source, probe: context.probe) }
                }
            }
        }
        defer { prefetch.cancel() }
        // Each guest yields one cell per scenario that applies to it, in its batch's order: cells
        // go back to their guests by position (a row relabelled with its kernel keeps its guest's place).
        let byGuest = await withTaskGroup(of: [String: [CellResult]].self) { group in
            for batch in batches {
                let launcher = batch.launcher
                let orchestrator = Orchestrator(jobs: batch.jobs, vcpuBudget: maxVCPUs, progress: reporter, logger: logger) { _ in launcher }
                group.addTask {
                    let cells = await orchestrator.run(matrix: matrix, guests: batch.guests, scenarios: scenarios, context: context,
                                                       repeats: repeats, guestFinished: guestFinished)
                    var byGuest: [String: [CellResult]] = [:]
                    var start = 0
                    for guest in batch.guests {
                        let count = scenarios.filter { $0.applies(to: guest) }.count
                        byGuest[guest.name] = Array(cells[min(start, cells.count)..<min(start + count, cells.count)])
                        start += count
                    }
                    return byGuest
                }
            }
            var all: [String: [CellResult]] = [:]
            for await part in group { all.merge(part) { first, _ in first } }
            return all
        }
        reporter.finish()
        return guests.flatMap { byGuest[$0.name] ?? [] }
    }

    /// Kernel images fetched and built ahead of their guests at once: downloads are I/O, builds
    /// one core each; more would only take cores from the guests booting meanwhile.
    static let prefetchWidth = 3

    public func close() async {
        await wiring.cleanup(runID: runID, owner: runContext.owner)
        run.remove()
        registration.remove()
    }
}
