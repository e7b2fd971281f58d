import Foundation

/// What `kmatrix bisect` found and how: `bisect.json` (every step with its evidence) and
/// `bisect.md` (the answer in one sentence, then the steps).
public struct BisectReport: Sendable, Codable, Equatable {
    /// 2: `verification` is an object (verdict and detail), no longer a sentence.
    public static let currentSchema = 2

    /// Whether booting the culprit and its parent afresh (and, asked, reverting the culprit)
    /// gave the same outcomes again. Code decides on `verdict`; `detail` is for people.
    public struct Verification: Sendable, Codable, Equatable {
        public enum Verdict: String, Sendable, Codable {
            case confirmed
            case disagrees
        }

        public var verdict: Verdict
        public var detail: String

        public init(_ verdict: Verdict, _ detail: String) {
            self.verdict = verdict
            self.detail = detail
        }

        public var text: String { "\(verdict.rawValue): \(detail)" }
    }

    public enum Mode: String, Sendable, Codable {
        /// Packaged kernels (.deb, .rpm, bzImage), ordered by release.
        case packages
        /// Commits of a kernel git tree, built one by one.
        case git
    }

    /// One kernel or commit in the search, oldest first.
    public struct Candidate: Sendable, Codable, Equatable {
        public var index: Int
        /// The release (packages) or the short commit id (git).
        public var label: String
        /// The files (packages) or the commit subject (git).
        public var detail: String
        public init(index: Int, label: String, detail: String) {
            self.index = index
            self.label = label
            self.detail = detail
        }
    }

    public enum Phase: String, Sendable, Codable {
        case search, verify
    }

    public struct Step: Sendable, Codable, Equatable {
        public var number: Int
        public var phase: Phase
        public var candidate: Int
        public var label: String
        /// The combined outcome of the step's runs (nil when it never ran: the build failed).
        public var outcome: Outcome?
        public var verdict: String
        /// Why the step was skipped, or what it showed.
        public var reason: String
        /// The cells behind the verdict (one per scenario, repetitions folded in).
        public var cells: [CellResult]
        public var durationS: Double
        public var buildS: Double?
        /// The end of the build log, when the build failed.
        public var logTail: String?
        /// Taken from an earlier run's step cache, not measured again.
        public var cached: Bool

        public init(number: Int, phase: Phase, candidate: Int, label: String, outcome: Outcome?, verdict: String, reason: String,
                    cells: [CellResult], durationS: Double, buildS: Double? = nil, logTail: String? = nil, cached: Bool = false) {
            self.number = number
            self.phase = phase
            self.candidate = candidate
            self.label = label
            self.outcome = outcome
            self.verdict = verdict
            self.reason = reason
            self.cells = cells
            self.durationS = durationS
            self.buildS = buildS
            self.logTail = logTail
            self.cached = cached
        }
    }

    /// The commit that changed the outcome (git mode).
    public struct Culprit: Sendable, Codable, Equatable {
        public var commit: String
        public var subject: String
        public var date: String
        public var files: [String]
        /// Its bzImage is byte-identical to its parent's: the change cannot matter.
        public var identicalToParent: Bool
        public init(commit: String, subject: String, date: String, files: [String], identicalToParent: Bool) {
            self.commit = commit
            self.subject = subject
            self.date = date
            self.files = files
            self.identicalToParent = identicalToParent
        }
    }

    public enum Result: String, Sendable, Codable {
        case found
        case inconclusive
        /// Refused: the ends agree, or one of them proves nothing.
        case endsDoNotDiffer = "ends-do-not-differ"
    }

    public var schema = BisectReport.currentSchema
    public var mode: Mode
    public var scenario: String
    public var repeats: Int
    public var candidates: [Candidate]
    public var oldOutcome: Outcome?
    public var newOutcome: Outcome?
    public var steps: [Step] = []
    public var result: Result?
    public var lastOld: Int?
    public var firstNew: Int?
    public var culprit: Culprit?
    /// Set when the culprit was verified.
    public var verification: Verification?
    public var answer: String = ""
    public var durationS: Double = 0

    public init(mode: Mode, scenario: String, repeats: Int, candidates: [Candidate]) {
        self.mode = mode
        self.scenario = scenario
        self.repeats = repeats
        self.candidates = candidates
    }

