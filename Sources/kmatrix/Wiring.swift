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
    let cleanup: @Sendable () async -> Void

    static func make(guests: [GuestSpec], layout: Layout, uri: String, context: RunContext, commands: any CommandRunner, logger: Logger) async throws -> RunWiring {
        let host = HostGuestLauncher(commands: commands)
        let needsVMs = guests.contains { $0.image != .host }
        guard needsVMs else {
            return RunWiring(launcher: { _ in host }, defaultJobs: 1, versions: nil, accelerator: nil, cleanup: {})
        }
        let machines: VirtualMachineWiring
        do {
            machines = try await VirtualMachineWiring.make(layout: layout, uri: uri, context: context, commands: commands, logger: logger)
        } catch {
            // The host guest still runs; every VM guest's cells carry the reason.
            logger.error("\(error)")
            let unreachable = UnreachableHypervisor(error: error, images: ImageStore(layout: layout, commands: commands))
            return RunWiring(launcher: { guest -> any GuestLauncher in guest.image == .host ? host : unreachable },
                             defaultJobs: 1, versions: nil, accelerator: nil, cleanup: {})
        }
        return RunWiring(
            launcher: { guest -> any GuestLauncher in guest.image == .host ? host : machines.launcher },
            defaultJobs: machines.defaultJobs, versions: machines.versions, accelerator: machines.accelerator,
            cleanup: machines.cleanup)
    }
}

/// Stands in for the VM launcher when libvirt cannot be reached: each guest fails with why.
struct UnreachableHypervisor: GuestLauncher {
    let error: any Error
    let images: ImageStore

    /// An absent image is still `skipped` with its instructions, as in any run.
    func unavailableReason(_ guest: GuestSpec, context: RunContext) async -> String? {
        VirtualMachineLauncher.missingImageReason(guest, images: images)
    }

    func launch(_ guest: GuestSpec, context: RunContext, progress: @escaping @Sendable (GuestPhase) -> Void) async throws -> any GuestSession {
        throw error
    }
}

struct RunMetadataBuilder: Sendable {
    let runID: String
    let started: Date
    let matrix: String
    let wiring: RunWiring

    func metadata(now: Date = Date()) -> RunMetadata {
        RunMetadata(
            id: runID, started: started, durationS: now.timeIntervalSince(started),
            host: ProcessInfo.processInfo.hostName,
            hostKernel: (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown",
            libvirt: wiring.versions?.libvirt, qemu: wiring.versions?.qemu, accelerator: wiring.accelerator?.rawValue,
            matrix: matrix, kmatrixVersion: KMatrixVersion.current)
    }
}

enum KMatrixVersion {
    static let current = "0.1.0"
}

/// Writes results.json after every guest, so an interrupted or crashed run keeps what it measured.
actor ResultWriter {
    let directory: URL
    let scenarios: [String]
    let metadata: RunMetadataBuilder
    var cells: [CellResult] = []

    init(directory: URL, scenarios: [String], metadata: RunMetadataBuilder) {
        self.directory = directory
        self.scenarios = scenarios
        self.metadata = metadata
    }

    func add(_ newCells: [CellResult]) {
        cells += newCells
        try? write(result(cells), reports: false)
    }

    func finish(_ allCells: [CellResult]) -> RunResult {
        let final = result(allCells)
        do {
            try write(final, reports: true)
        } catch {
            FileHandle.standardError.write(Data("kmatrix: cannot write results to \(directory.path): \(error)\n".utf8))
        }
        return final
    }

    /// Cells in the order given (the orchestrator's final list is in guest, scenario order); a
    /// guest whose row was relabelled by its kernel appears under its new name.
    func result(_ cells: [CellResult]) -> RunResult {
        var rows: [String] = []
        for cell in cells where !rows.contains(cell.guest) { rows.append(cell.guest) }
        let ordered = rows.flatMap { guest in
            scenarios.compactMap { scenario in cells.first { $0.guest == guest && $0.scenario == scenario } }
        }
        return RunResult(run: metadata.metadata(), guests: rows, scenarios: scenarios, cells: ordered)
    }

    func write(_ result: RunResult, reports: Bool) throws {
        try result.encoded().write(to: directory.appendingPathComponent("results.json"), options: .atomic)
        guard reports else { return }
        try Data(Report.markdown(result).utf8).write(to: directory.appendingPathComponent("matrix.md"), options: .atomic)
        try Data(JUnitReport.xml(result, consoleTail: Self.consoleTail).utf8).write(to: directory.appendingPathComponent("results.xml"), options: .atomic)
    }

    /// The last lines of a guest's console, for failure messages in JUnit.
    static func consoleTail(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let lines = String(decoding: data, as: UTF8.self).split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
        return lines.suffix(30).joined(separator: "\n")
    }
}
