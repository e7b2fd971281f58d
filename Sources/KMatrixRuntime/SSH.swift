import Foundation
import KMatrixCore
import Synchronization

/// One guest's SSH endpoint: always a 127.0.0.1 port forward (on this machine, or on the
/// hypervisor host reached through `jump`).
public struct SSHTarget: Sendable {
    public var host: String = "127.0.0.1"
    public var port: Int
    /// The hypervisor's host, when the forward listens on that host's 127.0.0.1, not this one's.
    public var jump: SSHJump?
    /// Waits for the SSH server's banner on the forwarded port before each attempt; nil when
    /// this machine cannot see the port itself (a remote hypervisor), or in tests.
    public var awaitBanner: (@Sendable (_ port: Int, _ within: Duration) async -> Bool)?
    public var user: String
    public var keys: RunKeys

    public init(port: Int, user: String, keys: RunKeys) {
        self.port = port
        self.user = user
        self.keys = keys
    }
}

/// The run's ephemeral ed25519 key, known_hosts and connection sockets, in a 0700 directory of
/// the run's own folder (docs/architecture.md, "Cleanup"): gone with the run, or with `gc`.
public struct RunKeys: Sendable {
    public var directory: URL
    public var privateKey: URL { directory.appendingPathComponent("id_ed25519") }
    public var publicKeyFile: URL { directory.appendingPathComponent("id_ed25519.pub") }
    public var knownHosts: URL { directory.appendingPathComponent("known_hosts") }

    public init(directory: URL) {
        self.directory = directory
    }

    public static func create(in directory: URL, runID: String, commands: any CommandRunner) async throws -> RunKeys {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: directory.path)
        } catch {
            throw KMatrixError.from(error, whileDoing: "creating the run's SSH key directory")
        }
        let keys = RunKeys(directory: directory)
        try await commands.checked("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "kmatrix-\(runID)", "-f", keys.privateKey.path], timeout: .seconds(30))
        return keys
    }

    public func publicKey() throws -> String {
        do {
            return try String(contentsOf: publicKeyFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        } catch {
            throw KMatrixError.from(error, whileDoing: "reading the run's public key")
        }
    }

    /// A control socket path, if it fits in `sun_path` (108 bytes); else none (no connection reuse).
    func controlPath(port: Int) -> String? {
        let path = directory.appendingPathComponent("cm-\(port)").path
        return path.utf8.count < 100 ? path : nil
    }
}

/// OpenSSH client through the command runner, reusing one connection per guest: a master
/// (`ssh -M -N`) runs as the run's own child process, so it ends with the guest or the run.
public struct SSHClient: Sendable {
    public let target: SSHTarget
    let commands: any CommandRunner
    let clock: WaitClock
    private let master = MasterSlot()

    public init(target: SSHTarget, commands: any CommandRunner, clock: WaitClock) {
        self.target = target
        self.commands = commands
        self.clock = clock
    }

    var options: [String] {
        var options = [
            "-i", target.keys.privateKey.path,
            "-p", String(target.port),
            "-l", target.user,
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", "UserKnownHostsFile=\(target.keys.knownHosts.path)",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=6",
            "-o", "LogLevel=ERROR",
        ]
        if let path = target.keys.controlPath(port: target.port) {
            options += ["-o", "ControlPath=\(path)"]
        }
        if let jump = target.jump {
            options += ["-o", "ProxyCommand=\(Self.proxyCommand(jump))"]
        }
        return options
    }

    /// The hop to a remote hypervisor's host, which then connects to its own 127.0.0.1 port.
    /// ssh runs ProxyCommand through a shell: every part is quoted (and was checked when the
    /// URI was read). The run's key stays on this machine: the hop logs in with the user's
    /// own credentials for that host (or the URI's keyfile), as libvirt's own connection does.
    static func proxyCommand(_ jump: SSHJump) -> String {
        var arguments = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        if let identity = jump.keyFile { arguments += ["-i", identity] }
        if let port = jump.port { arguments += ["-p", String(port)] }
        if let user = jump.user { arguments += ["-l", user] }
        if jump.skipHostKeyCheck { arguments += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"] }
        return ShellQuote.command(arguments) + " -W %h:%p -- " + ShellQuote.quote(jump.host)
    }

    /// `--` ends ssh's options: nothing after it, the host included, is ever read as one.
    func arguments(_ extra: [String], command: String?) -> [String] {
        options + extra + ["--", target.host] + (command.map { [$0] } ?? [])
    }

    /// Runs a command in the guest; every argument is quoted for the guest's shell. Exit 255 is
    /// OpenSSH's own failure, never the command's.
    public func run(_ arguments: [String], input: Data? = nil, timeout: Duration) async throws -> CommandResult {
        try await run(shell: ShellQuote.command(arguments), input: input, timeout: timeout)
    }

    /// Runs shell text built by `ShellQuote` (pipelines, `&&`).
    public func run(shell command: String, input: Data? = nil, timeout: Duration) async throws -> CommandResult {
        let result = try await commands.run("ssh", arguments(["-o", "ControlMaster=no"], command: command), input: input, timeout: timeout)
        if result.status == 255 {
            throw KMatrixError(.ssh, "ssh to \(target.user)@\(target.host):\(target.port) failed" + Self.detail(result.stderr))
        }
        return result
    }

    /// OpenSSH's own complaint is the last line of its stderr; what the remote command wrote
    /// before the connection broke (the probe's trace) comes first and is not the cause.
    static func detail(_ stderr: String) -> String {
        let message = ownMessage(stderr)
        return message.isEmpty ? "" : ": " + message
    }

    static func ownMessage(_ stderr: String) -> String {
        let last = stderr.split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }.last { !$0.isEmpty } ?? ""
        return last.hasSuffix(".") ? String(last.dropLast()) : last
    }

