import Foundation
import Plot

/// `report.html`: the run as one self-contained page — the matrix coloured by outcome, a verdict
/// per row, every cell's evidence behind a `<details>`, the run's metadata. Rows are grouped by
/// distribution and sorted by kernel version, which is how a compatibility table is read.
///
/// Test hooks that stay stable: `td.cell.outcome-<outcome>[.mismatch]` with `data-guest`,
/// `data-scenario`, `data-outcome`; `td.verdict` with `data-guest`.
public enum HTMLReport {
    public static func render(_ result: RunResult) -> String {
        let verdicts = Report.verdictsByRow(result)
        var cells: [String: [String: CellResult]] = [:]
        for cell in result.cells where cells[cell.guest]?[cell.scenario] == nil {
            cells[cell.guest, default: [:]][cell.scenario] = cell
        }
        let columns = 3 + result.scenarios.count
        var body: [Node<HTML.TableContext>] = []
        for group in seriesGroups(groups(result), verdicts: verdicts) {
            var header: [Node<HTML.BodyContext>] = [.escapedText(group.title)]
            if let summary = group.summary { header.append(.span(.classes("group-summary"), .escapedText(summary))) }
            body.append(.tr(.classes("group"), .th(.escapedAttribute("colspan", String(columns)), .escapedAttribute("scope", "colgroup"),
                                                  .group(header))))
            for row in group.rows {
                let rowCells = cells[row.guest] ?? [:]
                body.append(.tr(
                    .th(.classes("guest"), .escapedAttribute("scope", "row"), .escapedText(row.guest)),
                    .td(.classes("kernel", "mono"), .escapedText(row.kernel ?? "?")),
                    verdictCell(verdicts[row.guest], guest: row.guest),
                    .group(rowNodes(rowCells, guest: row.guest, scenarios: result.scenarios))))
            }
        }
        let header: Node<HTML.TableContext> = .thead(.tr(
            .th(.escapedAttribute("scope", "col"), .classes("col-guest"), .escapedText("guest")),
            .th(.escapedAttribute("scope", "col"), .classes("col-kernel"), .escapedText("kernel")),
            .th(.escapedAttribute("scope", "col"), .classes("col-verdict"), .escapedText("verdict")),
            .group(result.scenarios.map { .th(.escapedAttribute("scope", "col"), .classes("scenario"), .escapedText($0)) })))
        let page: [Node<HTML.BodyContext>] = [
            .header(
                .h1(.escapedText("kmatrix results")),
                metadata(result.run),
                .p(.classes("summary"), .escapedText(Report.summary(result)))),
            HTMLPage.legend(extra: [
                .li(.span(.classes("swatch", "mismatch-sample"), .escapedText("⚠")),
                    .strong(.escapedText("expected X")), .escapedText(" (thick border) the outcome differs from the matrix's expectation, X")),
            ]),
            .div(.classes("scroll"), .table(.classes("matrix"), header, .tbody(.group(body)))),
        ]
        return HTMLPage.document(title: "kmatrix results \(result.run.id)", css: HTMLPage.baseCSS + css, body: page, indented: true)
    }

    struct Row {
        var guest: String
        var kernel: String?
        var version: KernelVersion?
        var index: Int
    }

    struct Group {
        var title: String
        var rows: [Row]
        /// For a group of one kernel series: its range and what its verdicts say.
        var summary: String?
    }

    /// A distribution with more rows than a screen holds (a kernel set) is read series by series:
    /// one group per kernel series (6.12, 6.1, 5.10), newest series and newest kernel first, each
    /// with a one-line summary.
    static let seriesThreshold = 8

    static func seriesGroups(_ groups: [Group], verdicts: [String: RowVerdict]) -> [Group] {
        groups.flatMap { group -> [Group] in
            guard group.rows.count > seriesThreshold else { return [group] }
            var order: [String] = []
            var members: [String: [Row]] = [:]
            for row in group.rows {
                let series = row.kernel.map(ArchiveKernel.series(of:)) ?? "?"
                if members[series] == nil { order.append(series) }
                members[series, default: []].append(row)
            }
            // Rows came oldest first: the last series is the newest.
            return order.reversed().map { series in
                let rows = members[series] ?? []
                return Group(title: "\(group.title) · \(series) series", rows: rows.reversed(), summary: seriesSummary(rows, verdicts: verdicts))
            }
        }
    }

