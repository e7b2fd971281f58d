/// Text and attribute values for report.html and history.html, which Plot writes but does not
/// escape itself (`HTMLSupport`); every other XML kmatrix writes is an element tree (FoundationXML).
enum XMLText {
    static func escape(_ text: String) -> String {
        // Most values (names, outcomes, numbers) need nothing: one pass over the bytes decides.
        if !text.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "&") || $0 == UInt8(ascii: "<") || $0 == UInt8(ascii: ">")
            || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "'") }) {
            return text
        }
        var escaped = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&apos;"
            case "\n", "\t": escaped.unicodeScalars.append(scalar)
            // XML 1.0 cannot carry other control characters (console logs have escape sequences).
            case _ where scalar.value < 0x20: continue
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }
}
