import ArgumentParser
import Foundation
import KMatrixCore
import KMatrixEngine
import KMatrixRuntime

/// `kmatrix gc`: what dead runs left, and stale cached images. Safe while other runs live:
/// only what is proven dead goes (docs/architecture.md, "Cleanup").
struct GCCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Remove what dead runs left (domains, namespaces, processes, keys, overlays, remote volumes) and stale cached images.")

    @Option(parsing: .unconditional, help: "Also remove images built for --kernel files that no run used for this many days (0-3650).")
    var unusedDays = 30
    @Option(help: "The matrix whose hosts: to clean too (default: ./matrix.yaml if present).") var matrix: String?

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard (0...3650).contains(unusedDays) else { throw ValidationError("--unused-days must be a whole number from 0 to 3650") }
    }

    func run() async throws {
        let context = CommandContext.current
        let logger = Logs.logger(verbose: global.verbose, context: context)
        let commands = context.commands(nil)
        let hosts = try global.hosts(try MatrixLoading.load(matrix, environment: context.engine).matrix)
        let collector = context.engine.collector(commands: commands, logger: logger)
        var hypervisors: [any Hypervisor] = []
        for host in hosts {
            do {
                hypervisors.append(try await context.connect(host.uri, context.cache.root))
            } catch {
                context.printError("kmatrix: \(KMatrixError.from(error).message); skipping its domains\n")
            }
        }
        let report = await collector.collectDeadRuns(hypervisors: hypervisors)
        var removed = report.removed.map(\.description)
        // A live run of this cache may be building or booting an image right now.
        let cacheRoot = context.cache.root.standardizedFileURL.path
        let sharing = collector.liveRuns().filter { $0.cache?.standardizedFileURL.path == cacheRoot }
        if let first = sharing.first {
            context.printError("kmatrix: run \(first.runID) uses this cache, so cached images are not pruned now; run gc again once it ends\n")
        } else if let checkout = try? context.checkout() {
            removed += ImageCatalog(checkout: checkout, cache: context.cache, commands: commands).prune(unusedDays: unusedDays)
        }
        for entry in removed { context.print("removed \(entry)\n") }
        for note in report.notes { context.print("left \(note)\n") }
        context.print(removed.isEmpty ? "nothing to remove\n" : "removed \(removed.count) leftover(s)\n")
    }
}
