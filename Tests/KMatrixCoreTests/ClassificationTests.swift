import Testing
@testable import KMatrixCore

@Suite struct ClassificationTests {
    func classify(_ fixture: String, _ scenario: Scenario) throws -> Classification {
        Classifier.classify(try Fixture.probe(fixture), scenario: scenario)
    }

    @Test func failOpenSocketOverflowOnAModernKernelIsReinjected() throws {
        let result = try classify("failopen-socket-overflow-6.18", .failopenSocketOverflow)
        #expect(result.outcome == .reinjected)
        #expect(result.unicastFailures == 1991)
        #expect(result.lost == 0)
        #expect(result.counters == CounterDeltas(queueDropped: 0, queueUserDropped: 0, idSequence: 2000, netlinkDrops: 1991))
        #expect(result.reason.contains("1991 unicasts to the full socket failed"))
    }

    @Test func strictSocketOverflowIsDroppedAndLossMatchesTheCounter() throws {
        let result = try classify("strict-socket-overflow-6.18", .strictSocketOverflow)
        #expect(result.outcome == .dropped)
        #expect(result.lost == 1991)
        #expect(result.counters?.queueUserDropped == result.lost)
        #expect(result.reason.contains("#10–2000"))
    }

    @Test func queueFullPathPassesPacketsWithoutIDs() throws {
        let result = try classify("failopen-queue-full-6.18", .failopenQueueFull)
        #expect(result.outcome == .reinjected)
        #expect(result.bypassedFullQueue == 1936)
        #expect(result.unicastFailures == 0)
        #expect(result.counters?.queueDropped == 0)
        #expect(result.counters?.queueUserDropped == 0)
    }

    @Test func mitigationHoldsTheWholeQueueSoOnlyTheQueueFullPathFires() throws {
        let result = try classify("rmem-mitigation-6.18", .rmemMitigation)
        #expect(result.outcome == .reinjected)
        #expect(result.unicastFailures == 0)
        #expect(result.bypassedFullQueue == 512)
    }

    /// Recorded on the legacy fixture kernel (931401137f60 reverted): fail-open set, yet the
    /// failed unicasts are lost and counted in queue_user_dropped, as on 3.10.
    @Test func failOpenSocketOverflowOnALegacyKernelIsDropped() throws {
        let result = try classify("failopen-socket-overflow-legacy-6.1", .failopenSocketOverflow)
        #expect(result.outcome == .dropped)
        #expect(result.lost == 1990)
        #expect(result.unicastFailures == 1990)
        #expect(result.counters?.queueUserDropped == 1990)
        #expect(result.reason.contains("#11–2000"))
    }

    @Test func livenessProbesFailOnALegacyKernel() throws {
        let result = try classify("liveness-probe-legacy-6.1", .livenessProbe)
        #expect(result.outcome == .dropped)
        #expect(result.sent == 5)
        #expect(result.received == 0)
        #expect(result.counters?.queueUserDropped == 195)
    }

    @Test func pacedLiveConsumerIsDelivered() throws {
        let result = try classify("live-consumer-6.18", .liveConsumer)
        #expect(result.outcome == .delivered)
        #expect(result.received == 2000)
    }

    @Test func unpacedBurstOverflowsEvenALiveConsumer() throws {
        let result = try classify("live-consumer-unpaced-6.18", .liveConsumer)
        #expect(result.outcome == .reinjected)
        #expect(result.unicastFailures == 1744)
    }

    @Test func livenessProbesPassOnAFailOpenKernel() throws {
        let result = try classify("liveness-probe-6.18", .livenessProbe)
        #expect(result.outcome == .reinjected)
        #expect(result.sent == 5)
        #expect(result.received == 5)
    }

    @Test func livenessProbesFailWithoutFailOpen() throws {
        let result = try classify("liveness-probe-strict-6.18", .livenessProbe)
        #expect(result.outcome == .dropped)
        #expect(result.lost == 5)
        #expect(result.reason.contains("0 of 5 connects completed"))
    }

