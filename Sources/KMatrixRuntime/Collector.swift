import Foundation
import KMatrixCore
import Logging

/// Removes what dead runs left behind, and only what is proven to be a dead run's
/// (docs/architecture.md, "Cleanup"). A run is dead when its registry lock is free; a domain is
/// a dead run's when its metadata names an owner of this boot that no longer runs. What cannot
/// be proven dead — a marked process whose run was never registered here, a domain another
/// machine started, a namespace without the run's prefix — is left alone, whatever it looks
/// like. Plus cached images no run needs any more.
public struct Collector: Sendable {
    let cache: URL
    let registry: RunRegistry
    let commands: any CommandRunner
    let processes: ProcessTable
    let logger: Logger
    /// Where `ip netns` keeps its namespaces.
    let namespaces: URL

    public init(cache: URL, registry: RunRegistry, commands: any CommandRunner, processes: ProcessTable, logger: Logger, namespaces: URL) {
        self.cache = cache
        self.registry = registry
        self.commands = commands
        self.processes = processes
        self.logger = logger
        self.namespaces = namespaces
    }

    public struct Removal: Sendable, Equatable, CustomStringConvertible {
        public enum Kind: String, Sendable { case domain, namespace, process, runFolder = "run folder", record = "run record", image, volume }
        public var kind: Kind
        public var name: String
        public var description: String { "\(kind.rawValue) \(name)" }
    }

    /// What a collection did, and what it left because it could not prove it dead or reach it.
    public struct Report: Sendable {
        public var removed: [Removal] = []
        /// Sentences about things left alone on purpose, for `gc` to print.
        public var notes: [String] = []
    }

    /// Runs that are alive now (their registry lock is held), of every cache.
    public func liveRuns(except runID: String? = nil) -> [RegistryRecord] {
        registry.records().filter { $0.alive && $0.runID != runID }
    }

    /// Everything of runs that are dead (all but `keeping`, the caller's own run), locally and
    /// on `hypervisors`.
    public func collectDeadRuns(keeping: String? = nil, hypervisors: [any Hypervisor]) async -> Report {
        var report = Report()
        let dead = registry.records().filter { !$0.alive && $0.runID != keeping }
        let reachable = Set(hypervisors.map(\.hostName))
        for record in dead {
            var finished = true
            let processes = await self.processes.terminate(runID: record.runID)
            if processes.found > 0 { report.removed.append(Removal(kind: .process, name: "\(processes.found - processes.remaining) of run \(record.runID)")) }
            if processes.remaining > 0 {
                finished = false
                report.notes.append("\(processes.remaining) process(es) of dead run \(record.runID) did not end on SIGKILL; the next gc tries again")
            }
            for namespace in record.namespaces where namespaceExists(namespace) {
                if (try? await commands.checked("ip", ["netns", "del", namespace], timeout: .seconds(10))) != nil {
                    report.removed.append(Removal(kind: .namespace, name: namespace))
                } else {
                    finished = false
                }
            }
            // The run's folder in its own cache, which need not be this one.
            if let folder = record.cache.map({ RunDirectory.runsDirectory(cache: $0).appendingPathComponent(record.runID) }),
               OwnedFolder.problem(folder.deletingLastPathComponent()) == nil, OwnedFolder.problem(folder) == nil,
               OwnedFolder.isDead(folder, lockName: RunDirectory.lockName) == true, OwnedFolder.removeWhole(folder) {
                report.removed.append(Removal(kind: .runFolder, name: record.runID))
            }
            for host in record.remoteHosts where !reachable.contains(host.hostName) {
                finished = false
                report.notes.append("dead run \(record.runID) may have left volumes on \(host.hostName): `kmatrix gc --connect \(SafeText.terminal(host.text))` removes them")
            }
            if finished, OwnedFolder.removeWhole(record.url) {
                report.removed.append(Removal(kind: .record, name: record.runID))
            }
        }
        for folder in RunDirectory.deadFolders(cache: cache, keeping: keeping) where !report.removed.contains(Removal(kind: .runFolder, name: folder.lastPathComponent)) && OwnedFolder.removeWhole(folder) {
            report.removed.append(Removal(kind: .runFolder, name: folder.lastPathComponent))
        }
        for (parent, lockName) in [(registry.root, RunRegistration.lockName), (RunDirectory.runsDirectory(cache: cache), RunDirectory.lockName)]
        where OwnedFolder.problem(parent) == nil {
            for folder in OwnedFolder.abandonedHiddenFolders(in: parent, lockName: lockName) {
                try? FileManager.default.removeItem(at: folder)
                report.removed.append(Removal(kind: .runFolder, name: folder.lastPathComponent))
            }
        }
        let deadRuns = Set(dead.map(\.runID))
        for hypervisor in hypervisors {
            let suffix = hypervisor.hostName == "local" ? "" : " on \(hypervisor.hostName)"
            for domain in (try? await hypervisor.kmatrixDomains()) ?? [] where domain.runID != keeping {
                switch provenDead(domain) {
                case true?:
                    if (try? await hypervisor.destroyDomain(named: domain.name)) != nil {
                        report.removed.append(Removal(kind: .domain, name: domain.name + suffix))
                    }
                case false?:
                    continue
                case nil:
                    report.notes.append("domain \(SafeText.terminal(domain.name))\(suffix) was not started by a run of this machine's current boot, "
                        + "so it is left alone: its own machine's gc removes it, and libvirt destroys it when that run's connection closes")
                }
            }
            for file in await hypervisor.collectRunFiles(ofRuns: deadRuns) {
                report.removed.append(Removal(kind: .volume, name: file + suffix))
            }
        }
        for removal in report.removed { logger.info("removed \(removal)") }
        return report
    }

    /// true: the domain's owner ran in this boot and is gone; false: it still runs; nil: not
    /// provable from here (no owner in its metadata, or another boot or machine started it).
    func provenDead(_ domain: DomainRecord) -> Bool? {
        guard let owner = domain.owner, let alive = processes.isAlive(owner) else { return nil }
        return !alive
    }

    func namespaceExists(_ name: String) -> Bool {
        var info = stat()
        // `ip netns add` makes a plain file there (a bind mount of the namespace); a link is not one.
        return lstat(namespaces.appendingPathComponent(name).path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }
}
