import Foundation
import Testing
@testable import KMatrixCore

/// A user's own consumer: its declaration, the probe's command line, the classification of real
/// recordings (Suricata 7.0.10 and the tiny-nfq example on the 6.18 host, Fixtures/probe/consumer-*)
/// and the verdict words.
@Suite struct ConsumerTests {
    static let yaml = """
    consumers:
      suricata:
        debian: { suite: trixie, packages: [suricata] }
        files: [{ from: suricata.yaml, to: suricata.yaml }]
        start: ["{bundle}/bin/suricata", "-c", "{bundle}/suricata.yaml", "-q", "{queue}", "-l", "{dir}"]
        version: ["{bundle}/bin/suricata", "-V"]
        sizes: [64, 8000]
        memory_mib: 512
    guests:
      - name: host
        image: { kind: host }
      - name: legacy
        image: { kind: kernel, recipe: legacy-failopen }
        consumers: [suricata]
        expect:
          suricata:overflow-8000: dropped
    expect:
      suricata:overflow-64:
        - { outcome: reinjected }
    """

    static func suricata() throws -> ConsumerSpec {
        try #require(try MatrixParser.parse(yaml, file: "m.yaml").consumer(named: "suricata"))
    }

    @Test func aConsumerAddsItsScenariosToTheGuestsThatListIt() throws {
        let matrix = try MatrixParser.parse(Self.yaml, file: "m.yaml")
        let consumer = try #require(matrix.consumers.first)
        #expect(consumer.debian == ConsumerSpec.DebianPackages(suite: "trixie", packages: ["suricata"]))
        #expect(consumer.files == [ConsumerSpec.File(from: "suricata.yaml", to: "suricata.yaml")])
        #expect(matrix.allScenarios.map(\.name).suffix(4) == ["suricata:overflow-64", "suricata:overflow-8000", "suricata:liveness", "suricata:rmem"])
        let host = try #require(matrix.guests.first { $0.name == "host" })
        let legacy = try #require(matrix.guests.first { $0.name == "legacy" })
        let overflow = try #require(matrix.allScenarios.first { $0.name == "suricata:overflow-8000" })
        #expect(!overflow.applies(to: host))
        #expect(overflow.applies(to: legacy))
        #expect(Scenario.failopenSocketOverflow.applies(to: host))
        // The consumer's memory raises its guests', not the others'.
        #expect(legacy.memoryMiB == 512)
        #expect(host.memoryMiB == nil)
        #expect(matrix.expectation(guest: legacy, scenario: "suricata:overflow-8000", kernel: nil) == .dropped)
        #expect(matrix.expectation(guest: legacy, scenario: "suricata:overflow-64", kernel: nil) == .reinjected)
        #expect(overflow.consumerCell == ConsumerCell(name: "suricata", kind: .overflow, payloadBytes: 8000))
        let liveness = try #require(matrix.allScenarios.first { $0.name == "suricata:liveness" })
        #expect(liveness.parameters.payloadBytes == 8000 && liveness.parameters.tcpProbes == 5 && liveness.measure == .connects)
        let rmem = try #require(matrix.allScenarios.first { $0.name == "suricata:rmem" })
        #expect(rmem.parameters.rmem == Scenario.consumerRmem && rmem.touchesGlobalSysctls)
    }

