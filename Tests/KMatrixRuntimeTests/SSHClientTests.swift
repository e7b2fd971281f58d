import Foundation
import Synchronization
import Testing
import Yams
import KMatrixCore
import KMatrixTestSupport
@testable import KMatrixRuntime

struct SSHClientTests {
    func client(_ commands: FakeCommands, user: String = "cloud-user") -> SSHClient {
        var target = SSHTarget(port: 40222, user: user, keys: RunKeys(directory: URL(fileURLWithPath: "/tmp/k")))
        target.awaitBanner = nil
        return SSHClient(target: target, commands: commands)
    }

    @Test func noAttemptIsMadeBeforeTheServerSendsItsBanner() async throws {
        let commands = FakeCommands()
        let looks = Mutex(0)
        var target = SSHTarget(port: 40222, user: "root", keys: RunKeys(directory: URL(fileURLWithPath: "/tmp/k")))
        target.awaitBanner = { _, _ in looks.withLock { $0 += 1; return $0 } >= 3 }
        try await SSHClient(target: target, commands: commands).waitUntilReachable(within: .seconds(10)) { nil }
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
