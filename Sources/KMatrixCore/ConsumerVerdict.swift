/// One row's answer for one of the users' consumers, in words: at which packet sizes the kernel
/// re-injects or drops what overflows it, why, whether the rmem fix changes anything, and whether
/// the consumer survives the stall. Derived from the cells only, like `RowVerdict`.
public struct ConsumerVerdict: Sendable, Hashable, Codable {
    public var consumer: String
    /// "suricata 7.0.10" (its version line), else the consumer's name and package version.
    public var label: String
    /// Whether packets were lost when it overflowed: yes (some size dropped), no, or unknown.
    public var affected: VerdictWord.State
    /// e.g. "safe up to 1500 B; packets of 8000 B are dropped on this kernel".
    public var text: String
    /// The cells behind it, as "guest/scenario".
    public var cells: [String]

    public var line: String { "\(label): \(text)" }

    /// The verdicts for one row's cells, one per consumer in the order its cells come.
    static func derive(row cells: [String: CellResult], ordered: [CellResult]) -> [ConsumerVerdict] {
        var names: [String] = []
        for cell in ordered {
            if let name = cell.consumer?.name, !names.contains(name) { names.append(name) }
        }
        return names.map { name in
            derive(name, cells: ordered.filter { $0.consumer?.name == name }, probeCell: cells[Scenario.failopenSocketOverflow.name])
        }
    }

    static func derive(_ name: String, cells: [CellResult], probeCell: CellResult?) -> ConsumerVerdict {
        let label = cells.lazy.compactMap { $0.consumer?.identity }.first?.label(name: name) ?? name
        let overflow = cells.filter { $0.consumer?.kind == .overflow }.sorted { ($0.consumer?.payloadBytes ?? 0) < ($1.consumer?.payloadBytes ?? 0) }
        func size(_ cell: CellResult) -> String { "\(cell.consumer?.payloadBytes ?? 0) B" }
        func sizes(_ cells: [CellResult]) -> String {
            cells.map { String($0.consumer?.payloadBytes ?? 0) }.joined(separator: ", ") + " B"
        }
        let safe = overflow.filter { $0.outcome == .reinjected }
        let lost = overflow.filter { $0.outcome == .dropped || $0.outcome == .mixed }
        let quiet = overflow.filter { $0.outcome == .notTriggered || $0.outcome == .delivered }
        let failed = overflow.filter { !$0.outcome.isMeasurement }
        var parts: [String] = []
        var affected = VerdictWord.State.unknown
        if !lost.isEmpty {
            affected = .yes
            let dropped = lost.allSatisfy { $0.outcome == .dropped } ? "are dropped" : "are partly dropped"
            let largestSafe = safe.compactMap { $0.consumer?.payloadBytes }.max()
            let smallestLost = lost.compactMap { $0.consumer?.payloadBytes }.min() ?? 0
            if let largestSafe, largestSafe < smallestLost {
                parts.append("safe up to \(largestSafe) B; packets of \(sizes(lost)) \(dropped) on this kernel")
            } else if !safe.isEmpty {
                parts.append("re-injects at \(sizes(safe)); packets of \(sizes(lost)) \(dropped) on this kernel")
            } else {
                parts.append("packets of \(sizes(lost)) \(dropped) on this kernel")
            }
            parts.append(contentsOf: cause(lost, probeCell: probeCell))
        } else if !safe.isEmpty {
            affected = failed.isEmpty ? .no : .unknown
            parts.append(safe.count == overflow.count ? "re-injects at every size tested (\(sizes(safe)))" : "re-injects at \(sizes(safe))")
        }
        if !quiet.isEmpty { parts.append("\(sizes(quiet)) did not overflow it") }
        for cell in failed { parts.append("\(size(cell)): \(cell.outcome.rawValue)") }

        let rmem = cells.first { $0.consumer?.kind == .rmem }
        if let rmem, rmem.outcome.isMeasurement {
            let twin = overflow.first { $0.consumer?.payloadBytes == rmem.consumer?.payloadBytes }
            if let twin, twin.outcome == rmem.outcome, twin.outcome.isMeasurement {
                parts.append("raising rmem changes nothing (\(rmem.outcome.rawValue) at \(size(rmem)) either way)")
            } else {
                parts.append("with rmem raised: \(rmem.outcome.rawValue) at \(size(rmem))")
            }
        }
        // What a kubelet would see: connects that completed, whatever stopped the others
        // (dropped, or held by the stalled consumer).
        if let liveness = cells.first(where: { $0.consumer?.kind == .liveness }), liveness.outcome.isMeasurement, liveness.sent > 0 {
            switch liveness.received {
            case liveness.sent: parts.append("liveness probes pass while it is stalled")
            case 0: parts.append("liveness probes fail while it is stalled")
            default: parts.append("\(liveness.sent - liveness.received) of \(liveness.sent) liveness probes fail while it is stalled")
            }
        }
        let fates = cells.compactMap { $0.consumer?.observed?.fate }
        if fates.contains(.exited) {
            parts.append("it exits after the stall")
        } else if fates.contains(.stuck) {
            parts.append("it stops giving verdicts after the stall")
        } else if !fates.isEmpty {
            // "Every" only when each cell that ran saw its fate; the others are counted.
            let ran = cells.filter { $0.outcome != .skipped }.count
            parts.append(fates.count == ran ? "alive after every stall" : "alive after \(fates.count) of \(ran) stalls (the others did not say)")
        }
        return ConsumerVerdict(consumer: name, label: label, affected: affected, text: parts.isEmpty ? "unknown" : parts.joined(separator: "; "),
                               cells: cells.map { "\($0.guest)/\($0.scenario)" })
    }

    /// Who dropped: the counters of the consumer's own cells, and the probe's fail-open cell on
    /// the same kernel for the socket path ("does not ask for fail-open" rather than blaming a
    /// kernel that re-injects for the probe).
    static func cause(_ lost: [CellResult], probeCell: CellResult?) -> [String] {
        var causes: [String] = []
        if lost.contains(where: { ($0.counters?.queueDropped ?? 0) > 0 }) {
            causes.append("it does not ask for fail-open when its queue is full")
        }
        if lost.contains(where: { ($0.counters?.queueUserDropped ?? 0) > 0 }) {
            switch probeCell?.outcome {
            case .reinjected?: causes.append("it does not ask for fail-open on this path: this kernel re-injects the probe's socket overflow")
            case .dropped?: causes.append("this kernel drops on socket overflow even with fail-open (before 4.6, or 931401137f60 reverted)")
            default: causes.append("the socket overflow path dropped them (run failopen-socket-overflow beside it to tell the consumer's flags from the kernel)")
            }
        }
        return causes
    }
}
