/// Folds repeated runs of one cell into one: agreeing runs keep their outcome, disagreeing
/// runs make the cell `flaky` with the tally in its finding. An interrupted run is never a
/// disagreement: the cell's failure says it was interrupted, and what the finished runs showed.
public enum Repetition {
    public static func combine(_ attempts: [CellResult]) -> CellResult {
        guard var first = attempts.first else {
            preconditionFailure("combine needs at least one attempt")
        }
        if let interrupted = attempts.first(where: { $0.failure?.kind == .interrupted }) {
            let finished = attempts.filter { $0.failure?.kind != .interrupted }
            guard !finished.isEmpty else { return interrupted }
            var cell = interrupted
            cell.failure?.message = "interrupted after \(finished.count) finished run\(finished.count == 1 ? "" : "s") (\(tally(finished)))"
            cell.durationS = attempts.reduce(0) { $0 + $1.durationS }
            return cell
        }
        guard attempts.count > 1 else { return first }
        var counts: [String: Int] = [:]
        for attempt in attempts { counts[attempt.outcome.rawValue, default: 0] += 1 }
        let agreeing = attempts.filter { $0.outcome == first.outcome }.count
        first.runs = RunAgreement(total: attempts.count, agreeing: agreeing, outcomes: counts)
        first.durationS = attempts.reduce(0) { $0 + $1.durationS }
        if counts.count > 1 {
            first.finding = "runs disagree (\(tally(attempts))); first run: \(first.reason)"
            first.failure = nil
            first.outcome = .flaky
        }
        return first
    }

    static func tally(_ attempts: [CellResult]) -> String {
        var counts: [String: Int] = [:]
        for attempt in attempts { counts[attempt.outcome.rawValue, default: 0] += 1 }
        return counts.sorted { $0.key < $1.key }.map { "\($0.value)× \($0.key)" }.joined(separator: ", ")
    }
}
