import Foundation

/// Renders a run as a plain-text table (stdout) and as Markdown (`matrix.md`).
public enum Report {
    /// Guests as rows, scenarios as columns; a cell that differs shows what was expected.
    public static func table(_ result: RunResult) -> String {
        // Every value may come from another machine's file: shown, never obeyed, by the terminal.
        let header = (["guest", "kernel", "verdict"] + result.scenarios).map { SafeText.terminal($0) }
        let verdicts = verdictsByRow(result)
        var rows: [[String]] = []
        for guest in result.guests {
            var row = [guest, kernelLabel(result, guest: guest), verdicts[guest]?.summary ?? "unknown"]
            for scenario in result.scenarios {
                row.append(result.cell(guest: guest, scenario: scenario).map(cellLabel) ?? "—")
            }
            rows.append(row.map { SafeText.terminal($0) })
        }
        var widths = header.map(\.count)
        for row in rows {
            for (index, text) in row.enumerated() { widths[index] = max(widths[index], text.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, text in text + String(repeating: " ", count: widths[index] - text.count) }
                .joined(separator: "  ").trimmingTrailingSpaces()
        }
        var lines = [line(header), line(widths.map { String(repeating: "-", count: $0) })]
        lines += rows.map(line)
        lines.append("")
        let consumerLines = result.guests.flatMap { guest in
            (verdicts[guest]?.consumers ?? []).map { SafeText.terminal("\(guest): \($0.line)") }
        }
        if !consumerLines.isEmpty { lines += consumerLines + [""] }
        lines.append(summary(result))
        return lines.joined(separator: "\n") + "\n"
    }

    public static func markdown(_ result: RunResult) -> String {
        var text = "# kmatrix results\n\n"
        let run = result.run
        func all(_ values: [String]) -> String { escape(values.joined(separator: ", ")) }
        text += "Run `\(run.id)` on \(all(run.distinct(\.host))) (kernel \(all(run.distinct(\.hostKernel))))"
        let libvirt = run.distinct(\.libvirt), qemu = run.distinct(\.qemu), accelerators = run.distinct(\.accelerator)
        if !libvirt.isEmpty, !qemu.isEmpty { text += ", libvirt \(all(libvirt)), QEMU \(all(qemu))" }
        if !accelerators.isEmpty { text += ", \(all(accelerators))" }
        text += ", \(formatSeconds(run.durationS)). Matrix: \(all(run.distinct(\.matrix))).\n\n"
        text += "| guest | kernel | verdict | " + result.scenarios.map(escape).joined(separator: " | ") + " |\n"
        text += "| --- | --- | --- |" + String(repeating: " --- |", count: result.scenarios.count) + "\n"
        let verdicts = verdictsByRow(result)
        for guest in result.guests {
            let cells = result.scenarios.map { scenario in
                result.cell(guest: guest, scenario: scenario).map { cell in
                    cell.matches == false ? "**\(escape(cellLabel(cell)))**" : escape(cellLabel(cell))
                } ?? "—"
            }
            let verdict = escape(verdicts[guest]?.summary ?? "unknown")
            text += "| \(escape(guest)) | \(escape(kernelLabel(result, guest: guest))) | \(verdict) | " + cells.joined(separator: " | ") + " |\n"
        }
        text += "\n" + summary(result) + "\n\n## Verdicts\n\n"
        for guest in result.guests {
            guard let verdict = verdicts[guest] else { continue }
            let words = [("affected", verdict.affected), ("rmem fix", verdict.mitigation), ("probes", verdict.symptom)].map { topic, word in
                word.state == .unknown
                    ? "\(topic): unknown (\(escape(word.why ?? "no reason given")))"
                    : "\(escape(word.text)) (\(escape(word.cells.joined(separator: ", "))))"
            }
            text += "- **\(escape(guest))**: " + words.joined(separator: "; ") + "\n"
            for consumer in verdict.consumers {
                text += "  - \(escape(consumer.label)): \(escape(consumer.text))\n"
            }
        }
        text += "\n## Evidence\n\n"
        text += "| guest | scenario | outcome | sent | received | lost | ENOBUFS | queue_dropped | queue_user_dropped | id_sequence | netlink drops | time | reason |\n"
        text += "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n"
        for guest in result.guests {
            for scenario in result.scenarios {
                guard let cell = result.cell(guest: guest, scenario: scenario) else { continue }
                let counters = cell.counters.map { [String($0.queueDropped), String($0.queueUserDropped), String($0.idSequence), String($0.netlinkDrops)] }
                    ?? ["", "", "", ""]
                let numbers = cell.outcome.isMeasurement ? [String(cell.sent), String(cell.received), String(cell.lost), String(cell.enobufs)] : ["", "", "", ""]
                let columns = [escape(guest), escape(scenario), escape(cellLabel(cell))] + numbers + counters + [formatSeconds(cell.durationS), escape(cell.reason)]
                text += "| " + columns.joined(separator: " | ") + " |\n"
            }
        }
        return text
    }

    public static func cellLabel(_ cell: CellResult) -> String {
        var label = cell.outcome.rawValue
        if let runs = cell.runs, runs.total > 1 { label += " \(runs.agreeing)/\(runs.total)" }
        if cell.matches == false {
            label += " (expected \(cell.expected?.rawValue ?? "a measurement"))"
        }
        return label
    }

    public static func summary(_ result: RunResult) -> String {
        let judged = result.cells.filter { $0.matches != nil }
        let differing = judged.filter { $0.matches == false }.count
        let skipped = result.cells.count - judged.count
        var text = "\(judged.count - differing) of \(judged.count) cells matched their expectation"
        if differing > 0 { text += ", \(differing) differ" }
        if skipped > 0 { text += ", \(skipped) skipped" }
        return text + "."
    }

    /// The run's verdicts by row (they are stored in `guests` order, but a decoded file could
    /// carry them in any order).
    static func verdictsByRow(_ result: RunResult) -> [String: RowVerdict] {
        Dictionary(result.verdicts.map { ($0.guest, $0) }, uniquingKeysWith: { first, _ in first })
    }

    static func kernelLabel(_ result: RunResult, guest: String) -> String {
        result.kernel(of: guest) ?? "?"
    }

    /// A value in a Markdown table or list (`SafeText.markdown`).
    static func escape(_ text: String) -> String {
        SafeText.markdown(text)
    }

    /// Tenths of a second; a value no measurement has (negative, not finite, beyond a year) is
    /// shown as such rather than trusted into integer arithmetic.
    static func formatSeconds(_ seconds: Double) -> String {
        guard seconds.isFinite, (0...(366 * 86400)).contains(seconds) else { return "? s" }
        let tenths = Int((seconds * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) s"
    }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var text = self
        while text.last == " " { text.removeLast() }
        return text
    }
}
