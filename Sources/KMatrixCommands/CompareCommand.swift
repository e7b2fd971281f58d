import ArgumentParser
import Foundation
import KMatrixCore
import KMatrixRuntime

/// `kmatrix compare BASE NEW`: what changed between two runs; exit 1 on a regression.
struct CompareCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare", abstract: "Show what changed between two results.json files; exit 1 on a regression.")

    @Argument(help: "The earlier results.json.") var base: String
    @Argument(help: "The newer results.json.") var new: String
    @Option(parsing: .unconditional, help: "Relative change of a count that is reported (0 to 1; 0.10 = 10 %).")
    var tolerance = Comparison.defaultTolerance

    func validate() throws {
        guard tolerance.isFinite, (0...1).contains(tolerance) else { throw ValidationError("--tolerance must be a number from 0 to 1") }
    }

    func run() async throws {
        let context = CommandContext.current
        let comparison = Comparison.compare(base: try Self.load(base, context: context), new: try Self.load(new, context: context), tolerance: tolerance)
        context.print(comparison.text)
        throw ExitCode(comparison.hasRegression ? ExitStatus.differs.rawValue : ExitStatus.allMatched.rawValue)
    }

    /// A results.json, or exit 2 with why it cannot be one.
    static func load(_ path: String, context: CommandContext) throws -> RunResult {
        let url = context.path(path)
        let identity = try FileIdentity.regularFile(url, what: "results file")
        guard identity.size <= 256 << 20 else { throw KMatrixError(.invalidInput, "\(path) is \(identity.size) bytes, too large for a results.json") }
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw KMatrixError(.invalidInput, "cannot read \(path): \(KMatrixError.from(error).message)", cause: error)
        }
        do {
            return try RunResult.decode(data)
        } catch {
            throw KMatrixError(.invalidInput, "\(path) is not a kmatrix results.json (\(ResultDecoding.describe(error)))", cause: error)
        }
    }
}

/// One phrase for a JSON decoding failure, without Foundation's dump.
enum ResultDecoding {
    static func describe(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "unreadable JSON" }
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context): return "missing \(path(context).isEmpty ? "" : path(context) + ".")\(key.stringValue)"
        case .typeMismatch(_, let context), .valueNotFound(_, let context): return "unexpected value at \(path(context))"
        case .dataCorrupted(let context): return context.codingPath.isEmpty ? "not JSON" : "bad value at \(path(context))"
        @unknown default: return "unreadable JSON"
        }
    }
}
