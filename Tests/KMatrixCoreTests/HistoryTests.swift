import Foundation
import Testing
@testable import KMatrixCore
import KMatrixTestSupport

@Suite struct HistoryTests {
    static let small = HistoryFixtures.synthetic(guests: 3, scenarios: 2, nights: 6)

    static func date(_ text: String) throws -> Date {
        try #require(try? Date(text, strategy: .iso8601), "not a date: \(text)")
    }

    @Test func markdownMatchesGolden() throws {
        try Fixture.expectGolden(HistoryBuilder.build(Self.small).markdown(), "history.md")
    }

    @Test func jsonMatchesGoldenAndRoundTrips() throws {
        let history = HistoryBuilder.build(Self.small)
        let data = try history.json()
        try Fixture.expectGolden(String(decoding: data, as: UTF8.self), "history.json")
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        decoder.dateDecodingStrategy = .iso8601
        #expect(try decoder.decode(History.self, from: data) == history)
    }

    @Test func flipsKernelChangesAndFlakyNightsAreFound() throws {
        let history = HistoryBuilder.build(Self.small)
        // Six runs, the last two on the same calendar day: still six nights.
        #expect(history.nights.map(\.runId) == ["night-01", "night-02", "night-03", "night-04", "night-05", "night-06"])
        #expect(history.rows.map(\.guest) == ["guest-00", "guest-01", "guest-02"])

        let upgraded = history.rows[0]
        #expect(upgraded.kernel == "6.1.0-57-cloud-amd64")
        #expect(upgraded.kernelChanges == [History.KernelChange(date: try Self.date("2026-11-04T02:00:00Z"), runId: "night-04",
                                                                from: "6.1.0-56-cloud-amd64", to: "6.1.0-57-cloud-amd64")])
        #expect(upgraded.kernelChanges.first?.text == "kernel 6.1.0-56-cloud-amd64 → 6.1.0-57-cloud-amd64")
        let regressed = upgraded.scenarios[0]
        #expect(regressed.scenario == "failopen-socket-overflow")
        #expect(regressed.latest == .dropped)
        #expect(regressed.since == (try Self.date("2026-11-04T02:00:00Z")))
        #expect(regressed.flips == [History.Flip(date: try Self.date("2026-11-04T02:00:00Z"), runId: "night-04", from: .reinjected, to: .dropped)])
        #expect(regressed.nights.map(\.kernel) == Array(repeating: "6.1.0-56-cloud-amd64", count: 3) + Array(repeating: "6.1.0-57-cloud-amd64", count: 3))
        #expect(upgraded.scenarios[1].flips.isEmpty)
        #expect(upgraded.scenarios[1].since == history.nights.first?.started)

        let wobbly = history.rows[1].scenarios[0]
        #expect(wobbly.flips.map { [$0.runId, $0.from.rawValue, $0.to.rawValue] } == [["night-04", "reinjected", "mixed"], ["night-06", "mixed", "reinjected"]])
        #expect(wobbly.latest == .reinjected)
        #expect(wobbly.since == history.nights.last?.started)

        let flaky = history.rows[2].scenarios[0]
        #expect(flaky.flakyNights == 1)
        #expect(flaky.observedNights == 6)
        #expect(flaky.flakyFraction == 1.0 / 6.0)
        #expect(flaky.nights.map(\.outcome) == [.reinjected, .reinjected, .flaky, .reinjected, .reinjected, .reinjected])
        #expect(history.rows[2].scenarios[1].flakyFraction == 0)
    }

    @Test func runsAreOrderedByTheirStartNotByTheirPlaceInTheList() {
        #expect(HistoryBuilder.build(Self.small.reversed()) == HistoryBuilder.build(Self.small))
    }

    @Test func aNightWithoutTheCellNeitherFlipsNorBreaksTheStreak() throws {
        var runs = HistoryFixtures.synthetic(guests: 1, scenarios: 2, nights: 3)
        runs[1].cells.removeAll { $0.scenario == "strict-socket-overflow" }
        let series = HistoryBuilder.build(runs).rows[0].scenarios[1]
        #expect(series.nights.map(\.outcome) == [.dropped, nil, .dropped])
        #expect(series.flips.isEmpty)
        #expect(series.observedNights == 2)
        #expect(series.since == runs[0].run.started)
    }

    @Test func fiftyRowsOfThirtyNightsStayUnderAMegabyte() throws {
        let runs = HistoryFixtures.synthetic(guests: 50, scenarios: 6, nights: 30)
        let history = HistoryBuilder.build(runs)
        #expect(history.rows.count == 50)
        #expect(history.rows.allSatisfy { $0.scenarios.count == 6 && $0.scenarios.allSatisfy { $0.nights.count == 30 } })
        let html = history.html()
        #expect(html.utf8.count < 1_000_000, "history.html is \(html.utf8.count) bytes")
        #expect(html.components(separatedBy: "<i class=").count - 1 == 50 * 6 * 30)
    }

    @Test func thePageShowsEveryNightAndFetchesNothing() throws {
        let html = HistoryBuilder.build(Self.small).html()
        #expect(html.contains(#"<i class="d" title="2026-11-04 02:00 dropped 6.1.0-57-cloud-amd64"></i>"#))
        #expect(html.contains(#"<i class="f" title="2026-11-03 02:00 flaky 6.12.38+deb13-cloud-amd64"></i>"#))
        #expect(html.contains("2026-11-04T02:00:00Z: kernel 6.1.0-56-cloud-amd64 → 6.1.0-57-cloud-amd64"))
        #expect(html.contains("<summary>2 flips</summary>"))
        #expect(html.contains(#"<th class="guest" scope="rowgroup" rowspan="2" data-guest="guest-00">"#))
        let lowered = html.lowercased()
        for forbidden in ["http:", "https:", "<script", "<link", "<img", "src=", "href=", "@import", "url("] {
            #expect(!lowered.contains(forbidden), "history.html contains \(forbidden)")
        }
    }

    @Test func noRunsMakeAnEmptyHistory() throws {
        let history = HistoryBuilder.build([])
        #expect(history.rows.isEmpty)
        #expect(history.markdown() == "# kmatrix history\n\nNo runs.\n")
        #expect(history.html().contains("<p>No runs.</p>"))
    }

    @Test func namesAndKernelsAreEscapedOnThePage() {
        var runs = HistoryFixtures.synthetic(guests: 1, scenarios: 1, nights: 2)
        for night in runs.indices {
            runs[night].guests = [#"<x"y>"#]
            runs[night].cells[0].guest = #"<x"y>"#
            runs[night].cells[0].kernel = #"6.1.0-"><b>&amp;"#
        }
        let html = HistoryBuilder.build(runs).html()
        #expect(!html.contains(#"<x"y>"#))
        #expect(!html.contains("<b>"))
        #expect(html.contains(#"data-guest="&lt;x&quot;y&gt;""#))
        #expect(html.contains(#"title="2026-11-01 02:00 reinjected 6.1.0-&quot;&gt;&lt;b&gt;&amp;amp;""#))
    }
}
