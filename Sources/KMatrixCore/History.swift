import Foundation
import Plot

/// Several nights of one matrix, cell by cell: what each row × scenario shows now, since when,
/// every flip, how often it was flaky, and one entry per night. A night is one run — two runs
/// on the same calendar day are two nights — ordered by `run.started`.
public struct History: Sendable, Codable, Equatable {
    /// The runs, oldest first.
    public var nights: [Night]
    /// Rows in the order they first appeared.
    public var rows: [Row]

    public struct Night: Sendable, Codable, Equatable {
        public var runId: String
        public var started: Date
        public var host: String
    }

    public struct Row: Sendable, Codable, Equatable {
        /// The row name, which stays when the row's kernel changes.
        public var guest: String
        /// The kernel the row reported on its latest night.
        public var kernel: String?
        /// Nights on which the row's observed kernel differs from the night before it was seen.
        public var kernelChanges: [KernelChange]
        public var scenarios: [Series]
    }

    public struct KernelChange: Sendable, Codable, Equatable {
        public var date: Date
        public var runId: String
        public var from: String
        public var to: String

        /// "kernel 6.1.0-56-cloud-amd64 → 6.1.0-57-cloud-amd64".
        public var text: String { "kernel \(from) → \(to)" }
    }

    /// One row × scenario across the nights.
    public struct Series: Sendable, Codable, Equatable {
        public var scenario: String
        /// The outcome on the last night the cell was run.
        public var latest: Outcome?
        /// The first night of the current streak of `latest` (nights without the cell do not
        /// break a streak: nothing was seen to change).
        public var since: Date?
        public var flips: [Flip]
        /// Nights whose outcome was `flaky`, of the nights the cell was run.
        public var flakyNights: Int
        public var observedNights: Int
        /// `flakyNights / observedNights`; 0 when the cell never ran.
        public var flakyFraction: Double
        /// One per night, aligned with `History.nights`.
        public var nights: [Entry]
    }

    public struct Flip: Sendable, Codable, Equatable {
        public var date: Date
        public var runId: String
        public var from: Outcome
        public var to: Outcome
    }

    public struct Entry: Sendable, Codable, Equatable {
        public var date: Date
        /// nil: the cell was not part of that night's run.
        public var outcome: Outcome?
        public var kernel: String?
    }
}

public enum HistoryBuilder {
    /// Linear in the number of cells: each run is indexed once, then every row × scenario walks
    /// the nights once.
    public static func build(_ runs: [RunResult]) -> History {
        let ordered = runs.enumerated().sorted { lhs, rhs in
            lhs.element.run.started != rhs.element.run.started ? lhs.element.run.started < rhs.element.run.started : lhs.offset < rhs.offset
        }.map(\.element)

        var guestOrder: [String] = []
        var seenGuests: Set<String> = []
        var scenarioOrder: [String] = []
        var seenScenarios: Set<String> = []
        var scenariosByGuest: [String: Set<String>] = [:]
        // Per night: row → scenario → cell, and row → kernel.
        var cellsByNight: [[String: [String: CellResult]]] = []
        var kernelsByNight: [[String: String]] = []
        for run in ordered {
            var cells: [String: [String: CellResult]] = [:]
            var kernels: [String: String] = [:]
            for guest in run.guests where seenGuests.insert(guest).inserted { guestOrder.append(guest) }
            for scenario in run.scenarios where seenScenarios.insert(scenario).inserted { scenarioOrder.append(scenario) }
            for cell in run.cells {
                if seenGuests.insert(cell.guest).inserted { guestOrder.append(cell.guest) }
                if seenScenarios.insert(cell.scenario).inserted { scenarioOrder.append(cell.scenario) }
                if cells[cell.guest]?[cell.scenario] == nil { cells[cell.guest, default: [:]][cell.scenario] = cell }
                scenariosByGuest[cell.guest, default: []].insert(cell.scenario)
                if kernels[cell.guest] == nil, let kernel = cell.kernel { kernels[cell.guest] = kernel }
            }
            cellsByNight.append(cells)
            kernelsByNight.append(kernels)
        }
        let scenarios = Scenario.catalogue.map(\.name).filter(seenScenarios.contains)
            + scenarioOrder.filter { Scenario.named($0) == nil }

        let nights = ordered.map { History.Night(runId: $0.run.id, started: $0.run.started, host: $0.run.host) }
        let rows = guestOrder.map { guest in
            var changes: [History.KernelChange] = []
            var lastKernel: String?
            for (index, kernels) in kernelsByNight.enumerated() {
                guard let kernel = kernels[guest] else { continue }
                if let previous = lastKernel, previous != kernel {
                    changes.append(History.KernelChange(date: nights[index].started, runId: nights[index].runId, from: previous, to: kernel))
                }
                lastKernel = kernel
            }
            let own = scenariosByGuest[guest] ?? []
            let series = scenarios.filter(own.contains).map { scenario in
                Self.series(guest: guest, scenario: scenario, nights: nights, cellsByNight: cellsByNight)
            }
            return History.Row(guest: guest, kernel: lastKernel, kernelChanges: changes, scenarios: series)
        }
        return History(nights: nights, rows: rows)
    }

