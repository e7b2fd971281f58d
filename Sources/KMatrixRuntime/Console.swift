import Foundation

/// Reads a guest's serial console log (a file libvirt writes) for markers and crashes.
public struct ConsoleLog: Sendable {
    public let url: URL

    public init(url: URL) {
        self.url = url
    }

    public func text() -> String {
        guard let data = FileManager.default.contents(atPath: url.path) else { return "" }
        return String(decoding: data, as: UTF8.self)
    }

    /// Lines a kernel prints when it dies or breaks; WARN splats are not crashes.
    static let crashMarkers = ["Kernel panic", "BUG: ", "Oops:", "general protection fault", "Unable to handle kernel"]

    public func crashLine() -> String? {
        Self.crashLine(in: text())
    }

    public static func crashLine(in text: String) -> String? {
        for line in text.split(whereSeparator: \.isNewline) {
            if crashMarkers.contains(where: { line.contains($0) }) {
                return line.trimmingCharacters(in: .whitespacesAndNewlines.union(.controlCharacters))
            }
        }
        return nil
    }

    /// What our rootfs's /init found the kernel lacks: its `KMATRIX-MISSING <what>` lines.
    public func missingFeatures() -> [String] {
        Self.missingFeatures(in: text())
    }

    public static func missingFeatures(in text: String) -> [String] {
        var found: [String] = []
        for line in text.split(whereSeparator: \.isNewline) {
            guard let range = line.range(of: "KMATRIX-MISSING ") else { continue }
            let what = line[range.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines.union(.controlCharacters))
            if !what.isEmpty && !found.contains(what) { found.append(what) }
        }
        return found
    }

    public func tail(lines count: Int = 15) -> String {
        text().split(whereSeparator: \.isNewline).suffix(count)
            .map { $0.trimmingCharacters(in: .controlCharacters) }.joined(separator: "\n")
    }

    /// Waits until `marker` appears on the console; fails early on a crash, at the deadline with the tail.
    /// `silentHint` explains an empty console, which differs for a bare kernel and a disk image.
    public func waitFor(_ marker: String, within limit: Duration, what: String,
                        silentHint: String = "a kernel needs its 8250 serial console built in, CONFIG_SERIAL_8250_CONSOLE, to print on ttyS0") async throws {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            try Task.checkCancellation()
            let content = text()
            if content.contains(marker) { return }
            if let crash = Self.crashLine(in: content) { throw KMatrixError(.guestPanic, "guest crashed: \(crash)") }
            try await Task.sleep(for: .milliseconds(200))
        }
        let content = text()
        if content.isEmpty {
            throw KMatrixError(.boot, "\(what) not seen within \(limit.formattedSeconds): the console stayed empty (\(silentHint))")
        }
        let missing = Self.missingFeatures(in: content)
        let tail = tail(lines: 8).replacingOccurrences(of: "\n", with: " ⏎ ")
        throw KMatrixError(.boot, "\(what) not seen on the console within \(limit.formattedSeconds)"
            + (missing.isEmpty ? "" : "; the kernel lacks: \(missing.joined(separator: ", "))") + "; console tail: \(tail)")
    }
}
