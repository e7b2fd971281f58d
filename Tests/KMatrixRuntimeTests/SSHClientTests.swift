import Foundation
import Synchronization
import Testing
import Yams
import KMatrixCore
import KMatrixTestSupport
@testable import KMatrixRuntime

final class SSHClientTests {
    let root: TemporaryDirectory

    init() throws {
        root = try TemporaryDirectory("ssh")
    }

    deinit {
        root.remove()
    }

    /// Keys whose control socket path fits `sun_path` (connection reuse on), or not.
    func keys(reuse: Bool = true) -> RunKeys {
        RunKeys(directory: root.url.appendingPathComponent(reuse ? "keys" : String(repeating: "k", count: 120)))
    }

    func client(_ commands: FakeCommands, user: String = "cloud-user", reuse: Bool = true) -> SSHClient {
        commands.playSSHMasters()
        var target = SSHTarget(port: 40222, user: user, keys: keys(reuse: reuse))
        target.awaitBanner = nil
        return SSHClient(target: target, commands: commands, clock: .immediate)
    }

    @Test func noAttemptIsMadeBeforeTheServerSendsItsBanner() async throws {
        let commands = FakeCommands()
        commands.playSSHMasters()
        let looks = Mutex(0)
        var target = SSHTarget(port: 40222, user: "root", keys: keys())
        target.awaitBanner = { _, _ in looks.withLock { $0 += 1; return $0 } >= 3 }
        try await SSHClient(target: target, commands: commands, clock: .immediate).waitUntilReachable(within: .seconds(10)) { nil }
        #expect(looks.withLock { $0 } == 3)
        #expect(commands.calls(of: "ssh").filter { $0.arguments.last == "true" }.count == 1)
    }

    @Test func theUserIsAnOptionValueAndTheTargetFollowsDashDash() async throws {
        let commands = FakeCommands()
        _ = try await client(commands, user: "-oProxyCommand=touch /tmp/pwned").run(["echo", "a b", "it's"], timeout: .seconds(5))
        let arguments = try #require(commands.calls(of: "ssh").first?.arguments)
        let user = try #require(arguments.firstIndex(of: "-l"))
        #expect(arguments[user + 1] == "-oProxyCommand=touch /tmp/pwned")
        let separator = try #require(arguments.firstIndex(of: "--"))
        #expect(arguments[separator + 1] == "127.0.0.1")
        #expect(arguments.last == "echo 'a b' 'it'\\''s'")
        #expect(user < separator)
        #expect(!arguments.contains { $0.contains("@127.0.0.1") })
    }

    @Test func exit255IsSSHsOwnFailure() async throws {
        let commands = FakeCommands()
        commands.on("ssh") { _ in .failed(255, "Connection refused") }
        let error = await #expect(throws: KMatrixError.self) { try await client(commands).run(["true"], timeout: .seconds(5)) }
        #expect(error?.code == .ssh)
    }

    @Test func aConnectionBrokenUnderTheProbeNamesSSHsMessageNotTheProbesTrace() async throws {
        let commands = FakeCommands()
        commands.on("ssh") { _ in
            .failed(255, "kmatrix-probe: + iptables-legacy -w -I OUTPUT -o lo -p udp --dport 4243 -j NFQUEUE --queue-num 4242\n"
                    + "Connection to 127.0.0.1 closed by remote host.\n")
        }
        let error = await #expect(throws: KMatrixError.self) { try await client(commands).run(["true"], timeout: .seconds(5)) }
        #expect(error?.message.hasSuffix("failed: Connection to 127.0.0.1 closed by remote host") == true, "\(error?.message ?? "")")
    }

    @Test func waitingRetriesRefusalsAndTimeoutsThenSucceeds() async throws {
        let commands = FakeCommands()
        let attempts = Mutex(0)
        commands.on("ssh", containing: "true") { _ in
            let attempt = attempts.withLock { $0 += 1; return $0 }
            switch attempt {
            case 1: return .failed(255, "Connection refused")
            case 2: throw KMatrixError(.timeout, "ssh true did not finish within 15 s")
            default: return .ok()
            }
        }
        try await client(commands).waitUntilReachable(within: .seconds(10)) { nil }
        #expect(attempts.withLock { $0 } == 3)
    }

    @Test func waitingStopsAtOnceOnAnythingButSSHFailuresAndTimeouts() async throws {
        let commands = FakeCommands()
        let attempts = Mutex(0)
        commands.on("ssh", containing: "true") { _ in
            attempts.withLock { $0 += 1 }
            throw KMatrixError(.command, "cannot run ssh: no such file")
        }
        let error = await #expect(throws: KMatrixError.self) { try await client(commands).waitUntilReachable(within: .seconds(10)) { nil } }
        #expect(error?.code == .command)
        #expect(attempts.withLock { $0 } == 1)
    }

