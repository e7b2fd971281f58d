/// Limits a matrix file must respect before Yams composes it (docs/architecture.md, "Input").
///
/// Yams expands aliases into full copies and hashes every mapping key to find duplicates, so a
/// few hundred bytes of aliases used as keys ("billion laughs") keep it busy for minutes, and
/// deep nesting recurses without bound. A matrix needs none of that: this scanner reads the text
/// the way YAML's tokenizer does (quotes, comments, block scalars, flow collections) and refuses
/// what could explode — explicit `?` keys, aliases inside a key, more than `maximumAliases`
/// aliases, deep flow nesting and indentation — plus binary data and oversized files.
public enum YAMLGuard {
    public static let maximumBytes = 1 << 20
    public static let maximumAliases = 64
    public static let maximumFlowDepth = 32
    public static let maximumIndent = 200

    public struct Violation: Sendable, Equatable {
        public var line: Int
        public var column: Int
        public var message: String
        public var fix: String
    }

    public static func check(_ text: String) -> Violation? {
        let bytes = text.utf8.count
        if bytes > maximumBytes {
            return Violation(line: 1, column: 1, message: "the file is \(bytes) bytes; a matrix file may be at most \(maximumBytes) bytes",
                             fix: "split the matrix, or check that this is the file you meant")
        }
        var scanner = Scanner()
        for (offset, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if let violation = scanner.scan(Array(line.unicodeScalars), number: offset + 1) { return violation }
        }
        return nil
    }

    struct Scanner {
        var inDouble = false
        var inSingle = false
        var flowDepth = 0
        var blockScalarIndent: Int?
        var aliases = 0

        mutating func scan(_ line: [Unicode.Scalar], number: Int) -> Violation? {
            func violation(_ column: Int, _ message: String, _ fix: String) -> Violation {
                Violation(line: number, column: column + 1, message: message, fix: fix)
            }
            for (column, scalar) in line.enumerated() {
                if scalar == "\u{FFFD}" {
                    return violation(column, "the file is not UTF-8 text", "save matrix.yaml as UTF-8")
                }
                if scalar.value < 0x20 && scalar != "\t" && scalar != "\r" || scalar.value == 0x7F {
                    return violation(column, "the file holds binary data (control character 0x\(String(scalar.value, radix: 16)))",
                                     "check that this is a matrix.yaml and not another file")
                }
            }
            let indent = line.prefix { $0 == " " }.count
            let blank = line.allSatisfy { $0 == " " || $0 == "\t" || $0 == "\r" }
            if let blockIndent = blockScalarIndent {
                if blank || indent > blockIndent { return nil }
                blockScalarIndent = nil
            }
            if !inDouble && !inSingle && flowDepth == 0 && indent > YAMLGuard.maximumIndent {
                return violation(indent, "indented \(indent) columns; a matrix is never nested that deep",
                                 "indent with 2 spaces per level")
            }
            var expectNode = true
            var index = 0
            func next(_ offset: Int = 1) -> Unicode.Scalar? { index + offset < line.count ? line[index + offset] : nil }
            func endsToken(_ scalar: Unicode.Scalar?) -> Bool {
                guard let scalar else { return true }
                return scalar == " " || scalar == "\t" || scalar == "\r" || (flowDepth > 0 && ",[]{}".unicodeScalars.contains(scalar))
            }
            while index < line.count {
                let scalar = line[index]
                defer { index += 1 }
                if inDouble {
                    if scalar == "\\" { index += 1 } else if scalar == "\"" { inDouble = false; expectNode = false }
                    continue
                }
                if inSingle {
                    if scalar == "'" { if next() == "'" { index += 1 } else { inSingle = false; expectNode = false } }
                    continue
                }
                if scalar == "#" && (index == 0 || line[index - 1] == " " || line[index - 1] == "\t") { return nil }
                if scalar == " " || scalar == "\t" || scalar == "\r" { continue }
                switch scalar {
                case "[", "{":
                    if expectNode || flowDepth > 0 {
                        flowDepth += 1
                        if flowDepth > YAMLGuard.maximumFlowDepth {
                            return violation(index, "flow collections nested deeper than \(YAMLGuard.maximumFlowDepth) levels", "flatten the structure")
                        }
                        expectNode = true
                    }
                    continue
                case "]", "}":
                    if flowDepth > 0 { flowDepth -= 1; expectNode = false }
                    continue
                case ",":
                    if flowDepth > 0 { expectNode = true }
                    continue
                case ":":
                    if endsToken(next()) { expectNode = true }
                    continue
                default:
                    break
                }
                guard expectNode else { continue }
                switch scalar {
                case "\"": inDouble = true
                case "'": inSingle = true
                case "-" where endsToken(next()), "|" where flowDepth == 0, ">" where flowDepth == 0:
                    if scalar != "-" {
                        let rest = line[(index + 1)...].prefix { $0 != "#" }
                        if rest.allSatisfy({ "+-0123456789 \t\r".unicodeScalars.contains($0) }) { blockScalarIndent = indent; return nil }
                        expectNode = false
                    }
                case "?" where endsToken(next()):
                    return violation(index, "explicit mapping keys (`? key`) are not accepted in a matrix file", "write `key: value`")
                case "!":
                    while index + 1 < line.count && !endsToken(line[index + 1]) { index += 1 }
                case "&":
                    while index + 1 < line.count && Self.isAnchorCharacter(line[index + 1]) { index += 1 }
                case "*":
                    aliases += 1
                    if aliases > YAMLGuard.maximumAliases {
                        return violation(index, "more than \(YAMLGuard.maximumAliases) aliases", "write the values out; a matrix needs few anchors")
                    }
                    let start = index
                    while index + 1 < line.count && Self.isAnchorCharacter(line[index + 1]) { index += 1 }
                    if Self.isInsideKey(line, after: index + 1) {
                        return violation(start, "an alias used as (part of) a mapping key", "use aliases only as values")
                    }
                    expectNode = false
                default:
                    expectNode = false
                }
            }
            return nil
        }

        /// libyaml's anchor names: letters, digits, '-' and '_'.
        static func isAnchorCharacter(_ scalar: Unicode.Scalar) -> Bool {
            InputRules.isAlphanumeric(scalar) || scalar == "-" || scalar == "_"
        }

        /// Whether the node ending at `start` belongs to an implicit key: a `:` follows on this line
        /// at its own level or at the level of a flow collection enclosing it, before a `,` moves on
        /// to a sibling. Implicit keys never span lines, so the end of the line ends the question.
        static func isInsideKey(_ line: [Unicode.Scalar], after start: Int) -> Bool {
            var level = 0
            var lowest = 0
            var active = true
            var index = start
            var double = false
            var single = false
            while index < line.count {
                let scalar = line[index]
                defer { index += 1 }
                if double { if scalar == "\\" { index += 1 } else if scalar == "\"" { double = false }; continue }
                if single { if scalar == "'" { single = false }; continue }
                switch scalar {
                case "\"": double = true
                case "'": single = true
                case "#" where index > 0 && (line[index - 1] == " " || line[index - 1] == "\t"): return false
                case "[", "{": level += 1
                case "]", "}":
                    level -= 1
                    if level < lowest { lowest = level; active = true }
                case "," where level == lowest: active = false
                case ":":
                    let following = index + 1 < line.count ? line[index + 1] : " "
                    if level == lowest && active && " \t\r,[]{}".unicodeScalars.contains(following) { return true }
                default: break
                }
            }
            return false
        }
    }
}
