import Foundation
import KMatrixCore
import Logging

/// Removes what killed runs left behind — and only that: domains that carry kmatrix's run
/// metadata, namespaces a dead run's ledger names, processes that carry a dead run's marker,
/// dead runs' folders (keys, overlays) — plus cached images no run needs any more
/// (docs/architecture.md, "Cleanup"). It never touches a live run's things.
public struct Collector: Sendable {
    let cache: URL
    let commands: any CommandRunner
    let processes: ProcessTable
    let logger: Logger
    /// Where `ip netns` keeps its namespaces.
    let namespaces: URL

    public init(cache: URL, commands: any CommandRunner, processes: ProcessTable = ProcessTable(), logger: Logger,
                namespaces: URL = URL(fileURLWithPath: "/run/netns")) {
        self.cache = cache
        self.commands = commands
        self.processes = processes
        self.logger = logger
        self.namespaces = namespaces
    }

    public struct Removal: Sendable, Equatable, CustomStringConvertible {
        public enum Kind: String, Sendable { case domain, namespace, process, runFolder = "run folder", image, volume }
        public var kind: Kind
        public var name: String
        public var description: String { "\(kind.rawValue) \(name)" }
    }

    /// Runs that are alive now (their lock is held).
    public func liveRuns(except runID: String? = nil) -> [RunRecord] {
        RunRecord.all(cache: cache).filter { $0.alive && $0.runID != runID }
    }

    /// Everything of runs that are no longer alive (all but `keeping`, the caller's own run).
    /// Domains go when `hypervisor` is given and their run is not alive.
    public func collectDeadRuns(keeping: String? = nil, hypervisor: (any Hypervisor)?) async -> [Removal] {
        await collectDeadRuns(keeping: keeping, hypervisors: hypervisor.map { [$0] } ?? [])
    }

    /// The same on several hypervisor hosts: each host's domains and run volumes of dead runs.
    public func collectDeadRuns(keeping: String? = nil, hypervisors: [any Hypervisor]) async -> [Removal] {
        var removed: [Removal] = []
        let records = RunRecord.all(cache: cache)
        let dead = records.filter { !$0.alive && $0.runID != keeping }
        for record in dead {
            let killed = await processes.terminate(runID: record.runID)
            if killed > 0 { removed.append(Removal(kind: .process, name: "\(killed) of run \(record.runID)")) }
            for namespace in record.namespaces where await namespaceExists(namespace) {
                if (try? await commands.checked("ip", ["netns", "del", namespace], timeout: .seconds(10))) != nil {
                    removed.append(Removal(kind: .namespace, name: namespace))
                }
            }
            try? FileManager.default.removeItem(at: record.url)
            removed.append(Removal(kind: .runFolder, name: record.runID))
        }
        // Processes whose run folder is gone altogether (another cache, a removed folder).
        let known = Set(records.map(\.runID))
        for runID in Set(processes.markedProcesses().values) where !known.contains(runID) && runID != keeping {
            let killed = await processes.terminate(runID: runID)
            if killed > 0 { removed.append(Removal(kind: .process, name: "\(killed) of run \(runID)")) }
        }
        let live = Set(records.filter(\.alive).map(\.runID)).union(keeping.map { [$0] } ?? [])
        for hypervisor in hypervisors {
            let suffix = hypervisor.hostName == "local" ? "" : " on \(hypervisor.hostName)"
            for domain in (try? await hypervisor.kmatrixDomains()) ?? [] where !live.contains(domain.runID ?? "") {
                if (try? await hypervisor.destroyDomain(named: domain.name)) != nil {
                    removed.append(Removal(kind: .domain, name: domain.name + suffix))
                }
            }
            for file in await hypervisor.collectRunFiles(keepingRuns: live) {
                removed.append(Removal(kind: .volume, name: file + suffix))
            }
        }
        for removal in removed { logger.info("removed \(removal)") }
        return removed
    }

    func namespaceExists(_ name: String) async -> Bool {
        FileManager.default.fileExists(atPath: namespaces.appendingPathComponent(name).path)
    }
}
