/// The last lines of a guest's serial console, as a cell keeps them: bounded, and clean of what
/// a console carries besides text (ANSI colour and cursor sequences, carriage returns, other
/// control characters). A run puts this into results.json when it measures, so the reports built
/// from a results.json — here or on another machine — open no file (docs/architecture.md, "Input").
public enum ConsoleTail {
    public static let maximumLines = 30
    public static let maximumLineLength = 240
    public static let maximumBytes = 8 << 10

    public static func make(_ console: String) -> String? {
        var lines: [String] = []
        for raw in console.split(whereSeparator: \.isNewline).suffix(maximumLines * 2) {
            let line = clean(raw)
            if !line.isEmpty { lines.append(line) }
        }
        var kept: [String] = []
        var bytes = 0
        for line in lines.suffix(maximumLines).reversed() {
            bytes += line.utf8.count + 1
            if bytes > maximumBytes { break }
            kept.append(line)
        }
        return kept.isEmpty ? nil : kept.reversed().joined(separator: "\n")
    }

    /// One console line without escape sequences (ESC [ … final byte, ESC ] … BEL or ESC \) or
    /// other unsafe characters, cut to `maximumLineLength` characters.
    static func clean(_ line: some StringProtocol) -> String {
        var out = ""
        var scalars = line.unicodeScalars.makeIterator()
        var count = 0
        while let scalar = scalars.next() {
            if scalar == "\u{1B}" {
                switch scalars.next() {
                case "["?:
                    while let next = scalars.next(), !(0x40...0x7E).contains(next.value) {}
                case "]"?:
                    while let next = scalars.next(), next != "\u{07}", next != "\u{1B}" {}
                default:
                    break
                }
                continue
            }
            if scalar == "\t" { out += " "; continue }
            guard !SafeText.isUnsafe(scalar) else { continue }
            if count >= maximumLineLength { out += "…"; break }
            out.unicodeScalars.append(scalar)
            count += 1
        }
        return out.trimmingTrailingSpaces()
    }
}