    /// "6.1.0-47-cloud-amd64 … 6.1.0-57-cloud-amd64 (11 kernels): not affected; rmem fix works;
    /// probes pass", or where along the series the verdict changes.
    static func seriesSummary(_ ascending: [Row], verdicts: [String: RowVerdict]) -> String {
        guard let first = ascending.first, let last = ascending.last else { return "" }
        let name = { (row: Row) in row.kernel ?? row.guest }
        var text = ascending.count == 1 ? "\(name(first)) (1 kernel)" : "\(name(first)) … \(name(last)) (\(ascending.count) kernels)"
        var changes: [(Row, String)] = []
        for row in ascending {
            let summary = verdicts[row.guest]?.summary ?? "unknown"
            if changes.last?.1 != summary { changes.append((row, summary)) }
        }
        if changes.count == 1 {
            text += ": \(changes[0].1)"
        } else {
            text += ": " + changes.prefix(4).map { "from \(name($0.0)): \($0.1)" }.joined(separator: "; ")
            if changes.count > 4 { text += "; … (\(changes.count - 4) more changes)" }
        }
        return text
    }

    /// Distributions ordered by their oldest kernel, rows by kernel version within one; rows whose
    /// kernel cannot be read as a version come last, and rows that never reported a distribution
    /// (nothing booted) form the last group.
    static func groups(_ result: RunResult) -> [Group] {
        var kernels: [String: String] = [:]
        var distros: [String: String] = [:]
        for cell in result.cells {
            if kernels[cell.guest] == nil, let kernel = cell.kernel { kernels[cell.guest] = kernel }
            if distros[cell.guest] == nil, let distro = cell.distro { distros[cell.guest] = distro }
        }
        var order: [String?] = []
        var members: [String?: [Row]] = [:]
        for (index, guest) in result.guests.enumerated() {
            let distro = distros[guest].map(distributionGroup)
            if members[distro] == nil { order.append(distro) }
            members[distro, default: []].append(Row(guest: guest, kernel: kernels[guest], version: kernels[guest].flatMap(KernelVersion.init(release:)), index: index))
        }
        let groups = order.enumerated().map { position, distro in
            (position: position, distro: distro, rows: (members[distro] ?? []).sorted(by: precedes))
        }
        return groups.sorted { lhs, rhs in
            if (lhs.distro == nil) != (rhs.distro == nil) { return rhs.distro == nil }
            guard let left = lhs.rows.first, let right = rhs.rows.first else { return lhs.position < rhs.position }
            if precedes(left, right) != precedes(right, left) { return precedes(left, right) }
            return lhs.position < rhs.position
        }.map { Group(title: $0.distro ?? "distribution not reported", rows: $0.rows) }
    }

    /// Kernels booted with kmatrix's own rootfs say which package they came from in their
    /// distribution string ("kmatrix initramfs (linux-image-6.1.0-57-cloud-amd64 6.1.192-3)");
    /// they are one distribution, the package is in the row's kernel.
    static func distributionGroup(_ distro: String) -> String {
        let ours = "kmatrix initramfs"
        return distro.starts(with: ours + " (") ? ours : distro
    }

    /// Version first, then the release string compared number by number (6.1.0-9 before
    /// 6.1.0-10), then the matrix's own order.
    static func precedes(_ lhs: Row, _ rhs: Row) -> Bool {
        switch (lhs.version, rhs.version) {
        case (let left?, let right?) where left != right: return left < right
        case (nil, _?): return false
        case (_?, nil): return true
        default: break
        }
        if let left = lhs.kernel, let right = rhs.kernel, left != right {
            return left.compare(right, options: .numeric) == .orderedAscending
        }
        return lhs.index < rhs.index
    }

