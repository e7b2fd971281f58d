import Foundation
import Testing
@testable import KMatrixCore

@Suite struct MergeTests {
    /// Two shards of the sample run on different machines; they share the host row, and
    /// disagree on its failopen-socket-overflow cell.
    static func shards() throws -> (RunResult, RunResult) {
        let sample = try ReportTests.sampleRun()
        var a = sample
        a.run.id = "0312ab"
        a.run.host = "ci-a"
        a.guests = ["host", "legacy-6.1-failopen-reverted"]
        a.cells = sample.cells.filter { $0.guest != "rhel-7.9" }
        var b = sample
        b.run.id = "0315cd"
        b.run.host = "ci-b"
        b.run.accelerator = "kvm"
        b.run.started = sample.run.started.addingTimeInterval(-3600)
        b.run.durationS = 60
        b.guests = ["host", "rhel-7.9"]
        b.cells = sample.cells.filter { $0.guest != "legacy-6.1-failopen-reverted" }
        let index = try #require(b.cells.firstIndex { $0.guest == "host" && $0.scenario == "failopen-socket-overflow" })
        b.cells[index].outcome = .dropped
        b.cells[index].received = 9
        b.cells[index].lost = 1991
        return (a, b)
    }

    @Test func aDisagreementBecomesFlakyAndMatchesGolden() throws {
        let (a, b) = try Self.shards()
        let merged = try Merge.merge([a, b])
        try Fixture.expectGolden(String(decoding: try merged.encoded(), as: UTF8.self), "merged.json")

        #expect(merged.schema == RunResult.currentSchema)
        #expect(merged.guests == ["host", "legacy-6.1-failopen-reverted", "rhel-7.9"])
        #expect(merged.scenarios == Scenario.catalogue.map(\.name))
        #expect(merged.cells.count == 14)
        let flaky = try #require(merged.cell(guest: "host", scenario: "failopen-socket-overflow"))
        #expect(flaky.outcome == .flaky)
        #expect(flaky.matches == false)
        #expect(flaky.reason == "runs disagree: reinjected on run 0312ab (host ci-a), dropped on run 0315cd (host ci-b)")
        #expect(flaky.runs == RunAgreement(total: 2, agreeing: 1, outcomes: ["reinjected": 1, "dropped": 1]))
        // Agreeing cells stay as the first run had them.
        #expect(merged.cell(guest: "host", scenario: "strict-socket-overflow") == a.cell(guest: "host", scenario: "strict-socket-overflow"))
        #expect(merged.cell(guest: "rhel-7.9", scenario: "liveness-probe") == b.cell(guest: "rhel-7.9", scenario: "liveness-probe"))
        #expect(merged.verdicts.first?.affected.text == "unknown")

        #expect(merged.run.id == "merged-0312ab+1")
        #expect(merged.run.distinct(\.host) == ["ci-a", "ci-b"])
        #expect(merged.run.distinct(\.accelerator) == ["tcg", "kvm"])
        #expect(merged.run.qemu == "7.2.0")
        #expect(merged.run.started == b.run.started)
        #expect(merged.run.durationS == 60)
        #expect(merged.run.sources?.map(\.id) == ["0312ab", "0315cd"])
        #expect(merged.run.sources?.map(\.schema) == [RunResult.currentSchema, RunResult.currentSchema])

        let page = HTMLReportTests.withoutIndentation(HTMLReport.render(merged))
        #expect(page.contains("<dt>merged from</dt><dd>0315cd on ci-b, started 2026-11-18T10:06:40Z, 60.0 s, kvm, QEMU 7.2.0, libvirt 9.0.0</dd>"))
        #expect(page.contains(#"<td class="cell outcome-flaky mismatch" data-guest="host" data-scenario="failopen-socket-overflow" data-outcome="flaky">"#))
    }

