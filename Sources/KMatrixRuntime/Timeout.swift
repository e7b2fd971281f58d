import KMatrixCore

/// Races `operation` against a timer; the loser is cancelled. Running out is a
/// `KMatrixError(.timeout)`; cancellation must be honoured by the operation for the limit to take
/// effect promptly (subprocesses are torn down with their process group).
public func withTimeout<T: Sendable>(_ limit: Duration, what: String, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            do {
                try await Task.sleep(for: limit)
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
