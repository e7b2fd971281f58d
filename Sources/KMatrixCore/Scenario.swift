/// Parameters handed to `kmatrix-probe` (docs/probe.md). Defined once, here, for every guest.
public struct ProbeParameters: Sendable, Hashable, Codable {
    public enum ReceiveBuffer: Sendable, Hashable, Codable {
        /// No setsockopt: the socket starts at `net.core.rmem_default`.
        case kernelDefault
        /// SO_RCVBUF: capped by `rmem_max`, then doubled.
        case plain(bytes: Int)
        /// SO_RCVBUFFORCE: ignores the cap, doubled.
        case forced(bytes: Int)
    }

    public enum Consumer: String, Sendable, Hashable, Codable {
        case live
        case paused
    }

    public var packets: Int
    public var payloadBytes: Int = 64
    public var maxlen: Int
    public var failOpen: Bool
    public var receiveBuffer: ReceiveBuffer
    public var consumer: Consumer
    /// Live consumer only: most datagrams in flight at once; 0 sends an unpaced burst.
    public var paceWindow: Int = 0
    /// Sets `net.core.rmem_default` and `rmem_max` for the run (restored afterwards).
    public var rmem: Int?
    public var tcpProbes: Int = 0
    public var tcpTimeoutMilliseconds: Int = 1000

    public var arguments: [String] {
        var arguments = [
            "--packets", String(packets),
            "--payload", String(payloadBytes),
            "--maxlen", String(maxlen),
            "--fail-open", failOpen ? "1" : "0",
            "--consumer", consumer.rawValue,
        ]
        switch receiveBuffer {
        case .kernelDefault: arguments += ["--rcvbuf-mode", "default"]
        case .plain(let bytes): arguments += ["--rcvbuf-mode", "plain", "--rcvbuf", String(bytes)]
        case .forced(let bytes): arguments += ["--rcvbuf-mode", "force", "--rcvbuf", String(bytes)]
        }
        if consumer == .live { arguments += ["--pace-window", String(paceWindow)] }
        if let rmem { arguments += ["--rmem", String(rmem)] }
        if tcpProbes > 0 {
            arguments += ["--tcp-probes", String(tcpProbes), "--tcp-timeout-ms", String(tcpTimeoutMilliseconds)]
        }
        return arguments
    }
}

/// One experiment run in every guest.
public struct Scenario: Sendable, Hashable, Identifiable {
    public enum Measure: String, Sendable, Hashable {
        /// Numbered UDP datagrams: sent/received/lost count datagrams.
        case datagrams
        /// TCP connects to a listener behind the queue: sent/received/lost count connects.
        case connects
    }

    public var name: String
    public var summary: String
    public var parameters: ProbeParameters
    /// Without an overflow the cell proves nothing (`not-triggered`) rather than `delivered`.
    public var needsOverflow: Bool
    public var measure: Measure
    /// Changes host-global sysctls: the host guest must run it from the initial namespace.
    public var touchesGlobalSysctls: Bool { parameters.rmem != nil }

    public var id: String { name }
}

extension Scenario {
    /// Per-message buffer charge (`skb->truesize`) of a full-size 1500-byte packet, the upper
    /// bound the mitigation must be sized for (docs/architecture.md, "Data flow": 2.1–2.3 KiB).
    public static let largestMessageCharge = 2304
    static let defaultMaxlen = 2048

    public static let failopenSocketOverflow = Scenario(
        name: "failopen-socket-overflow",
        summary: "fail-open on, 4 KiB rcvbuf (8 KiB effective), maxlen 2048, consumer paused, 2000 datagrams",
        parameters: ProbeParameters(packets: 2000, maxlen: defaultMaxlen, failOpen: true, receiveBuffer: .plain(bytes: 4096), consumer: .paused),
        needsOverflow: true, measure: .datagrams)

    public static let strictSocketOverflow = Scenario(
        name: "strict-socket-overflow",
        summary: "control: as failopen-socket-overflow with fail-open off",
        parameters: ProbeParameters(packets: 2000, maxlen: defaultMaxlen, failOpen: false, receiveBuffer: .plain(bytes: 4096), consumer: .paused),
        needsOverflow: true, measure: .datagrams)

    public static let failopenQueueFull = Scenario(
        name: "failopen-queue-full",
        summary: "fail-open on, forced 1 MiB rcvbuf (holds the queue), maxlen 64, consumer paused, 2000 datagrams",
        parameters: ProbeParameters(packets: 2000, maxlen: 64, failOpen: true, receiveBuffer: .forced(bytes: 1 << 20), consumer: .paused),
        needsOverflow: true, measure: .datagrams)

    public static let rmemMitigation = Scenario(
        name: "rmem-mitigation",
        summary: "the KB fix: rmem_default/rmem_max = maxlen × 2304 B, no setsockopt, fail-open on, paused, maxlen+512 datagrams",
        parameters: ProbeParameters(packets: defaultMaxlen + 512, maxlen: defaultMaxlen, failOpen: true, receiveBuffer: .kernelDefault,
                                    consumer: .paused, rmem: defaultMaxlen * largestMessageCharge),
        needsOverflow: true, measure: .datagrams)

    public static let liveConsumer = Scenario(
        name: "live-consumer",
        summary: "fail-open on, default rcvbuf, consumer verdicts live, sender paced to 32 in flight, 2000 datagrams",
        parameters: ProbeParameters(packets: 2000, maxlen: defaultMaxlen, failOpen: true, receiveBuffer: .kernelDefault, consumer: .live, paceWindow: 32),
        needsOverflow: false, measure: .datagrams)

    public static let livenessProbe = Scenario(
        name: "liveness-probe",
        summary: "fail-open consumer stalled with a full 8 KiB buffer; 5 TCP connects with a 1 s timeout, like a kubelet probe",
        parameters: ProbeParameters(packets: 200, maxlen: defaultMaxlen, failOpen: true, receiveBuffer: .plain(bytes: 4096), consumer: .paused,
                                    tcpProbes: 5, tcpTimeoutMilliseconds: 1000),
        needsOverflow: true, measure: .connects)

    /// Every scenario, in report column order.
    public static let catalogue: [Scenario] = [
        failopenSocketOverflow, strictSocketOverflow, failopenQueueFull, rmemMitigation, liveConsumer, livenessProbe,
    ]

    public static func named(_ name: String) -> Scenario? {
        catalogue.first { $0.name == name }
    }
}