    static func metadata(_ run: RunMetadata) -> Node<HTML.BodyContext> {
        func all(_ values: [String]) -> String { values.isEmpty ? "not recorded" : values.joined(separator: ", ") }
        var entries: [(String, String)] = [
            ("run", run.id), ("host", all(run.distinct(\.host))), ("host kernel", all(run.distinct(\.hostKernel))),
            ("accelerator", all(run.distinct(\.accelerator))), ("QEMU", all(run.distinct(\.qemu))), ("libvirt", all(run.distinct(\.libvirt))),
            ("started", HTMLPage.date(run.started)), ("duration", Report.formatSeconds(run.durationS)), ("matrix", all(run.distinct(\.matrix))),
            ("kmatrix", all(run.distinct(\.kmatrixVersion))),
        ]
        for source in run.sources ?? [] {
            var text = "\(source.id) on \(source.host), started \(HTMLPage.date(source.started)), \(Report.formatSeconds(source.durationS))"
            if let accelerator = source.accelerator { text += ", \(accelerator)" }
            if let qemu = source.qemu { text += ", QEMU \(qemu)" }
            if let libvirt = source.libvirt { text += ", libvirt \(libvirt)" }
            entries.append(("merged from", text))
        }
        return .dl(.classes("meta"), .group(entries.map { term, value in
            .div(.dt(.escapedText(term)), .dd(.escapedText(value)))
        }))
    }

    static func verdictCell(_ verdict: RowVerdict?, guest: String) -> Node<HTML.TableRowContext> {
        guard let verdict else {
            return .td(.classes("verdict"), .escapedAttribute("data-guest", guest), .escapedText("unknown"))
        }
        let words = [("affected", verdict.affected), ("rmem fix", verdict.mitigation), ("probes", verdict.symptom)]
        return .td(
            .classes("verdict"), .escapedAttribute("data-guest", guest),
            .details(
                .summary(.escapedText(verdict.summary)),
                .ul(.classes("words"), .group(words.map { topic, word in
                    let explanation = word.state == .unknown
                        ? "\(topic): unknown — \(word.why ?? "no reason given")"
                        : "\(word.text) — \(word.cells.joined(separator: ", "))"
                    return .li(.classes("word", "state-\(word.state.rawValue)"), .escapedText(explanation))
                }))),
            .group(verdict.consumers.map { consumer in
                .p(.classes("consumer-verdict", "state-\(consumer.affected.rawValue)"), .escapedAttribute("data-consumer", consumer.consumer),
                   .strong(.escapedText(consumer.label)), .escapedText(": \(consumer.text)"))
            }))
    }

    /// A row's cells; scenarios the row did not run, side by side, share one cell spanning them:
    /// a sparse table of a merged run (1000 rows × 1000 scenarios) would otherwise be a million
    /// empty cells, 80 MB of page and seconds of rendering.
    static func rowNodes(_ cells: [String: CellResult], guest: String, scenarios: [String]) -> [Node<HTML.TableRowContext>] {
        var nodes: [Node<HTML.TableRowContext>] = []
        var absent = 0
        func flush() {
            guard absent > 0 else { return }
            nodes.append(.td(.classes("cell", "absent"), .group(absent > 1 ? [.escapedAttribute("colspan", String(absent))] : []), .escapedText("—")))
            absent = 0
        }
        for scenario in scenarios {
            guard let cell = cells[scenario] else {
                absent += 1
                continue
            }
            flush()
            nodes.append(matrixCell(cell, guest: guest, scenario: scenario))
        }
        flush()
        return nodes
    }

