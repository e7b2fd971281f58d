/// One row's answer to the three questions a compatibility table asks, read off its cells:
/// is the kernel affected, does the rmem fix help, and does the user see the symptom.
public struct RowVerdict: Sendable, Hashable, Codable {
    public var guest: String
    public var kernel: String?
    /// Does fail-open lose packets when the consumer's socket overflows (`failopen-socket-overflow`)?
    public var affected: VerdictWord
    /// Does sizing rmem for the queue keep the packets (`rmem-mitigation`)?
    public var mitigation: VerdictWord
    /// Do liveness-style TCP connects fail while the consumer stalls (`liveness-probe`)?
    public var symptom: VerdictWord
    /// One line for tables, e.g. "affected; rmem fix works; probes fail".
    public var summary: String
    /// One per user's consumer the row ran, in words.
    public var consumers: [ConsumerVerdict]

    public init(guest: String, kernel: String?, affected: VerdictWord, mitigation: VerdictWord, symptom: VerdictWord, consumers: [ConsumerVerdict] = []) {
        self.guest = guest
        self.kernel = kernel
        self.affected = affected
        self.mitigation = mitigation
        self.symptom = symptom
        self.summary = RowVerdict.summary(affected: affected, mitigation: mitigation, symptom: symptom)
        self.consumers = consumers
    }

    /// Unknown words are named by what they would have said, so "unknown" alone never stands for
    /// one of three questions; a row with no answer at all says so once.
    static func summary(affected: VerdictWord, mitigation: VerdictWord, symptom: VerdictWord) -> String {
        let words = [(affected, "affected"), (mitigation, "rmem fix"), (symptom, "probes")]
        if words.allSatisfy({ $0.0.state == .unknown }) { return "unknown" }
        return words.map { word, topic in word.state == .unknown ? "\(topic): unknown" : word.text }.joined(separator: "; ")
    }
}

/// One answer. `state` is the answer to the word's question (see `RowVerdict`): `yes` means
/// affected, fix works, probes fail respectively — so it is a bad sign for `affected` and
/// `symptom` and a good one for `mitigation`.
public struct VerdictWord: Sendable, Hashable, Codable {
    public enum State: String, Sendable, Hashable, Codable, CaseIterable {
        case yes, no, partly, unknown
    }

    public var state: State
    /// The human word: "affected", "rmem fix partly works (12 of 2560 datagrams lost)", "unknown".
    public var text: String
    /// The cells behind the answer, as "guest/scenario".
    public var cells: [String]
    /// Why the answer is unknown; nil when it is known.
    public var why: String?

    public init(state: State, text: String, cells: [String], why: String? = nil) {
        self.state = state
        self.text = text
        self.cells = cells
        self.why = why
    }
}

/// Derives verdicts from the cells only — never from a list of known kernels — so a new kernel
/// gets a verdict the first night it is measured.
public enum Verdicts {
    /// One verdict per row, in `result.guests` order.
    public static func derive(_ result: RunResult) -> [RowVerdict] {
        derive(guests: result.guests, cells: result.cells)
    }

    static func derive(guests: [String], cells: [CellResult]) -> [RowVerdict] {
        // One pass over the cells, so a large run is not scanned once per row and question.
        var byRow: [String: [String: CellResult]] = [:]
        var consumerCells: [String: [CellResult]] = [:]
        var kernels: [String: String] = [:]
        for cell in cells {
            if byRow[cell.guest]?[cell.scenario] == nil {
                byRow[cell.guest, default: [:]][cell.scenario] = cell
                if cell.consumer != nil { consumerCells[cell.guest, default: []].append(cell) }
            }
            if kernels[cell.guest] == nil, let kernel = cell.kernel { kernels[cell.guest] = kernel }
        }
        return guests.map { guest in
            let row = byRow[guest] ?? [:]
            return RowVerdict(
                guest: guest, kernel: kernels[guest],
                affected: word(row[Scenario.failopenSocketOverflow.name], guest: guest, scenario: Scenario.failopenSocketOverflow.name,
                               yes: "affected", no: "not affected", partly: "partly affected", yesOutcome: .dropped),
                mitigation: word(row[Scenario.rmemMitigation.name], guest: guest, scenario: Scenario.rmemMitigation.name,
                                 yes: "rmem fix works", no: "rmem fix fails", partly: "rmem fix partly works", yesOutcome: .reinjected),
                symptom: word(row[Scenario.livenessProbe.name], guest: guest, scenario: Scenario.livenessProbe.name,
                              yes: "probes fail", no: "probes pass", partly: "some probes fail", yesOutcome: .dropped),
                consumers: ConsumerVerdict.derive(row: row, ordered: consumerCells[guest] ?? []))
        }
    }

    /// `yesOutcome` is the outcome that answers the word's question with yes (`dropped` for
    /// "affected", `reinjected` for "fix works"); the other of the two answers no.
    static func word(_ cell: CellResult?, guest: String, scenario: String, yes: String, no: String, partly: String,
                     yesOutcome: Outcome) -> VerdictWord {
        guard let cell else {
            return VerdictWord(state: .unknown, text: "unknown", cells: [], why: "\(scenario) was not run for \(guest)")
        }
        let cells = ["\(cell.guest)/\(cell.scenario)"]
        func unknown(_ what: String) -> VerdictWord {
            VerdictWord(state: .unknown, text: "unknown", cells: cells, why: "\(scenario) \(what): \(cell.reason)")
        }
        switch cell.outcome {
        case .reinjected, .dropped:
            return cell.outcome == yesOutcome
                ? VerdictWord(state: .yes, text: yes, cells: cells)
                : VerdictWord(state: .no, text: no, cells: cells)
        case .mixed:
            return VerdictWord(state: .partly, text: "\(partly) (\(counts(cell, scenario: scenario)))", cells: cells)
        case .delivered: return unknown("saw no overflow")
        case .notTriggered: return unknown("was not triggered")
        case .error: return unknown("failed")
        case .skipped: return unknown("was skipped")
        case .flaky: return unknown("was flaky")
        }
    }

    static func counts(_ cell: CellResult, scenario: String) -> String {
        if Scenario.named(scenario)?.measure == .connects {
            return "\(cell.received) of \(cell.sent) connects completed"
        }
        return "\(cell.lost) of \(cell.sent) datagrams lost"
    }
}
