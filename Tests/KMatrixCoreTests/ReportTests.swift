import Foundation
import Testing
@testable import KMatrixCore

@Suite struct ReportTests {
    /// A fixed two-guest run built from recorded probe outputs (no clocks, no host names).
    static func sampleRun() throws -> RunResult {
        let matrix = try DefaultMatrix.load()
        let host = try #require(matrix.guests.first { $0.name == "host" })
        let legacy = try #require(matrix.guests.first { $0.name == "legacy-6.1-failopen-reverted" })
        let rhel = try #require(matrix.guests.first { $0.name == "rhel-7.9" })
        let scenarios: [(Scenario, String)] = [
            (.failopenSocketOverflow, "failopen-socket-overflow-6.18"), (.strictSocketOverflow, "strict-socket-overflow-6.18"),
            (.failopenQueueFull, "failopen-queue-full-6.18"), (.rmemMitigation, "rmem-mitigation-6.18"),
            (.liveConsumer, "live-consumer-6.18"), (.livenessProbe, "liveness-probe-6.18"),
        ]
        var cells: [CellResult] = []
        let hostCells = CellBuilder(matrix: matrix, facts: GuestFacts(guest: host, kernel: "6.18.44-fc-v595", distro: "Debian GNU/Linux 12 (bookworm)"))
        for (scenario, fixture) in scenarios {
            cells.append(hostCells.measured(scenario, probe: try Fixture.probe(fixture), durationS: 0.25))
        }
        // The legacy stand-in measured with a modern kernel's numbers: differs from its override.
        let legacyCells = CellBuilder(matrix: matrix, facts: GuestFacts(guest: legacy, kernel: "6.1.0-kmatrix-legacy-failopen", distro: "kmatrix initramfs",
                                                                       consoleLog: "console/legacy-6.1-failopen-reverted.log"))
        var differing = legacyCells.measured(.failopenSocketOverflow, probe: try Fixture.probe("failopen-socket-overflow-6.18"), durationS: 1.5)
        differing.evidence?.consoleTail = "console line <tail>"
        cells.append(differing)
        cells.append(CellBuilder(matrix: matrix, facts: GuestFacts(guest: legacy, kernel: "6.1.0-kmatrix-legacy-failopen"))
            .unmeasured(.error, .strictSocketOverflow, failure: CellFailure(.ssh, phase: .scenario, "ssh to root@127.0.0.1:40000 failed: Connection reset")))
        let rhelCells = CellBuilder(matrix: matrix, facts: GuestFacts(guest: rhel))
        for (scenario, _) in scenarios {
            cells.append(rhelCells.unmeasured(.skipped, scenario, failure: CellFailure(.imageMissing, phase: .prepare,
                                                                                        "image rhel-server-7.9-x86_64-kvm.qcow2 is not present")))
        }
        let metadata = RunMetadata(id: "120000abcd", started: Date(timeIntervalSince1970: 1_795_000_000), durationS: 42.5, host: "ci",
                                   hostKernel: "6.18.44-fc-v595", libvirt: "9.0.0", qemu: "7.2.0", accelerator: "tcg",
                                   matrix: "matrix.yaml", kmatrixVersion: "0.1.0")
        return RunResult(run: metadata, guests: ["host", "legacy-6.1-failopen-reverted", "rhel-7.9"],
                         scenarios: scenarios.map(\.0.name), cells: cells)
    }

    @Test func tableMatchesGolden() throws {
        try Fixture.expectGolden(Report.table(Self.sampleRun()), "table.txt")
    }

    @Test func markdownMatchesGolden() throws {
        try Fixture.expectGolden(Report.markdown(Self.sampleRun()), "matrix.md")
    }

    @Test func junitMatchesGolden() throws {
        try Fixture.expectGolden(JUnitReport.xml(Self.sampleRun()), "results.xml")
    }

    @Test func resultsJSONMatchesGoldenAndRoundTrips() throws {
        let run = try Self.sampleRun()
        let data = try run.encoded()
        try Fixture.expectGolden(String(decoding: data, as: UTF8.self), "results.json")
        #expect(try RunResult.decode(data) == run)
    }

    @Test func resultsJSONHasTheContractKeys() throws {
        let object = try #require(try JSONSerialization.jsonObject(with: Self.sampleRun().encoded()) as? [String: Any])
        #expect(object["schema"] as? Int == 4)
        let verdicts = try #require(object["verdicts"] as? [[String: Any]])
        #expect(verdicts.map { $0["guest"] as? String } == ["host", "legacy-6.1-failopen-reverted", "rhel-7.9"])
        #expect(Set(try #require(verdicts.first).keys) == ["guest", "kernel", "affected", "mitigation", "symptom", "summary", "consumers"])
        let cell = try #require((object["cells"] as? [[String: Any]])?.first)
        for key in ["guest", "scenario", "kernel", "distro", "outcome", "expected", "matches", "sent", "received", "lost", "enobufs", "counters", "reason", "duration_s"] {
            #expect(cell[key] != nil, "cell lacks \(key)")
        }
        let counters = try #require(cell["counters"] as? [String: Any])
        #expect(Set(counters.keys) == ["queue_dropped", "queue_user_dropped", "id_sequence", "netlink_drops"])
        let run = try #require(object["run"] as? [String: Any])
        for key in ["started", "duration_s", "host", "libvirt", "qemu", "accelerator"] {
            #expect(run[key] != nil, "run metadata lacks \(key)")
        }
    }

    @Test func exitStatusFollowsTheContract() throws {
        let run = try Self.sampleRun()
        #expect(run.exitStatus == .differs)
        var allMatching = run
        allMatching.cells = run.cells.filter { $0.guest == "host" }
        #expect(allMatching.exitStatus == .allMatched)
        var skippedOnly = run
        skippedOnly.cells = run.cells.filter { $0.guest == "rhel-7.9" }
        // A run that tested nothing never exits 0.
        #expect(skippedOnly.exitStatus == .infrastructure)
        #expect(skippedOnly.nothingTestedReason?.contains("every guest asked for lacks its image (rhel-7.9)") == true)
        #expect(run.nothingTestedReason == nil)
        var errorsOnly = run
        errorsOnly.cells = run.cells.filter { $0.outcome == .error || $0.outcome == .skipped }
        #expect(errorsOnly.exitStatus == .infrastructure)
    }
}
