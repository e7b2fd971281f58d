import Foundation
import Testing
import KMatrixCore
import KMatrixTestSupport
@testable import KMatrixCommands

/// compare, merge and history on files from elsewhere: what they print, what they write, and
/// an exit status that never says "fine" about a run that tested nothing.
struct ResultCommandsTests {
    static func sample() -> RunResult {
        let cell = CellResult(guest: "host", scenario: "failopen-socket-overflow", kernel: "6.18.44", outcome: .reinjected, expected: .reinjected,
                              sent: 2000, received: 2000, reason: "overflow proven", durationS: 1)
        let metadata = RunMetadata(id: "120000abcdef01", started: Date(timeIntervalSince1970: 1_795_000_000), durationS: 10, host: "ci",
                                   hostKernel: "6.18.44", matrix: "matrix.yaml", kmatrixVersion: "0.3.0")
        return RunResult(run: metadata, guests: ["host"], scenarios: ["failopen-socket-overflow"], cells: [cell])
    }

    func write(_ run: RunResult, _ name: String, in world: CLIWorld) throws {
        _ = try world.file(name, String(decoding: try run.encoded(), as: UTF8.self))
    }

    @Test func aNamedConsoleLogIsNotOpenedByMerge() async throws {
        let world = try CLIWorld()
        var run = Self.sample()
        run.cells[0].expected = .dropped
        run.cells[0].evidence = Evidence(unicastFailures: 0, bypassedFullQueue: 0, messagesRead: 0, consoleLog: "/etc/hostname")
        try write(run, "a.json", in: world)
        let hostname = try String(contentsOfFile: "/etc/hostname", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(await world.run(["merge", "a.json", "--out", "m"]) == 1)
        for report in ["report.html", "results.xml", "matrix.md"] {
            let text = try String(contentsOf: world.root.url.appendingPathComponent("m/\(report)"), encoding: .utf8)
            #expect(!text.contains("last lines"), "\(report) shows a console tail no run recorded")
            if hostname.count > 6 { #expect(!text.contains(hostname + "\n"), "\(report) holds /etc/hostname") }
        }
        #expect(world.stderr.contains("1 of 1 cells do not match"), "\(world.stderr)")
    }

    @Test func theSameRunThreeTimesIsOneRun() async throws {
        let world = try CLIWorld()
        try write(Self.sample(), "a.json", in: world)
        try write(Self.sample(), "b.json", in: world)
        #expect(await world.run(["merge", "a.json", "b.json", "a.json", "--out", "m"]) == 0, "\(world.stderr)")
        #expect(world.stderr.contains("merged 1 run:"), "\(world.stderr)")
    }

    @Test func mergesOfNothingOrOnlyDisagreementSayWhy() async throws {
        let world = try CLIWorld()
        var empty = Self.sample()
        empty.cells = []
        try write(empty, "empty.json", in: world)
        #expect(await world.run(["merge", "empty.json", "--out", "m"]) == 3)
        #expect(world.stderr.contains("nothing was tested: there are no cells"), "\(world.stderr)")

        let other = try CLIWorld()
        var a = Self.sample(), b = Self.sample()
        b.run.id = "120000abcdef02"
        b.cells[0].outcome = .dropped
        a.cells[0].expected = nil
        b.cells[0].expected = nil
        try write(a, "a.json", in: other)
        try write(b, "b.json", in: other)
        #expect(await other.run(["merge", "a.json", "b.json", "--out", "m"]) == 1)
        #expect(other.stderr.contains("1 flaky (their runs disagree)"), "\(other.stderr)")
    }

    @Test func comparingWithARunThatTestedNothingIsNotSuccess() async throws {
        let world = try CLIWorld()
        var empty = Self.sample()
        empty.cells = []
        try write(Self.sample(), "base.json", in: world)
        try write(empty, "empty.json", in: world)
        #expect(await world.run(["compare", "base.json", "empty.json"]) == 3)
        #expect(world.stderr.contains("empty.json: nothing was tested"), "\(world.stderr)")
        #expect(await world.run(["compare", "empty.json", "base.json"]) == 2)
        #expect(await world.run(["history", "empty.json", "--out", "h"]) == 3)
        #expect(world.stderr.contains("there is no history to show"), "\(world.stderr)")
    }

    @Test func hostileStringsNeverReachTheTerminalRaw() async throws {
        let world = try CLIWorld()
        var run = Self.sample()
        run.guests = ["host\u{202E}lmth.exe"]
        run.cells[0].guest = "host\u{202E}lmth.exe"
        try write(run, "a.json", in: world)
        #expect(await world.run(["merge", "a.json", "--out", "m"]) == 0, "\(world.stderr)")
        #expect(world.stdout.contains("host\\u{202e}lmth.exe"), "\(world.stdout)")
        // A control character (a C1 CSI here) is not even read: the file is refused at the door.
        run.cells[0].finding = "overflow \u{9B}31m proven"
        try write(run, "b.json", in: world)
        #expect(await world.run(["merge", "b.json", "--out", "n"]) == 2)
        #expect(world.stderr.contains("cells[0].reason holds control characters"), "\(world.stderr)")
        #expect(!(world.stdout + world.stderr).unicodeScalars.contains { SafeText.isUnsafe($0) && $0 != "\n" && $0 != "\t" })
    }

    @Test func aReadOnlyOutputSaysSo() {
        let error = CocoaError(.fileWriteVolumeReadOnly, userInfo: [NSFilePathErrorKey: "/mnt/ro/results.json"])
        #expect(FileProblem.describe(error) == "/mnt/ro/results.json: the file system is read-only")
        #expect(!FileProblem.describe(CocoaError(.fileWriteUnknown)).contains("Foundation error"))
    }
}
