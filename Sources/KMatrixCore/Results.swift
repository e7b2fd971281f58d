import Foundation

/// One guest × scenario measurement, as written to `results.json`.
public struct CellResult: Sendable, Hashable {
    /// The row: the guest's name (or, for an unnamed `--kernel`, its observed `uname -r`).
    public var guest: String
    public var scenario: String
    /// Observed `uname -r`, or the guest's nominal kernel when it never booted.
    public var kernel: String?
    /// Observed PRETTY_NAME from /etc/os-release.
    public var distro: String?
    public var outcome: Outcome
    public var expected: Outcome?
    public var sent: Int
    public var received: Int
    public var lost: Int
    public var enobufs: Int
    public var counters: CounterDeltas?
    /// What the measurement showed, in words (the classifier's sentence, or why repeated runs
    /// disagree). A cell with a `failure` is explained by that instead.
    public var finding: String
    /// What went wrong, as data, for error and skipped cells: the one source of their reason.
    public var failure: CellFailure?
    public var durationS: Double
    public var evidence: Evidence?
    public var provenance: Provenance?
    /// How many repeated runs agreed (when `--repeat` > 1).
    public var runs: RunAgreement?
    /// For a user's consumer's cell: which consumer, which experiment, what was deployed and
    /// what the consumer did.
    public var consumer: ConsumerCell?

    public init(guest: String, scenario: String, kernel: String? = nil, distro: String? = nil, outcome: Outcome, expected: Outcome? = nil,
                sent: Int = 0, received: Int = 0, lost: Int = 0, enobufs: Int = 0, counters: CounterDeltas? = nil, reason: String = "",
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
        self.finding = reason
        self.failure = failure
        self.durationS = durationS
        self.evidence = evidence
        self.provenance = provenance
    }

    /// Why, in words: rendered from `failure` when there is one, else the finding.
    public var reason: String { failure?.reason ?? finding }

    /// Whether the outcome is the expected one; nil for `skipped` (a cell that did not run
    /// neither matches nor differs). Always derived, never stored.
    public var matches: Bool? { Self.judge(outcome: outcome, expected: expected) }

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

/// `results.json` keeps the contract's keys: `reason` and `matches` are written as derived and
/// re-derived when read, so a file can never carry a reason that contradicts its failure.
extension CellResult: Codable {
    enum CodingKeys: String, CodingKey {
        case guest, scenario, kernel, distro, outcome, expected, matches, sent, received, lost, enobufs, counters, reason, failure,
             durationS, evidence, provenance, runs, consumer
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        guest = try container.decode(String.self, forKey: .guest)
        scenario = try container.decode(String.self, forKey: .scenario)
        kernel = try container.decodeIfPresent(String.self, forKey: .kernel)
        distro = try container.decodeIfPresent(String.self, forKey: .distro)
        outcome = try container.decode(Outcome.self, forKey: .outcome)
        expected = try container.decodeIfPresent(Outcome.self, forKey: .expected)
        sent = try container.decode(Int.self, forKey: .sent)
        received = try container.decode(Int.self, forKey: .received)
        lost = try container.decode(Int.self, forKey: .lost)
        enobufs = try container.decode(Int.self, forKey: .enobufs)
        counters = try container.decodeIfPresent(CounterDeltas.self, forKey: .counters)
        failure = try container.decodeIfPresent(CellFailure.self, forKey: .failure)
        // A failure's reason is derived from it, whatever the file says beside it.
        let reason = try container.decode(String.self, forKey: .reason)
        finding = failure == nil ? reason : ""
        durationS = try container.decode(Double.self, forKey: .durationS)
        evidence = try container.decodeIfPresent(Evidence.self, forKey: .evidence)
        provenance = try container.decodeIfPresent(Provenance.self, forKey: .provenance)
        runs = try container.decodeIfPresent(RunAgreement.self, forKey: .runs)
        consumer = try container.decodeIfPresent(ConsumerCell.self, forKey: .consumer)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(guest, forKey: .guest)
        try container.encode(scenario, forKey: .scenario)
        try container.encodeIfPresent(kernel, forKey: .kernel)
        try container.encodeIfPresent(distro, forKey: .distro)
        try container.encode(outcome, forKey: .outcome)
        try container.encodeIfPresent(expected, forKey: .expected)
        try container.encodeIfPresent(matches, forKey: .matches)
        try container.encode(sent, forKey: .sent)
        try container.encode(received, forKey: .received)
        try container.encode(lost, forKey: .lost)
        try container.encode(enobufs, forKey: .enobufs)
        try container.encodeIfPresent(counters, forKey: .counters)
        try container.encode(reason, forKey: .reason)
        try container.encodeIfPresent(failure, forKey: .failure)
        try container.encode(durationS, forKey: .durationS)
        try container.encodeIfPresent(evidence, forKey: .evidence)
        try container.encodeIfPresent(provenance, forKey: .provenance)
        try container.encodeIfPresent(runs, forKey: .runs)
        try container.encodeIfPresent(consumer, forKey: .consumer)
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
    /// The guest's console log, relative to the results folder (`console/<guest>.log`): a name
    /// for people, never a path kmatrix opens when it renders results.
    public var consoleLog: String?
    /// The console's last lines when the cell was made (`ConsoleTail`), kept for cells that
    /// differ from their expectation: what the reports show.
    public var consoleTail: String?

