/// What a cell showed. Only `reinjected`, `dropped`, `mixed` and `delivered` are measurements;
/// the rest say why there is no measurement.
public enum Outcome: String, Sendable, Codable, CaseIterable, Hashable {
    /// Overflow proven, every overflowed packet was delivered without a verdict.
    case reinjected
    /// Overflow proven, every overflowed packet was lost.
    case dropped
    /// Overflow proven, some overflowed packets lost and some delivered.
    case mixed
    /// No overflow; every packet got a verdict and arrived.
    case delivered
    /// The scenario needed an overflow and none happened: the cell proves nothing.
    case notTriggered = "not-triggered"
    /// The measurement failed or its numbers do not agree with each other.
    case error
    /// Not run (image absent, filtered out by a precondition), with the reason.
    case skipped
    /// Repeated runs of the cell disagreed.
    case flaky

    /// Outcomes a matrix may expect.
    public static let expectable: [Outcome] = [.reinjected, .dropped, .mixed, .delivered, .notTriggered]

    /// Whether the cell carries a real measurement (as opposed to error/skipped/flaky).
    public var isMeasurement: Bool {
        switch self {
        case .reinjected, .dropped, .mixed, .delivered, .notTriggered: true
        case .error, .skipped, .flaky: false
        }
    }
}
