import ArgumentParser
import Foundation
import KMatrixCore
import KMatrixEngine
import KMatrixRuntime

/// `kmatrix merge A.json B.json … --out DIR`: one table from runs on several machines or shards.
struct MergeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge results.json files of several machines or shards into one results.json, matrix.md, report.html and results.xml.")

    @Argument(help: "results.json files, or folders searched for them.") var paths: [String]
    @Option(help: "The output directory.") var out: String

    func run() async throws {
        let context = CommandContext.current
        let files = try ResultFiles.find(paths, environment: context.engine)
        guard files.count >= 1 else { throw KMatrixError(.invalidInput, "no results.json under \(paths.joined(separator: ", "))") }
        let runs = try Merge.distinctRuns(try await ResultFiles.loadAll(files, environment: context.engine))
        let merged = try Merge.merge(runs)
        let directory = context.path(out)
        do {
            try FilePaths.createDirectory(directory)
            try merged.encoded().write(to: directory.appendingPathComponent("results.json"), options: .atomic)
            try ResultStore.writeReports(merged, to: directory)
        } catch {
            throw KMatrixError.from(error, whileDoing: "writing the merged results to \(directory.path)")
        }
        context.print(Report.table(merged))
        context.printError("merged \(runs.count) run\(runs.count == 1 ? "" : "s"): \(directory.path)/results.json, matrix.md, report.html, results.xml\n")
        throw KMatrixExit(merged.exitStatus, merged.statusSentence)
    }
}
