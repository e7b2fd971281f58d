/// What the counters prove about one probe run, and the outcome that follows.
public struct Classification: Sendable, Hashable {
    public var outcome: Outcome
    public var reason: String
    /// Packets whose netlink unicast failed: ids are assigned before the unicast, so
    /// `id_sequence` delta minus messages read.
    public var unicastFailures: Int
    /// Packets the queue-full path passed without an id: `sent − id_sequence` delta.
    public var bypassedFullQueue: Int
    public var sent: Int
    public var received: Int
    public var lost: Int
    public var counters: CounterDeltas?
    /// With a user's consumer: what it held, let past, and became.
    public var observation: ConsumerObservation?
}

/// Turns raw probe output into an outcome using only what the kernel's counters and the
/// datagrams' sequence numbers prove (docs/architecture.md, "Data flow"). Every claim is cross-checked; numbers
/// that disagree make the cell `error` with both numbers in the reason.
public enum Classifier {
    public static func classify(_ result: ProbeResult, scenario: Scenario) -> Classification {
        var classification = Classification(
            outcome: .error, reason: "", unicastFailures: 0, bypassedFullQueue: 0,
            sent: result.sent, received: result.received, lost: result.lost, counters: result.counterDeltas)
        func fail(_ reason: String) -> Classification {
            classification.outcome = .error
            classification.reason = reason
            return classification
        }

        if let error = result.error { return fail("probe failed: \(error)") }
        guard let deltas = result.counterDeltas else {
            return fail("probe output lacks the queue or netlink counter rows, so nothing can be proven")
        }
        if let rmem = result.rmem, !rmem.restored {
            return fail("the probe could not restore net.core.rmem_default=\(rmem.previousDefault) rmem_max=\(rmem.previousMax)")
        }
        if result.received + result.lost != result.sent {
            return fail("datagram accounting does not add up: sent \(result.sent), received \(result.received), lost \(result.lost)")
        }
        if let agent = result.agent {
            return ExternalConsumerClassifier(result: result, agent: agent, deltas: deltas, scenario: scenario, base: classification).classify()
        }
        let unicastFailures = deltas.idSequence - result.messagesRead
        if unicastFailures < 0 {
            return fail("read \(result.messagesRead) queue messages but id_sequence moved only \(deltas.idSequence)")
        }
        classification.unicastFailures = unicastFailures
        if unicastFailures > 0 && result.enobufs == 0 && deltas.netlinkDrops == 0 {
            return fail("id_sequence says \(unicastFailures) unicasts failed, yet the consumer saw no ENOBUFS and the socket's netlink drop count did not move")
        }
        if deltas.netlinkDrops > 0 && deltas.netlinkDrops != unicastFailures {
            return fail("netlink drops moved by \(deltas.netlinkDrops) but id_sequence − messages read = \(unicastFailures)")
        }
        let trace = overflowTrace(result, deltas: deltas, unicastFailures: unicastFailures)

        switch scenario.measure {
        case .datagrams:
            return classifyDatagrams(result, scenario: scenario, deltas: deltas, unicastFailures: unicastFailures, trace: trace, into: classification)
        case .connects:
            return classifyConnects(result, deltas: deltas, unicastFailures: unicastFailures, trace: trace, into: classification)
        }
    }

    private static func overflowTrace(_ result: ProbeResult, deltas: CounterDeltas, unicastFailures: Int) -> String {
        "id_sequence +\(deltas.idSequence), \(result.messagesRead) messages read, ENOBUFS ×\(result.enobufs), netlink drops +\(deltas.netlinkDrops)"
    }

