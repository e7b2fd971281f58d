import Foundation
import KMatrixCore
import KMatrixRuntime
import Synchronization
import Logging
@_exported import Clocks

/// A `CommandRunner` that runs nothing: it records every call and answers from a script of
/// handlers, first match wins. Unmatched calls succeed with empty output.
public final class FakeCommands: CommandRunner {
    public struct Call: Sendable, Equatable {
        public var executable: String
        public var arguments: [String]
        public var input: Data?
    }

    public typealias Handler = @Sendable (Call) async throws -> CommandResult?

    private let state = Mutex<(calls: [Call], handlers: [Handler])>(([], []))

    public init() {}

    /// Answers calls of `executable` (whose arguments contain `containing`, if given) with `handler`.
    public func on(_ executable: String, containing: String? = nil, _ handler: @escaping @Sendable (Call) async throws -> CommandResult) {
        let matcher: Handler = { call in
            guard call.executable == executable, containing.map(call.arguments.contains) ?? true else { return nil }
            return try await handler(call)
        }
        state.withLock { $0.handlers.append(matcher) }
    }

    /// Answers calls of `executable` for which `predicate` holds with `handler`.
    public func on(_ executable: String, where predicate: @escaping @Sendable (Call) -> Bool, _ handler: @escaping @Sendable (Call) async throws -> CommandResult) {
        let matcher: Handler = { call in
            guard call.executable == executable, predicate(call) else { return nil }
            return try await handler(call)
        }
        state.withLock { $0.handlers.append(matcher) }
    }

    /// Plays OpenSSH's connection master (`ssh -M`) logging in: it creates its control socket
    /// (a plain file stands in) and returns.
    public func playSSHMasters() {
        on("ssh", containing: "-M") { call in
            guard let option = call.arguments.first(where: { $0.hasPrefix("ControlPath=") }) else { return .failed(255, "no ControlPath") }
            let socket = URL(fileURLWithPath: String(option.dropFirst("ControlPath=".count)))
            try FileManager.default.createDirectory(at: socket.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data().write(to: socket)
            return .ok()
        }
    }

    public var calls: [Call] { state.withLock { $0.calls } }

    public func calls(of executable: String) -> [Call] { calls.filter { $0.executable == executable } }

    public func run(_ executable: String, _ arguments: [String], input: Data?, timeout: Duration?) async throws -> CommandResult {
        let call = Call(executable: executable, arguments: arguments, input: input)
        let handlers = state.withLock { state -> [Handler] in
            state.calls.append(call)
            return state.handlers
        }
        for handler in handlers {
            if let result = try await handler(call) { return result }
        }
        return CommandResult(status: 0, stdout: Data(), stderr: "")
    }
}

extension CommandResult {
    public static func ok(_ stdout: String = "") -> CommandResult { CommandResult(status: 0, stdout: Data(stdout.utf8), stderr: "") }
    public static func failed(_ status: Int32, _ stderr: String) -> CommandResult { CommandResult(status: status, stdout: Data(), stderr: stderr) }
}

/// A scratch folder removed when the test is done with it.
public struct TemporaryDirectory: Sendable {
    public let url: URL

    public init(_ name: String = "test") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("kmatrix-\(name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    public func remove() { try? FileManager.default.removeItem(at: url) }

    public func file(_ name: String, _ contents: String) throws -> URL {
        let file = url.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(contents.utf8).write(to: file)
        return file
    }

    public func file(_ name: String, bytes: [UInt8]) throws -> URL {
        let file = url.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(bytes).write(to: file)
        return file
    }

    /// Every file below the folder, relative paths, sorted.
    public func listing() -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: url.path) else { return [] }
        return enumerator.compactMap { $0 as? String }.sorted()
    }
}

/// A hypervisor that starts nothing: it records the specs, writes what the console should show,
/// and counts destroys.
public final class FakeHypervisor: Hypervisor {
    private let state = Mutex<(started: [MachineSpec], destroyed: [String])>(([], []))
    let console: @Sendable (MachineSpec) -> String
    let startError: KMatrixError?
    /// What `qemu-img create` of overlays runs through.
    public let storageCommands: any CommandRunner

    public init(startError: KMatrixError? = nil, storageCommands: any CommandRunner = FakeCommands(),
                console: @escaping @Sendable (MachineSpec) -> String = { _ in "KMATRIX-READY\r\n" }) {
        self.console = console
        self.startError = startError
        self.storageCommands = storageCommands
    }

    public var started: [MachineSpec] { state.withLock { $0.started } }
    public var destroyed: [String] { state.withLock { $0.destroyed } }

    public func versions() async throws -> HypervisorVersions { HypervisorVersions(libvirt: "9.0.0", qemu: "7.2.0") }
    public func detectAccelerator() async -> Accelerator { .tcg }

    public func start(_ spec: MachineSpec) async throws -> any VirtualMachine {
        if let startError { throw startError }
        state.withLock { $0.started.append(spec) }
        try FileManager.default.createDirectory(at: spec.consoleLog.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(console(spec).utf8).write(to: spec.consoleLog)
        return FakeMachine(name: spec.name, hypervisor: self)
    }

    public func kmatrixDomains() async throws -> [DomainRecord] {
        state.withLock { state in
            state.started.filter { !state.destroyed.contains($0.name) }.map { DomainRecord(name: $0.name, runID: $0.runID, owner: $0.owner) }
        }
    }

    public func destroyDomain(named name: String) async throws {
        state.withLock { $0.destroyed.append(name) }
    }

    public func storage(runID: String) -> any GuestStorage { LocalStorage(commands: storageCommands) }

    struct FakeMachine: VirtualMachine {
        let name: String
        let hypervisor: FakeHypervisor
        func destroy() async throws { try await hypervisor.destroyDomain(named: name) }
    }
}

extension RunOwner {
    /// An owner for tests that start nothing: a boot no machine has.
    public static let test = RunOwner(boot: "00000000-0000-4000-8000-00000000beef", pid: 1, start: 1)
}

extension WaitClock {
    /// A clock whose sleeps return at once, advancing its time by what they asked for: a wait
    /// loop in a test runs its tries as it would, in no wall time.
    public static var immediate: WaitClock { WaitClock(ImmediateClock()) }

    /// Wall time, for tests whose waits race real processes or tasks that take real time.
    public static var continuous: WaitClock { WaitClock(ContinuousClock()) }
}

extension Logger {
    /// A logger that writes nowhere: a test asserts on what code returns, not on log lines.
    public static var silent: Logger { Logger(label: "test") { _ in SwiftLogNoOpLogHandler() } }
}