    /// Builds (git mode) beyond the two ends that the search needed.
    public var buildsBeyondEnds: Int {
        let ends: Set<Int> = [0, candidates.count - 1]
        return Set(steps.filter { $0.phase == .search && !$0.cached && $0.buildS != nil && !ends.contains($0.candidate) }.map(\.candidate)).count
    }

    /// The one sentence that answers the question.
    public mutating func conclude(_ answer: Bisection.Answer) {
        func name(_ index: Int) -> String {
            let candidate = candidates[index]
            return mode == .git ? "\(candidate.label) (\(candidate.detail))" : candidate.label
        }
        let old = oldOutcome?.rawValue ?? "?", new = newOutcome?.rawValue ?? "?"
        switch answer {
        case .found(let lastOld, let firstNew):
            result = .found
            self.lastOld = lastOld
            self.firstNew = firstNew
            if mode == .git, let culprit {
                self.answer = "\(scenario) flips from \(old) to \(new) with commit \(culprit.commit) \"\(culprit.subject)\" (\(culprit.date))"
                    + (culprit.files.isEmpty ? "" : ", which touches \(culprit.files.joined(separator: ", "))")
                    + (culprit.identicalToParent ? "; its bzImage is byte-identical to its parent's, so the change cannot matter" : "") + "."
            } else {
                self.answer = "\(scenario) is \(old) on \(name(lastOld)) and \(new) on \(name(firstNew)): the change lies between these two adjacent \(mode == .git ? "commits" : "kernels")."
            }
        case .inconclusive(let lastOld, let firstNew):
            result = .inconclusive
            self.lastOld = lastOld
            self.firstNew = firstNew
            self.answer = "inconclusive between \(name(lastOld)) (\(old)) and \(name(firstNew)) (\(new)): every \(mode == .git ? "commit" : "kernel") in between was skipped."
        case .endsDoNotDiffer:
            result = .endsDoNotDiffer
            self.answer = "the ends do not frame a change (\(name(0)): \(old), \(name(candidates.count - 1)): \(new)), so bisecting would prove nothing."
        case .undecided:
            self.answer = "undecided"
        }
    }

    public func encoded() throws -> Data {
        try JSONCoding.encoder.encode(self)
    }

    public static func decode(_ data: Data) throws -> BisectReport {
        try JSONCoding.decoder.decode(BisectReport.self, from: data)
    }

    public func markdown() -> String {
        var text = "# kmatrix bisect: \(SafeText.markdown(scenario))\n\n\(SafeText.markdown(answer))\n\n"
        if let verification { text += "Verification: \(SafeText.markdown(verification.text))\n\n" }
        if let culprit, !culprit.files.isEmpty {
            text += "Files the culprit touched: " + culprit.files.map(SafeText.markdown).joined(separator: ", ") + "\n\n"
        }
        text += "\(candidates.count) \(mode == .git ? "commits" : "kernels"), oldest first; each step ran the scenario \(repeats) time\(repeats == 1 ? "" : "s").\n\n"
        text += "| step | phase | \(mode == .git ? "commit" : "kernel") | outcome | verdict | build | total | reason |\n"
        text += "| ---: | --- | --- | --- | --- | ---: | ---: | --- |\n"
        for step in steps {
            let build = step.buildS.map { Report.formatSeconds($0) } ?? ""
            text += "| \(step.number) | \(step.phase.rawValue) | \(SafeText.markdown(step.label)) | \(step.outcome?.rawValue ?? "—") | "
                + "\(SafeText.markdown(step.verdict))\(step.cached ? " (cached)" : "") | \(build) | \(Report.formatSeconds(step.durationS)) | \(SafeText.markdown(step.reason)) |\n"
        }
        text += "\n## Candidates\n\n| # | \(mode == .git ? "commit" : "kernel") | \(mode == .git ? "subject" : "files") |\n| ---: | --- | --- |\n"
        for candidate in candidates {
            text += "| \(candidate.index) | \(SafeText.markdown(candidate.label)) | \(SafeText.markdown(candidate.detail)) |\n"
        }
        return text
    }
}
