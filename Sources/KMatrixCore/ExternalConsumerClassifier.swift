/// Judges a cell run with the user's own consumer (`--consumer external`, docs/probe.md) by the
/// same counters as the probe's own cells, over the stall: the consumer was stopped from before
/// the burst until `queue_paused` was read, so everything that moved then is the kernel's doing
/// (docs/architecture.md, "Consumers").
struct ExternalConsumerClassifier {
    let result: ProbeResult
    let agent: ProbeResult.Agent
    let deltas: CounterDeltas
    let scenario: Scenario
    var base: Classification

    func classify() -> Classification {
        var classification = base
        func fail(_ reason: String) -> Classification {
            classification.outcome = .error
            classification.reason = reason
            return classification
        }
        guard let paused = result.queuePaused, let before = result.queueBefore else {
            return fail("probe output lacks the queue's row while the consumer was stalled, so nothing can be proven: "
                + "the consumer unbound its queue or exited during the stall (its log tail says which)")
        }
        let held = paused.queueTotal - before.queueTotal
        let unicastFailures = deltas.idSequence - held
        var observation = ConsumerObservation(held: held, passedWhileStalled: agent.receivedWhileStalled,
                                              fate: agent.fate.flatMap(ConsumerObservation.Fate.init(rawValue:)),
                                              exitStatus: agent.exitStatus, exitSignal: agent.exitSignal, logTail: agent.logTail.flatMap { ConsoleTail.make($0) })
        classification.observation = observation
        guard held >= 0, unicastFailures >= 0 else {
            return fail("the stalled consumer's queue holds \(paused.queueTotal) packets but id_sequence moved only \(deltas.idSequence)")
        }
        classification.unicastFailures = unicastFailures
        if deltas.netlinkDrops > 0 && deltas.netlinkDrops != unicastFailures {
            return fail("the consumer's socket dropped \(deltas.netlinkDrops) messages but id_sequence − held = \(unicastFailures)")
        }
        if unicastFailures > 0 && deltas.netlinkDrops == 0 {
            return fail("id_sequence says \(unicastFailures) unicasts to the consumer failed, yet its socket's netlink drop count did not move")
        }
        // queue_user_dropped counts failed unicasts the kernel dropped: never more than failed.
        guard deltas.queueUserDropped <= unicastFailures else {
            return fail("queue_user_dropped rose by \(deltas.queueUserDropped) but only \(unicastFailures) unicasts to the consumer failed (id_sequence − held)")
        }
        let dropCounters = deltas.queueDropped + deltas.queueUserDropped
        let passed = agent.receivedWhileStalled
        let trace = "id_sequence +\(deltas.idSequence), \(held) held by the stalled consumer, netlink drops +\(deltas.netlinkDrops), "
            + "queue_dropped +\(deltas.queueDropped), queue_user_dropped +\(deltas.queueUserDropped), \(passed) went past it"
        let fate = fateSentence(observation)

        if scenario.measure == .connects {
            return connects(&classification, overflowed: passed + dropCounters, trace: trace, fate: fate)
        }
        let bypassed = result.sent - deltas.idSequence
        guard bypassed >= 0 else {
            return fail("id_sequence moved by \(deltas.idSequence) but only \(result.sent) datagrams were sent: other traffic reached queue \(Scenario.consumerQueue) "
                + "during the stall (another process sending to the probe's port, or a second consumer on that queue)")
        }
        classification.bypassedFullQueue = bypassed
        // queue_dropped counts datagrams a full queue dropped: never more than met it full.
        guard deltas.queueDropped <= bypassed else {
            return fail("queue_dropped rose by \(deltas.queueDropped) but only \(bypassed) datagrams met the full queue (sent − Δid_sequence)")
        }
        observation.path = switch (unicastFailures > 0, bypassed > 0) {
        case (true, true): .both
        case (true, false): .socketOverflow
        case (false, true): .queueFull
        case (false, false): nil
        }
        classification.observation = observation
        let overflowed = unicastFailures + bypassed
        if overflowed == 0 {
            guard dropCounters == 0, passed == 0 else {
                return fail("nothing overflowed, yet \(passed) datagrams went past the stalled consumer and the drop counters moved by \(dropCounters) (\(trace))")
            }
            classification.outcome = .notTriggered
            classification.reason = "no overflow: the stalled consumer held all \(held) datagrams; neither its queue nor its socket filled (\(trace)).\(fate)"
            return classification
        }
        guard passed + dropCounters == overflowed else {
            return fail("\(overflowed) datagrams overflowed (\(paths(unicastFailures, bypassed))) but \(passed) went past and \(dropCounters) were counted dropped (\(trace))")
        }
        // Held datagrams get their verdicts after SIGCONT; a consumer that exits first takes them along.
        let lostHeld = result.lost - dropCounters
        guard lostHeld >= 0, lostHeld <= held else {
            return fail("\(result.lost) datagrams lost, but the drop counters say \(dropCounters) and the consumer held \(held) (\(trace))")
        }
        let heldNote = lostHeld > 0 ? " \(lostHeld) of the \(held) held datagrams never got a verdict." : ""
        let what = "\(paths(unicastFailures, bypassed)) (\(trace))"
        switch (passed, dropCounters) {
        case (_, 0):
            classification.outcome = .reinjected
            classification.reason = "overflow proven: \(what); all \(overflowed) passed while the consumer was stalled.\(heldNote)\(fate)"
        case (0, _):
            classification.outcome = .dropped
            classification.reason = "overflow proven: \(what); all \(overflowed) were dropped. \(blame(deltas))\(heldNote)\(fate)"
        default:
            classification.outcome = .mixed
            classification.reason = "overflow proven: \(what); \(passed) passed and \(dropCounters) were dropped. \(blame(deltas))\(heldNote)\(fate)"
        }
        return classification
    }

