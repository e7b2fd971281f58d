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
        /// The user's own consumer binds the queue; the probe stalls and resumes it.
        case external
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
        var arguments = ["--packets", String(packets), "--payload", String(payloadBytes)]
        // An external consumer configures its queue and socket itself, as it ships.
        if consumer == .external {
            arguments += ["--consumer", consumer.rawValue]
        } else {
            arguments += ["--maxlen", String(maxlen), "--fail-open", failOpen ? "1" : "0", "--consumer", consumer.rawValue]
            switch receiveBuffer {
            case .kernelDefault: arguments += ["--rcvbuf-mode", "default"]
            case .plain(let bytes): arguments += ["--rcvbuf-mode", "plain", "--rcvbuf", String(bytes)]
            case .forced(let bytes): arguments += ["--rcvbuf-mode", "force", "--rcvbuf", String(bytes)]
            }
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
    /// The user's consumer this scenario runs (nil: the probe consumes the queue itself).
    public var consumer: ConsumerSpec?
    public var consumerKind: ConsumerSpec.Kind?
    /// Changes host-global sysctls: the host guest must run it from the initial namespace.
    public var touchesGlobalSysctls: Bool { parameters.rmem != nil }

    public var id: String { name }

    public init(name: String, summary: String, parameters: ProbeParameters, needsOverflow: Bool, measure: Measure,
                consumer: ConsumerSpec? = nil, consumerKind: ConsumerSpec.Kind? = nil) {
        self.name = name
        self.summary = summary
        self.parameters = parameters
        self.needsOverflow = needsOverflow
        self.measure = measure
        self.consumer = consumer
        self.consumerKind = consumerKind
    }

    /// Whether a guest runs this scenario: the probe's own run everywhere, a consumer's only in
    /// the guests that list it.
    public func applies(to guest: GuestSpec) -> Bool {
        consumer.map { guest.consumers.contains($0.name) } ?? true
    }

    /// What the cell records about its consumer before anything is known of the guest.
    public var consumerCell: ConsumerCell? {
        guard let consumer, let consumerKind else { return nil }
        return ConsumerCell(name: consumer.name, kind: consumerKind, payloadBytes: parameters.payloadBytes)
    }

    /// The probe's command line in a guest where the consumer's bundle is at `bundle` and its
    /// working folders go under `workRoot` (both absolute, the guest's own paths).
    public func probeArguments(bundle: String, workRoot: String) -> [String] {
        guard let consumer else { return parameters.arguments }
        let dir = workRoot + "/" + Self.folderName(name)
        return parameters.arguments + [
            "--queue", String(Self.consumerQueue),
            "--agent-dir", dir,
            "--agent-ready-ms", String(consumer.readySeconds * 1000),
            "--agent-stop-signal", String(consumer.stop.number),
        ] + (consumer.readyLog.map { ["--agent-ready-log", $0] } ?? []) + [
            "--",
        ] + ConsumerSpec.expand(consumer.start, bundle: bundle, dir: dir, queue: Self.consumerQueue)
    }

    /// The queue a user's consumer is started on (`{queue}`): the probe's default.
    public static let consumerQueue = 4242

    /// A scenario name as one path component (`suricata:overflow-64` → `suricata_overflow-64`).
    static func folderName(_ name: String) -> String {
        String(name.unicodeScalars.map { InputRules.isAlphanumeric($0) || "-._".unicodeScalars.contains($0) ? Character($0) : "_" })
    }
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

    /// One of a user's consumer's scenarios (`ConsumerSpec.scenarios`): 2000 datagrams of
    /// `payload` bytes while the consumer is stalled (docs/probe.md, "The user's own consumer").
    public static func consumer(_ consumer: ConsumerSpec, kind: ConsumerSpec.Kind, payload: Int) -> Scenario {
        var parameters = ProbeParameters(packets: 2000, payloadBytes: payload, maxlen: 0, failOpen: false, receiveBuffer: .kernelDefault, consumer: .external)
        let name: String
        let summary: String
        switch kind {
        case .overflow:
            name = "\(consumer.name):overflow-\(payload)"
            summary = "\(consumer.name) stalled (SIGSTOP), 2000 datagrams of \(payload) B, then resumed"
        case .liveness:
            name = "\(consumer.name):liveness"
            parameters.tcpProbes = 5
            summary = "\(consumer.name) stalled after 2000 datagrams of \(payload) B; 5 TCP connects with a 1 s timeout, like a kubelet probe"
        case .rmem:
            name = "\(consumer.name):rmem"
            parameters.rmem = consumerRmem
            summary = "as \(consumer.name):overflow-\(payload) with rmem_default/rmem_max at \(consumerRmem >> 20) MiB before it starts"
        }
        return Scenario(name: name, summary: summary, parameters: parameters, needsOverflow: true,
                        measure: kind == .liveness ? .connects : .datagrams, consumer: consumer, consumerKind: kind)
    }

    /// The mitigation for a consumer whose queue size kmatrix does not know: room for 2000
    /// messages of the largest charge a 8000-byte datagram has (about 16 KiB), so a consumer
    /// that takes its buffer from rmem_default can hold the whole burst.
    public static let consumerRmem = 64 << 20

    /// Every scenario, in report column order.
    public static let catalogue: [Scenario] = [
        failopenSocketOverflow, strictSocketOverflow, failopenQueueFull, rmemMitigation, liveConsumer, livenessProbe,
    ]

    public static func named(_ name: String) -> Scenario? {
        catalogue.first { $0.name == name }
    }
}
