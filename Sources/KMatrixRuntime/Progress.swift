import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Receives phase changes of every guest.
public protocol ProgressReporter: Sendable {
    func update(guest: String, phase: GuestPhase)
    /// Called once the run is over, so a live display can leave its last frame on screen.
    func finish()
}

/// On a terminal: one line per guest, redrawn in place, with elapsed time. Writes to stderr.
public final class LiveProgress: ProgressReporter {
    struct Line {
        var phase: GuestPhase
        var since: ContinuousClock.Instant
        var started: ContinuousClock.Instant
    }

    struct State {
        var order: [String] = []
        var lines: [String: Line] = [:]
        var drawn = 0
        var finished = false
    }

    private let state = Mutex(State())
    private let ticker = Mutex<Task<Void, Never>?>(nil)

    public init() {
        let task = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                self?.redraw()
            }
        }
        ticker.withLock { $0 = task }
    }

    public func update(guest: String, phase: GuestPhase) {
        state.withLock { state in
            let now = ContinuousClock.now
            if state.lines[guest] == nil {
                state.order.append(guest)
                state.lines[guest] = Line(phase: phase, since: now, started: now)
            } else {
                state.lines[guest]?.phase = phase
                state.lines[guest]?.since = now
            }
        }
        redraw()
    }

    public func finish() {
        ticker.withLock { $0?.cancel() }
        redraw()
        state.withLock { $0.finished = true }
    }

    private func redraw() {
        let text: String = state.withLock { state in
            guard !state.finished else { return "" }
            let width = state.order.map(\.count).max() ?? 0
            let now = ContinuousClock.now
            var text = state.drawn > 0 ? "\u{1B}[\(state.drawn)A" : ""
            for guest in state.order {
                guard let line = state.lines[guest] else { continue }
                let padded = guest + String(repeating: " ", count: width - guest.count)
                let elapsed: String
                if case .finished = line.phase { elapsed = "" } else { elapsed = " [\(Int((now - line.started).seconds)) s]" }
                text += "\u{1B}[2K\(padded)  \(line.phase)\(elapsed)\n"
            }
            state.drawn = state.order.count
            return text
        }
        guard !text.isEmpty else { return }
        try? FileHandle.standardError.write(contentsOf: Data(text.utf8))
    }
}

/// Without a terminal (CI, cron): one plain line per phase change, on stderr.
public struct PlainProgress: ProgressReporter {
    let started = ContinuousClock.now
    public init() {}

    public func update(guest: String, phase: GuestPhase) {
        let elapsed = (ContinuousClock.now - started).seconds
        let tenths = Int((elapsed * 10).rounded())
        let line = "[\(tenths / 10).\(tenths % 10)s] \(guest): \(phase)\n"
        try? FileHandle.standardError.write(contentsOf: Data(line.utf8))
    }

    public func finish() {}
}

/// Discards progress (tests).
public struct SilentProgress: ProgressReporter {
    public init() {}
    public func update(guest: String, phase: GuestPhase) {}
    public func finish() {}
}

public func standardErrorIsTerminal() -> Bool {
    isatty(STDERR_FILENO) == 1
}