    @Test func noOverflowProvesNothingWhereOneWasNeeded() throws {
        let failOpen = try classify("failopen-socket-overflow-not-triggered-6.18", .failopenSocketOverflow)
        #expect(failOpen.outcome == .notTriggered)
        #expect(failOpen.reason.contains("proves nothing"))
        let strict = try classify("strict-socket-overflow-not-triggered-6.18", .strictSocketOverflow)
        #expect(strict.outcome == .notTriggered)
    }

    @Test func probeFailureIsAnError() throws {
        let result = try classify("probe-error-6.18", .failopenSocketOverflow)
        #expect(result.outcome == .error)
        #expect(result.reason.contains("could not install the NFQUEUE rules"))
    }

    @Test func partialLossIsMixed() throws {
        let result = try classify("mixed-synthetic", .strictSocketOverflow)
        #expect(result.outcome == .mixed)
        #expect(result.lost == 995)
        #expect(result.reason.contains("995 lost"))
        #expect(result.reason.contains("996 re-injected"))
    }

    @Test func countersThatContradictTheLossAreAnError() throws {
        let result = try classify("counters-disagree-synthetic", .strictSocketOverflow)
        #expect(result.outcome == .error)
        #expect(result.reason.contains("1991 datagrams lost but the drop counters say 5"))
    }

    @Test func unicastFailuresWithoutAnyTraceAreAnError() throws {
        var probe = try Fixture.probe("failopen-socket-overflow-6.18")
        probe.enobufs = 0
        probe.netlinkDropsAfter = probe.netlinkDropsBefore
        let result = Classifier.classify(probe, scenario: .failopenSocketOverflow)
        #expect(result.outcome == .error)
        #expect(result.reason.contains("no ENOBUFS"))
    }

    @Test func lossWithoutOverflowIsAnError() throws {
        var probe = try Fixture.probe("live-consumer-6.18")
        probe.received -= 3
        probe.lost = 3
        let result = Classifier.classify(probe, scenario: .liveConsumer)
        #expect(result.outcome == .error)
        #expect(result.reason.contains("3 of 2000 datagrams lost without any overflow"))
    }

    @Test func missingCounterRowsAreAnError() throws {
        var probe = try Fixture.probe("failopen-socket-overflow-6.18")
        probe.queueAfter = nil
        #expect(Classifier.classify(probe, scenario: .failopenSocketOverflow).outcome == .error)
    }

    @Test func everyOutcomeIsCoveredByAFixture() throws {
        let cases: [(String, Scenario)] = [
            ("failopen-socket-overflow-6.18", .failopenSocketOverflow), ("strict-socket-overflow-6.18", .strictSocketOverflow),
            ("mixed-synthetic", .strictSocketOverflow), ("live-consumer-6.18", .liveConsumer),
            ("failopen-socket-overflow-not-triggered-6.18", .failopenSocketOverflow), ("probe-error-6.18", .failopenSocketOverflow),
        ]
        let outcomes = Set(try cases.map { try classify($0.0, $0.1).outcome })
        #expect(outcomes == [.reinjected, .dropped, .mixed, .delivered, .notTriggered, .error])
    }

    @Test func probeArgumentsCarryTheScenarioParameters() {
        #expect(Scenario.failopenSocketOverflow.parameters.arguments == [
            "--packets", "2000", "--payload", "64", "--maxlen", "2048", "--fail-open", "1", "--consumer", "paused",
            "--rcvbuf-mode", "plain", "--rcvbuf", "4096",
        ])
        #expect(Scenario.rmemMitigation.parameters.arguments.suffix(2) == ["--rmem", "4718592"])
        #expect(Scenario.livenessProbe.parameters.arguments.suffix(4) == ["--tcp-probes", "5", "--tcp-timeout-ms", "1000"])
        #expect(Scenario.liveConsumer.parameters.arguments.contains("--pace-window"))
    }
}
