import ArgumentParser
import Foundation
import KMatrixCore
import KMatrixEngine
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

    /// Every way a command ends, to one exit status from the one table (`ExitStatus`).
    static func report(_ error: any Error, context: CommandContext) -> Int32 {
        switch error {
        case let exit as KMatrixExit:
            if let sentence = exit.sentence { context.printError("kmatrix: \(sentence)\n") }
            return exit.status.rawValue
        case is KMatrixError, is MatrixError, is CancellationError:
            let error = KMatrixError.from(error)
            context.printError("kmatrix: \(error.message)\n")
            return error.exitStatus.rawValue
        default:
            // ArgumentParser's own: --help and --version are what was asked for, on stdout;
            // its usage errors are invalid input.
            let code = KMatrix.exitCode(for: error)
            let message = KMatrix.fullMessage(for: error)
            if code == .success {
                context.print(message + "\n")
                return ExitStatus.allMatched.rawValue
            }
            if code == .validationFailure {
                context.printError(message + "\n")
                return ExitStatus.invalidInput.rawValue
            }
            context.printError("kmatrix: \(KMatrixError.from(error).message)\n")
            return ExitStatus.infrastructure.rawValue
        }
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
            if case .failure(let problem) = HostURI.parse(uri) { throw ValidationError("--connect \(InputRules.quoted(uri, limit: 200)) \(problem.message)") }
        }
    }

    /// The hosts of this command: --connect, else the matrix's `hosts:`, else this machine.
    func hosts(_ matrix: Matrix?) throws -> [HostEntry] {
        if !connects.isEmpty { return try connects.map { HostEntry(uri: try HostURI.checked($0)) } }
        if let matrix, !matrix.hosts.isEmpty { return matrix.hosts }
        return [HostEntry(uri: try HostURI.checked(HostURI.localSystem))]
    }
}
