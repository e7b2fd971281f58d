import Foundation
import KMatrixCore
import KMatrixRuntime
import Logging

/// What the engine needs of the world (docs/architecture.md, "Layers"): given by the command line
/// (`CommandContext.engine`) or by a test, never reached for.
public struct EngineEnvironment: Sendable {
    /// Where relative paths the user gave start.
    public var workingDirectory: URL
    public var cache: CacheLayout
    /// The checkout kmatrix runs from (its recipes and probe).
    public var checkout: @Sendable () throws -> Checkout
    /// A command runner whose children carry `runMarker` (nil outside a run).
    public var commands: @Sendable (_ runMarker: String?) -> any CommandRunner
    /// Opens a hypervisor connection, with a scratch folder for the accelerator probe.
    public var connect: @Sendable (_ uri: HostURI, _ scratch: URL) async throws -> any Hypervisor
    public var registry: RunRegistry
    public var processes: ProcessTable
    /// Where `ip netns` keeps network namespaces.
    public var namespaces: URL
    public var clock: WaitClock
    /// Waits for an SSH server's banner on a local port before each login attempt (nil: log in
    /// without looking first).
    public var awaitBanner: (@Sendable (_ port: Int, _ within: Duration) async -> Bool)?
    /// A fresh display of guests' progress for one batch of guests.
    public var progress: @Sendable () -> any ProgressReporter
    /// A line for people on stderr (made safe for a terminal by whoever gives it).
    public var say: @Sendable (String) -> Void

    public init(workingDirectory: URL, cache: CacheLayout, checkout: @escaping @Sendable () throws -> Checkout,
                commands: @escaping @Sendable (String?) -> any CommandRunner, connect: @escaping @Sendable (HostURI, URL) async throws -> any Hypervisor,
                registry: RunRegistry, processes: ProcessTable, namespaces: URL, clock: WaitClock,
                awaitBanner: (@Sendable (Int, Duration) async -> Bool)?,
                progress: @escaping @Sendable () -> any ProgressReporter, say: @escaping @Sendable (String) -> Void) {
        self.workingDirectory = workingDirectory
        self.cache = cache
        self.checkout = checkout
        self.commands = commands
        self.connect = connect
        self.registry = registry
        self.processes = processes
        self.namespaces = namespaces
        self.clock = clock
        self.awaitBanner = awaitBanner
        self.progress = progress
        self.say = say
    }

    /// A path the user gave, relative to the working directory.
    public func path(_ text: String) -> URL {
        FilePaths.resolve(text, against: workingDirectory)
    }

    /// What removes dead runs' leftovers, over this environment's registry, processes and namespaces.
    public func collector(commands: any CommandRunner, logger: Logger) -> Collector {
        Collector(cache: cache.root, registry: registry, commands: commands, processes: processes, logger: logger, namespaces: namespaces)
    }
}
