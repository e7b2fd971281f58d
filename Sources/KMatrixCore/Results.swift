import Foundation

/// One guest × scenario measurement, as written to `results.json`.
public struct CellResult: Sendable, Hashable, Codable {
    /// The row: the guest's name (or, for an unnamed `--kernel`, its observed `uname -r`).
    public var guest: String
    public var scenario: String
    /// Observed `uname -r`, or the guest's nominal kernel when it never booted.
    public var kernel: String?
    /// Observed PRETTY_NAME from /etc/os-release.
    public var distro: String?
    public var outcome: Outcome { didSet { judge() } }
    public var expected: Outcome? { didSet { judge() } }
    /// Whether the outcome is the expected one; nil for `skipped` (a cell that did not run
    /// neither matches nor differs). Derived from outcome and expectation, in `judge` only.
    public private(set) var matches: Bool?
    public var sent: Int
    public var received: Int
    public var lost: Int
    public var enobufs: Int
    public var counters: CounterDeltas?
    /// Why, in words; for error and skipped cells rendered from `failure`.
    public var reason: String
    /// What went wrong, as data, for error and skipped cells.
    public var failure: CellFailure?
    public var durationS: Double
    public var evidence: Evidence?
    public var provenance: Provenance?
    /// How many repeated runs agreed (when `--repeat` > 1).
    public var runs: RunAgreement?

    public init(guest: String, scenario: String, kernel: String? = nil, distro: String? = nil, outcome: Outcome, expected: Outcome? = nil,
                sent: Int = 0, received: Int = 0, lost: Int = 0, enobufs: Int = 0, counters: CounterDeltas? = nil, reason: String,
                failure: CellFailure? = nil, durationS: Double = 0, evidence: Evidence? = nil, provenance: Provenance? = nil) {
        self.guest = guest
        self.scenario = scenario
        self.kernel = kernel
        self.distro = distro
        self.outcome = outcome
        self.expected = expected
        self.sent = sent
        self.received = received
        self.lost = lost
        self.enobufs = enobufs
        self.counters = counters
        self.reason = reason
        self.failure = failure
        self.durationS = durationS
        self.evidence = evidence
        self.provenance = provenance
        self.matches = CellResult.judge(outcome: outcome, expected: expected)
    }

    private mutating func judge() {
        matches = CellResult.judge(outcome: outcome, expected: expected)
    }

    /// Errors and flaky cells always differ; a measurement without an expectation is not judged
    /// as a mismatch; skipped cells are neither.
    public static func judge(outcome: Outcome, expected: Outcome?) -> Bool? {
        switch outcome {
        case .skipped: return nil
        case .error, .flaky: return false
        default: return expected.map { $0 == outcome } ?? true
        }
    }
}

/// The numbers behind an outcome, beyond the contract's required keys.
public struct Evidence: Sendable, Hashable, Codable {
    public var unicastFailures: Int
    public var bypassedFullQueue: Int
    public var messagesRead: Int
    public var lostRanges: [[Int]]?
    public var rcvbufEffective: Int?
    public var firewall: String?
    public var queueTotalWhilePaused: Int?
    public var consoleLog: String?

    public init(unicastFailures: Int, bypassedFullQueue: Int, messagesRead: Int, lostRanges: [[Int]]? = nil, rcvbufEffective: Int? = nil,
                firewall: String? = nil, queueTotalWhilePaused: Int? = nil, consoleLog: String? = nil) {
        self.unicastFailures = unicastFailures
        self.bypassedFullQueue = bypassedFullQueue
        self.messagesRead = messagesRead
        self.lostRanges = lostRanges
        self.rcvbufEffective = rcvbufEffective
        self.firewall = firewall
        self.queueTotalWhilePaused = queueTotalWhilePaused
        self.consoleLog = consoleLog
    }
}

/// What a reader needs to reproduce a cell.
public struct Provenance: Sendable, Hashable, Codable {
    public var imageSha256: String?
    public var rootfsBuildId: String?
    public var probeSha256: String?
    public var qemu: String?
    public var libvirt: String?
    public var accelerator: String?
    /// The hypervisor host that ran the cell ("local" for the machine running kmatrix).
    public var host: String?

    public init(imageSha256: String? = nil, rootfsBuildId: String? = nil, probeSha256: String? = nil, qemu: String? = nil, libvirt: String? = nil,
                accelerator: String? = nil, host: String? = nil) {
        self.imageSha256 = imageSha256
        self.rootfsBuildId = rootfsBuildId
        self.probeSha256 = probeSha256
        self.qemu = qemu
        self.libvirt = libvirt
        self.accelerator = accelerator
        self.host = host
    }
}

public struct RunAgreement: Sendable, Hashable, Codable {
    public var total: Int
    public var agreeing: Int
    public var outcomes: [String: Int]
}

public struct RunMetadata: Sendable, Hashable, Codable {
    public var id: String
    public var started: Date
    public var durationS: Double
    public var host: String
    public var hostKernel: String
    public var libvirt: String?
    public var qemu: String?
    public var accelerator: String?
    public var matrix: String
    public var kmatrixVersion: String
    /// The runs a merged result was made from (`Merge`); nil for a run measured as one.
    public var sources: [RunSource]?

