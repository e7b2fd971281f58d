import Foundation
import Testing
@testable import KMatrixCore

struct BisectionTests {
    /// Runs the search against a row of known behaviours; returns the order measured and the answer.
    func search(_ truth: [Bisection.Verdict]) -> (measured: [Int], answer: Bisection.Answer) {
        var bisection = Bisection(count: truth.count)
        var measured: [Int] = []
        while let index = bisection.next {
            measured.append(index)
            bisection.record(truth[index], at: index)
            if bisection.answer == .endsDoNotDiffer { break }
        }
        return (measured, bisection.answer)
    }

    @Test func findsTheFlipInLogarithmicallyManySteps() {
        let truth: [Bisection.Verdict] = [.old, .old, .old, .old, .old, .new, .new, .new]
        let (measured, answer) = search(truth)
        #expect(answer == .found(lastOld: 4, firstNew: 5))
        #expect(Array(measured.prefix(2)) == [0, 7], "the ends first")
        #expect(measured.count - 2 <= Bisection.depth(6), "\(measured)")
    }

    @Test func aBrokenBuildInTheMiddleIsSkippedAndTheAnswerStaysRight() {
        let truth: [Bisection.Verdict] = [.old, .old, .old, .skip("build failed"), .old, .new, .new, .new]
        let (measured, answer) = search(truth)
        #expect(answer == .found(lastOld: 4, firstNew: 5))
        #expect(measured == [0, 7, 3, 4, 5], "the skipped midpoint's nearest neighbour is tried next")
        #expect(measured.count - 2 <= Bisection.depth(6) + 1)
    }

    @Test func skipsAroundTheFlipLeaveAnInconclusiveInterval() {
        let truth: [Bisection.Verdict] = [.old, .old, .skip("flaky"), .skip("error"), .new]
        let (_, answer) = search(truth)
        #expect(answer == .inconclusive(lastOld: 1, firstNew: 4))
    }

    @Test func endsThatAgreeOrProveNothingStopAtOnce() {
        #expect(search([.old, .old, .old]).answer == .endsDoNotDiffer)
        #expect(search([.old, .new, .skip("not-triggered")]).answer == .endsDoNotDiffer)
        #expect(search([.old, .old, .old]).measured == [0, 2])
    }

    @Test func twoKernelsAreAnAnswerAtOnce() {
        #expect(search([.old, .new]).answer == .found(lastOld: 0, firstNew: 1))
    }

    @Test func onlyAgreedMeasurementsCount() {
        func cell(_ outcome: Outcome) -> CellResult { CellResult(guest: "g", scenario: "s", outcome: outcome, reason: "because") }
        #expect(Bisection.verdict(for: cell(.dropped), old: .dropped, new: .reinjected) == .old)
        #expect(Bisection.verdict(for: cell(.reinjected), old: .dropped, new: .reinjected) == .new)
        #expect(Bisection.verdict(for: cell(.flaky), old: .dropped, new: .reinjected) == .skip("flaky: because"))
        #expect(Bisection.verdict(for: cell(.notTriggered), old: .dropped, new: .reinjected) == .skip("not-triggered: because"))
        #expect(Bisection.verdict(for: cell(.mixed), old: .dropped, new: .reinjected)
                == .skip("mixed, neither end's outcome (dropped or reinjected): because"))
    }

    @Test func releasesSortByTheRulesThenTheirBuildNumbers() {
        let releases = ["6.12.118+deb13-cloud-amd64", "6.1.192-kmatrix-legacy-failopen", "6.1.0-57-cloud-amd64", "5.10.0-46-cloud-amd64",
                        "6.1.0-56-cloud-amd64", "4.18.0-553.el8.x86_64", "4.18.0-513.el8.x86_64", "vmlinuz-custom"]
        #expect(releases.sorted(by: ReleaseOrder.precedes) == [
            "4.18.0-513.el8.x86_64", "4.18.0-553.el8.x86_64", "5.10.0-46-cloud-amd64", "6.1.0-56-cloud-amd64", "6.1.0-57-cloud-amd64",
            "6.1.192-kmatrix-legacy-failopen", "6.12.118+deb13-cloud-amd64", "vmlinuz-custom",
        ])
    }

    @Test func theReportSaysTheAnswerInOneSentence() throws {
        var report = BisectReport(mode: .packages, scenario: "failopen-socket-overflow", repeats: 3, candidates: [
            .init(index: 0, label: "5.10.0-46-cloud-amd64", detail: "a.deb"), .init(index: 1, label: "6.1.0-57-cloud-amd64", detail: "b.deb"),
            .init(index: 2, label: "6.1.192-kmatrix-legacy-failopen", detail: "bzImage"),
        ])
        report.oldOutcome = .reinjected
        report.newOutcome = .dropped
        report.conclude(.found(lastOld: 1, firstNew: 2))
        #expect(report.answer == "failopen-socket-overflow is reinjected on 6.1.0-57-cloud-amd64 and dropped on 6.1.192-kmatrix-legacy-failopen: "
            + "the change lies between these two adjacent kernels.")
        #expect(report.markdown().hasPrefix("# kmatrix bisect: failopen-socket-overflow\n\n\(report.answer)\n"))
        #expect(try BisectReport.decode(report.encoded()) == report)
        var git = BisectReport(mode: .git, scenario: "failopen-socket-overflow", repeats: 3, candidates: [
            .init(index: 0, label: "1111111", detail: "legacy"), .init(index: 1, label: "2222222", detail: "restore"),
        ])
        git.oldOutcome = .dropped
        git.newOutcome = .reinjected
        git.culprit = .init(commit: "2222222abc", subject: "restore", date: "2026-12-01", files: ["net/netfilter/nfnetlink_queue.c"], identicalToParent: false)
        git.conclude(.found(lastOld: 0, firstNew: 1))
        #expect(git.answer == "failopen-socket-overflow flips from dropped to reinjected with commit 2222222abc \"restore\" (2026-12-01), which touches net/netfilter/nfnetlink_queue.c.")
    }
}
