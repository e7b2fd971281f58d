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
        let baseRun = try Self.load(base, context: context)
        let newRun = try Self.load(new, context: context)
        if baseRun.cells.isEmpty {
            throw KMatrixError(.invalidInput, "\(SafeText.terminal(base)) holds no cells: there is nothing to compare against")
        }
        let comparison = Comparison.compare(base: baseRun, new: newRun, tolerance: tolerance)
        context.print(comparison.text)
        if let nothing = newRun.nothingTestedReason {
            // A night that measured nothing is not "no regression".
            throw KMatrixExit(.infrastructure, "\(SafeText.terminal(new)): \(nothing)")
        }
        throw KMatrixExit(comparison.hasRegression ? .differs : .allMatched)
    }

    /// A results.json, or exit 2 with why it cannot be one.
    static func load(_ path: String, context: CommandContext) throws -> RunResult {
        let url = context.path(path)
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
