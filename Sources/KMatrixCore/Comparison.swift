/// Cell-by-cell differences between two runs, for nightly regression checks.
public struct Comparison: Sendable, Equatable {
    public enum Change: Sendable, Equatable {
        case outcomeChanged(guest: String, scenario: String, from: Outcome, to: Outcome, expected: Outcome?)
        case countMoved(guest: String, scenario: String, field: String, from: Int, to: Int)
        case kernelChanged(guest: String, from: String, to: String)
        /// A user's consumer deployed differently (another version, other files) on a row.
        case consumerChanged(guest: String, consumer: String, from: String, to: String)
        /// A new row (a kernel the archive just published) whose verdict is not the one of the
        /// newest older kernel of its series in the same run.
        case newKernelDiffers(guest: String, verdict: String, previous: String, previousVerdict: String)
        /// A row the base did not have, with its verdict (a kernel set's newly published kernel).
        case guestAdded(String, verdict: String? = nil)
        case guestRemoved(String)
        case scenarioAdded(String)
        case scenarioRemoved(String)
    }

    public var changes: [Change]

    /// A cell that matched its expectation before and does not now, or that now errors or flakes.
    public var hasRegression: Bool {
        changes.contains { change in
            switch change {
            case .outcomeChanged(_, _, let from, let to, let expected): Self.isRegression(from: from, to: to, expected: expected)
            case .newKernelDiffers: true
            default: false
            }
        }
    }

    static func isRegression(from: Outcome, to: Outcome, expected: Outcome?) -> Bool {
        to == .error || to == .flaky || (expected.map { from == $0 && to != $0 } ?? false)
    }

    /// Relative change beyond which a count counts as moved (the unicast-failure count depends on
    /// how many messages fit the buffer, which varies a little between boots).
    public static let defaultTolerance = 0.10

    public static func compare(base: RunResult, new: RunResult, tolerance: Double = defaultTolerance) -> Comparison {
        var changes: [Change] = []
        let baseGuests = Set(base.guests), newGuests = Set(new.guests)
        let baseScenarios = Set(base.scenarios), newScenarios = Set(new.scenarios)
        for guest in new.guests where !baseGuests.contains(guest) {
            changes.append(.guestAdded(guest, verdict: new.verdicts.first { $0.guest == guest }?.summary))
            if let differs = newKernelDiffers(guest, base: baseGuests, in: new) { changes.append(differs) }
        }
        for guest in base.guests where !newGuests.contains(guest) { changes.append(.guestRemoved(guest)) }
        for scenario in new.scenarios where !baseScenarios.contains(scenario) { changes.append(.scenarioAdded(scenario)) }
        for scenario in base.scenarios where !newScenarios.contains(scenario) { changes.append(.scenarioRemoved(scenario)) }
        for guest in new.guests where baseGuests.contains(guest) {
            // Rows are paired by name, so a row whose kernel moved on (a distribution update, a
            // new --kernel build) is still the same row; the move is reported as its own event.
            // The first cell that knows its kernel: a skipped first scenario may not.
            if let oldKernel = base.kernel(of: guest), let newKernel = new.kernel(of: guest), oldKernel != newKernel {
                changes.append(.kernelChanged(guest: guest, from: oldKernel, to: newKernel))
            }
            // Consumer cells pair by scenario, which names the consumer; what was deployed under
            // that name may have changed, and says so like a kernel that moved on.
            let oldConsumers = consumers(of: guest, in: base), newConsumers = consumers(of: guest, in: new)
            for (name, now) in newConsumers.sorted(by: { $0.key < $1.key }) {
                guard let before = oldConsumers[name], before != now else { continue }
                changes.append(.consumerChanged(guest: guest, consumer: name, from: before.description, to: now.description))
            }
            for scenario in new.scenarios where baseScenarios.contains(scenario) {
                guard let old = base.cell(guest: guest, scenario: scenario), let cell = new.cell(guest: guest, scenario: scenario) else { continue }
                if old.outcome != cell.outcome {
                    changes.append(.outcomeChanged(guest: guest, scenario: scenario, from: old.outcome, to: cell.outcome, expected: cell.expected))
                    continue
                }
                guard cell.outcome.isMeasurement else { continue }
                for (field, from, to) in [("sent", old.sent, cell.sent), ("received", old.received, cell.received), ("lost", old.lost, cell.lost)]
                where moved(from, to, tolerance: tolerance) {
                    changes.append(.countMoved(guest: guest, scenario: scenario, field: field, from: from, to: to))
                }
            }
        }
        return Comparison(changes: changes)
    }

