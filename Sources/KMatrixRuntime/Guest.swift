import Foundation
import KMatrixCore

/// What a booted guest says about itself.
public struct GuestIdentity: Sendable, Hashable {
    public var kernel: String
    public var distro: String
    public init(kernel: String, distro: String) {
        self.kernel = kernel
        self.distro = distro
    }
}

/// Phases of one guest's life, for progress lines.
public enum GuestPhase: Sendable, Equatable, CustomStringConvertible {
    case queued
    case preparing
    case booting
    case waitingForReady
    case deploying
    case running(scenario: String, index: Int, of: Int)
    case tearingDown
    case finished(summary: String)

    public var description: String {
        switch self {
        case .queued: "queued"
        case .preparing: "preparing image"
        case .booting: "booting"
        case .waitingForReady: "waiting for SSH"
        case .deploying: "deploying"
        case .running(let scenario, let index, let total): "\(scenario) (\(index)/\(total))"
        case .tearingDown: "tearing down"
        case .finished(let summary): summary
        }
    }

    /// The phase a failure in this part of the guest's life belongs to.
    public var failurePhase: CellFailure.Phase {
        switch self {
        case .queued, .preparing: .prepare
        case .booting: .boot
        case .waitingForReady: .ready
        case .deploying: .deploy
        case .running: .scenario
        case .tearingDown, .finished: .teardown
        }
    }
}

/// Settings shared by every guest of one run.
public struct RunContext: Sendable {
    public var runID: String
    /// The run's owning process (docs/architecture.md, "Cleanup").
    public var owner: RunOwner
    public var outputDirectory: URL
    public var probe: URL
    public var timeouts: PhaseTimeouts
    public var defaults: Defaults
    /// Where the run records what it creates outside its folder (network namespaces).
    public var ledger: any RunLedger
    /// What every wait of the run reads (`WaitClock`).
    public var clock: WaitClock
    /// The users' consumers the run's guests deploy, built before the first boot (by name).
    public var consumers: [String: ConsumerBundle] = [:]

    public init(runID: String, owner: RunOwner, outputDirectory: URL, probe: URL, defaults: Defaults, ledger: any RunLedger, clock: WaitClock) {
        self.runID = runID
        self.owner = owner
        self.outputDirectory = outputDirectory
        self.probe = probe
        self.timeouts = defaults.timeouts
        self.defaults = defaults
        self.ledger = ledger
        self.clock = clock
    }

    public func consoleLog(for guest: String) -> URL {
        outputDirectory.appendingPathComponent(consoleLogName(for: guest))
    }

    /// The console log's name inside the results folder, as cells record it.
    public func consoleLogName(for guest: String) -> String { "console/\(guest).log" }
}

/// A guest that is up and can run the probe. `shutdown` releases everything it holds.
public protocol GuestSession: Sendable {
    var identity: GuestIdentity { get }
    var consoleLog: URL? { get }
    var provenance: Provenance { get }
    /// Runs `kmatrix-probe` with these arguments inside the guest.
    func runProbe(_ arguments: [String], scenario: Scenario, timeout: Duration) async throws -> CommandResult
    /// The first kernel panic or oops line on the console, if any.
    func crashLine() async -> String?
    /// Why the guest's machine stopped, if it did (an SSH failure then has that cause).
    func stopped() async -> MachineStop?
    /// What the guest reported its kernel lacks for the scenarios (our rootfs's checks).
    var missingFeatures: [MissingFeature] { get }
    /// Where the guest keeps the users' consumers it deployed (nil: none).
    var consumerPlacement: ConsumerPlacement? { get }
    /// Runs a consumer's own command (its version line) in the guest, as root, no shell.
    func runConsumerCommand(_ arguments: [String], timeout: Duration) async throws -> CommandResult
    func shutdown() async
}

extension GuestSession {
    public var missingFeatures: [MissingFeature] { [] }
    public func stopped() async -> MachineStop? { nil }
    public var consumerPlacement: ConsumerPlacement? { nil }
    public func runConsumerCommand(_ arguments: [String], timeout: Duration) async throws -> CommandResult {
        throw KMatrixError(.probe, "this guest runs no consumer")
    }
}

/// Brings one kind of guest up.
public protocol GuestLauncher: Sendable {
    /// Why the guest cannot run on this machine (an absent image, not root…), with the fix, as
    /// a `skipped` cell's failure; nil when it can run.
    func unavailability(_ guest: GuestSpec, context: RunContext) async -> CellFailure?
    func launch(_ guest: GuestSpec, context: RunContext, progress: @escaping @Sendable (GuestPhase) -> Void) async throws -> any GuestSession
}

