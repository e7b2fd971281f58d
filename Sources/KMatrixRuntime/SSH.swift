import Foundation

/// One guest's SSH endpoint: always 127.0.0.1, through QEMU's port forward.
public struct SSHTarget: Sendable {
    public var port: Int
    public var user: String
    public var keys: RunKeys

    public init(port: Int, user: String, keys: RunKeys) {
        self.port = port
        self.user = user
        self.keys = keys
    }
}

/// The run's ephemeral ed25519 key, known_hosts and ControlMaster sockets, in a private directory.
public struct RunKeys: Sendable {
    public var directory: URL
    public var privateKey: URL { directory.appendingPathComponent("id_ed25519") }
    public var publicKeyFile: URL { directory.appendingPathComponent("id_ed25519.pub") }
    public var knownHosts: URL { directory.appendingPathComponent("known_hosts") }

    public static func create(runID: String, commands: any CommandRunner) async throws -> RunKeys {
        // Short path: ControlPath sockets must fit in sun_path (108 bytes).
        let directory = URL(fileURLWithPath: "/tmp/kmatrix-\(runID)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let keys = RunKeys(directory: directory)
        try await commands.checked("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "kmatrix-\(runID)", "-f", keys.privateKey.path], timeout: .seconds(30))
        return keys
    }

    public func publicKey() throws -> String {
        try String(contentsOf: publicKeyFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public func remove() {
        try? FileManager.default.removeItem(at: directory)
    }
}

/// OpenSSH client through swift-subprocess, reusing one connection per guest (ControlMaster).
public struct SSHClient: Sendable {
    public let target: SSHTarget
    let commands: any CommandRunner

    public init(target: SSHTarget, commands: any CommandRunner) {
        self.target = target
        self.commands = commands
    }

    var options: [String] {
        [
            "-i", target.keys.privateKey.path,
            "-p", String(target.port),
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", "UserKnownHostsFile=\(target.keys.knownHosts.path)",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=6",
            "-o", "ControlMaster=auto",
            "-o", "ControlPath=\(target.keys.directory.path)/cm-%C",
            "-o", "ControlPersist=300",
            "-o", "LogLevel=ERROR",
        ]
    }

    /// Runs a shell command in the guest. Exit 255 is OpenSSH's own failure, never the command's.
    public func run(_ command: String, input: Data? = nil, timeout: Duration) async throws -> CommandResult {
        let result = try await commands.run("ssh", options + ["\(target.user)@127.0.0.1", command], input: input, timeout: timeout)
        if result.status == 255 {
            let detail = result.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            throw KMatrixError(.ssh, "ssh to \(target.user)@127.0.0.1:\(target.port) failed\(detail.isEmpty ? "" : ": \(detail)")")
        }
        return result
    }

    /// Tries until the guest answers or the deadline passes, backing off between tries.
    public func waitUntilReachable(within limit: Duration, crashed: @Sendable () async -> String?) async throws {
        let deadline = ContinuousClock.now + limit
        var delay = Duration.milliseconds(250)
        var lastError = "no attempt made"
        while ContinuousClock.now < deadline {
            try Task.checkCancellation()
            if let crash = await crashed() { throw KMatrixError(.guestPanic, "guest crashed: \(crash)") }
            do {
                let result = try await run("true", timeout: .seconds(15))
                if result.succeeded { return }
                lastError = "exit \(result.status): \(result.stderr)"
            } catch let error as KMatrixError {
                lastError = error.message
            }
            try await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(3))
        }
        throw KMatrixError(.ssh, "SSH not reachable within \(limit.formattedSeconds): \(lastError)")
    }

    public func closeMaster() async {
        _ = try? await commands.run("ssh", options + ["-O", "exit", "\(target.user)@127.0.0.1"], timeout: .seconds(5))
    }
}
