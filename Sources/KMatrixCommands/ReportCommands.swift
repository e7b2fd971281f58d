import ArgumentParser
import Foundation
import KMatrixCore
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
        let files = try ResultFiles.find(paths, context: context)
        guard !files.isEmpty else { throw KMatrixError(.invalidInput, "no results.json under \(paths.joined(separator: ", "))") }
        let runs = try Merge.distinctRuns(try files.map { try CompareCommand.load($0.path, context: context) })
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

/// `kmatrix merge A.json B.json … --out DIR`: one table from runs on several machines or shards.
struct MergeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge results.json files of several machines or shards into one results.json, matrix.md, report.html and results.xml.")

    @Argument(help: "results.json files, or folders searched for them.") var paths: [String]
    @Option(help: "The output directory.") var out: String

    func run() async throws {
        let context = CommandContext.current
        let files = try ResultFiles.find(paths, context: context)
        guard files.count >= 1 else { throw KMatrixError(.invalidInput, "no results.json under \(paths.joined(separator: ", "))") }
        let runs = try Merge.distinctRuns(try files.map { try CompareCommand.load($0.path, context: context) })
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

/// results.json files named directly, or found in folders of runs.
enum ResultFiles {
    static func find(_ paths: [String], context: CommandContext) throws -> [URL] {
        var found: [URL] = []
        var seen = Set<String>()
        func add(_ url: URL) {
            let real = url.resolvingSymlinksInPath().path
            if seen.insert(real).inserted { found.append(url) }
        }
        for path in paths {
            let url = context.path(path)
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
                throw KMatrixError(.invalidInput, "\(path): no such file or directory")
            }
            guard isDirectory.boolValue else { add(url); continue }
            for file in search(url, depth: 3) { add(file) }
        }
        return found
    }

    static func search(_ directory: URL, depth: Int) -> [URL] {
        let candidate = directory.appendingPathComponent("results.json")
        if FileManager.default.fileExists(atPath: candidate.path) { return [candidate] }
        guard depth > 0 else { return [] }
        let entries = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).sorted()
        return entries.filter { !$0.starts(with: ".") }.flatMap { search(directory.appendingPathComponent($0), depth: depth - 1) }
    }
}
