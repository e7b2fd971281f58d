import ArgumentParser
import Foundation
import KMatrixCore
import KMatrixRuntime
import Logging

@main
struct Main {
    /// ArgumentParser's usage errors exit 64; the contract (DESIGN.md §3) says 2.
    static func main() async {
        do {
            var command = try KMatrix.parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as MatrixError {
            FileHandle.standardError.write(Data("kmatrix: \(error)\n".utf8))
            exit(ExitStatus.invalidInput.rawValue)
        } catch let error as KMatrixError {
            FileHandle.standardError.write(Data("kmatrix: \(error)\n".utf8))
            exit(error.code == .invalidInput ? ExitStatus.invalidInput.rawValue : ExitStatus.infrastructure.rawValue)
        } catch {
            let code = KMatrix.exitCode(for: error)
            if code == .success {
                KMatrix.exit(withError: error)
            }
            let message = KMatrix.fullMessage(for: error)
            if code.rawValue == 64 || code == .validationFailure {
                FileHandle.standardError.write(Data("\(message)\n".utf8))
                exit(ExitStatus.invalidInput.rawValue)
            }
            KMatrix.exit(withError: error)
        }
    }
}

struct KMatrix: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kmatrix",
        abstract: "Which kernels drop NFQUEUE packets when a fail-open consumer's socket overflows, which re-inject them, and does the rmem mitigation work.",
        subcommands: [Run.self, Doctor.self, Images.self, GC.self, Compare.self, PrintMatrix.self])
}

struct GlobalOptions: ParsableArguments {
    @Option(name: .customLong("connect"), help: "libvirt URI.")
    var connect = "qemu:///system"

    @Flag(name: .shortAndLong, help: "Log debug details (probe output, libvirt XML) to stderr.")
    var verbose = false

    func makeLogger() -> Logger {
        let level: Logger.Level = verbose ? .debug : .notice
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: "kmatrix")
    }
}
