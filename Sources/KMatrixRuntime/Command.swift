import Foundation
import Subprocess
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// What a finished external command left behind.
public struct CommandResult: Sendable {
    /// Exit code, or 128 + signal number when the process was killed.
    public var status: Int32
    public var stdout: Data
    public var stderr: String

    public var succeeded: Bool { status == 0 }
    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }

    public init(status: Int32, stdout: Data, stderr: String) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
    }
}

/// Runs programs. The system implementation uses swift-subprocess; tests substitute fakes.
public protocol CommandRunner: Sendable {
    func run(_ executable: String, _ arguments: [String], input: Data?, timeout: Duration?) async throws -> CommandResult
}

extension CommandRunner {
    public func run(_ executable: String, _ arguments: [String], timeout: Duration? = nil) async throws -> CommandResult {
        try await run(executable, arguments, input: nil, timeout: timeout)
    }

    /// Runs and throws a `KMatrixError` carrying stderr when the command fails.
    @discardableResult
    public func checked(_ executable: String, _ arguments: [String], input: Data? = nil, timeout: Duration? = nil) async throws -> CommandResult {
        let result = try await run(executable, arguments, input: input, timeout: timeout)
        guard result.succeeded else {
            let detail = result.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            throw KMatrixError(.command, "\(executable) \(arguments.joined(separator: " ")) exited with \(result.status)\(detail.isEmpty ? "" : ": \(detail)")")
        }
        return result
    }
}

public struct SystemCommandRunner: CommandRunner {
    /// Caps collected output; the probe prints a few KiB, consoles are read from files instead.
    static let outputLimit = 16 << 20

    public init() {}

    public func run(_ executable: String, _ arguments: [String], input: Data?, timeout: Duration?) async throws -> CommandResult {
        let executableReference: Executable = executable.contains("/") ? .path(FilePath(executable)) : .name(executable)
        var options = PlatformOptions()
        // A command that outlives its timeout gets SIGTERM, then SIGKILL two seconds later.
        options.teardownSequence = [.gracefulShutDown(allowedDurationToNextStep: .seconds(2))]
        let configuration = Configuration(executable: executableReference, arguments: Arguments(arguments), environment: .inherit, platformOptions: options)
        let operation: @Sendable () async throws -> CommandResult = {
            let result = try await Subprocess.run(
                configuration,
                input: .data(input ?? Data()),
                output: .data(limit: Self.outputLimit),
                error: .string(limit: Self.outputLimit))
            let status: Int32 = switch result.terminationStatus {
            case .exited(let code): code
            case .signaled(let signal): 128 + signal
            }
            return CommandResult(status: status, stdout: result.standardOutput, stderr: result.standardError)
        }
        guard let timeout else { return try await operation() }
        return try await withTimeout(timeout, what: "\(executable) \(arguments.prefix(3).joined(separator: " "))", operation)
    }
}