    private static func classifyDatagrams(
        _ result: ProbeResult, scenario: Scenario, deltas: CounterDeltas, unicastFailures: Int, trace: String,
        into base: Classification
    ) -> Classification {
        var classification = base
        let bypassed = result.sent - deltas.idSequence
        if bypassed < 0 {
            classification.reason = "id_sequence moved by \(deltas.idSequence) but only \(result.sent) datagrams were sent: another queue user interfered"
            return classification
        }
        classification.bypassedFullQueue = bypassed
        let overflowed = unicastFailures + bypassed
        let dropCounters = deltas.queueDropped + deltas.queueUserDropped
        let paths = overflowPaths(unicastFailures: unicastFailures, bypassed: bypassed)

        if overflowed == 0 {
            if result.lost > 0 {
                classification.reason = "\(result.lost) of \(result.sent) datagrams lost without any overflow (\(trace))"
                return classification
            }
            if dropCounters > 0 {
                classification.reason = "drop counters moved (queue_dropped +\(deltas.queueDropped), queue_user_dropped +\(deltas.queueUserDropped)) although every datagram arrived"
                return classification
            }
            if scenario.needsOverflow {
                classification.outcome = .notTriggered
                classification.reason = "no overflow happened: all \(result.sent) datagrams were queued and read (\(trace)), so this cell proves nothing"
            } else {
                classification.outcome = .delivered
                classification.reason = "no overflow: all \(result.sent) datagrams got a verdict and arrived (\(trace))"
            }
            return classification
        }

        // With fail-open the kernel accepts overflowed packets without touching either drop counter;
        // without it each lost packet must appear in exactly one of them.
        if result.lost == 0 {
            guard dropCounters == 0 else {
                classification.reason = "every datagram arrived, yet drop counters moved (queue_dropped +\(deltas.queueDropped), queue_user_dropped +\(deltas.queueUserDropped))"
                return classification
            }
            classification.outcome = .reinjected
            classification.reason = "overflow proven: \(paths) (\(trace)); all \(result.sent) datagrams arrived"
            return classification
        }
        if result.lost > overflowed {
            classification.reason = "\(result.lost) datagrams lost but only \(overflowed) overflowed (\(paths); \(trace))"
            return classification
        }
        guard dropCounters == result.lost else {
            classification.reason = "\(result.lost) datagrams lost but the drop counters say \(dropCounters) (queue_dropped +\(deltas.queueDropped), queue_user_dropped +\(deltas.queueUserDropped))"
            return classification
        }
        let ranges = describe(ranges: result.lostRanges)
        if result.lost == overflowed {
            classification.outcome = .dropped
            classification.reason = "overflow proven: \(paths) (\(trace)); all \(result.lost) lost\(ranges), matching queue_user_dropped +\(deltas.queueUserDropped) and queue_dropped +\(deltas.queueDropped)"
        } else {
            classification.outcome = .mixed
            classification.reason = "overflow proven: \(paths) (\(trace)); \(result.lost) lost\(ranges) and \(overflowed - result.lost) re-injected"
        }
        return classification
    }

    private static func classifyConnects(
        _ result: ProbeResult, deltas: CounterDeltas, unicastFailures: Int, trace: String, into base: Classification
    ) -> Classification {
        var classification = base
        guard let tcp = countConnects(result, into: &classification) else { return classification }
        guard unicastFailures > 0 else {
            classification.outcome = .notTriggered
            classification.reason = "the consumer's socket never overflowed (\(trace)), so the connects prove nothing"
            return classification
        }
        let timeout = "\(tcp.succeeded) of \(tcp.attempted) connects completed"
        switch tcp.succeeded {
        case tcp.attempted:
            guard deltas.queueUserDropped == 0 else {
                classification.reason = "all connects passed, yet queue_user_dropped moved by \(deltas.queueUserDropped)"
                return classification
            }
            classification.outcome = .reinjected
            classification.reason = "\(timeout) while the stalled consumer's socket overflowed (\(trace))"
        case 0:
            guard deltas.queueUserDropped > 0 else {
                classification.reason = "every connect failed, yet queue_user_dropped did not move: the failures are not the queue's"
                return classification
            }
            classification.outcome = .dropped
            classification.reason = "\(timeout): SYNs dropped while the stalled consumer's socket overflowed (\(trace), queue_user_dropped +\(deltas.queueUserDropped))"
        default:
            classification.outcome = .mixed
            classification.reason = "\(timeout) while the consumer's socket overflowed (\(trace))"
        }
        return classification
    }

    /// Liveness cells count connects, not datagrams: the probe's TCP numbers, or nil (and the
    /// cell's reason) when it made none.
    static func countConnects(_ result: ProbeResult, into classification: inout Classification) -> ProbeResult.TCP? {
        guard let tcp = result.tcp, tcp.attempted > 0 else {
            classification.reason = "the probe made no TCP connects"
            return nil
        }
        classification.sent = tcp.attempted
        classification.received = tcp.succeeded
        classification.lost = tcp.attempted - tcp.succeeded
        return tcp
    }

    private static func overflowPaths(unicastFailures: Int, bypassed: Int) -> String {
        var parts: [String] = []
        if unicastFailures > 0 { parts.append("\(unicastFailures) unicasts to the full socket failed") }
        if bypassed > 0 { parts.append("\(bypassed) datagrams met a full queue") }
        return parts.joined(separator: " and ")
    }

    private static func describe(ranges: [[Int]]?) -> String {
        guard let ranges, !ranges.isEmpty else { return "" }
        let text = ranges.prefix(4).map { $0.count == 2 && $0[0] != $0[1] ? "\($0[0])–\($0[1])" : "\($0.first ?? 0)" }
        return " (#" + text.joined(separator: ", #") + (ranges.count > 4 ? ", …" : "") + ")"
    }
}
