import Foundation
import Testing
@testable import KMatrixCore

@Suite struct VerdictTests {
    /// A row with the three scenarios a verdict reads, each with the given outcome.
    static func row(_ guest: String = "k", affected: Outcome, mitigation: Outcome, symptom: Outcome) -> RunResult {
        func cell(_ scenario: Scenario, _ outcome: Outcome) -> CellResult {
            let connects = scenario.measure == .connects
            let sent = connects ? 5 : 2000
            let lost = switch outcome {
            case .dropped: connects ? 5 : 1991
            case .mixed: connects ? 3 : 700
            default: 0
            }
            return CellResult(guest: guest, scenario: scenario.name, kernel: "6.1.0-56-cloud-amd64", outcome: outcome, sent: sent,
                              received: sent - lost, lost: lost, reason: "\(outcome.rawValue) because the fixture says so")
        }
        let metadata = RunMetadata(id: "r1", started: Date(timeIntervalSince1970: 0), durationS: 1, host: "h", hostKernel: "6.1", matrix: "m",
                                   kmatrixVersion: "0")
        return RunResult(run: metadata, guests: [guest], scenarios: [Scenario.failopenSocketOverflow, .rmemMitigation, .livenessProbe].map(\.name),
                         cells: [cell(.failopenSocketOverflow, affected), cell(.rmemMitigation, mitigation), cell(.livenessProbe, symptom)])
    }

    @Test func theSampleRunsRowsGetTheirVerdicts() throws {
        let run = try ReportTests.sampleRun()
        let verdicts = Verdicts.derive(run)
        #expect(verdicts == run.verdicts)
        #expect(verdicts.map(\.guest) == run.guests)
        #expect(verdicts.map(\.summary) == ["not affected; rmem fix works; probes pass", "not affected; rmem fix: unknown; probes: unknown", "unknown"])
        let host = try #require(verdicts.first)
        #expect(host.kernel == "6.18.44-fc-v595")
        #expect(host.affected == VerdictWord(state: .no, text: "not affected", cells: ["host/failopen-socket-overflow"]))
        #expect(host.mitigation == VerdictWord(state: .yes, text: "rmem fix works", cells: ["host/rmem-mitigation"]))
        #expect(host.symptom == VerdictWord(state: .no, text: "probes pass", cells: ["host/liveness-probe"]))
        let legacy = verdicts[1]
        #expect(legacy.mitigation == VerdictWord(state: .unknown, text: "unknown", cells: [],
                                                 why: "rmem-mitigation was not run for legacy-6.1-failopen-reverted"))
        let rhel = verdicts[2]
        #expect(rhel.kernel == "3.10.0-1160.el7.x86_64")
        #expect(rhel.affected.cells == ["rhel-7.9/failopen-socket-overflow"])
        #expect(rhel.affected.why == "failopen-socket-overflow was skipped: image rhel-server-7.9-x86_64-kvm.qcow2 is not present")
    }

    @Test func droppedMeansAffectedAndTheFixIsJudgedOnItsOwnCell() {
        let verdict = Verdicts.derive(Self.row(affected: .dropped, mitigation: .reinjected, symptom: .dropped))[0]
        #expect(verdict.summary == "affected; rmem fix works; probes fail")
        #expect(verdict.affected.state == .yes)
        #expect(verdict.mitigation.state == .yes)
        #expect(verdict.symptom.state == .yes)
        let failing = Verdicts.derive(Self.row(affected: .dropped, mitigation: .dropped, symptom: .reinjected))[0]
        #expect(failing.summary == "affected; rmem fix fails; probes pass")
        #expect(failing.mitigation.state == .no)
    }

    @Test func mixedCellsGiveTheirCounts() {
        let verdict = Verdicts.derive(Self.row(affected: .mixed, mitigation: .mixed, symptom: .mixed))[0]
        #expect(verdict.affected == VerdictWord(state: .partly, text: "partly affected (700 of 2000 datagrams lost)", cells: ["k/failopen-socket-overflow"]))
        #expect(verdict.mitigation.text == "rmem fix partly works (700 of 2000 datagrams lost)")
        #expect(verdict.symptom.text == "some probes fail (2 of 5 connects completed)")
        #expect(verdict.summary == "partly affected (700 of 2000 datagrams lost); rmem fix partly works (700 of 2000 datagrams lost); some probes fail (2 of 5 connects completed)")
    }

    @Test(arguments: [
        (Outcome.error, "failopen-socket-overflow failed: error because the fixture says so"),
        (.skipped, "failopen-socket-overflow was skipped: skipped because the fixture says so"),
        (.notTriggered, "failopen-socket-overflow was not triggered: not-triggered because the fixture says so"),
        (.flaky, "failopen-socket-overflow was flaky: flaky because the fixture says so"),
        (.delivered, "failopen-socket-overflow saw no overflow: delivered because the fixture says so"),
    ])
    func cellsWithoutAnAnswerMakeTheWordUnknown(outcome: Outcome, why: String) {
        let verdict = Verdicts.derive(Self.row(affected: outcome, mitigation: .reinjected, symptom: .reinjected))[0]
        #expect(verdict.affected == VerdictWord(state: .unknown, text: "unknown", cells: ["k/failopen-socket-overflow"], why: why))
        #expect(verdict.summary == "affected: unknown; rmem fix works; probes pass")
    }

    @Test func verdictsFollowTheCells() throws {
        var run = Self.row(affected: .reinjected, mitigation: .reinjected, symptom: .reinjected)
        #expect(run.verdicts[0].affected.text == "not affected")
        run.cells[0].outcome = .dropped
        #expect(run.verdicts[0].affected.text == "affected")
        run.guests.append("absent")
        #expect(run.verdicts.map(\.summary) == ["affected; rmem fix works; probes pass", "unknown"])
    }

    @Test func schemaOneFilesDecodeWithDerivedVerdicts() throws {
        let run = try ReportTests.sampleRun()
        var object = try #require(try JSONSerialization.jsonObject(with: run.encoded()) as? [String: Any])
        object["schema"] = 1
        object.removeValue(forKey: "verdicts")
        let decoded = try RunResult.decode(JSONSerialization.data(withJSONObject: object))
        #expect(decoded.schema == 1)
        #expect(decoded.verdicts == Verdicts.derive(run))
        #expect(decoded.cells == run.cells)
    }

    @Test func aBrokenFileStillNamesTheFirstMissingKey() {
        #expect {
            try RunResult.decode(Data(#"{"schema": 1}"#.utf8))
        } throws: { error in
            guard case DecodingError.keyNotFound(let key, _)? = error as? DecodingError else { return false }
            return key.stringValue == "run"
        }
    }
}
