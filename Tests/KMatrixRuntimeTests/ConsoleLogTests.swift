import Foundation
import Testing
import KMatrixTestSupport
import KMatrixCore
@testable import KMatrixRuntime

/// Serial consoles end lines with CR LF, which Swift reads as one Character: every line-based
/// scan must still see single lines.
struct ConsoleLogTests {
    static let bareKernelConsole = "[    2.509482] Run /init as init process\r\n\r\nKMATRIX-MISSING eth0 (CONFIG_VIRTIO_PCI and CONFIG_VIRTIO_NET)\r\n\r\n"
        + "KMATRIX-MISSING nfnetlink_queue (CONFIG_NETFILTER_NETLINK_QUEUE)\r\n\r\nKMATRIX-MISSING eth0 (CONFIG_VIRTIO_PCI and CONFIG_VIRTIO_NET)\r\nKMATRIX-READY\r\n"

    @Test func missingFeaturesAreSingleLinesWithoutRepeats() {
        let missing = ConsoleLog.missingFeatures(in: Self.bareKernelConsole)
        #expect(missing.map(\.text) == ["eth0 (CONFIG_VIRTIO_PCI and CONFIG_VIRTIO_NET)", "nfnetlink_queue (CONFIG_NETFILTER_NETLINK_QUEUE)"])
        #expect(missing.map(\.id) == [MissingFeature.networkInterface, "nfnetlink_queue"])
        #expect(ConsoleLog.missingFeatures(in: "KMATRIX-READY\r\n").isEmpty)
    }

    @Test func crashLineIsThePanicLineOnly() {
        let console = "[    1.0] Booting\r\n[    3.2] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r\n[    3.3] CPU: 0 PID: 1\r\n"
        #expect(ConsoleLog.crashLine(in: console) == "[    3.2] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)")
        #expect(ConsoleLog.crashLine(in: "[ 5.0] WARNING: CPU: 0 PID: 1 at kernel/foo.c:1\r\n") == nil)
    }

    @Test func waitingOnASilentConsoleNamesTheSerialConsole() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("kmatrix-console-\(UUID().uuidString.prefix(8)).log")
        try Data().write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let error = await #expect(throws: KMatrixError.self) {
            try await ConsoleLog(url: file, clock: .immediate).waitFor(["KMATRIX-READY"], within: .milliseconds(300), what: "the rootfs ready marker")
        }
        #expect(error?.code == .boot)
        #expect(error?.message.contains("CONFIG_SERIAL_8250_CONSOLE") == true)
    }

    @Test func aConsoleWhoseHostStoppedAnsweringEndsTheWaitWithThatReason() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("kmatrix-console-\(UUID().uuidString.prefix(8)).log")
        try Data("[    1.0] Booting\r\n".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let lost = KMatrixError(.hypervisor, "lost the guest's console on lab-a: End of file while reading data")
        let clock = ImmediateClock()
        let start = clock.now
        let error = await #expect(throws: KMatrixError.self) {
            try await ConsoleLog(url: file, clock: WaitClock(clock), channelFailure: { lost }).waitFor(["KMATRIX-READY"], within: .seconds(60), what: "the rootfs ready marker")
        }
        #expect(error?.code == .hypervisor)
        #expect(error?.message.contains("lab-a") == true)
        #expect(start.duration(to: clock.now) < .seconds(1), "the wait ended with the failure at its first look, not at its deadline")
    }
}

extension ConsoleLogTests {
    @Test func aPanicWhileWaitingIsAGuestPanicWithItsLine() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("kmatrix-console-\(UUID().uuidString.prefix(8)).log")
        try Data("[ 1.0] Oops: 0000 [#1] SMP\r\n".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let error = await #expect(throws: KMatrixError.self) {
            try await ConsoleLog(url: file, clock: .immediate).waitFor(["KMATRIX-READY"], within: .seconds(5), what: "the rootfs ready marker")
        }
        #expect(error?.code == .guestPanic)
        #expect(error?.consoleLine == "[ 1.0] Oops: 0000 [#1] SMP")
    }

    @Test func theFirstMarkerSeenIsReturned() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("kmatrix-console-\(UUID().uuidString.prefix(8)).log")
        try Data("ci-info: ssh keys\r\nlogin: ".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let seen = try await ConsoleLog(url: file, clock: .immediate).waitFor(["finished at", "login: "], within: .seconds(2), what: "a marker")
        #expect(seen == "login: ")
    }
}
