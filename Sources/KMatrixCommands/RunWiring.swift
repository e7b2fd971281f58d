import Foundation
import KMatrixCore
import KMatrixRuntime
import Logging

/// Chooses a launcher per guest kind and owns what the run shares (hypervisor, SSH keys).
struct RunWiring: Sendable {
    let launcher: Orchestrator.LauncherLookup
    let defaultJobs: Int
    let versions: HypervisorVersions?
    let accelerator: Accelerator?
    let hypervisor: (any Hypervisor)?
    let cleanup: @Sendable () async -> Void

    static func make(needsVirtualMachines: Bool, uri: String, run: RunDirectory, images: ImageCatalog, context: RunContext,
                     commands: any CommandRunner, environment: CommandContext, logger: Logger) async throws -> RunWiring {
        let host = HostGuestLauncher(commands: commands)
        guard needsVirtualMachines else {
            return RunWiring(launcher: { _ in host }, defaultJobs: 1, versions: nil, accelerator: nil, hypervisor: nil, cleanup: {})
        }
        let hypervisor: any Hypervisor
        let versions: HypervisorVersions
        do {
            hypervisor = try await environment.connect(uri, run.url)
            versions = try await hypervisor.versions()
        } catch {
            // The host guest still runs; every VM guest's cells carry the reason.
            let failure = KMatrixError.from(error)
            logger.error("\(failure.message)")
            let unreachable = UnreachableHypervisor(error: failure, images: images)
            return RunWiring(launcher: { guest -> any GuestLauncher in guest.image == .host ? host : unreachable },
                             defaultJobs: 1, versions: nil, accelerator: nil, hypervisor: nil, cleanup: {})
        }
        let accelerator = await AcceleratorCache(file: images.cache.accelerator)
            .verdict(key: AcceleratorCache.key(uri: uri, qemu: versions.qemu)) { await hypervisor.detectAccelerator() }
        logger.notice("libvirt \(versions.libvirt), QEMU \(versions.qemu), accelerator \(accelerator.rawValue)")
        let keys = try await RunKeys.create(in: run.keysDirectory, runID: context.runID, commands: commands)
        let machines = VirtualMachineLauncher(hypervisor: hypervisor, images: images, keys: keys, accelerator: accelerator, commands: commands,
                                              scratch: { [run] guest in run.scratch(for: guest) })
        let runID = context.runID
        return RunWiring(
            launcher: { guest -> any GuestLauncher in guest.image == .host ? host : machines },
            defaultJobs: Self.defaultJobs(), versions: versions, accelerator: accelerator, hypervisor: hypervisor,
            cleanup: {
                // Belt and braces: sessions destroy their own domains; this catches any a crash skipped.
                for domain in (try? await hypervisor.kmatrixDomains()) ?? [] where domain.runID == runID {
                    logger.warning("destroying leftover domain \(domain.name)")
                    try? await hypervisor.destroyDomain(named: domain.name)
                }
            })
    }

    /// Guests idle most of the time after boot, so one more than the cores keeps both busy;
    /// memory caps it at one guest per GiB beyond 2 GiB for the host.
    static func defaultJobs() -> Int {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let gib = Int(ProcessInfo.processInfo.physicalMemory >> 30)
        return max(1, min(cores + 1, gib - 2))
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
