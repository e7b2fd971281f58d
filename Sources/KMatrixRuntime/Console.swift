import Foundation
import KMatrixCore

/// One `KMATRIX-MISSING <id> [(<detail>)]` line of our rootfs's /init: `id` is the token the
/// init script prints (a module name, `eth0`, `sshd`), `text` the whole description.
public struct MissingFeature: Sendable, Hashable, CustomStringConvertible {
    public var id: String
    public var text: String
    public var description: String { text }

    /// The network interface the guest is reached through (images/kernel-rootfs/init).
    public static let networkInterface = "eth0"

    public init?(line text: String) {
        guard let first = text.split(separator: " ").first else { return nil }
        self.id = String(first)
        self.text = text
    }
}

/// Reads a guest's serial console log (a file libvirt writes) for markers and crashes.
public struct ConsoleLog: Sendable {
    public let url: URL
    /// Why the file stopped growing for a reason of its own (a remote host's console that can no
    /// longer be fetched): a wait ends with that, not with a silent console at its deadline.
    public let channelFailure: @Sendable () -> KMatrixError?
    /// Why the guest's machine stopped, if it did: a killed QEMU writes nothing more, so the wait
    /// ends with that cause instead of at its deadline. Asked about once a second.
    public let machineStopped: @Sendable () async -> MachineStop?
    let clock: WaitClock

    public init(url: URL, clock: WaitClock, channelFailure: @escaping @Sendable () -> KMatrixError? = { nil },
                machineStopped: @escaping @Sendable () async -> MachineStop? = { nil }) {
        self.url = url
        self.clock = clock
        self.channelFailure = channelFailure
        self.machineStopped = machineStopped
    }

    public func text() -> String { Self.read(url) }

    /// A console log's text, or nothing when there is none yet.
    public static func read(_ url: URL) -> String {
        guard let data = FileManager.default.contents(atPath: url.path) else { return "" }
        return String(decoding: data, as: UTF8.self)
    }

    /// Lines a kernel prints when it dies or breaks; WARN splats are not crashes.
    static let crashMarkers = ["Kernel panic", "BUG: ", "Oops:", "general protection fault", "Unable to handle kernel"]

    public func crashLine() -> String? {
        Self.crashLine(in: text())
    }

    /// Serial consoles end lines in CRLF, which Swift reads as one Character: split on scalars.
    static func lines(_ text: String) -> [Substring] {
        text.split(whereSeparator: \.isNewline)
    }

    public static func crashLine(in text: String) -> String? {
        for line in lines(text) where crashMarkers.contains(where: { line.contains($0) }) {
            return line.trimmingCharacters(in: .whitespacesAndNewlines.union(.controlCharacters))
        }
        return nil
    }

    public func missingFeatures() -> [MissingFeature] {
        Self.missingFeatures(in: text())
    }

    public static func missingFeatures(in text: String) -> [MissingFeature] {
        var found: [MissingFeature] = []
        for line in lines(text) {
            guard let range = line.range(of: "KMATRIX-MISSING ") else { continue }
            let what = line[range.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines.union(.controlCharacters))
            if let feature = MissingFeature(line: what), !found.contains(feature) { found.append(feature) }
        }
        return found
    }

    public func tail(lines count: Int = 15) -> String {
        Self.lines(text()).suffix(count)
            .map { $0.trimmingCharacters(in: .controlCharacters) }.joined(separator: "\n")
    }

    /// Waits until one of `markers` appears on the console and returns it; fails early on a
    /// crash, at the deadline with the console's tail. `silentHint` explains an empty console,
    /// which differs for a bare kernel and a disk image.
    @discardableResult
    public func waitFor(_ markers: [String], within limit: Duration, what: String, interval: Duration = .milliseconds(100),
                        silentHint: String = "a kernel needs its 8250 serial console built in, CONFIG_SERIAL_8250_CONSOLE, to print on ttyS0") async throws -> String {
        var lastStopCheck = clock.now
        let seen = try await poll(clock: clock, within: limit, every: interval) { _ -> String? in
            if Task.isCancelled { throw KMatrixError(.interrupted, "interrupted while waiting for \(what)") }
            let content = text()
            if let marker = markers.first(where: content.contains) { return marker }
            if let crash = Self.crashLine(in: content) { throw KMatrixError(.guestPanic, "guest crashed: \(crash)", consoleLine: crash) }
            if let failure = channelFailure() { throw failure }
            // Asking the hypervisor costs a round trip: about once a second is soon enough.
            if (clock.now - lastStopCheck) >= .seconds(1) {
                lastStopCheck = clock.now
                if let stopped = await machineStopped() { throw stopped.error("before \(what) appeared") }
            }
            return nil
        }
        if let seen { return seen }
        if Task.isCancelled { throw KMatrixError(.interrupted, "interrupted while waiting for \(what)") }
        let content = text()
        if content.isEmpty {
            throw KMatrixError(.boot, "\(what) not seen within \(limit.formattedSeconds): the console stayed empty (\(silentHint))")
        }
        let tail = tail(lines: 8).replacingOccurrences(of: "\n", with: " ⏎ ")
        throw KMatrixError(.boot, "\(what) not seen on the console within \(limit.formattedSeconds); console tail: \(tail)")
    }
}