    public init(unicastFailures: Int, bypassedFullQueue: Int, messagesRead: Int, lostRanges: [[Int]]? = nil, rcvbufEffective: Int? = nil,
                firewall: String? = nil, queueTotalWhilePaused: Int? = nil, consoleLog: String? = nil, consoleTail: String? = nil) {
        self.unicastFailures = unicastFailures
        self.bypassedFullQueue = bypassedFullQueue
        self.messagesRead = messagesRead
        self.lostRanges = lostRanges
        self.rcvbufEffective = rcvbufEffective
        self.firewall = firewall
        self.queueTotalWhilePaused = queueTotalWhilePaused
        self.consoleLog = consoleLog
        self.consoleTail = consoleTail
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

    /// This run as a source of a merge: the runs it was merged from, or itself.
    public func sources(schema: Int) -> [RunSource] {
        sources ?? [RunSource(id: id, host: host, hostKernel: hostKernel, accelerator: accelerator, qemu: qemu, libvirt: libvirt,
                              matrix: matrix, kmatrixVersion: kmatrixVersion, started: started, durationS: durationS, schema: schema)]
    }

    var sourceList: [RunSource] { sources(schema: RunResult.currentSchema) }

    /// Every value a field takes across the runs behind this result, in first-seen order: one
    /// for a run measured as one, several for a merge of different machines.
    public func distinct(_ field: KeyPath<RunSource, String>) -> [String] {
        var seen: Set<String> = []
        return sourceList.map { $0[keyPath: field] }.filter { seen.insert($0).inserted }
    }

    public func distinct(_ field: KeyPath<RunSource, String?>) -> [String] {
        var seen: Set<String> = []
        return sourceList.compactMap { $0[keyPath: field] }.filter { seen.insert($0).inserted }
    }

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
    /// Absent in files written before schema 3.
    public var hostKernel: String?
    public var accelerator: String?
    public var qemu: String?
    public var libvirt: String?
    public var matrix: String?
    public var kmatrixVersion: String?
    public var started: Date
    public var durationS: Double
    public var schema: Int

    public init(id: String, host: String, hostKernel: String? = nil, accelerator: String? = nil, qemu: String? = nil, libvirt: String? = nil,
                matrix: String? = nil, kmatrixVersion: String? = nil, started: Date, durationS: Double, schema: Int) {
        self.id = id
        self.host = host
        self.hostKernel = hostKernel
        self.accelerator = accelerator
        self.qemu = qemu
        self.libvirt = libvirt
        self.matrix = matrix
        self.kmatrixVersion = kmatrixVersion
        self.started = started
        self.durationS = durationS
        self.schema = schema
    }
}

/// The whole run: `results.json`.
public struct RunResult: Sendable, Codable {
    /// 4: cells of a user's consumer carry `consumer` (name, experiment, identity, what it did).
    /// 3: cells carry their console tail (`evidence.console_tail`) and name their console log
    /// relative to the results folder; merged runs list each source's own metadata. 2: rows
    /// carry `verdicts`. Files of schema 1 to 3 still decode.
    public static let currentSchema = 4
    public static let readableSchemas = 1...currentSchema

    /// The schema the result was written with (a decoded schema-1 file says 1).
    public var schema: Int
    public var run: RunMetadata
    /// Rows, in report order.
    public var guests: [String] { didSet { index = CellIndex(guests: guests, cells: cells) } }
    public var scenarios: [String]
    public var cells: [CellResult] { didSet { index = CellIndex(guests: guests, cells: cells) } }
    /// Lookups by row and scenario, and the verdicts, rebuilt whenever rows or cells change so
    /// they never describe cells that are no longer there.
    private var index: CellIndex

    /// One per row, in `guests` order, derived from the cells (`Verdicts.derive`) — also for a
    /// file that carries verdicts of its own: a verdict is never taken on trust.
    public var verdicts: [RowVerdict] { index.verdicts }

    public init(run: RunMetadata, guests: [String], scenarios: [String], cells: [CellResult]) {
        self.schema = RunResult.currentSchema
        self.run = run
        self.guests = guests
        self.scenarios = scenarios
        self.cells = cells
        self.index = CellIndex(guests: guests, cells: cells)
    }

    enum CodingKeys: String, CodingKey {
        case schema, run, guests, scenarios, cells, verdicts
    }

    /// Keys in the order the synthesized decoder used, so a broken file names the same missing
    /// key as before; a file's own `verdicts` are not read: they are derived from its cells.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        schema = try container.decode(Int.self, forKey: .schema)
        run = try container.decode(RunMetadata.self, forKey: .run)
        guests = try container.decode([String].self, forKey: .guests)
        scenarios = try container.decode([String].self, forKey: .scenarios)
        cells = try container.decode([CellResult].self, forKey: .cells)
        index = CellIndex(guests: guests, cells: cells)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(schema, forKey: .schema)
        try container.encode(run, forKey: .run)
        try container.encode(guests, forKey: .guests)
        try container.encode(scenarios, forKey: .scenarios)
        try container.encode(cells, forKey: .cells)
        try container.encode(verdicts, forKey: .verdicts)
    }