    /// A new row's verdict against the newest older kernel of its series that both runs have:
    /// what a nightly run over a kernel set flags when the archive publishes a kernel.
    static func newKernelDiffers(_ guest: String, base: Set<String>, in new: RunResult) -> Change? {
        guard let kernel = new.kernel(of: guest), let version = KernelVersion(release: kernel) else { return nil }
        let series = ArchiveKernel.series(of: kernel)
        let older = new.guests.filter { base.contains($0) }.compactMap { other -> (String, String)? in
            guard let release = new.kernel(of: other), ArchiveKernel.series(of: release) == series,
                  let otherVersion = KernelVersion(release: release), otherVersion <= version,
                  release != kernel, DebianVersion.compare(release, kernel) < 0 else { return nil }
            return (other, release)
        }
        guard let previous = older.max(by: { DebianVersion.compare($0.1, $1.1) < 0 }) else { return nil }
        let verdicts = Dictionary(new.verdicts.map { ($0.guest, $0) }, uniquingKeysWith: { first, _ in first })
        guard let mine = verdicts[guest], let theirs = verdicts[previous.0] else { return nil }
        // The answers, not their sentences (which carry counts): an answer either row does not
        // know says nothing about a change.
        let answers = [(mine.affected, theirs.affected), (mine.mitigation, theirs.mitigation), (mine.symptom, theirs.symptom)]
        guard answers.contains(where: { $0.state != .unknown && $1.state != .unknown && $0.state != $1.state }) else { return nil }
        return .newKernelDiffers(guest: guest, verdict: mine.summary, previous: previous.0, previousVerdict: theirs.summary)
    }

    /// What a row deployed of each consumer: its label and its bundle's digest.
    struct Deployed: Equatable, CustomStringConvertible {
        var label: String
        var bundle: String?
        var description: String { label + (bundle.map { " (bundle \($0.prefix(12)))" } ?? "") }
    }

    static func consumers(of guest: String, in result: RunResult) -> [String: Deployed] {
        var found: [String: Deployed] = [:]
        for cell in result.cells(of: guest) {
            guard let consumer = cell.consumer, let identity = consumer.identity, found[consumer.name] == nil else { continue }
            found[consumer.name] = Deployed(label: identity.label(name: consumer.name), bundle: identity.bundleSha256)
        }
        return found
    }

    /// In floating point: counts read from another machine's file are bounded (`ResultReader`),
    /// but this arithmetic must not trap on any Int either.
    static func moved(_ from: Int, _ to: Int, tolerance: Double) -> Bool {
        let scale = max(Double(from).magnitude, Double(to).magnitude, 1)
        return (Double(to) - Double(from)).magnitude / scale > tolerance
    }

    public var text: String {
        guard !changes.isEmpty else { return "no changes\n" }
        var lines: [String] = []
        for change in changes {
            switch change {
            case .outcomeChanged(let guest, let scenario, let from, let to, let expected):
                let mark = Self.isRegression(from: from, to: to, expected: expected) ? "REGRESSION" : "changed"
                lines.append("\(mark) \(guest) / \(scenario): \(from.rawValue) → \(to.rawValue)\(expected.map { " (expected \($0.rawValue))" } ?? "")")
            case .countMoved(let guest, let scenario, let field, let from, let to):
                lines.append("moved \(guest) / \(scenario): \(field) \(from) → \(to)")
            case .kernelChanged(let guest, let from, let to):
                lines.append("kernel \(guest): \(from) → \(to)")
            case .consumerChanged(let guest, let consumer, let from, let to):
                lines.append("consumer \(guest) / \(consumer): \(from) → \(to)")
            case .guestAdded(let guest, let verdict): lines.append("new guest \(guest)" + (verdict.map { ": \($0)" } ?? ""))
            case .newKernelDiffers(let guest, let verdict, let previous, let previousVerdict):
                lines.append("NEW KERNEL DIFFERS \(guest): \(verdict) (the kernel before it in its series, \(previous): \(previousVerdict))")
            case .guestRemoved(let guest): lines.append("removed guest \(guest)")
            case .scenarioAdded(let scenario): lines.append("new scenario \(scenario)")
            case .scenarioRemoved(let scenario): lines.append("removed scenario \(scenario)")
            }
        }
        return lines.map { SafeText.terminal($0) }.joined(separator: "\n") + "\n"
    }
}
