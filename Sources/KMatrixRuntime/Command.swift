import Foundation
import KMatrixCore
import Subprocess
import SystemPackage

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

/// Where a long-running command's stderr goes instead of memory.
public enum ErrorStream: Sendable {
    /// This process's stderr: the user watches an image build happen.
    case passthrough
    /// A log file, overwritten, for reading later.
    case file(URL)
}

/// Runs programs. The system implementation uses swift-subprocess; tests substitute fakes.
public protocol CommandRunner: Sendable {
    func run(_ executable: String, _ arguments: [String], input: Data?, timeout: Duration?) async throws -> CommandResult
    /// Like `run`, with stderr streamed to `errors` as it is written (the result's `stderr` is empty).
    func run(_ executable: String, _ arguments: [String], timeout: Duration?, errors: ErrorStream) async throws -> CommandResult
}

extension CommandRunner {
    /// Fakes need not stream: they hand the collected stderr over at the end.
    public func run(_ executable: String, _ arguments: [String], timeout: Duration?, errors: ErrorStream) async throws -> CommandResult {
        var result = try await run(executable, arguments, input: nil, timeout: timeout)
        switch errors {
        // A runner that does not stream (a fake) shows nothing: only the real one owns a terminal.
        case .passthrough: break
        case .file(let url): try Data(result.stderr.utf8).write(to: url)
        }
        result.stderr = ""
        return result
    }

    public func run(_ executable: String, _ arguments: [String], timeout: Duration? = nil) async throws -> CommandResult {
        try await run(executable, arguments, input: nil, timeout: timeout)
    }

    /// Runs and throws a `KMatrixError` carrying the end of stderr when the command fails.
    @discardableResult
    public func checked(_ executable: String, _ arguments: [String], input: Data? = nil, timeout: Duration? = nil) async throws -> CommandResult {
        let result = try await run(executable, arguments, input: input, timeout: timeout)
        guard result.succeeded else {
            let detail = String(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines).suffix(600))
            throw KMatrixError(.command, "\(executable) \(arguments.prefix(4).joined(separator: " ")) exited with \(result.status)\(detail.isEmpty ? "" : ": \(detail)")")
        }
        return result
    }
}

/// Runs programs through swift-subprocess, each in a process group of its own: cancelling the
/// task (a timeout, Ctrl-C) stops the whole group — a recipe's `make` and `gcc` with it — with
/// SIGTERM, then SIGKILL. Every child also carries `KMATRIX_RUN=<run id>` in its environment,
/// inherited by its own children: that marker is how `kmatrix gc` finds processes a SIGKILLed
/// run left behind (docs/architecture.md, "Cleanup").
public struct SystemCommandRunner: CommandRunner {
    /// Caps collected output; the probe prints a few KiB, consoles are read from files instead.
    static let outputLimit = 16 << 20
    public static let runMarkerVariable = "KMATRIX_RUN"

    let runMarker: String?
    let clock: WaitClock

    public init(runMarker: String?, clock: WaitClock) {
        self.runMarker = runMarker
        self.clock = clock
    }

    func configuration(_ executable: String, _ arguments: [String]) -> Configuration {
        let executableReference: Executable = executable.contains("/") ? .path(FilePath(executable)) : .name(executable)
        var options = PlatformOptions()
        options.processGroupID = 0
        options.teardownSequence = [.gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: .seconds(2))]
        var environment = Environment.inherit
        if let runMarker { environment = environment.updating([.init(stringLiteral: Self.runMarkerVariable): runMarker]) }
        return Configuration(executable: executableReference, arguments: Arguments(arguments), environment: environment, platformOptions: options)
    }

    public func run(_ executable: String, _ arguments: [String], timeout: Duration?, errors: ErrorStream) async throws -> CommandResult {
        let configuration = configuration(executable, arguments)
        let operation: @Sendable () async throws -> CommandResult = {
            let descriptor: FileDescriptor
            let close: Bool
            switch errors {
            case .passthrough:
                descriptor = .standardError
                close = false
            case .file(let url):
                descriptor = try FileDescriptor.open(FilePath(url.path), .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite, .groupRead, .otherRead])
                close = true
            }
            let result = try await Self.spawning(executable) {
                try await Subprocess.run(
                    configuration, input: .none, output: .data(limit: Self.outputLimit),
                    error: .fileDescriptor(descriptor, closeAfterSpawningProcess: close))
            }
            return CommandResult(status: Self.status(result.terminationStatus), stdout: result.standardOutput, stderr: "")
        }
        guard let timeout else { return try await operation() }
        return try await withTimeout(timeout, clock: clock, what: Self.describe(executable, arguments), operation)
    }

    public func run(_ executable: String, _ arguments: [String], input: Data?, timeout: Duration?) async throws -> CommandResult {
        let configuration = configuration(executable, arguments)
        let operation: @Sendable () async throws -> CommandResult = {
            let result = try await Self.spawning(executable) {
                try await Subprocess.run(
                    configuration,
                    input: .data(input ?? Data()),
                    output: .data(limit: Self.outputLimit),
                    error: .string(limit: Self.outputLimit))
            }
            return CommandResult(status: Self.status(result.terminationStatus), stdout: result.standardOutput, stderr: result.standardError)
        }
        guard let timeout else { return try await operation() }
        return try await withTimeout(timeout, clock: clock, what: Self.describe(executable, arguments), operation)
    }

    /// swift-subprocess's own errors (program not found, spawn failed) as ours.
    static func spawning<T>(_ executable: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as KMatrixError {
            throw error
        } catch is CancellationError {
            throw KMatrixError(.interrupted, "interrupted while \(executable) ran")
        } catch {
            if Task.isCancelled { throw KMatrixError(.interrupted, "interrupted while \(executable) ran", cause: error) }
            throw KMatrixError(.command, "cannot run \(executable): \(error)", cause: error)
        }
    }

    static func describe(_ executable: String, _ arguments: [String]) -> String {
        ([executable] + arguments.prefix(3)).joined(separator: " ")
    }

    static func status(_ termination: TerminationStatus) -> Int32 {
        switch termination {
        case .exited(let code): code
        case .signaled(let signal): 128 + signal
        }
    }
}
