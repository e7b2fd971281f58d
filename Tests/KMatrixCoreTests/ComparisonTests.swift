import Testing
@testable import KMatrixCore

@Suite struct ComparisonTests {
    @Test func identicalRunsHaveNoChanges() throws {
        let run = try ReportTests.sampleRun()
        let comparison = Comparison.compare(base: run, new: run)
        #expect(comparison.changes.isEmpty)
        #expect(!comparison.hasRegression)
        #expect(comparison.text == "no changes\n")
    }

    @Test func aFlippedCellIsARegression() throws {
        let base = try ReportTests.sampleRun()
        var new = base
        let index = try #require(new.cells.firstIndex { $0.guest == "host" && $0.scenario == "failopen-socket-overflow" })
        new.cells[index].outcome = .dropped
        let comparison = Comparison.compare(base: base, new: new)
        #expect(comparison.changes == [.outcomeChanged(guest: "host", scenario: "failopen-socket-overflow", from: .reinjected, to: .dropped, expected: .reinjected)])
        #expect(comparison.hasRegression)
        #expect(comparison.text.contains("REGRESSION host / failopen-socket-overflow: reinjected → dropped (expected reinjected)"))
    }

    @Test func countsOutsideToleranceAndGuestChangesAreReported() throws {
        let base = try ReportTests.sampleRun()
        var new = base
        let index = try #require(new.cells.firstIndex { $0.guest == "host" && $0.scenario == "strict-socket-overflow" })
        new.cells[index].lost = 1500
        new.guests.removeAll { $0 == "rhel-7.9" }
        new.guests.append("debian-13-6.12")
        let comparison = Comparison.compare(base: base, new: new)
        #expect(comparison.changes.contains(.countMoved(guest: "host", scenario: "strict-socket-overflow", field: "lost", from: 1991, to: 1500)))
        #expect(comparison.changes.contains { if case .guestAdded("debian-13-6.12", _) = $0 { true } else { false } })
        #expect(comparison.changes.contains(.guestRemoved("rhel-7.9")))
        #expect(!comparison.hasRegression)
        var small = base
        small.cells[index].lost = 1985
        #expect(Comparison.compare(base: base, new: small).changes.isEmpty)
    }

    @Test func repeatedRunsThatDisagreeAreFlaky() throws {
        let run = try ReportTests.sampleRun()
        let first = try #require(run.cell(guest: "host", scenario: "failopen-socket-overflow"))
        var second = first
        second.outcome = .mixed
        let combined = Repetition.combine([first, first, second])
        #expect(combined.outcome == .flaky)
        #expect(combined.matches == false)
        #expect(combined.runs == RunAgreement(total: 3, agreeing: 2, outcomes: ["reinjected": 2, "mixed": 1]))
        #expect(combined.reason.hasPrefix("runs disagree (1× mixed, 2× reinjected)"))
        let agreeing = Repetition.combine([first, first])
        #expect(agreeing.outcome == .reinjected)
        #expect(agreeing.runs?.agreeing == 2)
    }

    /// A row keeps its name when its kernel moves on (a `--kernel` row or a distribution row after
    /// an update): the move is an event, and a flip under it is judged by the usual rule.
    @Test func aKernelChangeUnderTheSameRowIsAnEventAndItsFlipARegression() {
        func run(kernel: String, outcome: Outcome) -> RunResult {
            let cell = CellResult(guest: "candidate", scenario: "failopen-socket-overflow", kernel: kernel, outcome: outcome,
                                  expected: .reinjected, reason: "measured")
            let metadata = RunMetadata(id: kernel, started: .init(timeIntervalSince1970: 0), durationS: 1, host: "ci", hostKernel: "6.12",
                                       matrix: "matrix.yaml", kmatrixVersion: "0.2.0")
            return RunResult(run: metadata, guests: ["candidate"], scenarios: ["failopen-socket-overflow"], cells: [cell])
        }
        let comparison = Comparison.compare(base: run(kernel: "6.1.0-56-cloud-amd64", outcome: .reinjected),
                                            new: run(kernel: "6.1.0-57-cloud-amd64", outcome: .dropped))
        #expect(comparison.changes == [
            .kernelChanged(guest: "candidate", from: "6.1.0-56-cloud-amd64", to: "6.1.0-57-cloud-amd64"),
            .outcomeChanged(guest: "candidate", scenario: "failopen-socket-overflow", from: .reinjected, to: .dropped, expected: .reinjected),
        ])
        #expect(comparison.hasRegression)
        #expect(comparison.text.contains("kernel candidate: 6.1.0-56-cloud-amd64 → 6.1.0-57-cloud-amd64\n"))
        #expect(comparison.text.contains("REGRESSION candidate / failopen-socket-overflow: reinjected → dropped"))
    }
}
