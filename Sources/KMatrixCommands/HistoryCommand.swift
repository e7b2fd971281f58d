import ArgumentParser
import Foundation
import KMatrixCore
import KMatrixEngine
import KMatrixRuntime

/// `kmatrix history PATH…`: how every cell behaved night after night.
struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "Read results.json files or folders of runs (nightly folders) and write history.html, history.md and history.json.")

    @Argument(help: "results.json files, or folders searched (three levels deep) for them.") var paths: [String]
    @Option(help: "Where the history goes (default: the working directory).") var out: String?

    func run() async throws {
        let context = CommandContext.current
        let files = try ResultFiles.find(paths, environment: context.engine)
        guard !files.isEmpty else { throw KMatrixError(.invalidInput, "no results.json under \(paths.joined(separator: ", "))") }
        let runs = try Merge.distinctRuns(try await ResultFiles.loadAll(files, environment: context.engine))
        let history = HistoryBuilder.build(runs)
        let directory = out.map(context.path) ?? context.workingDirectory
        do {
            try FilePaths.createDirectory(directory)
            try Data(history.html().utf8).write(to: directory.appendingPathComponent("history.html"), options: .atomic)
            try Data(history.markdown().utf8).write(to: directory.appendingPathComponent("history.md"), options: .atomic)
            try history.json().write(to: directory.appendingPathComponent("history.json"), options: .atomic)
        } catch {
            throw KMatrixError.from(error, whileDoing: "writing the history to \(directory.path)")
        }
        context.print(history.markdown())
        context.printError("history of \(runs.count) run\(runs.count == 1 ? "" : "s"): \(directory.path)/history.html, history.md, history.json\n")
        if runs.allSatisfy({ $0.nothingTestedReason != nil }) {
            throw KMatrixExit(.infrastructure, "none of the \(runs.count) run\(runs.count == 1 ? "" : "s") tested anything: there is no history to show")
        }
    }
}
