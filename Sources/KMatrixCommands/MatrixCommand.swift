import ArgumentParser
import KMatrixCore

/// `kmatrix matrix`: the embedded default matrix, to start a matrix.yaml from.
struct MatrixCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "matrix", abstract: "Print the embedded default matrix.yaml.")

    func run() throws {
        CommandContext.current.print(DefaultMatrix.text)
    }
}