    static func matrixCell(_ cell: CellResult, guest: String, scenario: String) -> Node<HTML.TableRowContext> {
        let mismatch = cell.matches == false
        var summary: [Node<HTML.BodyContext>] = [.span(.classes("outcome"), .escapedText(cell.outcome.rawValue))]
        if let runs = cell.runs, runs.total > 1 {
            summary.append(.span(.classes("runs"), .escapedText(" \(runs.agreeing)/\(runs.total)")))
        }
        if mismatch {
            summary.append(.span(.classes("expected"), .escapedText("⚠ expected \(cell.expected?.rawValue ?? "a measurement")")))
        }
        var extra: [Node<HTML.DetailsContext>] = []
        if let consumer = cell.consumer {
            var facts = ["\(consumer.identity?.label(name: consumer.name) ?? consumer.name), \(consumer.payloadBytes) B"]
            if let observed = consumer.observed {
                facts.append("held \(observed.held), went past \(observed.passedWhileStalled)")
                if let path = observed.path { facts.append("path: \(path.rawValue)") }
                if let fate = observed.fate { facts.append("after SIGCONT: \(fate.rawValue)") }
            }
            extra.append(.p(.classes("consumer"), .escapedText(facts.joined(separator: "; "))))
            if let tail = consumer.observed?.logTail {
                extra.append(.p(.classes("console-title"), .escapedText("consumer log, last lines:")))
                extra.append(.pre(.classes("console"), .escapedText(tail)))
            }
        }
        if let tail = cell.evidence?.consoleTail {
            extra.append(.p(.classes("console-title"), .escapedText("console (\(cell.evidence?.consoleLog ?? "guest console")), last lines:")))
            extra.append(.pre(.classes("console"), .escapedText(tail)))
        }
        return .td(
            .classes("cell", "outcome-\(cell.outcome.rawValue)", mismatch ? "mismatch" : ""),
            .escapedAttribute("data-guest", guest), .escapedAttribute("data-scenario", scenario),
            .escapedAttribute("data-outcome", cell.outcome.rawValue),
            .details(
                .summary(.group(summary)),
                .dl(.classes("evidence"), .group(evidence(cell).map { term, value in
                    .group(.dt(.escapedText(term)), .dd(.escapedText(value)))
                })),
                .group(extra)))
    }

    /// The numbers behind the outcome, then how to reproduce it; absent values are left out
    /// rather than shown as zeros that were never measured.
    static func evidence(_ cell: CellResult) -> [(String, String)] {
        var entries: [(String, String)] = [("expected", cell.expected?.rawValue ?? "no expectation")]
        if cell.outcome.isMeasurement {
            let unit = Scenario.named(cell.scenario)?.measure == .connects ? "connects" : "datagrams"
            entries.append(("sent / received / lost", "\(cell.sent) / \(cell.received) / \(cell.lost) \(unit)"))
            entries.append(("ENOBUFS", String(cell.enobufs)))
        }
        if let counters = cell.counters {
            entries.append(("counter deltas", "queue_dropped +\(counters.queueDropped), queue_user_dropped +\(counters.queueUserDropped), "
                + "id_sequence +\(counters.idSequence), netlink drops +\(counters.netlinkDrops)"))
        }
        if let evidence = cell.evidence, cell.outcome.isMeasurement || cell.outcome == .flaky {
            var numbers = "unicast failures \(evidence.unicastFailures), bypassed full queue \(evidence.bypassedFullQueue), "
                + "messages read \(evidence.messagesRead)"
            if let rcvbuf = evidence.rcvbufEffective { numbers += ", rcvbuf \(rcvbuf) B" }
            if let paused = evidence.queueTotalWhilePaused { numbers += ", queue total while paused \(paused)" }
            entries.append(("probe", numbers))
            if let ranges = evidence.lostRanges, !ranges.isEmpty {
                entries.append(("lost", ranges.map { range in range.count == 2 ? "#\(range[0])–\(range[1])" : range.map(String.init).joined(separator: "–") }
                    .joined(separator: ", ")))
            }
            if let firewall = evidence.firewall { entries.append(("firewall", firewall)) }
        }
        entries.append(("reason", cell.reason))
        if let failure = cell.failure { entries.append(("failure", "\(failure.kind.rawValue) during \(failure.phase.rawValue)")) }
        if let runs = cell.runs, runs.total > 1 {
            let tally = runs.outcomes.sorted { $0.key < $1.key }.map { "\($0.value)× \($0.key)" }.joined(separator: ", ")
            entries.append(("repeated runs", "\(runs.agreeing) of \(runs.total) agree (\(tally))"))
        }
        entries.append(("time", Report.formatSeconds(cell.durationS)))
        let provenance = cell.provenance ?? Provenance()
        let reproduce: [(String, String?)] = [
            ("image sha256", provenance.imageSha256), ("rootfs build id", provenance.rootfsBuildId), ("probe sha256", provenance.probeSha256),
            ("QEMU", provenance.qemu), ("libvirt", provenance.libvirt), ("accelerator", provenance.accelerator),
        ]
        for (term, value) in reproduce { entries.append((term, value ?? "not recorded")) }
        if let log = cell.evidence?.consoleLog { entries.append(("console log", log)) }
        return entries
    }

