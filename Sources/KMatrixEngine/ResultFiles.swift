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