    /// The first cell of a row and scenario, in constant time.
    public func cell(guest: String, scenario: String) -> CellResult? {
        index.position[CellKey(guest: guest, scenario: scenario)].map { cells[$0] }
    }

    /// The first kernel a row's cells report.
    public func kernel(of guest: String) -> String? { index.kernels[guest] }

    /// A row's cells, in the order they are stored.
    public func cells(of guest: String) -> [CellResult] { (index.rows[guest] ?? []).map { cells[$0] } }

    public func encoded() throws -> Data {
        try JSONCoding.encoder.encode(self)
    }

    public static func decode(_ data: Data) throws -> RunResult {
        try JSONCoding.decoder.decode(RunResult.self, from: data)
    }

    /// The exit status (docs/architecture.md, "Exit status"): 0 every judged cell matched; 1 a cell
    /// differs (an error counts as differing; so does a flaky cell, whose runs measured and
    /// disagreed); 3 when nothing was measured at all — no cells, or every cell errored or was
    /// skipped. A run that tested nothing never exits 0.
    public var exitStatus: ExitStatus {
        let judged = cells.filter { $0.matches != nil }
        if judged.isEmpty { return .infrastructure }
        if judged.contains(where: { $0.matches == false }) {
            return cells.contains { $0.outcome.isMeasurement || $0.outcome == .flaky } ? .differs : .infrastructure
        }
        // Cells that all say `not-triggered` (matching because nothing was expected of them, as
        // with a consumer's own scenarios) proved nothing either.
        if !cells.contains(where: { $0.outcome.isMeasurement && $0.outcome != .notTriggered }) { return .infrastructure }
        return .allMatched
    }

    /// One sentence for any exit status but 0: what differs, or why nothing was measured.
    public var statusSentence: String? {
        switch exitStatus {
        case .allMatched, .invalidInput:
            return nil
        case .differs:
            let differing = cells.filter { $0.matches == false }
            let flaky = differing.filter { $0.outcome == .flaky }.count
            let errors = differing.filter { $0.outcome == .error }.count
            var parts: [String] = []
            if differing.count > flaky + errors { parts.append("\(differing.count - flaky - errors) differ from their expectation") }
            if flaky > 0 { parts.append("\(flaky) flaky (their runs disagree)") }
            if errors > 0 { parts.append("\(errors) errored") }
            return "\(differing.count) of \(cells.count) cells do not match: " + parts.joined(separator: ", ")
        case .infrastructure:
            if let nothing = nothingTestedReason { return nothing }
            let first = cells.first { $0.outcome == .error }
            return "nothing was measured: every cell errored or was skipped" + (first.map { " (first: \($0.guest) / \($0.scenario): \($0.reason))" } ?? "")
        }
    }

    /// Why nothing was tested (every cell skipped) or proven (every measurement not-triggered);
    /// nil when something ran and proved something.
    public var nothingTestedReason: String? {
        guard !cells.isEmpty else { return "nothing was tested: there are no cells" }
        let triggered = cells.filter { $0.outcome == .notTriggered }
        if !triggered.isEmpty, !cells.contains(where: { $0.outcome.isMeasurement && $0.outcome != .notTriggered }) {
            return "nothing was proven: \(triggered.count) of \(cells.count) cells overflowed nothing (not-triggered, first: \(triggered[0].guest) / \(triggered[0].scenario): "
                + "\(triggered[0].reason)); send more or larger packets (a consumer's sizes:) so the queue or the socket fills"
        }
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

extension RunResult: Hashable {
    public static func == (lhs: RunResult, rhs: RunResult) -> Bool {
        lhs.schema == rhs.schema && lhs.run == rhs.run && lhs.guests == rhs.guests && lhs.scenarios == rhs.scenarios && lhs.cells == rhs.cells
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(schema)
        hasher.combine(run)
        hasher.combine(cells.count)
    }
}

struct CellKey: Hashable, Sendable {
    var guest: String
    var scenario: String
}

/// What `RunResult` answers often, computed once per change of its cells: a large merged run is
/// looked up once per row × scenario by every report.
struct CellIndex: Sendable {
    var position: [CellKey: Int] = [:]
    var rows: [String: [Int]] = [:]
    var kernels: [String: String] = [:]
    var verdicts: [RowVerdict]

    init(guests: [String], cells: [CellResult]) {
        for (offset, cell) in cells.enumerated() {
            let key = CellKey(guest: cell.guest, scenario: cell.scenario)
            if position[key] == nil { position[key] = offset }
            rows[cell.guest, default: []].append(offset)
            if kernels[cell.guest] == nil, let kernel = cell.kernel { kernels[cell.guest] = kernel }
        }
        verdicts = Verdicts.derive(guests: guests, cells: cells)
    }
}


