import Foundation
import KMatrixCore
import KMatrixLibvirt
import KMatrixRuntime
import Logging
import Synchronization

/// Everything a command touches outside itself, injected (docs/architecture.md, "CLI"): the
/// working directory, environment, output streams, the command runner and the way to reach a
/// hypervisor. The executable passes the real ones; tests pass a temporary world and capture the
/// streams, so no test touches the machine by accident.
public struct CommandContext: Sendable {
    public var workingDirectory: URL
    public var environment: [String: String]
    public var home: URL
    /// The running binary, for finding the checkout from `.build/…/kmatrix`.
    public var executable: URL?
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
    /// Installs Ctrl-C/SIGTERM handling for a run; the returned value disarms it.
    public var interrupts: @Sendable (_ onInterrupt: @escaping @Sendable () -> Void) -> any InterruptDisarming

    @TaskLocal public static var current = CommandContext.system()

    public init(workingDirectory: URL, environment: [String: String], home: URL, executable: URL?,
                standardOutput: @escaping @Sendable (String) -> Void, standardError: @escaping @Sendable (String) -> Void,
                standardErrorIsTerminal: Bool, commands: @escaping @Sendable (String?) -> any CommandRunner,
                connect: @escaping @Sendable (HostURI, URL) async throws -> any Hypervisor, registry: RunRegistry, processes: ProcessTable, namespaces: URL,
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
        return CommandContext(
            workingDirectory: URL(fileURLWithPath: FileManager.default.currentDirectoryPath),
            environment: ProcessInfo.processInfo.environment,
            home: home,
            executable: CommandLine.arguments.first.map { URL(fileURLWithPath: $0) },
            // A reader that went away (`kmatrix matrix | head`) must not stop a run: the results
            // folder, not the terminal, is what a run exists to fill.
            standardOutput: { try? FileHandle.standardOutput.write(contentsOf: Data($0.utf8)) },
            standardError: { try? FileHandle.standardError.write(contentsOf: Data($0.utf8)) },
            standardErrorIsTerminal: KMatrixRuntime.standardErrorIsTerminal(),
            commands: { SystemCommandRunner(runMarker: $0) },
            connect: { uri, scratch in try await LibvirtHypervisor(uri: uri, scratch: scratch, commands: SystemCommandRunner()) },
            registry: RunRegistry.machineWide(home: home),
            processes: ProcessTable(proc: URL(fileURLWithPath: "/proc")),
            namespaces: URL(fileURLWithPath: "/run/netns"),
            interrupts: { SignalInterrupts(onInterrupt: $0) })
    }

    public var cache: CacheLayout { CacheLayout.default(environment: environment, home: home) }

    public func checkout() throws -> Checkout {
        try Checkout.discover(environment: environment, from: workingDirectory, executable: executable)
    }

    /// A path the user gave, relative to the working directory.
    public func path(_ text: String) -> URL {
        FilePaths.resolve(text, against: workingDirectory)
    }

    /// What removes dead runs' leftovers, over this context's registry, processes and namespaces.
    public func collector(commands: any CommandRunner, logger: Logger) -> Collector {
        Collector(cache: cache.root, registry: registry, commands: commands, processes: processes, logger: logger, namespaces: namespaces)
    }

    /// Everything kmatrix prints passes here: a value that slipped past its own escaping still
    /// cannot drive the terminal (`SafeText`; line breaks and tabs are kmatrix's own layout).
    public func print(_ text: String) { standardOutput(SafeText.terminal(text, keepLines: true)) }
    public func printError(_ text: String) { standardError(SafeText.terminal(text, keepLines: true)) }
}

/// Turns interrupt handling off again once a run is over.
public protocol InterruptDisarming: Sendable {
    func disarm()
}

/// Logging to stderr through the context (swift-log can be bootstrapped once per process).
enum Logs {
    static let bootstrap: Void = {
        LoggingSystem.bootstrap { label in
            ContextLogHandler(label: label)
        }
    }()

    static func logger(verbose: Bool) -> Logger {
        _ = bootstrap
        var logger = Logger(label: "kmatrix")
        logger.logLevel = verbose ? .debug : .notice
        return logger
    }
}

/// A log handler that writes to the current command context's stderr.
struct ContextLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .notice
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        let fields = merged.isEmpty ? "" : " " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        CommandContext.current.printError("kmatrix: \(event.level): \(event.message)\(fields)\n")
    }
}
