import Foundation
import KMatrixCore
import KMatrixRuntime
import Logging

/// The shared parts of a run that boots VMs: one libvirt connection, the run's SSH key, the
/// accelerator decision, a scratch directory for overlays. `cleanup` removes what the run left.
struct VirtualMachineWiring: Sendable {
    let launcher: VirtualMachineLauncher
    let defaultJobs: Int
    let versions: HypervisorVersions
    let accelerator: Accelerator
    let cleanup: @Sendable () async -> Void

    static func make(layout: Layout, uri: String, context: RunContext, commands: any CommandRunner, logger: Logger) async throws -> VirtualMachineWiring {
        let hypervisor: LibvirtHypervisor
        do {
            hypervisor = try await LibvirtHypervisor(uri: uri)
        } catch {
            throw KMatrixError(.hostNotReady, "cannot connect to libvirt at \(uri): \(error); start it with scripts/host-setup.sh (or check `kmatrix doctor`)")
        }
        let versions = try await hypervisor.versions()
        let accelerator = await AcceleratorCache(cacheDirectory: layout.cache)
            .verdict(key: AcceleratorCache.key(uri: uri, qemu: versions.qemu)) { await hypervisor.detectAccelerator() }
        logger.notice("libvirt \(versions.libvirt), QEMU \(versions.qemu), accelerator \(accelerator.rawValue)")
        let keys = try await RunKeys.create(runID: context.runID, commands: commands)
        let scratch = layout.cache.appendingPathComponent("runs").appendingPathComponent(context.runID)
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        let launcher = VirtualMachineLauncher(hypervisor: hypervisor, images: ImageStore(layout: layout, commands: commands), keys: keys,
                                              accelerator: accelerator, commands: commands, scratch: scratch)
        let runID = context.runID
        return VirtualMachineWiring(
            launcher: launcher, defaultJobs: Self.defaultJobs(), versions: versions, accelerator: accelerator,
            cleanup: {
                // Belt and braces: sessions destroy their own domains; this catches any a crash skipped.
                for name in (try? await hypervisor.kmatrixDomains(runID: runID)) ?? [] {
                    logger.warning("destroying leftover domain \(name)")
                    try? await hypervisor.destroyDomain(named: name)
                }
                try? FileManager.default.removeItem(at: scratch)
                keys.remove()
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