    public init(id: String, started: Date, durationS: Double, host: String, hostKernel: String, libvirt: String? = nil, qemu: String? = nil,
                accelerator: String? = nil, matrix: String, kmatrixVersion: String, sources: [RunSource]? = nil) {
        self.id = id
        self.started = started
        self.durationS = durationS
        self.host = host
        self.hostKernel = hostKernel
        self.libvirt = libvirt
        self.qemu = qemu
        self.accelerator = accelerator
        self.matrix = matrix
        self.kmatrixVersion = kmatrixVersion
        self.sources = sources
    }
}

/// One run that went into a merged result: enough to tell the machines and their tools apart.
public struct RunSource: Sendable, Hashable, Codable {
    public var id: String
    public var host: String
    public var accelerator: String?
    public var qemu: String?
    public var libvirt: String?
    public var started: Date
    public var durationS: Double
    public var schema: Int

    public init(id: String, host: String, accelerator: String? = nil, qemu: String? = nil, libvirt: String? = nil, started: Date,
                durationS: Double, schema: Int) {
        self.id = id
        self.host = host
        self.accelerator = accelerator
        self.qemu = qemu
        self.libvirt = libvirt
        self.started = started
        self.durationS = durationS
        self.schema = schema
    }
}

/// The whole run: `results.json`.
public struct RunResult: Sendable, Hashable, Codable {
    /// 2: rows carry `verdicts`. Schema 1 files (no verdicts) still decode; theirs are derived.
    public static let currentSchema = 2

    /// The schema the result was written with (a decoded schema-1 file says 1).
    public var schema: Int
    public var run: RunMetadata
    /// Rows, in report order. Verdicts follow when rows or cells change, so they never describe
    /// cells that are no longer there.
    public var guests: [String] { didSet { verdicts = Verdicts.derive(guests: guests, cells: cells) } }
    public var scenarios: [String]
    public var cells: [CellResult] { didSet { verdicts = Verdicts.derive(guests: guests, cells: cells) } }
    /// One per row, in `guests` order, derived from the cells (`Verdicts.derive`).
    public var verdicts: [RowVerdict]

    public init(run: RunMetadata, guests: [String], scenarios: [String], cells: [CellResult]) {
        self.schema = RunResult.currentSchema
        self.run = run
        self.guests = guests
        self.scenarios = scenarios
        self.cells = cells
        self.verdicts = Verdicts.derive(guests: guests, cells: cells)
    }

    enum CodingKeys: String, CodingKey {
        case schema, run, guests, scenarios, cells, verdicts
    }

    /// Keys in the order the synthesized decoder used, so a broken file names the same missing
    /// key as before; a file without `verdicts` (schema 1) gets them derived.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        schema = try container.decode(Int.self, forKey: .schema)
        run = try container.decode(RunMetadata.self, forKey: .run)
        guests = try container.decode([String].self, forKey: .guests)
        scenarios = try container.decode([String].self, forKey: .scenarios)
        cells = try container.decode([CellResult].self, forKey: .cells)
        verdicts = try container.decodeIfPresent([RowVerdict].self, forKey: .verdicts) ?? Verdicts.derive(guests: guests, cells: cells)
    }

    public func cell(guest: String, scenario: String) -> CellResult? {
        cells.first { $0.guest == guest && $0.scenario == scenario }
    }

    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return try encoder.encode(self)
    }

    public static func decode(_ data: Data) throws -> RunResult {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(RunResult.self, from: data)
    }

    /// The exit status (docs/architecture.md, "Exit status"): 0 every judged cell matched; 1 a cell
    /// differs (an error counts as differing); 3 when nothing was measured at all — every cell
    /// errored or was skipped. A run that tested nothing never exits 0.
    public var exitStatus: ExitStatus {
        let judged = cells.filter { $0.matches != nil }
        if judged.isEmpty { return .infrastructure }
        if judged.contains(where: { $0.matches == false }) {
            return cells.contains { $0.outcome.isMeasurement } ? .differs : .infrastructure
        }
        return .allMatched
    }

    /// Why nothing was tested, when every cell was skipped; nil when something ran.
    public var nothingTestedReason: String? {
        guard !cells.isEmpty else { return "nothing was tested: the run had no cells" }
        guard cells.allSatisfy({ $0.outcome == .skipped }) else { return nil }
        let absent = cells.filter { $0.failure?.kind == .imageMissing }
        if absent.count == cells.count {
            let guests = Array(Set(absent.map(\.guest))).sorted()
            return "nothing was tested: every guest asked for lacks its image (\(guests.joined(separator: ", "))); "
                + "register the images with `kmatrix images add GUEST FILE` (each cell says where to get its image)"
        }
        return "nothing was tested: all \(cells.count) cells were skipped (first: \(cells[0].reason))"
    }
}

public enum ExitStatus: Int32, Sendable {
    case allMatched = 0
    case differs = 1
    case invalidInput = 2
    case infrastructure = 3
}
