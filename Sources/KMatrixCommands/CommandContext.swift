import Foundation
import KMatrixCore
import KMatrixEngine
import KMatrixLibvirt
import KMatrixRuntime
import Logging
import Synchronization

/// Everything a command touches outside itself, injected (docs/architecture.md, "CLI"): the
/// working directory, environment, output streams, the command runner, the way to reach a
/// hypervisor, the run registry, /proc and /run/netns, the clock every wait reads, and signal
/// handling. The executable passes the real ones (`system()`); tests pass a temporary world and
/// capture the streams. The task-local default is a context that fails when touched, so no code
/// path and no test reaches the machine through a context nobody gave it.
public struct CommandContext: Sendable {
    public var workingDirectory: URL
    public var environment: [String: String]
    public var home: URL
    /// The running binary, for finding the checkout from `.build/…/kmatrix`.
    public var executable: URL?
    /// The raw streams. Commands print through `print`/`printError`, which make any text safe
    /// for a terminal; only a live progress display writes its own control sequences here.
    public var standardOutput: @Sendable (String) -> Void
    public var standardError: @Sendable (String) -> Void
    public var standardErrorIsTerminal: Bool
    /// A command runner whose children carry `runMarker` (nil outside a run).
    public var commands: @Sendable (_ runMarker: String?) -> any CommandRunner
    /// Opens a hypervisor connection (libvirt), with a scratch folder for the accelerator probe.
    public var connect: @Sendable (_ uri: HostURI, _ scratch: URL) async throws -> any Hypervisor
    /// The machine-wide run registry every kmatrix here shares (docs/architecture.md, "Cleanup").
    public var registry: RunRegistry
    /// /proc, for run owners and marked processes.
    public var processes: ProcessTable
    /// Where `ip netns` keeps network namespaces (/run/netns).
    public var namespaces: URL
    /// What every wait reads (docs/architecture.md, "Waiting").
    public var clock: WaitClock
    /// Waits for an SSH server's banner on a local forward (nil: log in without looking).
    public var awaitBanner: (@Sendable (_ port: Int, _ within: Duration) async -> Bool)?
    /// Installs Ctrl-C/SIGTERM handling for a run; the returned value disarms it.
    public var interrupts: @Sendable (_ onInterrupt: @escaping @Sendable () -> Void) -> any InterruptDisarming

    @TaskLocal public static var current = CommandContext.unconfigured

    public init(workingDirectory: URL, environment: [String: String], home: URL, executable: URL?,
                standardOutput: @escaping @Sendable (String) -> Void, standardError: @escaping @Sendable (String) -> Void,
                standardErrorIsTerminal: Bool, commands: @escaping @Sendable (String?) -> any CommandRunner,
                connect: @escaping @Sendable (HostURI, URL) async throws -> any Hypervisor, registry: RunRegistry, processes: ProcessTable,
                namespaces: URL, clock: WaitClock, awaitBanner: (@Sendable (Int, Duration) async -> Bool)?,
                interrupts: @escaping @Sendable (@escaping @Sendable () -> Void) -> any InterruptDisarming) {
        self.workingDirectory = workingDirectory
        self.environment = environment
        self.home = home
        self.executable = executable
        self.standardOutput = standardOutput
        self.standardError = standardError
        self.standardErrorIsTerminal = standardErrorIsTerminal
        self.commands = commands
        self.connect = connect
        self.registry = registry
        self.processes = processes
        self.namespaces = namespaces
        self.clock = clock
        self.awaitBanner = awaitBanner
        self.interrupts = interrupts
    }

