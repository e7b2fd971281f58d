import Foundation

/// Reads a results.json kmatrix did not necessarily write (another machine's, a CI artifact),
/// checking it completely before anything uses it (docs/architecture.md, "Input"): JSON first,
/// then bounds on every value — numbers finite and of a size kmatrix computes with, strings of
/// bounded length without control characters — then the model, then what the model's values
/// must satisfy (a run id that is a name, counts that are not negative). A file that fails says
/// where, in one sentence; nothing later meets an `Int.min` or a `1e300`.
public enum ResultReader {
    /// Numbers beyond ±2^53 are not exact in JSON's doubles, and no count or time kmatrix writes
    /// comes near them: a larger one is not a measurement.
    public static let largestNumber = 9_007_199_254_740_992.0
    public static let longestString = 64 << 10
    /// A console tail keeps its line breaks; no other string has any.
    static let multiLineKeys: Set<String> = ["console_tail", "reason", "message", "finding", "log_tail"]

    public static func read(_ data: Data, name: String) throws -> RunResult {
        let tree: Any
        do {
            tree = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw KMatrixError(.invalidInput, "\(name) is not a kmatrix results.json (not JSON)", cause: error)
        }
        if let problem = problem(in: tree, path: "") {
            throw KMatrixError(.invalidInput, "\(name) is not a kmatrix results.json (\(problem))")
        }
        if let object = tree as? [String: Any], let schema = object["schema"] as? NSNumber,
           !RunResult.readableSchemas.contains(schema.intValue) {
            throw KMatrixError(.invalidInput, "\(name) has schema \(schema.intValue); this kmatrix reads schema "
                + "\(RunResult.readableSchemas.lowerBound) to \(RunResult.readableSchemas.upperBound)"
                + (schema.intValue > RunResult.currentSchema ? " (it was written by a newer kmatrix)" : ""))
        }
        let result: RunResult
        do {
            result = try RunResult.decode(data)
        } catch {
            throw KMatrixError(.invalidInput, "\(name) is not a kmatrix results.json (\(describe(error)))", cause: error)
        }
        if let problem = modelProblem(result) {
            throw KMatrixError(.invalidInput, "\(name) is not a kmatrix results.json (\(problem))")
        }
        return result
    }

    /// The first value out of bounds, with its path (`cells[3].sent`), or nil.
    static func problem(in value: Any, path: String) -> String? {
        switch value {
        case let object as [String: Any]:
            for key in object.keys.sorted() {
                guard key.utf8.count <= 64, !key.unicodeScalars.contains(where: SafeText.isUnsafe) else {
                    return "a key at \(path.isEmpty ? "the top" : path) is not a plain name"
                }
                if let problem = problem(in: object[key] as Any, path: path.isEmpty ? key : "\(path).\(key)") { return problem }
            }
        case let array as [Any]:
            for (offset, element) in array.enumerated() {
                if let problem = problem(in: element, path: "\(path)[\(offset)]") { return problem }
            }
        case let string as String:
            guard string.utf8.count <= longestString else { return "\(path) is longer than \(longestString) bytes" }
            let key = path.split(separator: ".").last.map { String($0.prefix { $0 != "[" }) } ?? ""
            let multiLine = multiLineKeys.contains(key)
            if string.unicodeScalars.contains(where: { InputRules.isControl($0) && !(multiLine && ($0 == "\n" || $0 == "\t")) }) {
                return "\(path) holds control characters"
            }
        case let number as NSNumber:
            // JSON's true and false arrive as NSNumber too; they are never out of range.
            let double = number.doubleValue
            guard double.isFinite, abs(double) <= largestNumber else {
                return "\(path): \(InputRules.quoted(number.stringValue, limit: 40)) is out of range (at most 2^53 in size)"
            }
        default:
            break
        }
        return nil
    }

    /// What the decoded model must satisfy beyond its types.
    static func modelProblem(_ result: RunResult) -> String? {
        if let problem = InputRules.runIDProblem(result.run.id) { return "run.id \(InputRules.quoted(result.run.id)) \(problem)" }
        for source in result.run.sources ?? [] {
            if let problem = InputRules.runIDProblem(source.id) { return "run.sources: id \(InputRules.quoted(source.id)) \(problem)" }
            if source.durationS < 0 { return "run.sources: a duration is negative" }
        }
        if result.run.durationS < 0 { return "run.duration_s is negative" }
        for (offset, guest) in result.guests.enumerated() where guest.isEmpty || guest.contains("\n") {
            return "guests[\(offset)] is not a row name"
        }
        for (offset, cell) in result.cells.enumerated() {
            let path = "cells[\(offset)]"
            if cell.guest.isEmpty || cell.scenario.isEmpty { return "\(path) names no row or scenario" }
            if [cell.guest, cell.scenario, cell.kernel ?? "", cell.distro ?? ""].contains(where: { $0.contains("\n") || $0.contains("\t") }) {
                return "\(path) has a name that spans lines"
            }
            if cell.sent < 0 || cell.received < 0 || cell.lost < 0 || cell.enobufs < 0 { return "\(path) has a negative count" }
            if cell.durationS < 0 { return "\(path).duration_s is negative" }
            if let consumer = cell.consumer {
                if let problem = InputRules.nameProblem(consumer.name) { return "\(path).consumer.name \(InputRules.quoted(consumer.name)) \(problem)" }
                let observed = consumer.observed
                if consumer.payloadBytes < 0 || (observed?.held ?? 0) < 0 || (observed?.passedWhileStalled ?? 0) < 0 {
                    return "\(path).consumer has a negative count"
                }
            }
        }
        return nil
    }

    /// One phrase for a JSON decoding failure, without Foundation's dump.
    public static func describe(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "unreadable JSON" }
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context): return "missing \(path(context).isEmpty ? "" : path(context) + ".")\(key.stringValue)"
        case .typeMismatch(_, let context), .valueNotFound(_, let context): return "unexpected value at \(path(context))"
        case .dataCorrupted(let context): return context.codingPath.isEmpty ? "a value of the wrong kind" : "bad value at \(path(context))"
        @unknown default: return "unreadable JSON"
        }
    }
}