    static func series(guest: String, scenario: String, nights: [History.Night], cellsByNight: [[String: [String: CellResult]]]) -> History.Series {
        var entries: [History.Entry] = []
        entries.reserveCapacity(nights.count)
        var flips: [History.Flip] = []
        var latest: Outcome?
        var since: Date?
        var flaky = 0
        var observed = 0
        for (index, night) in nights.enumerated() {
            let cell = cellsByNight[index][guest]?[scenario]
            entries.append(History.Entry(date: night.started, outcome: cell?.outcome, kernel: cell?.kernel))
            guard let outcome = cell?.outcome else { continue }
            observed += 1
            if outcome == .flaky { flaky += 1 }
            if let previous = latest, previous != outcome {
                flips.append(History.Flip(date: night.started, runId: night.runId, from: previous, to: outcome))
                since = night.started
            } else if latest == nil {
                since = night.started
            }
            latest = outcome
        }
        return History.Series(scenario: scenario, latest: latest, since: since, flips: flips, flakyNights: flaky, observedNights: observed,
                              flakyFraction: observed == 0 ? 0 : Double(flaky) / Double(observed), nights: entries)
    }
}

extension History {
    /// One letter per outcome for the text strip of nights; `·` is a night without the cell.
    static let letters: [Outcome: Character] = [
        .reinjected: "R", .dropped: "D", .mixed: "M", .delivered: "V", .notTriggered: "N", .error: "E", .skipped: "S", .flaky: "F",
    ]

    static func percent(_ series: Series) -> String {
        "\(series.flakyNights) of \(series.observedNights) (\(Int((series.flakyFraction * 100).rounded()))%)"
    }

    public func markdown() -> String {
        var text = "# kmatrix history\n\n"
        guard let first = nights.first, let last = nights.last else { return text + "No runs.\n" }
        text += "\(nights.count) night\(nights.count == 1 ? "" : "s"), from \(HTMLPage.date(first.started)) (run `\(first.runId)`) "
            + "to \(HTMLPage.date(last.started)) (run `\(last.runId)`).\n\n"
        text += "Nights, oldest first: " + Outcome.allCases.compactMap { outcome in
            History.letters[outcome].map { "\($0) \(outcome.rawValue)" }
        }.joined(separator: ", ") + ", · not run.\n"
        for row in rows {
            text += "\n## \(Report.escape(row.guest))\n\n"
            text += "Kernel: \(Report.escape(row.kernel ?? "not reported")).\n\n"
            // One timeline: a kernel change first, then what flipped with it.
            var events: [(date: Date, order: Int, text: String)] = row.kernelChanges.map { change in
                (change.date, 0, "- \(HTMLPage.date(change.date)) (run `\(change.runId)`): \(Report.escape(change.text))\n")
            }
            for (index, series) in row.scenarios.enumerated() {
                events += series.flips.map { flip in
                    (flip.date, 1 + index, "- \(HTMLPage.date(flip.date)) (run `\(flip.runId)`): \(Report.escape(series.scenario)) "
                        + "\(flip.from.rawValue) → \(flip.to.rawValue)\n")
                }
            }
            events.sort { ($0.date, $0.order) < ($1.date, $1.order) }
            text += events.isEmpty ? "- no changes\n" : events.map(\.text).joined()
            text += "\n| scenario | latest | since | flips | flaky nights | nights |\n| --- | --- | --- | ---: | ---: | --- |\n"
            for series in row.scenarios {
                let strip = String(series.nights.map { entry in entry.outcome.flatMap { History.letters[$0] } ?? "·" })
                text += "| \(Report.escape(series.scenario)) | \(series.latest?.rawValue ?? "—") | \(series.since.map(HTMLPage.date) ?? "—") | "
                    + "\(series.flips.count) | \(History.percent(series)) | `\(strip)` |\n"
            }
        }
        return text
    }

    /// `history.json`: sorted keys, snake_case, ISO-8601 dates, like `results.json`.
    public func json() throws -> Data {
        try JSONCoding.encoder.encode(self)
    }

    /// Short class names for the squares: a 50-row × 6-scenario × 30-night page has 9000 of
    /// them, and each byte per square is 9 kB of page.
    static let squareClasses: [Outcome: String] = [
        .reinjected: "r", .dropped: "d", .mixed: "m", .delivered: "v", .notTriggered: "n", .error: "e", .skipped: "s", .flaky: "f",
    ]

    /// The date as a square's title shows it: to the minute, UTC (the page says so once).
    static func shortDate(_ date: Date) -> String {
        let text = HTMLPage.date(date)
        return String(text.prefix(16)).replacingOccurrences(of: "T", with: " ")
    }

