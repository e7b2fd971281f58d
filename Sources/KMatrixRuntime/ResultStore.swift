import Foundation
import KMatrixCore
import Logging

/// What a run's results record about the run itself.
public struct RunMetadataSource: Sendable {
    public var runID: String
    public var started: Date
    public var matrix: String
    public var versions: HypervisorVersions?
    public var accelerator: Accelerator?

    public init(runID: String, started: Date, matrix: String, versions: HypervisorVersions?, accelerator: Accelerator?) {
        self.runID = runID
        self.started = started
        self.matrix = matrix
        self.versions = versions
        self.accelerator = accelerator
    }

    public func metadata(now: Date = Date()) -> RunMetadata {
        RunMetadata(
            id: runID, started: started, durationS: now.timeIntervalSince(started),
            host: ProcessInfo.processInfo.hostName,
            hostKernel: (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown",
            libvirt: versions?.libvirt, qemu: versions?.qemu, accelerator: accelerator?.rawValue,
            matrix: matrix, kmatrixVersion: KMatrixVersion.current)
    }
}

public enum KMatrixVersion {
    public static let current = "0.2.0"
}

/// A run's output folder: `results.json` rewritten after every guest (an interrupted or crashed
/// run keeps what it measured), and at the end the reports (matrix.md, results.xml,
/// report.html). A write
/// that fails is reported, never swallowed: the first failure is kept and `finish` throws it.
public actor ResultStore {
    public let directory: URL
    let scenarios: [String]
    let metadata: RunMetadataSource
    let logger: Logger
    var cells: [CellResult] = []
    var firstFailure: KMatrixError?

    public init(directory: URL, scenarios: [String], metadata: RunMetadataSource, logger: Logger) {
        self.directory = directory
        self.scenarios = scenarios
        self.metadata = metadata
        self.logger = logger
    }

    /// Saves a guest's cells at once.
    public func add(_ newCells: [CellResult]) {
        cells += newCells
        do {
            try write(result(cells), reports: false)
        } catch {
            let failure = KMatrixError.from(error, whileDoing: "writing \(directory.path)/results.json")
            logger.error("\(failure.message)")
            if firstFailure == nil { firstFailure = failure }
        }
    }

    /// Writes the final results and reports; throws if this or any earlier write failed.
    @discardableResult
    public func finish(_ allCells: [CellResult]) throws -> RunResult {
        let final = result(allCells)
        do {
            try write(final, reports: true)
        } catch {
            throw KMatrixError.from(error, whileDoing: "writing the results to \(directory.path)")
        }
        if let firstFailure { throw firstFailure }
        return final
    }

    /// The result so far, even when it could not be written.
    public func current(_ allCells: [CellResult]) -> RunResult { result(allCells) }

    /// Cells in the order given (the orchestrator's final list is in guest, scenario order); a
    /// guest whose row was relabelled by its kernel appears under its new name.
    func result(_ cells: [CellResult]) -> RunResult {
        var rows: [String] = []
        var seen: Set<String> = []
        for cell in cells where seen.insert(cell.guest).inserted { rows.append(cell.guest) }
        let unordered = RunResult(run: metadata.metadata(), guests: rows, scenarios: scenarios, cells: cells)
        let ordered = rows.flatMap { guest in scenarios.compactMap { unordered.cell(guest: guest, scenario: $0) } }
        return RunResult(run: metadata.metadata(), guests: rows, scenarios: scenarios, cells: ordered)
    }

    func write(_ result: RunResult, reports: Bool) throws {
        try result.encoded().write(to: directory.appendingPathComponent("results.json"), options: .atomic)
        guard reports else { return }
        try Self.writeReports(result, to: directory)
    }

    /// The reports of a finished (or merged) run beside its results.json.
    public static func writeReports(_ result: RunResult, to directory: URL) throws {
        try Data(Report.markdown(result).utf8).write(to: directory.appendingPathComponent("matrix.md"), options: .atomic)
        // Rendered from the results alone: no path a cell names is opened (docs/architecture.md, "Input").
        try Data(JUnitReport.xml(result).utf8).write(to: directory.appendingPathComponent("results.xml"), options: .atomic)
        try Data(HTMLReport.render(result).utf8).write(to: directory.appendingPathComponent("report.html"), options: .atomic)
    }
}

/// The output folder of a run: `--out DIR`, or `results/<UTC timestamp>/` with `results/latest`
/// pointing at it. Problems are found before anything boots: an unusable folder is the user's
/// input (exit 2), too little free space there is infrastructure (exit 3).
public enum OutputDirectory {
    public static let minimumFreeBytes: Int64 = 16 << 20

    public static func prepare(_ requested: String?, relativeTo base: URL, startedAt date: Date) throws -> URL {
        let manager = FileManager.default
        let url: URL
        if let requested {
            url = FilePaths.resolve(requested, against: base)
        } else {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "UTC")
            formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
            url = base.appendingPathComponent("results").appendingPathComponent(formatter.string(from: date)).standardizedFileURL
        }
        var isDirectory: ObjCBool = false
        if manager.fileExists(atPath: url.path, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw KMatrixError(.invalidInput, "--out \(url.path) is a file, not a directory")
        }
        do {
            try FilePaths.createDirectory(url.appendingPathComponent("console"))
        } catch let error as KMatrixError {
            throw KMatrixError(.invalidInput, "cannot use \(url.path) for the results: \(error.message)", cause: error)
        }
        let probe = url.appendingPathComponent(".kmatrix-write-test")
        guard manager.createFile(atPath: probe.path, contents: Data()) else {
            throw KMatrixError(.invalidInput, "cannot write into \(url.path) (read-only or full)")
        }
        try? manager.removeItem(at: probe)
        // A full filesystem still takes an empty file, then loses every console log and report:
        // the guests would wait out their deadlines on consoles libvirt cannot write (scripts/soak).
        if let free = (try? manager.attributesOfFileSystem(forPath: url.path))?[.systemFreeSize] as? NSNumber,
           free.int64Value < minimumFreeBytes {
            throw KMatrixError(.io, "\(url.path) has only \(free.int64Value / 1024) KiB free; a run needs \(minimumFreeBytes >> 20) MiB there "
                + "for its console logs, results and reports: free some space there or pass another --out")
        }
        if requested == nil {
            let latest = url.deletingLastPathComponent().appendingPathComponent("latest")
            try? manager.removeItem(at: latest)
            try? manager.createSymbolicLink(atPath: latest.path, withDestinationPath: url.lastPathComponent)
        }
        return url
    }
}