    @Test func mergingAMergedRunListsTheOriginalSources() throws {
        let (a, b) = try Self.shards()
        var c = a
        c.run.id = "0320ef"
        c.run.host = "ci-c"
        let twice = try Merge.merge([Merge.merge([a, b]), c])
        #expect(twice.run.sources?.map(\.id) == ["0312ab", "0315cd", "0320ef"])
        #expect(twice.run.id == "merged-0312ab+2")
        #expect(twice.run.distinct(\.host) == ["ci-a", "ci-b", "ci-c"])
        let flaky = try #require(twice.cell(guest: "host", scenario: "failopen-socket-overflow"))
        #expect(flaky.reason == "runs disagree: flaky on run merged-0312ab+1 (host ci-a, ci-b), reinjected on run 0320ef (host ci-c)")
    }

    @Test func aSkippedCellDoesNotContradictOneThatRan() throws {
        let (a, _) = try Self.shards()
        var skipped = a
        skipped.run.id = "0401aa"
        skipped.cells = a.cells.map { cell in
            var cell = cell
            if cell.guest == "host" { cell.outcome = .skipped }
            return cell
        }
        let merged = try Merge.merge([skipped, a])
        #expect(merged.cells.filter { $0.guest == "host" } == a.cells.filter { $0.guest == "host" })
    }

    @Test func oneRowNameOnTwoKernelsBecomesTwoRows() throws {
        let (a, _) = try Self.shards()
        var other = a
        other.run.id = "0402bb"
        other.cells = a.cells.map { cell in
            var cell = cell
            if cell.guest == "host" { cell.kernel = "6.19.0-rc1" }
            return cell
        }
        let merged = try Merge.merge([a, other])
        #expect(merged.guests == ["host", "host (6.19.0-rc1)", "legacy-6.1-failopen-reverted"])
        #expect(merged.cell(guest: "host (6.19.0-rc1)", scenario: "live-consumer")?.kernel == "6.19.0-rc1")
        #expect(merged.cells.allSatisfy { $0.outcome != .flaky })
        #expect(Set(merged.cells.map { "\($0.guest)/\($0.scenario)" }).count == merged.cells.count)
    }

    @Test func schemaOneRunsAreUpgraded() throws {
        let (a, b) = try Self.shards()
        var object = try #require(try JSONSerialization.jsonObject(with: a.encoded()) as? [String: Any])
        object["schema"] = 1
        object.removeValue(forKey: "verdicts")
        let old = try RunResult.decode(JSONSerialization.data(withJSONObject: object))
        let merged = try Merge.merge([old, b])
        #expect(merged.schema == RunResult.currentSchema)
        #expect(merged.run.sources?.map(\.schema) == [1, RunResult.currentSchema])
        #expect(merged.verdicts.count == 3)
    }

    static func message(_ body: () throws -> Void) -> String? {
        do { try body() } catch let error as KMatrixError { return error.message } catch { return "\(error)" }
        return nil
    }

    @Test func refusesNothingAndNewerSchemas() throws {
        #expect(Self.message { _ = try Merge.merge([]) } == "nothing to merge: give at least one results.json")
        let (a, b) = try Self.shards()
        var newer = b
        newer.schema = RunResult.currentSchema + 1
        #expect(Self.message { _ = try Merge.merge([a, newer]) }
                == "run 0315cd (host ci-b) was written by a newer kmatrix (schema \(RunResult.currentSchema + 1)); this kmatrix reads schema ≤ \(RunResult.currentSchema)")
        var broken = b
        broken.schema = 0
        #expect(Self.message { _ = try Merge.merge([a, broken]) } == "run 0315cd (host ci-b) says schema 0, which no kmatrix writes; this kmatrix reads schema 1 to \(RunResult.currentSchema)")
    }

    @Test func oneRunMergesIntoItselfWithItsSource() throws {
        let (a, _) = try Self.shards()
        let merged = try Merge.merge([a])
        #expect(merged.cells == a.cells)
        #expect(merged.guests == a.guests)
        #expect(merged.run.id == "merged-0312ab")
        #expect(merged.run.host == "ci-a")
        #expect(merged.run.sources?.count == 1)
    }
}