    static let css = """
    header p.summary { font-weight: 600; margin: 0 0 1rem; }
    table.matrix { font-size: .88rem; }
    table.matrix thead th { position: sticky; top: 0; z-index: 2; }
    table.matrix th.guest { position: sticky; left: 0; z-index: 1; background: #fff; white-space: nowrap; }
    table.matrix tr.group th { background: #dfe3e8; font-weight: 600; position: sticky; left: 0; }
    td.kernel { min-width: 8rem; overflow-wrap: anywhere; }
    td.cell { min-width: 7rem; }
    td.cell.absent { color: var(--muted); text-align: center; }
    td.cell.mismatch { border: 3px solid #a4161a; }
    .expected { display: block; color: #8a1215; font-weight: 700; }
    .mismatch-sample { width: auto; height: auto; padding: 0 .2em; font-size: .8em; border: 3px solid #a4161a; background: #fff; color: #8a1215; font-weight: 700; }
    td.verdict { min-width: 11rem; }
    td.verdict ul.words { margin: .3rem 0 0; padding-left: 1.1rem; font-size: .82rem; }
    td.verdict li.state-unknown { color: var(--muted); }
    td.verdict p.consumer-verdict { margin: .4rem 0 0; font-size: .82rem; }
    tr.group span.group-summary { display: block; font-weight: normal; font-size: .85rem; margin-top: .15rem; }
    td.verdict p.consumer-verdict.state-yes { border-left: 4px solid var(--dropped); padding-left: .4rem; }
    details > summary { cursor: pointer; }
    dl.evidence { display: grid; grid-template-columns: max-content minmax(8rem, 1fr); gap: 1px 8px; margin: .4rem 0 0; font-size: .78rem; }
    dl.evidence dt { font-weight: 600; }
    dl.evidence dd { margin: 0; overflow-wrap: anywhere; }
    p.console-title { margin: .4rem 0 0; font-size: .78rem; font-weight: 600; }
    pre.console { margin: .2rem 0 0; padding: 6px; max-height: 18rem; overflow: auto; background: #f6f8fa; border: 1px solid var(--line);
      font-size: .72rem; white-space: pre-wrap; overflow-wrap: anywhere; }
    @media (max-width: 640px) {
      table.matrix { font-size: .82rem; }
      table.matrix th.guest { white-space: normal; min-width: 6.5rem; max-width: 8.5rem; overflow-wrap: anywhere; }
      td.kernel { min-width: 6rem; }
      td.cell { min-width: 6.5rem; }
      td.verdict { min-width: 10rem; }
    }
    @media print {
      table.matrix thead th, table.matrix th.guest, table.matrix tr.group th { position: static; }
      details > summary { list-style: none; cursor: auto; }
      details > summary::-webkit-details-marker { display: none; }
      pre.console { max-height: none; overflow: visible; font-size: 6.5pt; }
      /* Expanded evidence would widen the columns past the paper: share the width instead. */
      table.matrix { table-layout: fixed; width: 100%; min-width: 0; }
      table.matrix th.col-guest { width: 10%; }
      table.matrix th.col-kernel { width: 9%; }
      table.matrix th.col-verdict { width: 13%; }
      table.matrix th, table.matrix td, table.matrix th.guest { min-width: 0; max-width: none; overflow-wrap: anywhere; white-space: normal; }
      dl.evidence { grid-template-columns: 1fr; font-size: 7pt; }
      dl.evidence dd { margin-bottom: 2px; }
    }
    @media print {
      tr.group { break-after: avoid; }
    }
    """
}
