import ArgumentParser
@preconcurrency import Dispatch
import Foundation
import KMatrixCore
import KMatrixRuntime
import Logging
import Synchronization

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot every guest of the matrix, run the scenarios, write the result matrix.")

    @Option(help: "The matrix file (default: ./matrix.yaml if present, else the embedded default matrix).")
    var matrix: String?

    @Option(name: .customLong("guest"), help: "Run only this guest (repeatable).")
    var guests: [String] = []

    @Option(name: .customLong("scenario"), help: "Run only this scenario (repeatable).")
    var scenarios: [String] = []

    @Option(name: .customLong("kernel"), help: ArgumentHelp(
        "Also boot this kernel with kmatrix's rootfs (repeatable): a .deb, a .rpm or a bzImage; split packages comma-separated.",
        valueName: "file[,file…]"))
    var kernels: [String] = []

    @Option(help: "Modules directory (/lib/modules/<release> or its parent) for the bare bzImages given with --kernel.")
    var modules: String?

    @Option(help: "Guests booted at once (default: from cores and memory).")
    var jobs: Int?

    @Option(help: "Run each cell this many times; disagreeing runs make the cell flaky.")
    var `repeat` = 1

    @Option(help: "Compare with this earlier results.json at the end; exit 1 on a regression.")
    var baseline: String?

    @Option(help: "Output directory (default: results/<UTC timestamp>/, with results/latest pointing at it).")
    var out: String?

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1") }
        if `repeat` < 1 { throw ValidationError("--repeat must be at least 1") }
    }

    func run() async throws {
        let logger = global.makeLogger()
        let loaded = try loadMatrix(matrix)
        let matrix = loaded.matrix
        let commands = SystemCommandRunner()
        let layout = try Layout.discover()

        var kernelGuests: [GuestSpec] = []
        for argument in kernels {
            kernelGuests.append(try KernelUnderTest.guest(for: argument, modules: modules, existing: matrix.guests + kernelGuests))
        }
        let selectedGuests = try select(guests, from: matrix.guests.map(\.name), what: "guest").compactMap { name in
            matrix.guests.first { $0.name == name }
        }
        // --kernel alone validates those kernels; with --guest the named matrix guests run beside them.
        let chosenGuests = (guests.isEmpty ? (kernels.isEmpty ? matrix.guests : []) : selectedGuests) + kernelGuests
        let chosenScenarios = scenarios.isEmpty
            ? matrix.scenarios
            : try select(scenarios, from: Scenario.catalogue.map(\.name), what: "scenario").compactMap(Scenario.named)

        let started = Date()
        let runID = RunIdentifier.make(at: started)
        let outDirectory = try OutputDirectory.prepare(out, startedAt: started)
        logger.notice("run \(runID): \(chosenGuests.count) guests × \(chosenScenarios.count) scenarios → \(outDirectory.path)")

        let probe = try await layout.ensureProbe(commands: commands)
        let context = RunContext(runID: runID, outputDirectory: outDirectory, probe: probe, defaults: matrix.defaults)
        let wiring = try await RunWiring.make(guests: chosenGuests, layout: layout, uri: global.connect, context: context, commands: commands, logger: logger)
        let progress: any ProgressReporter = standardErrorIsTerminal() ? LiveProgress() : PlainProgress()
        let orchestrator = Orchestrator(jobs: jobs ?? wiring.defaultJobs, progress: progress, logger: logger, launcher: wiring.launcher)

        let metadata = RunMetadataBuilder(runID: runID, started: started, matrix: loaded.name, wiring: wiring)
        let writer = ResultWriter(directory: outDirectory, scenarios: chosenScenarios.map(\.name), metadata: metadata)
        let task = Task {
            await orchestrator.run(matrix: matrix, guests: chosenGuests, scenarios: chosenScenarios, context: context, repeats: `repeat`) { cells in
                await writer.add(cells)
            }
        }
        let interrupts = InterruptHandler { task.cancel() }
        let cells = await task.value
        interrupts.disarm()
        await wiring.cleanup()
        progress.finish()

        let result = await writer.finish(cells)
        print(Report.table(result), terminator: "")
        FileHandle.standardError.write(Data("results: \(outDirectory.path)/results.json, matrix.md, results.xml\n".utf8))
        var status = result.exitStatus
        if let baseline {
            let comparison = try CompareCommand.compare(baseline: baseline, with: result)
            FileHandle.standardError.write(Data(comparison.text.utf8))
            if comparison.hasRegression && status == .allMatched { status = .differs }
        }
        if task.isCancelled { status = .infrastructure }
        throw ExitCode(status.rawValue)
    }

    func select(_ requested: [String], from known: [String], what: String) throws -> [String] {
        for name in requested where !known.contains(name) {
            throw ValidationError("unknown \(what) \"\(name)\"; known: \(known.joined(separator: ", "))")
        }
        return known.filter(requested.contains)
    }
}

/// Short, sortable, unique per run: names namespaces, domains and overlays.
enum RunIdentifier {
    static func make(at date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "HHmmss"
        let suffix = String(UInt32.random(in: 0..<0x10000), radix: 16)
        return formatter.string(from: date) + suffix
    }
}

enum OutputDirectory {
    static func prepare(_ requested: String?, startedAt date: Date) throws -> URL {
        let manager = FileManager.default
        if let requested {
            let url = URL(fileURLWithPath: requested).standardizedFileURL
            try manager.createDirectory(at: url.appendingPathComponent("console"), withIntermediateDirectories: true)
            return url
        }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        let results = URL(fileURLWithPath: "results").standardizedFileURL
        let url = results.appendingPathComponent(formatter.string(from: date))
        try manager.createDirectory(at: url.appendingPathComponent("console"), withIntermediateDirectories: true)
        let latest = results.appendingPathComponent("latest")
        try? manager.removeItem(at: latest)
        try? manager.createSymbolicLink(atPath: latest.path, withDestinationPath: url.lastPathComponent)
        return url
    }
}

/// First Ctrl-C cancels the run (guests are torn down, results written); a second one exits at once.
final class InterruptHandler: @unchecked Sendable {
    // Sources are created once in init and only cancelled afterwards; DispatchSource is thread-safe.
    private let sources: [any DispatchSourceSignal]

    init(onInterrupt: @escaping @Sendable () -> Void) {
        var sources: [any DispatchSourceSignal] = []
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            let count = Counter()
            source.setEventHandler {
                if count.increment() == 1 {
                    FileHandle.standardError.write(Data("\nkmatrix: interrupted; tearing down guests (Ctrl-C again to exit at once)\n".utf8))
                    onInterrupt()
                } else {
                    exit(130)
                }
            }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    func disarm() {
        for source in sources { source.cancel() }
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }

    final class Counter: Sendable {
        private let value = Mutex(0)
        func increment() -> Int { value.withLock { $0 += 1; return $0 } }
    }
}
