/// What is known about one guest when its cells are made. Given to the builder once, so every
/// cell of the guest carries the same facts and none is patched afterwards.
public struct GuestFacts: Sendable, Hashable {
    public var guest: GuestSpec
    /// The row the cells go in: the guest's name, or for an unnamed `--kernel` the release it
    /// reported once booted.
    public var row: String
    /// Observed `uname -r`; before a boot, the guest's nominal kernel.
    public var kernel: String?
    public var distro: String?
    public var provenance: Provenance?
    /// What the guest's kernel reported it lacks (our rootfs's checks): the likely cause of any
    /// failure on it, named in that failure.
    public var missingFeatures: [String]
    /// The console log's name relative to the results folder, when the guest has one.
    public var consoleLog: String?
    /// What each of the guest's consumers is, as deployed there (by consumer name).
    public var consumers: [String: ConsumerIdentity] = [:]

    public init(guest: GuestSpec, row: String? = nil, kernel: String? = nil, distro: String? = nil, provenance: Provenance? = nil,
                missingFeatures: [String] = [], consoleLog: String? = nil, consumers: [String: ConsumerIdentity] = [:]) {
        self.guest = guest
        self.consumers = consumers
        self.row = row ?? guest.name
        self.kernel = kernel ?? guest.nominalKernel
        self.distro = distro
        self.provenance = provenance
        self.missingFeatures = missingFeatures
        self.consoleLog = consoleLog
    }
}

/// Assembles result cells from a guest's facts: a classified probe run, or a failure, plus the
/// matrix's expectation.
public struct CellBuilder: Sendable {
    public let matrix: Matrix
    public var facts: GuestFacts

    public init(matrix: Matrix, facts: GuestFacts) {
        self.matrix = matrix
        self.facts = facts
    }

    func expectation(_ scenario: Scenario) -> Outcome? {
        matrix.expectation(guest: facts.guest, scenario: scenario.name, kernel: facts.kernel.flatMap(KernelVersion.init(release:)))
    }

    /// A failure on this guest, with what its kernel lacks unless the user cut it short.
    func explained(_ failure: CellFailure) -> CellFailure {
        guard failure.kind != .interrupted, !facts.missingFeatures.isEmpty else { return failure }
        var failure = failure
        failure.missingFeatures = facts.missingFeatures.filter { !failure.message.contains($0) }
        return failure
    }

    /// The cell's consumer, with what this guest deployed of it.
    func consumerCell(_ scenario: Scenario, observed: ConsumerObservation? = nil) -> ConsumerCell? {
        guard var cell = scenario.consumerCell else { return nil }
        cell.identity = facts.consumers[cell.name]
        cell.observed = observed
        return cell
    }

    public func measured(_ scenario: Scenario, probe: ProbeResult, durationS: Double) -> CellResult {
        let classification = Classifier.classify(probe, scenario: scenario)
        var failure: CellFailure?
        if classification.outcome == .error {
            failure = explained(CellFailure(probe.error == nil ? .inconsistentEvidence : .probe, phase: .scenario, classification.reason))
        }
        var cell = CellResult(
            guest: facts.row, scenario: scenario.name, kernel: facts.kernel, distro: facts.distro,
            outcome: classification.outcome, expected: expectation(scenario),
            sent: classification.sent, received: classification.received, lost: classification.lost,
            enobufs: probe.enobufs, counters: classification.counters, reason: classification.reason, failure: failure,
            durationS: durationS,
            evidence: Evidence(
                unicastFailures: classification.unicastFailures, bypassedFullQueue: classification.bypassedFullQueue,
                messagesRead: probe.messagesRead, lostRanges: probe.lostRanges, rcvbufEffective: probe.rcvbufEffective,
                firewall: probe.firewall, queueTotalWhilePaused: probe.queuePaused?.queueTotal, consoleLog: facts.consoleLog),
            provenance: facts.provenance)
        cell.consumer = consumerCell(scenario, observed: classification.observation)
        return cell
    }

    /// A cell without a measurement (`skipped` or `error`, with why). The expectation is still
    /// stated when the kernel is known.
    public func unmeasured(_ outcome: Outcome, _ scenario: Scenario, failure: CellFailure, durationS: Double = 0) -> CellResult {
        var cell = CellResult(guest: facts.row, scenario: scenario.name, kernel: facts.kernel, distro: facts.distro, outcome: outcome,
                              expected: expectation(scenario), failure: explained(failure), durationS: durationS, provenance: facts.provenance)
        if let consoleLog = facts.consoleLog {
            cell.evidence = Evidence(unicastFailures: 0, bypassedFullQueue: 0, messagesRead: 0, consoleLog: consoleLog)
        }
        cell.consumer = consumerCell(scenario)
        return cell
    }
}