    public func html() -> String {
        var body: [Node<HTML.BodyContext>] = [.h1(.escapedText("kmatrix history"))]
        if let first = nights.first, let last = nights.last {
            body.append(.p(.escapedText("\(nights.count) night\(nights.count == 1 ? "" : "s"), from \(HTMLPage.date(first.started)) (run \(first.runId)) "
                + "to \(HTMLPage.date(last.started)) (run \(last.runId)). One square per night, oldest first; hover a square for its date (UTC), "
                + "outcome and kernel.")))
        } else {
            body.append(.p(.escapedText("No runs.")))
        }
        body.append(HTMLPage.legend(extra: [.li(.span(.classes("swatch", "absent")), .strong(.escapedText("not run")),
                                                .escapedText(" the cell was not part of that night's run"))]))
        var tableRows: [Node<HTML.TableContext>] = []
        for row in rows {
            for (index, series) in row.scenarios.enumerated() {
                var cells: [Node<HTML.TableRowContext>] = []
                if index == 0 {
                    var events: [Node<HTML.ListContext>] = row.kernelChanges.map { change in
                        .li(.escapedText("\(HTMLPage.date(change.date)): \(change.text)"))
                    }
                    if events.isEmpty, let kernel = row.kernel { events = [.li(.escapedText("kernel \(kernel)"))] }
                    cells.append(.th(.classes("guest"), .escapedAttribute("scope", "rowgroup"),
                                     .escapedAttribute("rowspan", String(row.scenarios.count)),
                                     .escapedAttribute("data-guest", row.guest),
                                     .escapedText(row.guest), .ul(.classes("events"), .group(events))))
                }
                cells.append(.td(.classes("nowrap"), .escapedText(series.scenario)))
                cells.append(.td(.classes(series.latest.map { "outcome-\($0.rawValue)" } ?? ""), .escapedText(series.latest?.rawValue ?? "—")))
                cells.append(.td(.classes("mono", "nowrap"), .escapedText(series.since.map(HTMLPage.date) ?? "—")))
                cells.append(.td(.classes("nowrap"), flipsNode(series)))
                cells.append(.td(.classes("num"), .escapedText(History.percent(series))))
                cells.append(.td(.div(.classes("strip"), .group(series.nights.map(square)))))
                tableRows.append(.tr(.classes(index == 0 ? "first" : ""), .escapedAttribute("data-guest", row.guest),
                                     .escapedAttribute("data-scenario", series.scenario), .group(cells)))
            }
        }
        let header: Node<HTML.TableContext> = .thead(.tr(.group(["guest", "scenario", "latest", "since", "flips", "flaky nights", "nights"].map { title in
            .th(.escapedAttribute("scope", "col"), .escapedText(title))
        })))
        body.append(.div(.classes("scroll"), .table(.classes("history"), header, .tbody(.group(tableRows)))))
        return HTMLPage.document(title: "kmatrix history", css: HTMLPage.baseCSS + History.css, body: body, indented: false)
    }

    func flipsNode(_ series: Series) -> Node<HTML.BodyContext> {
        guard !series.flips.isEmpty else { return .escapedText("none") }
        return .details(
            .summary(.escapedText("\(series.flips.count) flip\(series.flips.count == 1 ? "" : "s")")),
            .ul(.classes("flips"), .group(series.flips.map { flip in
                .li(.escapedText("\(HTMLPage.date(flip.date)): \(flip.from.rawValue) → \(flip.to.rawValue)"))
            })))
    }

    func square(_ entry: Entry) -> Node<HTML.BodyContext> {
        let title = "\(History.shortDate(entry.date)) \(entry.outcome?.rawValue ?? "not run") \(entry.kernel ?? "")"
        return .element(named: "i", nodes: [
            .escapedAttribute("class", entry.outcome.flatMap { History.squareClasses[$0] } ?? "a"),
            .escapedAttribute("title", title.trimmingTrailingSpaces()),
        ])
    }

    static let css: String = {
        var css = """
        table.history td.num { text-align: right; white-space: nowrap; }
        table.history th.guest { background: #fff; min-width: 9rem; max-width: 15rem; }
        table.history .nowrap { white-space: nowrap; }
        table.history tr.first > * { border-top: 2px solid #8a939d; }
        ul.events, ul.flips { margin: .2rem 0 0; padding-left: 1rem; font-weight: 400; font-size: .8rem; white-space: normal; }
        .strip { display: flex; gap: 2px; min-width: max-content; }
        .strip i { display: block; width: 12px; height: 16px; border-radius: 2px; border: 1px solid #0003; }
        .strip i.a, .swatch.absent { background: #fff; border: 1px dashed #8a939d; }

        """
        for (outcome, letter) in squareClasses.sorted(by: { $0.value < $1.value }) {
            css += ".strip i.\(letter) { background: var(--\(outcome.rawValue)); }\n"
        }
        return css
    }()
}
