import Foundation

/// One row of `/proc/net/netfilter/nfnetlink_queue`, the fields the verdict rests on.
public struct QueueCounters: Sendable, Hashable, Codable {
    public var queueTotal: Int
    public var queueDropped: Int
    public var queueUserDropped: Int
    public var idSequence: Int

    public init(queueTotal: Int = 0, queueDropped: Int = 0, queueUserDropped: Int = 0, idSequence: Int = 0) {
        self.queueTotal = queueTotal
        self.queueDropped = queueDropped
        self.queueUserDropped = queueUserDropped
        self.idSequence = idSequence
    }
}

/// The JSON object `kmatrix-probe` prints (docs/probe.md), decoded with snake_case keys.
public struct ProbeResult: Sendable, Hashable, Codable {
    public struct TCP: Sendable, Hashable, Codable {
        public var attempted: Int
        public var succeeded: Int
    }

    public struct Rmem: Sendable, Hashable, Codable {
        public var set: Int
        public var previousDefault: Int
        public var previousMax: Int
        public var restored: Bool
    }

    /// `--consumer external`: what the user's consumer did (docs/probe.md).
    public struct Agent: Sendable, Hashable, Codable {
        public var pid: Int
        public var peerPortid: Int
        public var readyMs: Int
        public var exitedEarly: Bool
        public var receivedWhileStalled: Int
        public var freshSent: Int
        public var freshReceived: Int
        /// How many fresh datagrams took a queue id, and how many unicasts to the consumer failed
        /// meanwhile (nil when the rows could not be read): alive means all queued, none failed.
        public var freshQueued: Int?
        public var freshUnicastFailed: Int?
        public var fate: String?
        public var exitStatus: Int?
        public var exitSignal: Int?
        public var logTail: String?
    }

    public var probe: Int
    public var kernel: String?
    public var firewall: String?
    public var rcvbufEffective: Int?
    public var sent: Int
    public var received: Int
    public var lost: Int
    public var lostRanges: [[Int]]?
    public var messagesRead: Int
    public var verdicts: Int
    public var enobufs: Int
    public var queueBefore: QueueCounters?
    public var queuePaused: QueueCounters?
    public var queueAfter: QueueCounters?
    public var netlinkDropsBefore: Int?
    public var netlinkDropsAfter: Int?
    public var tcp: TCP?
    public var rmem: Rmem?
    /// Present (non-null) only with `--consumer external`.
    public var agent: Agent?
    public var durationMs: Int?
    public var error: String?

    public static func decode(_ data: Data) throws -> ProbeResult {
        try JSONCoding.decoder.decode(ProbeResult.self, from: data)
    }

    /// Counter movements between "before" and "after"; nil when either row is missing. With an
    /// external consumer "after" is the stall's end (`queue_paused`, and the netlink drops the
    /// probe reads at the same moment): the row goes when the consumer exits, and what the fate
    /// check sends afterwards must not count as the stall's.
    public var counterDeltas: CounterDeltas? {
        guard let before = queueBefore, let after = agent == nil ? queueAfter : queuePaused,
              let drops0 = netlinkDropsBefore, let drops1 = netlinkDropsAfter else { return nil }
        return CounterDeltas(
            queueDropped: after.queueDropped - before.queueDropped,
            queueUserDropped: after.queueUserDropped - before.queueUserDropped,
            idSequence: after.idSequence - before.idSequence,
            netlinkDrops: drops1 - drops0)
    }
}

/// Kernel counter deltas over one scenario, as reported in `results.json`.
public struct CounterDeltas: Sendable, Hashable, Codable {
    public var queueDropped: Int
    public var queueUserDropped: Int
    public var idSequence: Int
    public var netlinkDrops: Int

    public init(queueDropped: Int, queueUserDropped: Int, idSequence: Int, netlinkDrops: Int) {
        self.queueDropped = queueDropped
        self.queueUserDropped = queueUserDropped
        self.idSequence = idSequence
        self.netlinkDrops = netlinkDrops
    }
}
