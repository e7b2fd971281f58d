import ArgumentParser
import Foundation
import KMatrixCore
import KMatrixRuntime

/// The command line: parses, runs one command with the given context, and turns every error
/// into one sentence on stderr and the contract's exit status (docs/architecture.md, "Errors").
public enum KMatrixCLI {
    public static func main(_ arguments: [String], context: CommandContext) async -> Int32 {
        await CommandContext.$current.withValue(context) {
            do {
                var command = try KMatrix.parseAsRoot(arguments)
                if var asyncCommand = command as? any AsyncParsableCommand {
                    try await asyncCommand.run()
                } else {
                    try command.run()
                }
                return ExitStatus.allMatched.rawValue
            } catch {
                return report(error, context: context)
            }
        }
    }

    static func report(_ error: any Error, context: CommandContext) -> Int32 {
        if let exit = error as? ExitCode { return exit.rawValue }
        if let error = error as? KMatrixError {
            context.printError("kmatrix: \(error.message)\n")
            return error.exitStatus.rawValue
        }
        if let error = error as? MatrixError {
            context.printError("kmatrix: \(error)\n")
            return ExitStatus.invalidInput.rawValue
        }
        let code = KMatrix.exitCode(for: error)
        let message = KMatrix.fullMessage(for: error)
        if code == .success {
            // --help, --version: what was asked for, on stdout.
            context.print(message + "\n")
            return 0
        }
        if code == .validationFailure || code.rawValue == 64 {
            // ArgumentParser's usage errors exit 64; the contract says 2.
            context.printError(message + "\n")
            return ExitStatus.invalidInput.rawValue
        }
        context.printError("kmatrix: \(KMatrixError.from(error).message)\n")
        return ExitStatus.infrastructure.rawValue
    }
}

struct KMatrix: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kmatrix",
        abstract: "Which kernels drop NFQUEUE packets when a fail-open consumer's socket overflows, which re-inject them, and does the rmem mitigation work.",
        version: KMatrixVersion.current,
        subcommands: [RunCommand.self, DoctorCommand.self, ImagesCommand.self, GCCommand.self, CompareCommand.self, HistoryCommand.self,
                      MergeCommand.self, BisectCommand.self, MatrixCommand.self])
}

struct GlobalOptions: ParsableArguments {
    @Option(name: .customLong("connect"), help: ArgumentHelp(
        "libvirt URI of a host to run guests on (repeatable: guests are spread over the hosts; default: matrix.yaml's hosts, else qemu:///system).",
        valueName: "uri"))
    var connects: [String] = []

    @Flag(name: .shortAndLong, help: "Log debug details (probe output, libvirt XML) to stderr.")
    var verbose = false

    func validate() throws {
        for uri in connects {
            if let problem = InputRules.textProblem(uri, limit: 1000) { throw ValidationError("--connect \(problem)") }
        }
    }

    /// The hosts of this command: --connect, else the matrix's `hosts:`, else this machine.
    func hosts(_ matrix: Matrix?) -> [HostEntry] {
        if !connects.isEmpty { return connects.map { HostEntry(uri: $0) } }
        if let matrix, !matrix.hosts.isEmpty { return matrix.hosts }
        return [HostEntry(uri: "qemu:///system")]
    }
}