    /// This process's world.
    public static func system() -> CommandContext {
        // A remote host's libvirt connection and the ssh pipes behind it can close under a write
        // when that host dies; with SIGPIPE's default the whole run would die with it, losing
        // every other host's results. Ignored, the write fails with EPIPE and only that host's
        // cells become errors. Children get the default back: swift-subprocess resets signals.
        signal(SIGPIPE, SIG_IGN)
        let home = FileManager.default.homeDirectoryForCurrentUser
        let clock = WaitClock(ContinuousClock())
        // A reader that went away (`kmatrix matrix | head`) must not stop a run: the results
        // folder, not the terminal, is what a run exists to fill.
        let standardError: @Sendable (String) -> Void = { try? FileHandle.standardError.write(contentsOf: Data($0.utf8)) }
        return CommandContext(
            workingDirectory: URL(fileURLWithPath: FileManager.default.currentDirectoryPath),
            environment: ProcessInfo.processInfo.environment,
            home: home,
            executable: CommandLine.arguments.first.map { URL(fileURLWithPath: $0) },
            standardOutput: { try? FileHandle.standardOutput.write(contentsOf: Data($0.utf8)) },
            standardError: standardError,
            standardErrorIsTerminal: KMatrixRuntime.standardErrorIsTerminal(),
            commands: { SystemCommandRunner(runMarker: $0, clock: clock) },
            connect: { uri, scratch in try await LibvirtHypervisor(uri: uri, scratch: scratch, commands: SystemCommandRunner(runMarker: nil, clock: clock), clock: clock) },
            registry: RunRegistry.machineWide(home: home),
            processes: ProcessTable(proc: URL(fileURLWithPath: "/proc"), clock: clock),
            namespaces: URL(fileURLWithPath: "/run/netns"),
            clock: clock,
            awaitBanner: { await SSHBanner.wait(port: $0, within: $1, clock: clock) },
            interrupts: { SignalInterrupts(onInterrupt: $0, notify: standardError) })
    }

    /// The context nobody configured: every action it offers stops the program with a sentence
    /// naming the mistake, and its paths lead nowhere. `KMatrixCLI.main` always sets one.
    public static let unconfigured: CommandContext = {
        @Sendable func touched(_ what: String) -> Never {
            fatalError("CommandContext.current.\(what) was used outside KMatrixCLI.main: pass a context (CommandContext.system() or a test's)")
        }
        let nowhere = URL(fileURLWithPath: "/nonexistent/kmatrix-unconfigured-context")
        return CommandContext(
            workingDirectory: nowhere, environment: [:], home: nowhere, executable: nil,
            standardOutput: { _ in touched("standardOutput") }, standardError: { _ in touched("standardError") },
            standardErrorIsTerminal: false, commands: { _ in touched("commands") }, connect: { _, _ in touched("connect") },
            registry: RunRegistry(root: nowhere), processes: ProcessTable(proc: nowhere, clock: WaitClock(ContinuousClock())), namespaces: nowhere,
            clock: WaitClock(ContinuousClock()), awaitBanner: { _, _ in touched("awaitBanner") }, interrupts: { _ in touched("interrupts") })
    }()

    public var cache: CacheLayout { CacheLayout.default(environment: environment, home: home) }

    public func checkout() throws -> Checkout {
        try Checkout.discover(environment: environment, from: workingDirectory, executable: executable)
    }

    /// A path the user gave, relative to the working directory.
    public func path(_ text: String) -> URL {
        FilePaths.resolve(text, against: workingDirectory)
    }

    /// The world as the engine sees it.
    public var engine: EngineEnvironment {
        EngineEnvironment(workingDirectory: workingDirectory, cache: cache, checkout: { [self] in try checkout() }, commands: commands, connect: connect,
                          registry: registry, processes: processes, namespaces: namespaces, clock: clock, awaitBanner: awaitBanner,
                          progress: { [self] in progress() },
                          say: { [self] in printError($0) })
    }

    /// Everything kmatrix prints passes here: a value that slipped past its own escaping still
    /// cannot drive the terminal (`SafeText`; line breaks and tabs are kmatrix's own layout).
    public func print(_ text: String) { standardOutput(SafeText.terminal(text, keepLines: true)) }
    public func printError(_ text: String) { standardError(SafeText.terminal(text, keepLines: true)) }

    /// How a run shows its guests' progress: redrawn lines on a terminal, plain lines otherwise.
    public func progress() -> any ProgressReporter {
        standardErrorIsTerminal ? LiveProgress(clock: clock, write: standardError) : PlainProgress(clock: clock, write: standardError)
    }
}

/// Turns interrupt handling off again once a run is over.
public protocol InterruptDisarming: Sendable {
    func disarm()
}

/// Logging to stderr through a context, without swift-log's process-wide bootstrap: each
/// command's logger writes to the context it was made for, and nothing else's logger is redirected.
enum Logs {
    static func logger(verbose: Bool, context: CommandContext) -> Logger {
        var logger = Logger(label: "kmatrix") { label in ContextLogHandler(label: label, write: context.printError) }
        logger.logLevel = verbose ? .debug : .notice
        return logger
    }
}

/// A log handler that writes to one command context's stderr.
struct ContextLogHandler: LogHandler {
    let label: String
    let write: @Sendable (String) -> Void
    var logLevel: Logger.Level = .notice
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        let fields = merged.isEmpty ? "" : " " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        write("kmatrix: \(event.level): \(event.message)\(fields)\n")
    }
}
