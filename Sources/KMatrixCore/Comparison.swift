/// Cell-by-cell differences between two runs, for nightly regression checks.
public struct Comparison: Sendable, Equatable {
    public enum Change: Sendable, Equatable {
        case outcomeChanged(guest: String, scenario: String, from: Outcome, to: Outcome, expected: Outcome?)
        case countMoved(guest: String, scenario: String, field: String, from: Int, to: Int)
        case kernelChanged(guest: String, from: String, to: String)
        case guestAdded(String)
        case guestRemoved(String)
        case scenarioAdded(String)
        case scenarioRemoved(String)
    }

    public var changes: [Change]

    /// A cell that matched its expectation before and does not now, or that now errors or flakes.
    public var hasRegression: Bool {
        changes.contains { change in
            if case .outcomeChanged(_, _, let from, let to, let expected) = change {
                return Self.isRegression(from: from, to: to, expected: expected)
            }
            return false
        }
    }

    static func isRegression(from: Outcome, to: Outcome, expected: Outcome?) -> Bool {
        to == .error || to == .flaky || (expected.map { from == $0 && to != $0 } ?? false)
    }

    /// Relative change beyond which a count counts as moved (the unicast-failure count depends on
    /// how many messages fit the buffer, which varies a little between boots).
    public static let defaultTolerance = 0.10

    public static func compare(base: RunResult, new: RunResult, tolerance: Double = defaultTolerance) -> Comparison {
        var changes: [Change] = []
        for guest in new.guests where !base.guests.contains(guest) { changes.append(.guestAdded(guest)) }
        for guest in base.guests where !new.guests.contains(guest) { changes.append(.guestRemoved(guest)) }
        for scenario in new.scenarios where !base.scenarios.contains(scenario) { changes.append(.scenarioAdded(scenario)) }
        for scenario in base.scenarios where !new.scenarios.contains(scenario) { changes.append(.scenarioRemoved(scenario)) }
        for guest in new.guests where base.guests.contains(guest) {
            // Rows are paired by name, so a row whose kernel moved on (a distribution update, a
            // new --kernel build) is still the same row; the move is reported as its own event.
            // The first cell that knows its kernel: a skipped first scenario may not.
            let oldKernel = base.cells.first { $0.guest == guest && $0.kernel != nil }?.kernel
            let newKernel = new.cells.first { $0.guest == guest && $0.kernel != nil }?.kernel
            if let oldKernel, let newKernel, oldKernel != newKernel {
                changes.append(.kernelChanged(guest: guest, from: oldKernel, to: newKernel))
            }
            for scenario in new.scenarios where base.scenarios.contains(scenario) {
                guard let old = base.cell(guest: guest, scenario: scenario), let cell = new.cell(guest: guest, scenario: scenario) else { continue }
                if old.outcome != cell.outcome {
                    changes.append(.outcomeChanged(guest: guest, scenario: scenario, from: old.outcome, to: cell.outcome, expected: cell.expected))
                    continue
                }
                guard cell.outcome.isMeasurement else { continue }
                for (field, from, to) in [("sent", old.sent, cell.sent), ("received", old.received, cell.received), ("lost", old.lost, cell.lost)]
                where moved(from, to, tolerance: tolerance) {
                    changes.append(.countMoved(guest: guest, scenario: scenario, field: field, from: from, to: to))
                }
            }
        }
        return Comparison(changes: changes)
    }

    static func moved(_ from: Int, _ to: Int, tolerance: Double) -> Bool {
        let scale = Double(max(abs(from), abs(to), 1))
        return Double(abs(to - from)) / scale > tolerance
    }

    public var text: String {
        guard !changes.isEmpty else { return "no changes\n" }
        var lines: [String] = []
        for change in changes {
            switch change {
            case .outcomeChanged(let guest, let scenario, let from, let to, let expected):
                let mark = Self.isRegression(from: from, to: to, expected: expected) ? "REGRESSION" : "changed"
                lines.append("\(mark) \(guest) / \(scenario): \(from.rawValue) → \(to.rawValue)\(expected.map { " (expected \($0.rawValue))" } ?? "")")
            case .countMoved(let guest, let scenario, let field, let from, let to):
                lines.append("moved \(guest) / \(scenario): \(field) \(from) → \(to)")
            case .kernelChanged(let guest, let from, let to):
                lines.append("kernel \(guest): \(from) → \(to)")
            case .guestAdded(let guest): lines.append("new guest \(guest)")
            case .guestRemoved(let guest): lines.append("removed guest \(guest)")
            case .scenarioAdded(let scenario): lines.append("new scenario \(scenario)")
            case .scenarioRemoved(let scenario): lines.append("removed scenario \(scenario)")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
