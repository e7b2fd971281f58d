/// Folds repeated runs of one cell into one: agreeing runs keep their outcome, disagreeing
/// runs make the cell `flaky` with the tally in the reason.
public enum Repetition {
    public static func combine(_ attempts: [CellResult]) -> CellResult {
        guard var first = attempts.first else {
            preconditionFailure("combine needs at least one attempt")
        }
        guard attempts.count > 1 else { return first }
        var tally: [String: Int] = [:]
        for attempt in attempts { tally[attempt.outcome.rawValue, default: 0] += 1 }
        let agreeing = attempts.filter { $0.outcome == first.outcome }.count
        first.runs = RunAgreement(total: attempts.count, agreeing: agreeing, outcomes: tally)
        first.durationS = attempts.reduce(0) { $0 + $1.durationS }
        if tally.count > 1 {
            let text = tally.sorted { $0.key < $1.key }.map { "\($0.value)× \($0.key)" }.joined(separator: ", ")
            first.reason = "runs disagree (\(text)); first run: \(first.reason)"
            first.outcome = .flaky
            first.matches = CellResult.judge(outcome: .flaky, expected: first.expected)
        }
        return first
    }
}
