import Foundation
import Testing
@testable import KMatrixCore

@Suite struct HTMLReportTests {
    static func page() throws -> String {
        try HTMLReport.render(ReportTests.sampleRun())
    }

    static func run(_ cells: [CellResult], guests: [String]) -> RunResult {
        let metadata = RunMetadata(id: "r1", started: Date(timeIntervalSince1970: 0), durationS: 1, host: "h", hostKernel: "6.1", matrix: "m",
                                   kmatrixVersion: "0")
        return RunResult(run: metadata, guests: guests, scenarios: [Scenario.failopenSocketOverflow.name], cells: cells)
    }

    /// The page without the line breaks and indentation between its tags.
    static func withoutIndentation(_ html: String) -> String {
        html.split(separator: "\n").map { $0.drop { $0 == " " } }.joined()
    }

    /// The `data-guest` values of one kind of element, in document order.
    static func guests(in html: String, after marker: String) -> [String] {
        html.components(separatedBy: marker).dropFirst().compactMap { part in
            guard let start = part.range(of: "data-guest=\"") else { return nil }
            return String(part[start.upperBound...].prefix { $0 != "\"" })
        }
    }

    @Test func reportMatchesGolden() throws {
        try Fixture.expectGolden(Self.page(), "report.html")
    }

    @Test func everyCellAndVerdictHasItsHook() throws {
        let html = try Self.page()
        #expect(html.contains(#"<td class="cell outcome-reinjected mismatch" data-guest="legacy-6.1-failopen-reverted" data-scenario="failopen-socket-overflow" data-outcome="reinjected">"#))
        #expect(html.contains(#"<td class="cell outcome-error mismatch" data-guest="legacy-6.1-failopen-reverted" data-scenario="strict-socket-overflow" data-outcome="error">"#))
        #expect(html.contains(#"<td class="cell outcome-dropped" data-guest="host" data-scenario="strict-socket-overflow" data-outcome="dropped">"#))
        // 14 measured cells and one cell spanning the four scenarios a row did not run.
        #expect(html.components(separatedBy: #"<td class="cell "#).count - 1 == 15)
        #expect(html.contains(#"<td class="cell absent" colspan="4">—</td>"#))
        #expect(html.components(separatedBy: " mismatch\"").count - 1 == 2)
        #expect(html.components(separatedBy: "⚠ expected dropped").count - 1 == 2)
        #expect(html.components(separatedBy: "<details>").count - 1 == 14 + 3)
        #expect(html.contains("<summary>not affected; rmem fix works; probes pass</summary>"))
        #expect(html.contains("console line &lt;tail&gt;"))
        for outcome in Outcome.allCases {
            #expect(html.contains(".outcome-\(outcome.rawValue) {"), "no colour for \(outcome.rawValue)")
            #expect(html.contains(#"<span class="swatch outcome-\#(outcome.rawValue)">"#), "no legend entry for \(outcome.rawValue)")
        }
    }

    @Test func thePageFetchesNothing() throws {
        let html = try Self.page().lowercased()
        for forbidden in ["http:", "https:", "<script", "<link", "<img", "<iframe", "src=", "href=", "@import", "url("] {
            #expect(!html.contains(forbidden), "report.html contains \(forbidden)")
        }
        #expect(html.contains("print-color-adjust: exact"))
        #expect(html.contains(#"<meta name="viewport" content="width=device-width, initial-scale=1.0"/>"#))
    }

    @Test func rowsAreGroupedByDistributionAndSortedByKernel() throws {
        let html = try Self.page()
        #expect(Self.guests(in: html, after: #"<td class="verdict""#) == ["legacy-6.1-failopen-reverted", "host", "rhel-7.9"])
        let groups = ["kmatrix initramfs", "Debian GNU/Linux 12 (bookworm)", "distribution not reported"].map { title in
            html.range(of: #"scope="colgroup">\#(title)</th>"#)?.lowerBound
        }
        #expect(groups.allSatisfy { $0 != nil })
        #expect(groups.compactMap { $0 } == groups.compactMap { $0 }.sorted())

        let kernels = ["6.1.0-10-amd64", "custom", "6.1.0-9-amd64", "5.10.0-32-amd64"]
        let cells = kernels.enumerated().map { index, kernel in
            CellResult(guest: "g\(index)", scenario: Scenario.failopenSocketOverflow.name, kernel: kernel, distro: "Debian", outcome: .dropped, reason: "r")
        }
        let sorted = HTMLReport.render(Self.run(cells, guests: ["g0", "g1", "g2", "g3"]))
        #expect(Self.guests(in: sorted, after: #"<td class="verdict""#) == ["g3", "g2", "g0", "g1"])
    }

    @Test func valuesAreEscapedEverywhere() throws {
        var cell = CellResult(guest: #"a"b<c>"#, scenario: Scenario.failopenSocketOverflow.name, kernel: #"6.1.0-"><script>x</script>"#,
                              distro: "D & 'E'", outcome: .mixed, expected: .dropped, sent: 10, received: 5, lost: 5,
                              reason: #"&lt; literally & "quoted""#)
        cell.provenance = Provenance(imageSha256: "abc123", qemu: "7.2.0")
        let html = HTMLReport.render(Self.run([cell], guests: [cell.guest]))
        #expect(!html.contains("<script>"))
        #expect(!html.contains(#"a"b"#))
        #expect(html.contains(#"data-guest="a&quot;b&lt;c&gt;""#))
        #expect(html.contains("<dd>&amp;lt; literally &amp; &quot;quoted&quot;</dd>"))
        #expect(html.contains("6.1.0-&quot;&gt;&lt;script&gt;x&lt;/script&gt;"))
        #expect(html.contains(">D &amp; &apos;E&apos;</th>"))
        let compact = Self.withoutIndentation(html)
        #expect(compact.contains("<dt>image sha256</dt><dd>abc123</dd>"))
        #expect(compact.contains("<dt>QEMU</dt><dd>7.2.0</dd>"))
        #expect(compact.contains("<dt>rootfs build id</dt><dd>not recorded</dd>"))
    }
}
