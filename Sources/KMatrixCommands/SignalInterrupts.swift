@preconcurrency import Dispatch
import Foundation
import Synchronization

/// First Ctrl-C or SIGTERM cancels the run (guests are torn down, results written); a second
/// one exits at once. Children never inherit the ignored dispositions: swift-subprocess resets
/// every signal to its default in the child before exec.
final class SignalInterrupts: InterruptDisarming {
    // Created once in init, only cancelled afterwards; DispatchSource is thread-safe.
    private let sources: [any DispatchSourceSignal]

    /// `notify` says what happens (the command context's stderr).
    init(onInterrupt: @escaping @Sendable () -> Void, notify: @escaping @Sendable (String) -> Void) {
        var sources: [any DispatchSourceSignal] = []
        let count = Counter()
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                let seen = count.increment()
                if seen == 1 {
                    notify("\nkmatrix: interrupted; tearing down guests (Ctrl-C again to exit at once)\n")
                    onInterrupt()
                } else {
                    exit(130)
                }
            }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    func disarm() {
        for source in sources { source.cancel() }
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}

/// Counts interrupts across signal handlers.
final class Counter: Sendable {
    private let value = Mutex(0)
    func increment() -> Int { value.withLock { $0 += 1; return $0 } }
}
