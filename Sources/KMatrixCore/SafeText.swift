/// Text kmatrix did not write — from a results.json another machine produced, a file name, a
/// guest's console — made safe for where it is shown. The one place that decides what a
/// terminal and a Markdown table may receive (docs/architecture.md, "Input").
public enum SafeText {
    /// Characters a terminal acts on or that reorder what it shows: C0 controls, DEL, C1
    /// controls (ESC, CSI, OSC, BEL, CR among them), and the bidirectional overrides and isolates
    /// ("Trojan source").
    public static func isUnsafe(_ scalar: Unicode.Scalar) -> Bool {
        InputRules.isControl(scalar) || (0x202A...0x202E).contains(scalar.value) || (0x2066...0x2069).contains(scalar.value)
            || scalar.value == 0x200E || scalar.value == 0x200F
    }

    /// One unsafe character, visible: `\n`, `\t`, `\r`, or `\u{1b}`.
    static func escaped(_ scalar: Unicode.Scalar) -> String {
        switch scalar {
        case "\n": "\\n"
        case "\t": "\\t"
        case "\r": "\\r"
        default: "\\u{\(String(scalar.value, radix: 16))}"
        }
    }

    /// For a terminal: every unsafe character shown as an escape, so no value can move the
    /// cursor, retitle the window, ring the bell or rewrite a line. Newlines and tabs stay when
    /// `keepLines` is set (kmatrix's own multi-line messages); a value never needs them.
    public static func terminal(_ text: some StringProtocol, keepLines: Bool = false) -> String {
        // Nearly everything printed is plain: one look, no copy scalar by scalar.
        if !text.unicodeScalars.contains(where: isUnsafe) { return String(text) }
        var out = ""
        out.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            if keepLines && (scalar == "\n" || scalar == "\t") {
                out.unicodeScalars.append(scalar)
            } else if isUnsafe(scalar) {
                out += escaped(scalar)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// Markdown syntax characters that could close a table cell, open a code span, emphasis, a
    /// link or raw HTML wherever they stand. (`_` only emphasises at word edges, which kernel
    /// releases and counter names never have: escaping it would only garble them.)
    static let markdownSyntax: Set<Unicode.Scalar> = ["\\", "|", "`", "*", "[", "]", "<", ">"]

    /// One value inside Markdown (a table cell, a list item, a heading): unsafe characters as
    /// visible escapes, every syntax character behind a backslash, so the value renders as the
    /// text it is and a table keeps its columns.
    public static func markdown(_ text: some StringProtocol) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            if isUnsafe(scalar) {
                out += "\\" + escaped(scalar)
            } else if markdownSyntax.contains(scalar) {
                out += "\\"
                out.unicodeScalars.append(scalar)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