    /// Tries until the guest answers or the deadline passes. SSH failures and timeouts are
    /// retried (the guest's sshd may not listen yet); anything else ends the wait at once.
    /// The first command that succeeds is `probe` (shell text), and its result is returned: the
    /// caller's first question doubles as the reachability test, saving a round trip.
    @discardableResult
    public func waitUntilReachable(within limit: Duration, attemptTimeout: Duration = .seconds(15), probe: String = "true",
                                   stopped: (@Sendable () async -> MachineStop?)? = nil,
                                   crashed: @Sendable () async -> String?) async throws -> CommandResult {
        var lastError = "no attempt made"
        let answer = try await poll(clock: clock, within: limit, every: .milliseconds(100), growingTo: .seconds(1)) { remaining -> CommandResult? in
            if Task.isCancelled { throw KMatrixError(.interrupted, "interrupted while waiting for SSH") }
            if let crash = await crashed() { throw KMatrixError(.guestPanic, "guest crashed: \(crash)", consoleLine: crash) }
            if let stopped, let stop = await stopped() { throw stop.error("before SSH answered") }
            guard remaining > .zero else { return nil }
            // Each ssh attempt against a guest that is not up stalls for seconds: wait for the
            // server's banner first, which costs milliseconds per look.
            if let awaitBanner = target.awaitBanner, !(await awaitBanner(target.port, min(remaining, .seconds(5)))) {
                lastError = "no SSH server answered on 127.0.0.1:\(target.port)"
                return nil
            }
            do {
                let result = try await attempt(probe, timeout: min(attemptTimeout, max(remaining, .seconds(1))))
                if result.succeeded { return result }
                await master.stop()
                lastError = "exit \(result.status): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))"
            } catch let error as KMatrixError where SSHClient.isRetryable(error) {
                lastError = error.message
            }
            return nil
        }
        if let answer { return answer }
        if Task.isCancelled { throw KMatrixError(.interrupted, "interrupted while waiting for SSH") }
        throw KMatrixError(.ssh, "SSH not reachable within \(limit.formattedSeconds): \(lastError)")
    }

    /// Retried while waiting for a guest: the connection failing or hanging, never an interruption.
    public static func isRetryable(_ error: KMatrixError) -> Bool {
        error.code == .ssh || error.code == .timeout
    }

    /// One try at logging in. With connection reuse the try is the master itself: it
    /// authenticates once, and `probe`, like every later command, rides on it. A second
    /// handshake costs 0.6–1 s in a distro guest under TCG, a multiplexed session 0.07 s
    /// (docs/architecture.md, "Boot"). OpenSSH creates the control socket only once the login
    /// succeeded, so its appearance is the answer.
    func attempt(_ probe: String, timeout: Duration) async throws -> CommandResult {
        guard let socket = target.keys.controlPath(port: target.port) else { return try await run(shell: probe, timeout: timeout) }
        // A socket left by a master that died would be taken for a login.
        try? FileManager.default.removeItem(atPath: socket)
        let commands = self.commands
        let arguments = arguments(["-M", "-N", "-o", "ControlMaster=yes", "-o", "ControlPersist=no"], command: nil)
        master.start {
            do {
                return try await commands.run("ssh", arguments, timeout: nil)
            } catch {
                return CommandResult(status: 255, stdout: Data(), stderr: (error as? KMatrixError)?.message ?? "\(error)")
            }
        }
        let started = clock.now
        let loggedIn = try await poll(clock: clock, within: timeout, every: .milliseconds(20)) { _ -> Bool? in
            if FileManager.default.fileExists(atPath: socket) { return true }
            let failure: KMatrixError? = if let ended = master.ended() {
                KMatrixError(.ssh, "ssh to \(target.user)@\(target.host):\(target.port) failed" + Self.detail(ended.stderr))
            } else if Task.isCancelled {
                KMatrixError(.interrupted, "interrupted while waiting for SSH")
            } else {
                nil
            }
            if let failure {
                await master.stop()
                throw failure
            }
            return nil
        }
        guard loggedIn == true else {
            await master.stop()
            throw Task.isCancelled ? KMatrixError(.interrupted, "interrupted while waiting for SSH")
                : KMatrixError(.timeout, "ssh to \(target.user)@\(target.host):\(target.port) did not log in within \(timeout.formattedSeconds)")
        }
        do {
            return try await run(shell: probe, timeout: max(timeout - (clock.now - started), .seconds(1)))
        } catch {
            await master.stop()
            throw error
        }
    }

    /// Stops the connection master (its process group with it).
    public func close() async {
        await master.stop()
    }
}

/// The task running a guest's SSH master, shared by the copies of one `SSHClient`, and how the
/// master ended, if it did.
final class MasterSlot: Sendable {
    private struct State {
        var task: Task<Void, Never>?
        var generation = 0
        var ended: CommandResult?
    }

    private let state = Mutex(State())

    func start(_ body: @escaping @Sendable () async -> CommandResult) {
        state.withLock { state in
            guard state.task == nil else { return }
            state.generation += 1
            state.ended = nil
            let generation = state.generation
            state.task = Task {
                let result = await body()
                self.state.withLock { if $0.generation == generation { $0.ended = result } }
            }
        }
    }

    /// The master's exit, once it exited.
    func ended() -> CommandResult? {
        state.withLock { $0.ended }
    }

    func stop() async {
        let running = state.withLock { state -> Task<Void, Never>? in
            defer { state.task = nil }
            return state.task
        }
        running?.cancel()
        await running?.value
    }
}
