import Foundation
import KMatrixCore
import KMatrixRuntime
import Logging

/// One hypervisor host of a run: its launcher (or why it cannot be reached), how many guests it
/// boots at once and how much memory it has free.
struct HostWiring: Sendable {
    let name: String
    let uri: HostURI
    let launcher: any GuestLauncher
    let jobs: Int
    let freeMemoryMiB: Int?
    let versions: HypervisorVersions?
    let accelerator: Accelerator?
    let hypervisor: (any Hypervisor)?
}

/// What a run shares: the host guest's launcher, one wiring per hypervisor host, the SSH keys.
struct RunWiring: Sendable {
    let host: HostGuestLauncher
    let hosts: [HostWiring]
    let logger: Logger

    var reachable: [HostWiring] { hosts.filter { $0.hypervisor != nil } }
    var versions: HypervisorVersions? { reachable.first?.versions }
    var accelerator: Accelerator? { reachable.first?.accelerator }
    var defaultJobs: Int { max(1, hosts.map(\.jobs).reduce(0, +)) }

    static func make(needsVirtualMachines: Bool, uris: [HostEntry], run: RunDirectory, images: ImageCatalog, context: RunContext,
                     commands: any CommandRunner, environment: EngineEnvironment, logger: Logger) async throws -> RunWiring {
        let host = HostGuestLauncher(commands: commands)
        guard needsVirtualMachines else { return RunWiring(host: host, hosts: [], logger: logger) }
        let keys = try await RunKeys.create(in: run.keysDirectory, runID: context.runID, commands: commands)
        var hosts: [HostWiring] = []
        for entry in uris {
            // Recorded before the first volume can exist there, so a gc after a crash knows where to look.
            try context.ledger.recordHost(entry.uri)
            hosts.append(await wire(entry, run: run, images: images, keys: keys, commands: commands, environment: environment, logger: logger))
        }
        return RunWiring(host: host, hosts: hosts, logger: logger)
    }

    static func wire(_ entry: HostEntry, run: RunDirectory, images: ImageCatalog, keys: RunKeys, commands: any CommandRunner,
                     environment: EngineEnvironment, logger: Logger) async -> HostWiring {
        let hypervisor: any Hypervisor
        let versions: HypervisorVersions
        do {
            hypervisor = try await environment.connect(entry.uri, run.url)
            versions = try await hypervisor.versions()
        } catch {
            // The host guest and the other hosts still run; this host's guests carry the reason.
            let failure = KMatrixError.from(error)
            logger.error("\(failure.message)")
            return HostWiring(name: entry.uri.hostName, uri: entry.uri, launcher: UnreachableHypervisor(error: failure, images: images), jobs: entry.jobs ?? 1,
                              freeMemoryMiB: nil, versions: nil, accelerator: nil, hypervisor: nil)
        }
        let accelerator = await AcceleratorCache(file: images.cache.accelerator)
            .verdict(key: AcceleratorCache.key(uri: entry.uri.text, qemu: versions.qemu)) { await hypervisor.detectAccelerator() }
        let capacity = await hypervisor.capacity()
        logger.notice("\(hypervisor.hostName): libvirt \(versions.libvirt), QEMU \(versions.qemu), accelerator \(accelerator.rawValue)")
        let machines = VirtualMachineLauncher(hypervisor: hypervisor, images: images, keys: keys, accelerator: accelerator, commands: commands,
                                              versions: versions, scratch: { [run] guest in run.scratch(for: guest) },
                                              awaitBanner: environment.awaitBanner)
        let jobs = entry.jobs ?? (hypervisor.jump == nil ? defaultJobs() : defaultJobs(cores: capacity.cpus ?? 1, freeMiB: capacity.freeMemoryMiB))
        return HostWiring(name: hypervisor.hostName, uri: entry.uri, launcher: machines, jobs: jobs, freeMemoryMiB: capacity.freeMemoryMiB,
                          versions: versions, accelerator: accelerator, hypervisor: hypervisor)
    }

    /// Guests idle most of the time after boot, so one more than the cores keeps them busy;
    /// memory caps it at one guest per GiB beyond 2 GiB for the host.
    static func defaultJobs(cores: Int = ProcessInfo.processInfo.activeProcessorCount,
                            freeMiB: Int? = Int(ProcessInfo.processInfo.physicalMemory >> 20)) -> Int {
        max(1, min(cores + 1, (freeMiB ?? 4096) / 1024 - 2))
    }

    /// Destroys what a crash of this run's sessions could have left on every host: domains of
    /// this run and this owner (another machine's run on a shared host may carry the same id).
    func cleanup(runID: String, owner: RunOwner) async {
        for host in reachable {
            guard let hypervisor = host.hypervisor else { continue }
            for domain in (try? await hypervisor.kmatrixDomains()) ?? [] where domain.runID == runID && domain.owner == owner {
                logger.warning("destroying leftover domain \(domain.name) on \(host.name)")
                try? await hypervisor.destroyDomain(named: domain.name)
            }
        }
    }
}

/// Stands in for the VM launcher when libvirt cannot be reached: each guest fails with why.
struct UnreachableHypervisor: GuestLauncher {
    let error: KMatrixError
    let images: ImageCatalog

    /// An absent image is still `skipped` with its instructions, as in any run.
    func unavailability(_ guest: GuestSpec, context: RunContext) async -> CellFailure? {
        images.unavailability(of: guest)
    }

    func launch(_ guest: GuestSpec, context: RunContext, progress: @escaping @Sendable (GuestPhase) -> Void) async throws -> any GuestSession {
        throw error
    }
}
