import KMatrixCore

/// The clock every wait of the runtime reads (docs/architecture.md, "Waiting"): the system's
/// continuous clock in a run, a test clock in tests, so no test depends on wall time. It wraps
/// any `Clock` of `Duration`; its `now` is the time since the wrapper was made.
public struct WaitClock: Sendable {
    private let read: @Sendable () -> Duration
    private let nap: @Sendable (Duration) async throws -> Void

    public init<C: Clock>(_ clock: C) where C.Duration == Duration {
        let origin = clock.now
        read = { origin.duration(to: clock.now) }
        nap = { try await clock.sleep(for: $0, tolerance: nil) }
    }

    public var now: Duration { read() }

    public func sleep(for duration: Duration) async throws { try await nap(duration) }
}

/// The runtime's one wait loop: `step` is tried until it returns a value or `limit` passes on
/// `clock`, sleeping `interval` between tries (doubling up to `maximum` when one is given).
/// Returns nil when the time ran out; a cancelled task ends the wait at its next sleep.
public func poll<T>(clock: WaitClock, within limit: Duration, every interval: Duration, growingTo maximum: Duration? = nil,
                    _ step: (_ remaining: Duration) async throws -> T?) async throws -> T? {
    let deadline = clock.now + limit
    var delay = interval
    while true {
        if let value = try await step(deadline - clock.now) { return value }
        let left = deadline - clock.now
        guard left > .zero, !Task.isCancelled else { return nil }
        try? await clock.sleep(for: min(delay, left))
        if let maximum { delay = min(delay * 2, maximum) }
    }
}

/// Races `operation` against a timer on `clock`; the loser is cancelled. Running out is a
/// `KMatrixError(.timeout)`; cancellation must be honoured by the operation for the limit to take
/// effect promptly (subprocesses are torn down with their process group).
public func withTimeout<T: Sendable>(_ limit: Duration, clock: WaitClock, what: String,
                                     _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            do {
                try await clock.sleep(for: limit)
            } catch {
                throw KMatrixError(.interrupted, "interrupted while waiting for \(what)")
            }
            throw KMatrixError(.timeout, "\(what) did not finish within \(limit.formattedSeconds)")
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { throw KMatrixError(.interrupted, "interrupted while waiting for \(what)") }
        return first
    }
}

extension Duration {
    public var seconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }

    public var formattedSeconds: String {
        let value = seconds
        return value == value.rounded() ? "\(Int(value)) s" : "\((value * 10).rounded() / 10) s"
    }
}