    private func connects(_ classification: inout Classification, overflowed: Int, trace: String, fate: String) -> Classification {
        guard let tcp = Classifier.countConnects(result, into: &classification) else { return classification }
        guard overflowed > 0 else {
            classification.outcome = .notTriggered
            classification.reason = "the stalled consumer never overflowed (\(trace)), so the connects prove nothing.\(fate)"
            return classification
        }
        let completed = "\(tcp.succeeded) of \(tcp.attempted) connects completed"
        let dropped = deltas.queueDropped + deltas.queueUserDropped
        // A SYN that still fits in the queue and the socket waits for the stalled consumer: its
        // connect times out although nothing was dropped — all of them, when every SYN fits. The
        // overflow itself went past the consumer (nothing dropped), so the kernel re-injected.
        let timedOut = tcp.attempted - tcp.succeeded
        let held = timedOut > 0 ? "; \(timedOut) timed out with their SYNs held by the stalled consumer (no drop counter moved)" : ""
        switch (tcp.succeeded, dropped) {
        case (_, 0):
            classification.outcome = .reinjected
            classification.reason = "\(completed) while the stalled consumer overflowed (\(trace))\(held).\(fate)"
        case (0, _):
            classification.outcome = .dropped
            classification.reason = "\(completed): SYNs dropped behind the stalled consumer (\(trace)). \(blame(deltas))\(fate)"
        default:
            classification.outcome = .mixed
            classification.reason = "\(completed) while the stalled consumer overflowed and dropped \(dropped) (\(trace)). \(blame(deltas))\(fate)"
        }
        return classification
    }

    private func paths(_ unicastFailures: Int, _ bypassed: Int) -> String {
        var parts: [String] = []
        if bypassed > 0 { parts.append("\(bypassed) datagrams met the consumer's full queue") }
        if unicastFailures > 0 { parts.append("\(unicastFailures) unicasts to its full socket failed") }
        return parts.joined(separator: " and ")
    }

    /// Which counter moved says who dropped: a full queue drops (queue_dropped) only when the
    /// consumer did not ask for fail-open, which every kernel since 3.6 honours there; a failed
    /// unicast drops (queue_user_dropped) without fail-open, or with it before 4.6.
    private func blame(_ deltas: CounterDeltas) -> String {
        var sentences: [String] = []
        if deltas.queueDropped > 0 {
            sentences.append("The full queue dropped \(deltas.queueDropped): the consumer does not ask for fail-open (NFQA_CFG_F_FAIL_OPEN), which this path honours on every kernel since 3.6.")
        }
        if deltas.queueUserDropped > 0 {
            sentences.append("The kernel dropped \(deltas.queueUserDropped) its full socket could not take: either the consumer does not ask for fail-open, or the kernel predates 4.6 (931401137f60); the probe's failopen-socket-overflow cell on this kernel tells which.")
        }
        return sentences.joined(separator: " ")
    }

    private func fateSentence(_ observation: ConsumerObservation) -> String {
        switch observation.fate {
        case .alive?: return " After SIGCONT the consumer gave verdicts again."
        case .stuck?:
            if let failed = agent.freshUnicastFailed, failed > 0 {
                return " After SIGCONT the consumer ran but read nothing: \(failed) of \(agent.freshSent) fresh datagrams found its socket still full."
            }
            let unqueued = agent.freshSent - min(agent.freshSent, agent.freshQueued ?? 0)
            return " After SIGCONT the consumer ran but \(unqueued) of \(agent.freshSent) fresh datagrams did not reach its queue or got no verdict."
        case .exited?:
            let how = observation.exitSignal.map { "on signal \($0)" } ?? observation.exitStatus.map { "with status \($0)" } ?? ""
            let last = observation.logTail?.split(whereSeparator: \.isNewline).last.map { ": \($0)" } ?? ""
            return " After SIGCONT the consumer exited \(how)\(last)."
        case nil: return ""
        }
    }
}
