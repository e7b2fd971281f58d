import Foundation
import KMatrixCore
import KMatrixRuntime

/// results.json files named directly, or found in folders of runs.
public enum ResultFiles {
    public static func find(_ paths: [String], environment: EngineEnvironment) throws -> [URL] {
        var found: [URL] = []
        var seen = Set<String>()
        func add(_ url: URL) {
            let real = url.resolvingSymlinksInPath().path
            if seen.insert(real).inserted { found.append(url) }
        }
        for path in paths {
            let url = environment.path(path)
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

    /// Several results.json, read and checked on every core at once (30 nights of a kernel set's
    /// table took 0.7 s of reading one after another), in the order given; the first bad file
    /// in that order is the error.
    public static func loadAll(_ urls: [URL], environment: EngineEnvironment) async throws -> [RunResult] {
        try await withThrowingTaskGroup(of: (Int, Result<RunResult, any Error>).self) { group in
            for (index, url) in urls.enumerated() {
                group.addTask { (index, Result { try load(url.path, environment: environment) }) }
            }
            var results = [Result<RunResult, any Error>?](repeating: nil, count: urls.count)
            for try await (index, result) in group { results[index] = result }
            return try results.map { try ($0 ?? .failure(KMatrixError(.io, "a results file was not read"))).get() }
        }
    }

    /// A results.json, or exit 2 with why it cannot be one.
    public static func load(_ path: String, environment: EngineEnvironment) throws -> RunResult {
        let url = environment.path(path)
        let shown = SafeText.terminal(path)
        let identity = try FileIdentity.regularFile(url, what: "results file")
        guard identity.size <= 256 << 20 else { throw KMatrixError(.invalidInput, "\(shown) is \(identity.size) bytes, too large for a results.json") }
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw KMatrixError(.invalidInput, "cannot read \(shown): \(KMatrixError.from(error).message)", cause: error)
        }
        return try ResultReader.read(data, name: shown)
    }
}
