import Foundation

/// Binary search for the change between two ends whose outcomes differ (docs/architecture.md,
/// "Bisect"). Candidates are indices 0..<count in order (oldest kernel or commit first); the
/// ends are measured first, then the midpoint of the interval still in question, and a
/// candidate that proves nothing (flaky, error, not triggered, a build that failed) is skipped
/// in favour of its nearest neighbour, as `git bisect skip` does. Pure: the caller measures.
public struct Bisection: Sendable, Equatable, Codable {
    /// What one candidate showed.
    public enum Verdict: Sendable, Equatable, Codable {
        /// The oldest candidate's outcome.
        case old
        /// The newest candidate's outcome.
        case new
        /// Nothing proven here, and why.
        case skip(String)
    }

    public enum Answer: Sendable, Equatable {
        /// Still measuring.
        case undecided
        /// The ends do not frame a change: they agree, or one proves nothing.
        case endsDoNotDiffer
        /// The outcome flips between these two adjacent candidates.
        case found(lastOld: Int, firstNew: Int)
        /// Skipped candidates leave an interval: the flip lies somewhere in between.
        case inconclusive(lastOld: Int, firstNew: Int)
    }

    public let count: Int
    public private(set) var verdicts: [Int: Verdict] = [:]

    public init(count: Int) {
        precondition(count >= 2, "a bisection needs two candidates")
        self.count = count
    }

    public mutating func record(_ verdict: Verdict, at index: Int) {
        precondition((0..<count).contains(index), "no candidate \(index)")
        verdicts[index] = verdict
    }

    /// The newest candidate known to behave like the oldest, and the oldest known to behave
    /// like the newest, with nothing but skips or unmeasured candidates between them.
    var interval: (lastOld: Int, firstNew: Int)? {
        guard verdicts[0] == .old, verdicts[count - 1] == .new else { return nil }
        let firstNew = (0..<count).first { verdicts[$0] == .new } ?? count - 1
        let lastOld = (0..<firstNew).last { verdicts[$0] == .old } ?? 0
        return (lastOld, firstNew)
    }

    /// The next candidate to measure, or nil when the answer is known.
    public var next: Int? {
        if verdicts[0] == nil { return 0 }
        if verdicts[count - 1] == nil { return count - 1 }
        guard let (lastOld, firstNew) = interval else { return nil }
        let open = (lastOld + 1)..<firstNew
        let untested = open.filter { verdicts[$0] == nil }
        guard !untested.isEmpty else { return nil }
        // Twice the distance to the midpoint keeps the arithmetic in integers.
        let middle = lastOld + firstNew
        return untested.min { abs(2 * $0 - middle) < abs(2 * $1 - middle) || (abs(2 * $0 - middle) == abs(2 * $1 - middle) && $0 < $1) }
    }

    public var answer: Answer {
        guard let old = verdicts[0], let new = verdicts[count - 1] else { return .undecided }
        guard old == .old, new == .new else { return .endsDoNotDiffer }
        guard next == nil, let (lastOld, firstNew) = interval else { return .undecided }
        return firstNew - lastOld == 1 ? .found(lastOld: lastOld, firstNew: firstNew) : .inconclusive(lastOld: lastOld, firstNew: firstNew)
    }

    /// About how many more candidates need measuring (the binary search's depth over the open interval).
    public var estimatedRemaining: Int {
        if verdicts[0] == nil || verdicts[count - 1] == nil {
            return (verdicts[0] == nil ? 1 : 0) + (verdicts[count - 1] == nil ? 1 : 0) + Self.depth(count - 2)
        }
        guard let (lastOld, firstNew) = interval else { return 0 }
        return Self.depth((lastOld + 1..<firstNew).filter { verdicts[$0] == nil }.count)
    }

    /// ⌈log2(n + 1)⌉: measurements that settle an interval of n untested candidates.
    public static func depth(_ untested: Int) -> Int {
        var depth = 0
        var remaining = untested
        while remaining > 0 {
            depth += 1
            remaining /= 2
        }
        return depth
    }

    /// What a measured cell means for the search, given the ends' outcomes. Only a real,
    /// agreed measurement counts; everything else is a skip with the cell's reason.
    public static func verdict(for cell: CellResult, old: Outcome, new: Outcome) -> Verdict {
        switch cell.outcome {
        case .flaky, .error, .notTriggered, .skipped:
            return .skip("\(cell.outcome.rawValue): \(cell.reason)")
        case old:
            return .old
        case new:
            return .new
        default:
            return .skip("\(cell.outcome.rawValue), neither end's outcome (\(old.rawValue) or \(new.rawValue)): \(cell.reason)")
        }
    }
}

extension Bisection.Verdict {
    public var label: String {
        switch self {
        case .old: "old"
        case .new: "new"
        case .skip: "skip"
        }
    }
}

/// A total order of kernel releases for sorting candidates: the version rules' comparison
/// (major.minor.patch) first, then the numbers that follow in the release string (the ABI and
/// build numbers: 6.1.0-56 < 6.1.0-57, 4.18.0-513.el8 < 4.18.0-553.el8), then the text.
public enum ReleaseOrder {
    public static func precedes(_ a: String, _ b: String) -> Bool {
        let (left, right) = (KernelVersion(release: a), KernelVersion(release: b))
        if let left, let right, left != right { return left < right }
        if (left == nil) != (right == nil) { return left != nil }
        let (leftNumbers, rightNumbers) = (numbers(a), numbers(b))
        if leftNumbers != rightNumbers { return leftNumbers.lexicographicallyPrecedes(rightNumbers) }
        return a < b
    }

    /// Every run of digits, in order.
    static func numbers(_ text: String) -> [Int] {
        var found: [Int] = []
        var current = ""
        for character in text {
            if character.isASCII, character.isNumber {
                current.append(character)
            } else if !current.isEmpty {
                found.append(Int(current.prefix(18)) ?? 0)
                current = ""
            }
        }
        if !current.isEmpty { found.append(Int(current.prefix(18)) ?? 0) }
        return found
    }
}