    @Test func aCrashWhileWaitingIsAPanic() async throws {
        let commands = FakeCommands()
        commands.on("ssh") { _ in .failed(255, "Connection refused") }
        let error = await #expect(throws: KMatrixError.self) {
            try await client(commands).waitUntilReachable(within: .seconds(10)) { "Kernel panic - not syncing" }
        }
        #expect(error?.code == .guestPanic)
        #expect(error?.consoleLine == "Kernel panic - not syncing")
    }

    /// The login happens once: the master's, and the first command rides on it.
    @Test func theMasterIsTheAttemptAndTheProbeRidesOnIt() async throws {
        let commands = FakeCommands()
        let client = client(commands)
        let result = try await client.waitUntilReachable(within: .seconds(10), probe: "uname -r") { nil }
        #expect(result.succeeded)
        let calls = commands.calls(of: "ssh")
        #expect(calls.count == 2)
        #expect(calls.first?.arguments.contains("-M") == true && calls.first?.arguments.last == "127.0.0.1")
        #expect(calls.last?.arguments.last == "uname -r")
        #expect(calls.last?.arguments.contains("ControlMaster=no") == true)
        let socket = try #require(client.target.keys.controlPath(port: 40222))
        #expect(calls.last?.arguments.contains("ControlPath=\(socket)") == true)
        await client.close()
    }

    @Test func aMasterThatExitsIsRetriedAndNamedBySSHsOwnMessage() async throws {
        let commands = FakeCommands()
        let masters = Mutex(0)
        commands.on("ssh", containing: "-M") { _ in
            masters.withLock { $0 += 1 }
            return .failed(255, "kex_exchange_identification: read: Connection reset by peer\r\n")
        }
        let error = await #expect(throws: KMatrixError.self) {
            try await self.client(commands).waitUntilReachable(within: .seconds(2)) { nil }
        }
        #expect(error?.code == .ssh)
        #expect(error?.message == "SSH not reachable within 2 s: ssh to cloud-user@127.0.0.1:40222 failed: kex_exchange_identification: read: Connection reset by peer")
        #expect(masters.withLock { $0 } >= 2)
        #expect(commands.calls(of: "ssh").allSatisfy { $0.arguments.contains("-M") }, "no command runs before a login")
    }

    @Test func aMasterThatNeverLogsInIsStoppedWhenTheAttemptTimesOut() async throws {
        let commands = FakeCommands()
        let running = Mutex(0)
        commands.on("ssh", containing: "-M") { _ in
            running.withLock { $0 += 1 }
            defer { running.withLock { $0 -= 1 } }
            while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(10)) }
            return .failed(255, "killed")
        }
        let error = await #expect(throws: KMatrixError.self) {
            try await self.client(commands).waitUntilReachable(within: .seconds(2.5), attemptTimeout: .seconds(1)) { nil }
        }
        #expect(error?.message == "SSH not reachable within 2.5 s: ssh to cloud-user@127.0.0.1:40222 did not log in within 1 s")
        #expect(running.withLock { $0 } == 0, "a master that timed out is stopped, not left running")
        #expect(commands.calls(of: "ssh").count >= 2)
    }

    /// A socket a dead master left behind is not taken for a login.
    @Test func aStaleSocketIsNoLogin() async throws {
        let commands = FakeCommands()
        commands.on("ssh", containing: "-M") { _ in .failed(255, "Connection refused") }
        let client = client(commands)
        let socket = try #require(client.target.keys.controlPath(port: 40222))
        _ = try root.file("keys/cm-40222", "")
        #expect(FileManager.default.fileExists(atPath: socket))
        await #expect(throws: KMatrixError.self) { try await client.waitUntilReachable(within: .seconds(1)) { nil } }
        #expect(commands.calls(of: "ssh").allSatisfy { $0.arguments.contains("-M") })
    }

    /// Without a control socket (its path too long for `sun_path`), each try is a plain ssh.
    @Test func withoutReuseEachAttemptIsTheCommandItself() async throws {
        let commands = FakeCommands()
        let result = try await client(commands, reuse: false).waitUntilReachable(within: .seconds(10), probe: "uname -r") { nil }
        #expect(result.succeeded)
        #expect(commands.calls(of: "ssh").map { $0.arguments.last } == ["uname -r"])
    }

    @Test func retryRulesAreByCode() {
        #expect(SSHClient.isRetryable(KMatrixError(.ssh, "x")))
        #expect(SSHClient.isRetryable(KMatrixError(.timeout, "x")))
        #expect(!SSHClient.isRetryable(KMatrixError(.interrupted, "timeout")))
        #expect(!SSHClient.isRetryable(KMatrixError(.guestPanic, "ssh")))
    }
}

struct CloudSeedTests {
    @Test func userDataIsEmittedNotPasted() throws {
        let hostileKey = "ssh-ed25519 AAAA kmatrix\nruncmd: [touch /tmp/pwned]\n"
        let text = try CloudSeed.userData(user: "cloud-user", publicKey: hostileKey)
        #expect(text.hasPrefix("#cloud-config\n"))
        let parsed = try #require(try Yams.load(yaml: text) as? [String: Any])
        #expect(parsed["runcmd"] == nil)
        #expect((parsed["ssh_authorized_keys"] as? [String]) == [hostileKey])
        #expect(((parsed["system_info"] as? [String: Any])?["default_user"] as? [String: Any])?["name"] as? String == "cloud-user")
        #expect(parsed["manage_etc_hosts"] as? Bool == true)
        #expect(parsed["ssh_pwauth"] == nil, "setting it restarts sshd under the first connections")
    }

    @Test func aUserThatIsNoPOSIXNameIsRefused() {
        for user in ["-oProxyCommand=x", "root\nruncmd: [x]", "Cloud User", ""] {
            #expect(throws: KMatrixError.self) { try CloudSeed.userData(user: user, publicKey: "k") }
        }
    }

    @Test func metaDataHasAValidHostname() throws {
        let parsed = try #require(try Yams.load(yaml: try CloudSeed.metaData(instance: "kmatrix-1234ab-rhel_7.9")) as? [String: String])
        #expect(parsed["instance-id"] == "kmatrix-1234ab-rhel_7.9")
        #expect(parsed["local-hostname"] == "kmatrix-1234ab-rhel-7-9")
    }
}