    @Test func theProbeStartsTheConsumerWithItsPlaceholdersFilledAndEachArgumentKept() throws {
        let scenario = Scenario.consumer(try Self.suricata(), kind: .overflow, payload: 8000)
        let arguments = scenario.probeArguments(bundle: "/opt/kmatrix/consumers/suricata", workRoot: "/tmp/w")
        #expect(arguments == [
            "--packets", "2000", "--payload", "8000", "--consumer", "external",
            "--queue", "4242", "--agent-dir", "/tmp/w/suricata_overflow-8000", "--agent-ready-ms", "30000", "--agent-stop-signal", "15", "--",
            "/opt/kmatrix/consumers/suricata/bin/suricata", "-c", "/opt/kmatrix/consumers/suricata/suricata.yaml", "-q", "4242",
            "-l", "/tmp/w/suricata_overflow-8000",
        ])
        // A value with spaces or quotes stays one argument: nothing is split or interpreted.
        let odd = ConsumerSpec(name: "odd", files: [.init(from: "a", to: "a")], start: ["{bundle}/a", "x y 'z' $(id)"])
        #expect(Scenario.consumer(odd, kind: .overflow, payload: 64).probeArguments(bundle: "/b", workRoot: "/w").suffix(2) == ["/b/a", "x y 'z' $(id)"])
    }

    @Test(arguments: [
        ("consumers: { a: { files: [{ from: x, to: ../../etc/passwd }], start: [\"{bundle}/x\"] } }", 1, "to \"../../etc/passwd\" has a part \"..\""),
        ("consumers: { a: { files: [{ from: x, to: /etc/passwd }], start: [\"{bundle}/x\"] } }", 1, "must be relative to the bundle"),
        ("consumers: { a: { files: [{ from: x, to: x }], start: [\"{bundle}/x\", \"{home}\"] } }", 1, "uses {home}"),
        ("consumers: { a: { files: [{ from: x, to: x }], start: [\"x\"] } }", 1, "start must begin with the program's absolute path"),
        ("consumers: { a: { start: [\"/bin/a\"] } }", 1, "deploys nothing"),
        ("consumers: { a: { files: [{ from: x, to: x }] } }", 1, "has no start command"),
        ("consumers: { a: { debian: { suite: sid, packages: [a] }, start: [\"/a\"] } }", 1, "unknown Debian suite"),
        ("consumers: { a: { debian: { suite: trixie, packages: [\"Bad;rm\"] }, start: [\"/a\"] } }", 1, "package \"Bad;rm\""),
        ("consumers: { a: { files: [{ from: x, to: x }], start: [\"/a\"], sizes: [64, 64] } }", 1, "lists a size twice"),
        ("consumers: { a: { files: [{ from: x, to: x }], start: [\"/a\"], scenarios: [fate] } }", 1, "unknown consumer scenario"),
        ("consumers: { \"../a\": { files: [{ from: x, to: x }], start: [\"/a\"] } }", 1, "consumer name"),
    ])
    func badDeclarationsSayWhereAndWhy(yaml: String, line: Int, message: String) throws {
        let text = yaml + "\nguests: [{ name: h, image: { kind: host } }]\n"
        let error = try #require(Self.parseError(text))
        #expect(error.line == line, "\(error)")
        #expect(error.message.contains(message), "\(error.message)")
    }

    @Test func aGuestCannotNameAConsumerThatIsNotDeclared() throws {
        let error = try #require(Self.parseError("""
        guests:
          - name: h
            image: { kind: host }
            consumers: [nope]
        """))
        #expect(error.line == 4)
        #expect(error.message == "unknown consumer \"nope\": the matrix declares none")
    }

    static func parseError(_ text: String) -> MatrixError? {
        do {
            _ = try MatrixParser.parse(text, file: "m.yaml")
            return nil
        } catch {
            return error
        }
    }

    func classify(_ fixture: String, _ kind: ConsumerSpec.Kind = .overflow, payload: Int) throws -> Classification {
        Classifier.classify(try Fixture.probe(fixture), scenario: Scenario.consumer(try Self.suricata(), kind: kind, payload: payload))
    }

    @Test func smallPacketsFillSuricatasQueueFirstAndFailOpenPassesThem() throws {
        let result = try classify("consumer-suricata-failopen-64-6.18", payload: 64)
        #expect(result.outcome == .reinjected)
        #expect(result.observation?.path == .queueFull)
        #expect(result.observation?.held == 256)
        #expect(result.bypassedFullQueue == 1744 && result.unicastFailures == 0)
        #expect(result.observation?.passedWhileStalled == 1744)
        #expect(result.observation?.fate == .alive)
        #expect(result.lost == 0)
    }

    @Test func largePacketsOverflowItsSocketFirst() throws {
        let result = try classify("consumer-suricata-failopen-8000-6.18", payload: 8000)
        #expect(result.outcome == .reinjected)
        #expect(result.observation?.path == .socketOverflow)
        #expect(result.unicastFailures == (result.counters?.netlinkDrops ?? -1))
        #expect(result.unicastFailures + (result.observation?.held ?? 0) == 2000)
        #expect(result.reason.contains("unicasts to its full socket failed"))
    }

    @Test func withoutFailOpenTheFullQueueDropsAndTheConsumerIsBlamed() throws {
        let result = try classify("consumer-suricata-strict-64-6.18", payload: 64)
        #expect(result.outcome == .dropped)
        #expect(result.lost == 1744 && result.counters?.queueDropped == 1744)
        #expect(result.reason.contains("the consumer does not ask for fail-open"))
    }

    @Test func withoutFailOpenTheSocketOverflowDropsAndCountsInQueueUserDropped() throws {
        let result = try classify("consumer-suricata-strict-8000-6.18", payload: 8000)
        #expect(result.outcome == .dropped)
        #expect(result.lost == result.counters?.queueUserDropped)
        #expect(result.reason.contains("failopen-socket-overflow cell on this kernel tells which"))
    }

    /// Recorded: the burst left room in Suricata's socket for two SYNs, which the stalled
    /// consumer then held; the three that overflowed went past.
    @Test func livenessBehindTheStalledConsumerCountsConnectsAndSaysWhySomeTimedOut() throws {
        let result = try classify("consumer-suricata-liveness-8000-6.18", .liveness, payload: 8000)
        #expect(result.outcome == .reinjected)
        #expect(result.sent == 5 && result.received == 2 && result.lost == 3)
        #expect(result.reason.contains("3 timed out with their SYNs held by the stalled consumer"))
    }

    @Test func aConsumerThatExitsOnOverflowIsReportedExitedWithItsLastLine() throws {
        let result = try classify("consumer-tiny-exits-6.18", payload: 64)
        #expect(result.observation?.fate == .exited)
        #expect(result.observation?.exitStatus == 1)
        #expect(result.observation?.logTail?.contains("recv: No buffer space available") == true)
        // The overflowed datagrams went past; the ones it held died with it.
        #expect(result.outcome == .reinjected)
        #expect(result.lost == 256)
        #expect(result.reason.contains("256 of the 256 held datagrams never got a verdict"))
        #expect(result.reason.contains("exited with status 1: tiny-nfq: recv: No buffer space available"))
    }

    /// tiny-nfq with on_enobufs = hang: it reads ENOBUFS and then nothing more. Fresh traffic
    /// still arrives (fail-open passes it by the full socket), which is why arriving is not enough.
    @Test func aConsumerThatStopsReadingIsStuckAlthoughTrafficStillFlows() throws {
        let probe = try Fixture.probe("consumer-tiny-hangs-6.18")
        #expect(probe.agent?.freshReceived == 5 && probe.agent?.freshUnicastFailed == 5)
        let result = Classifier.classify(probe, scenario: Scenario.consumer(try Self.suricata(), kind: .overflow, payload: 64))
        #expect(result.observation?.fate == .stuck)
        #expect(result.reason.contains("After SIGCONT the consumer ran but read nothing: 5 of 5 fresh datagrams found its socket still full."), "\(result.reason)")
    }

    @Test(arguments: [("sigterm", "15"), ("sigint", "2"), ("sigkill", "9")])
    func everyStopSignalReachesTheProbe(name: String, number: String) throws {
        let matrix = try MatrixParser.parse("""
        consumers:
          a: { files: [{ from: a, to: bin/a }], start: ["{bundle}/bin/a"], stop: \(name) }
        guests: [{ name: k, image: { kind: kernel, suite: bookworm }, consumers: [a] }]
        """, file: "m.yaml")
        let arguments = try #require(matrix.allScenarios.last).probeArguments(bundle: "/b", workRoot: "/w")
        let flag = try #require(arguments.firstIndex(of: "--agent-stop-signal"))
        #expect(arguments[flag + 1] == number)
    }

    @Test func theStopSignalAndReadyTimeoutReachTheProbe() throws {
        let matrix = try MatrixParser.parse("""
        consumers:
          a: { files: [{ from: a, to: bin/a }], start: ["{bundle}/bin/a"], stop: sigint, ready_timeout: 7, sizes: [100], scenarios: [overflow] }
        guests: [{ name: k, image: { kind: kernel, suite: bookworm }, consumers: [a] }]
        """, file: "m.yaml")
        let scenario = try #require(matrix.allScenarios.last)
        #expect(scenario.name == "a:overflow-100")
        let arguments = scenario.probeArguments(bundle: "/b", workRoot: "/w")
        #expect(arguments.contains("--agent-stop-signal") && arguments[arguments.firstIndex(of: "--agent-stop-signal")! + 1] == "2")
        #expect(arguments[arguments.firstIndex(of: "--agent-ready-ms")! + 1] == "7000")
        #expect(!arguments.contains("--agent-ready-log"))
    }

    /// A ready text reaches the probe as one argument before the consumer's command, quotes and
    /// spaces included; a text that is not one plain line is refused with its line.
    @Test func aReadyTextReachesTheProbeAsOneArgument() throws {
        let matrix = try MatrixParser.parse("""
        consumers:
          a: { files: [{ from: a, to: bin/a }], start: ["{bundle}/bin/a", "{queue}"], ready_log: "Engine started; it's 'up'", sizes: [100] }
        guests: [{ name: k, image: { kind: kernel, suite: bookworm }, consumers: [a] }]
        """, file: "m.yaml")
        let arguments = try #require(matrix.allScenarios.last).probeArguments(bundle: "/b", workRoot: "/w")
        let ready = try #require(arguments.firstIndex(of: "--agent-ready-log"))
        #expect(arguments[ready + 1] == "Engine started; it's 'up'")
        #expect(arguments.suffix(3) == ["--", "/b/bin/a", "4242"])
        #expect(ready < arguments.firstIndex(of: "--")!)
        for (text, problem) in [("\"\"", "must be a non-empty string"), ("\"a\\u001b[31m\"", "contains control characters"),
                                ("\"\(String(repeating: "x", count: 201))\"", "must be 1 to 200 bytes")] {
            #expect {
                try MatrixParser.parse("""
                consumers:
                  a: { files: [{ from: a, to: bin/a }], start: ["{bundle}/bin/a"], ready_log: \(text) }
                guests: [{ name: k, image: { kind: kernel, suite: bookworm }, consumers: [a] }]
                """, file: "m.yaml")
            } throws: { error in
                let message = "\(error)"
                return message.contains("m.yaml:2") && message.contains(problem)
            }
        }
    }

    @Test func aConsumerThatNeverBindsIsAnErrorThatSaysSo() throws {
        let result = try classify("consumer-tiny-never-binds-6.18", payload: 64)
        #expect(result.outcome == .error)
        #expect(result.reason == "probe failed: the consumer did not bind queue 4242 within 2000 ms")
    }

    @Test func countersThatDisagreeAreAnError() throws {
        var probe = try Fixture.probe("consumer-suricata-failopen-8000-6.18")
        probe.agent?.receivedWhileStalled -= 3
        let result = Classifier.classify(probe, scenario: Scenario.consumer(try Self.suricata(), kind: .overflow, payload: 8000))
        #expect(result.outcome == .error)
        #expect(result.reason.contains("overflowed"))
    }

    // MARK: verdict words

    static func cell(_ scenario: String, _ outcome: Outcome, kind: ConsumerSpec.Kind = .overflow, payload: Int, queueDropped: Int = 0,
                     queueUserDropped: Int = 0, fate: ConsumerObservation.Fate? = .alive, guest: String = "k") -> CellResult {
        var cell = CellResult(guest: guest, scenario: scenario, kernel: "6.1.0", outcome: outcome,
                              counters: CounterDeltas(queueDropped: queueDropped, queueUserDropped: queueUserDropped, idSequence: 2000, netlinkDrops: 0))
        cell.consumer = ConsumerCell(name: "suricata", kind: kind, payloadBytes: payload,
                                     identity: ConsumerIdentity(version: "This is Suricata version 7.0.10 RELEASE", packages: [.init(name: "suricata", version: "1:7.0.10-1")]),
                                     observed: ConsumerObservation(fate: fate))
        return cell
    }

    static func verdict(_ cells: [CellResult]) throws -> ConsumerVerdict {
        let result = RunResult(run: RunMetadata(id: "r", started: Date(timeIntervalSince1970: 0), durationS: 1, host: "h", hostKernel: "6.18", matrix: "m",
                                                kmatrixVersion: "t"),
                               guests: ["k"], scenarios: cells.map(\.scenario), cells: cells)
        return try #require(result.verdicts.first?.consumers.first)
    }

    @Test func theVerdictSaysUpToWhichSizeTheConsumerIsSafeAndWhy() throws {
        let probeCell = CellResult(guest: "k", scenario: "failopen-socket-overflow", kernel: "6.1.0", outcome: .dropped)
        let verdict = try Self.verdict([
            probeCell,
            Self.cell("suricata:overflow-64", .reinjected, payload: 64),
            Self.cell("suricata:overflow-1500", .reinjected, payload: 1500),
            Self.cell("suricata:overflow-8000", .dropped, payload: 8000, queueUserDropped: 1954),
            Self.cell("suricata:rmem", .dropped, kind: .rmem, payload: 8000, queueUserDropped: 1954),
            { var cell = Self.cell("suricata:liveness", .dropped, kind: .liveness, payload: 8000, queueUserDropped: 3); cell.sent = 5; return cell }(),
        ])
        #expect(verdict.line == "suricata 7.0.10: safe up to 1500 B; packets of 8000 B are dropped on this kernel; "
            + "this kernel drops on socket overflow even with fail-open (before 4.6, or 931401137f60 reverted); "
            + "raising rmem changes nothing (dropped at 8000 B either way); liveness probes fail while it is stalled; alive after every stall")
        #expect(verdict.affected == .yes)
    }

    @Test func aKernelThatReinjectsForTheProbeBlamesTheConsumersFlags() throws {
        let probeCell = CellResult(guest: "k", scenario: "failopen-socket-overflow", kernel: "6.12.0", outcome: .reinjected)
        let verdict = try Self.verdict([probeCell, Self.cell("suricata:overflow-8000", .dropped, payload: 8000, queueUserDropped: 1954, fate: .exited)])
        #expect(verdict.text == "packets of 8000 B are dropped on this kernel; it does not ask for fail-open on this path: this kernel re-injects the probe's socket overflow; it exits after the stall")
    }

    @Test func aConsumerSafeEverywhereSaysSo() throws {
        let verdict = try Self.verdict([Self.cell("suricata:overflow-64", .reinjected, payload: 64), Self.cell("suricata:overflow-8000", .reinjected, payload: 8000)])
        #expect(verdict.text == "re-injects at every size tested (64, 8000 B); alive after every stall")
        #expect(verdict.affected == .no)
    }

    /// A consumer's scenarios have no expectation, so `not-triggered` matches; a run of nothing
    /// else proved nothing and must not exit 0.
    @Test func aRunWhoseCellsAllOverflowedNothingIsNotSuccess() throws {
        let cell = Self.cell("suricata:overflow-64", .notTriggered, payload: 64)
        #expect(cell.matches == true)
        let run = RunResult(run: RunMetadata(id: "r", started: Date(timeIntervalSince1970: 0), durationS: 1, host: "h", hostKernel: "6.18", matrix: "m",
                                             kmatrixVersion: "t"), guests: ["k"], scenarios: [cell.scenario], cells: [cell])
        #expect(run.exitStatus == .infrastructure)
        #expect(run.statusSentence?.hasPrefix("nothing was proven: 1 of 1 cells overflowed nothing") == true, "\(run.statusSentence ?? "")")
        var proven = run
        proven.cells.append(Self.cell("suricata:overflow-8000", .reinjected, payload: 8000))
        #expect(proven.exitStatus == .allMatched)
    }

    @Test func aCellThatSawNoFateKeepsEveryOutOfTheVerdict() throws {
        let verdict = try Self.verdict([Self.cell("suricata:overflow-64", .reinjected, payload: 64),
                                        Self.cell("suricata:overflow-8000", .reinjected, payload: 8000, fate: nil)])
        #expect(verdict.text.hasSuffix("; alive after 1 of 2 stalls (the others did not say)"), "\(verdict.text)")
    }

    static func night(_ id: String, day: Double, version: String, outcome: Outcome, bundle: String) -> RunResult {
        var cell = Self.cell("suricata:overflow-8000", outcome, payload: 8000)
        cell.consumer?.identity?.version = version
        cell.consumer?.identity?.bundleSha256 = bundle
        return RunResult(run: RunMetadata(id: id, started: Date(timeIntervalSince1970: day * 86400), durationS: 1, host: "h", hostKernel: "6.18",
                                          matrix: "m", kmatrixVersion: "t"), guests: ["k"], scenarios: ["suricata:overflow-8000"], cells: [cell])
    }

    /// compare, merge and history pair consumer cells by row and scenario — the scenario names
    /// the consumer — and compare says when what was deployed under that name changed.
    @Test func compareMergeAndHistoryPairCellsByConsumer() throws {
        let monday = Self.night("r1", day: 1, version: "This is Suricata version 7.0.10 RELEASE", outcome: .reinjected, bundle: String(repeating: "a", count: 64))
        let tuesday = Self.night("r2", day: 2, version: "This is Suricata version 7.0.11 RELEASE", outcome: .dropped, bundle: String(repeating: "b", count: 64))
        let comparison = Comparison.compare(base: monday, new: tuesday)
        #expect(comparison.changes.contains(.consumerChanged(guest: "k", consumer: "suricata", from: "suricata 7.0.10 (bundle aaaaaaaaaaaa)",
                                                             to: "suricata 7.0.11 (bundle bbbbbbbbbbbb)")))
        #expect(comparison.text.contains("consumer k / suricata: suricata 7.0.10 (bundle aaaaaaaaaaaa) → suricata 7.0.11 (bundle bbbbbbbbbbbb)"))
        #expect(comparison.text.contains("changed k / suricata:overflow-8000: reinjected → dropped"))
        #expect(Comparison.compare(base: monday, new: monday).changes.isEmpty)

        let history = HistoryBuilder.build([tuesday, monday])
        let series = try #require(history.rows.first?.scenarios.first)
        #expect(series.scenario == "suricata:overflow-8000")
        #expect(series.flips.map(\.to) == [.dropped])

        var shard = Self.night("r3", day: 3, version: "This is Suricata version 7.0.10 RELEASE", outcome: .reinjected, bundle: "c")
        shard.guests = ["other"]
        shard.cells = shard.cells.map { var cell = $0; cell.guest = "other"; return cell }
        let merged = try Merge.merge([monday, shard])
        #expect(merged.cell(guest: "other", scenario: "suricata:overflow-8000")?.consumer?.name == "suricata")
        #expect(merged.verdicts.map { $0.consumers.first?.label } == ["suricata 7.0.10", "suricata 7.0.10"])
    }

    @Test func consumerCellsRoundTripThroughResultsJSONAndTheReaderChecksThem() throws {
        let cells = [Self.cell("suricata:overflow-64", .reinjected, payload: 64)]
        let result = RunResult(run: RunMetadata(id: "r1", started: Date(timeIntervalSince1970: 0), durationS: 1, host: "h", hostKernel: "6.18",
                                                matrix: "m", kmatrixVersion: "t"), guests: ["k"], scenarios: ["suricata:overflow-64"], cells: cells)
        let data = try result.encoded()
        #expect(try ResultReader.read(data, name: "r.json") == result)
        let text = String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\"name\" : \"suricata\"", with: "\"name\" : \"..\\/x\"")
        #expect(throws: KMatrixError.self) { try ResultReader.read(Data(text.utf8), name: "r.json") }
    }
}
