/// Assembles result cells: a classified probe run, or a failure, plus the matrix's expectation.
public enum CellBuilder {
    public static func measured(
        guest: GuestSpec, scenario: Scenario, matrix: Matrix, kernel: String, distro: String?,
        probe: ProbeResult, durationS: Double, provenance: Provenance? = nil, consoleLog: String? = nil
    ) -> CellResult {
        let classification = Classifier.classify(probe, scenario: scenario)
        let expected = matrix.expectation(guest: guest, scenario: scenario.name, kernel: KernelVersion(release: kernel))
        var failure: CellFailure?
        if classification.outcome == .error {
            failure = CellFailure(probe.error == nil ? .inconsistentEvidence : .probe, phase: .scenario, classification.reason)
        }
        return CellResult(
            guest: guest.name, scenario: scenario.name, kernel: kernel, distro: distro,
            outcome: classification.outcome, expected: expected,
            sent: classification.sent, received: classification.received, lost: classification.lost,
            enobufs: probe.enobufs, counters: classification.counters, reason: classification.reason, failure: failure,
            durationS: durationS,
            evidence: Evidence(
                unicastFailures: classification.unicastFailures, bypassedFullQueue: classification.bypassedFullQueue,
                messagesRead: probe.messagesRead, lostRanges: probe.lostRanges, rcvbufEffective: probe.rcvbufEffective,
                firewall: probe.firewall, queueTotalWhilePaused: probe.queuePaused?.queueTotal, consoleLog: consoleLog),
            provenance: provenance)
    }

    /// A cell without a measurement (`skipped` or `error`, with why). The expectation is still
    /// stated when the kernel is known.
    public static func unmeasured(
        _ outcome: Outcome, guest: GuestSpec, scenario: Scenario, matrix: Matrix, failure: CellFailure, kernel: String? = nil,
        distro: String? = nil, durationS: Double = 0, provenance: Provenance? = nil, consoleLog: String? = nil
    ) -> CellResult {
        let knownKernel = kernel ?? guest.nominalKernel
        let expected = matrix.expectation(guest: guest, scenario: scenario.name, kernel: knownKernel.flatMap(KernelVersion.init(release:)))
        var cell = CellResult(guest: guest.name, scenario: scenario.name, kernel: knownKernel, distro: distro, outcome: outcome, expected: expected,
                              reason: failure.reason, failure: failure, durationS: durationS, provenance: provenance)
        if let consoleLog {
            cell.evidence = Evidence(unicastFailures: 0, bypassedFullQueue: 0, messagesRead: 0, consoleLog: consoleLog)
        }
        return cell
    }
}
