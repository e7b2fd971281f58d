import ArgumentParser
import Foundation
import KMatrixCore
import KMatrixEngine
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
        let baseRun = try ResultFiles.load(base, environment: context.engine)
        let newRun = try ResultFiles.load(new, environment: context.engine)
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

}
