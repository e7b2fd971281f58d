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

/// On a terminal: one line per guest, redrawn in place, with elapsed time, written through
/// `write` (the command context's stderr). Guest names are plain names (`InputRules`), so the
/// only control sequences on the line are its own.
public final class LiveProgress: ProgressReporter {
    struct Line {
        var phase: GuestPhase
        var since: Duration
        var started: Duration
    }

    struct State {
        var order: [String] = []
        var lines: [String: Line] = [:]
        var drawn = 0
        var finished = false
    }

    private let state = Mutex(State())
    private let ticker = Mutex<Task<Void, Never>?>(nil)
    private let write: @Sendable (String) -> Void
    private let clock: WaitClock

    public init(clock: WaitClock, write: @escaping @Sendable (String) -> Void) {
        self.write = write
        self.clock = clock
        let task = Task { [weak self] in
            while !Task.isCancelled {
                try? await clock.sleep(for: .seconds(1))
                self?.redraw()
            }
        }
        ticker.withLock { $0 = task }
    }

    public func update(guest: String, phase: GuestPhase) {
        let now = clock.now
        state.withLock { state in
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
        let now = clock.now
        let text: String = state.withLock { state in
            guard !state.finished else { return "" }
            let width = state.order.map(\.count).max() ?? 0
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
        write(text)
    }
}

/// Without a terminal (CI, cron): one plain line per phase change, through `write`.
public struct PlainProgress: ProgressReporter {
    let clock: WaitClock
    let started: Duration
    let write: @Sendable (String) -> Void

    public init(clock: WaitClock, write: @escaping @Sendable (String) -> Void) {
        self.clock = clock
        self.started = clock.now
        self.write = write
    }

    public func update(guest: String, phase: GuestPhase) {
        let tenths = Int(((clock.now - started).seconds * 10).rounded())
        write("[\(tenths / 10).\(tenths % 10)s] \(guest): \(phase)\n")
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
