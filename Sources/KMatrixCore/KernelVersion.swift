/// The numeric part of a kernel release as `uname -r` prints it.
///
/// Distribution strings carry the upstream version first and vendor noise after it
/// (`3.10.0-1160.el7.x86_64`, `5.8.0-63-generic`, `6.12.118+deb13-cloud-amd64`), so only the
/// leading dotted numbers take part in comparisons.
public struct KernelVersion: Sendable, Hashable, Comparable, CustomStringConvertible, Codable {
    public var major: Int
    public var minor: Int
    public var patch: Int

    public init(_ major: Int, _ minor: Int, _ patch: Int = 0) {
        self.major = major
        self.minor = minor
        self.patch = patch
    }

    /// Parses a `uname -r` string or a rule operand such as `4.6`; nil when it does not start with `N.N`.
    public init?(release: String) {
        var numbers: [Int] = []
        var current = ""
        for character in release {
            if character.isASCII, character.isNumber {
                current.append(character)
            } else if character == "." && !current.isEmpty && numbers.count < 2 {
                numbers.append(Int(current) ?? 0)
                current = ""
            } else {
                break
            }
        }
        if !current.isEmpty, let last = Int(current) { numbers.append(last) }
        guard numbers.count >= 2 else { return nil }
        self.init(numbers[0], numbers[1], numbers.count > 2 ? numbers[2] : 0)
    }

    public static func < (lhs: KernelVersion, rhs: KernelVersion) -> Bool {
        (lhs.major, lhs.minor, lhs.patch) < (rhs.major, rhs.minor, rhs.patch)
    }

    public var description: String { "\(major).\(minor).\(patch)" }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let parsed = KernelVersion(release: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a kernel version: \(text)"))
        }
        self = parsed
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// A condition over the kernel version, as written in `matrix.yaml`: `kernel < 4.6`,
/// `kernel >= 4.6 and kernel < 5.0`. The word `kernel` is optional.
public struct VersionRule: Sendable, Hashable, CustomStringConvertible {
    public enum Comparison: String, Sendable, CaseIterable {
        case lessOrEqual = "<="
        case greaterOrEqual = ">="
        case equal = "=="
        case notEqual = "!="
        case less = "<"
        case greater = ">"
    }

    public struct Clause: Sendable, Hashable {
        public var comparison: Comparison
        public var version: KernelVersion
    }

    public var clauses: [Clause]

    /// Parses a rule; a text that is none is `KMatrixError(.invalidInput)` saying why.
    public init(parsing text: String) throws(KMatrixError) {
        let parts = text.split(separator: " and ", omittingEmptySubsequences: false)
            .flatMap { $0.split(separator: "&&", omittingEmptySubsequences: false) }
        var clauses: [Clause] = []
        for part in parts {
            var rest = part.trimmingWhitespace()
            if rest.hasPrefix("kernel") { rest = String(rest.dropFirst("kernel".count)).trimmingWhitespace() }
            // Longer operators first so "<=" is not read as "<".
            guard let comparison = Comparison.allCases.first(where: { rest.hasPrefix($0.rawValue) }) else {
                throw KMatrixError(.invalidInput, "expected a comparison like \"kernel < 4.6\" but found \"\(part.trimmingWhitespace())\"")
            }
            let operand = String(rest.dropFirst(comparison.rawValue.count)).trimmingWhitespace()
            guard let version = KernelVersion(release: operand), operand.allSatisfy({ $0.isNumber || $0 == "." }) else {
                throw KMatrixError(.invalidInput, "\"\(operand)\" is not a kernel version (write it like 4.6 or 5.10.0)")
            }
            clauses.append(Clause(comparison: comparison, version: version))
        }
        self.clauses = clauses
    }

    public func matches(_ version: KernelVersion) -> Bool {
        clauses.allSatisfy { clause in
            switch clause.comparison {
            case .less: version < clause.version
            case .lessOrEqual: version <= clause.version
            case .greater: version > clause.version
            case .greaterOrEqual: version >= clause.version
            case .equal: version == clause.version
            case .notEqual: version != clause.version
            }
        }
    }

    public var description: String {
        clauses.map { "kernel \($0.comparison.rawValue) \($0.version.major).\($0.version.minor)\($0.version.patch == 0 ? "" : ".\($0.version.patch)")" }
            .joined(separator: " and ")
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}
