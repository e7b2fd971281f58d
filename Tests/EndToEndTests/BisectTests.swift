import Foundation
import Testing
import KMatrixCore

extension EndToEnd {
    /// `kmatrix bisect` on real kernels: across packaged kernels (the cached Debian kernels and
    /// the legacy fixture), and across a real kernel git tree built commit by commit.
    @Suite(.serialized, .enabled(if: Harness.virtualMachinesEnabled, "set KMATRIX_E2E_VMS=1 (scripts/test does)"))
    struct BisectTests {
        static func report(_ run: Harness.Outcome) throws -> BisectReport {
            try BisectReport.decode(Data(contentsOf: run.output.appendingPathComponent("bisect.json")))
        }

        static var legacy: URL { Harness.sharedCache.appendingPathComponent("images/legacy-failopen-bzimage/bzImage") }

        @Test func packagedKernelsNameTheAdjacentPairWhereTheOutcomeFlips() throws {
            let debs = try Harness.cachedKernelDebs()
            let build = try Harness.run(["images", "build", "legacy-6.1-failopen-reverted"])
            try #require(build.status == 0, "\(build.stderr)")
            let out = try Harness.scratchDirectory("bisect-packages")
            let run = try Harness.run(["bisect", "--scenario", "failopen-socket-overflow", "--kernel", Self.legacy.path,
                                       "--kernel", try #require(debs["bookworm"]).path, "--kernel", try #require(debs["bullseye"]).path,
                                       "--out", out.path], output: out)
            #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
            // Ordered by release, whatever order they were given in.
            #expect(run.stdout.contains("0. 5.10.0-"), "\(run.stdout)")
            #expect(run.stdout.contains("2. 6.1.192-kmatrix-legacy-failopen"))
            let report = try Self.report(run)
            #expect(report.result == .found)
            #expect(report.candidates[report.lastOld ?? -1].label.hasPrefix("6.1.0-"))
            #expect(report.candidates[report.firstNew ?? -1].label == "6.1.192-kmatrix-legacy-failopen")
            #expect(report.oldOutcome == .reinjected && report.newOutcome == .dropped)
            #expect(report.steps.allSatisfy { !$0.cells.isEmpty }, "every step keeps its evidence")
            #expect(run.stdout.contains("reinjected on 6.1.0-") && run.stdout.contains("dropped on 6.1.192-kmatrix-legacy-failopen"))
            #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("bisect.md").path))
            #expect(Harness.kmatrixLeftovers().isEmpty)
        }

        @Test func badInputIsRefusedWithASentence() throws {
            let debs = try Harness.cachedKernelDebs()
            let bookworm = try #require(debs["bookworm"]).path, trixie = try #require(debs["trixie"]).path
            // Ends that agree: bisecting proves nothing.
            let agree = try Harness.run(["bisect", "--scenario", "failopen-socket-overflow", "--kernel", bookworm, "--kernel", trixie])
            #expect(agree.status == 2, "\(agree.stderr)")
            #expect(agree.stderr.contains("the ends do not frame a change"), "\(agree.stderr)")
            let one = try Harness.run(["bisect", "--scenario", "failopen-socket-overflow", "--kernel", bookworm])
            #expect(one.status == 2)
            #expect(one.stderr.contains("bisect needs at least two kernels"), "\(one.stderr)")
            let junk = try Harness.scratchDirectory("junk").appendingPathComponent("broken.rpm")
            try Data([0xED, 0xAB, 0xEE, 0xDB, 0, 1, 2]).write(to: junk)
            let unreadable = try Harness.run(["bisect", "--scenario", "failopen-socket-overflow", "--kernel", bookworm, "--kernel", junk.path])
            #expect(unreadable.status == 2)
            #expect(unreadable.stderr.contains("is not a readable kernel RPM"), "\(unreadable.stderr)")
            let notGit = try Harness.run(["bisect", "--scenario", "failopen-socket-overflow", "--git", "/tmp", "--good", "a", "--bad", "b"])
            #expect(notGit.status == 2)
            #expect(notGit.stderr.contains("--git /tmp is not inside a git tree"), "\(notGit.stderr)")
            let scenario = try Harness.run(["bisect", "--scenario", "nope", "--kernel", bookworm, "--kernel", trixie])
            #expect(scenario.status == 2)
            #expect(scenario.stderr.contains("unknown scenario \"nope\""))
            #expect(Harness.kmatrixLeftovers().isEmpty)
        }

        @Test func aKernelTreeBisectNamesTheRestoringCommitAndSkipsTheBrokenBuild() throws {
            // The legacy fixture's build fills the compiler cache the tree's first build reuses.
            let build = try Harness.run(["images", "build", "legacy-6.1-failopen-reverted"])
            try #require(build.status == 0, "\(build.stderr)")
            let repository = Harness.sharedCache.appendingPathComponent("test-fixtures/kernel-git")
            let made = Harness.shell("'\(Harness.packageRoot.path)/Tests/EndToEndTests/Fixtures/kernel-git.sh' '\(Harness.sharedCache.path)' '\(repository.path)'")
            try #require(made.hasSuffix("\(repository.path)\n"), "fixture: \(made)")
            let log = Harness.shell("git -C '\(repository.path)' log --reverse --format='%H %s'").split(separator: "\n").map(String.init)
            try #require(log.count == 8, "\(log)")
            let restoring = String(try #require(log.first { $0.contains("honor NFQA_CFG_F_FAIL_OPEN") }).prefix(40))
            let good = String(log[0].prefix(40)), bad = String(log[7].prefix(40))

            let out = try Harness.scratchDirectory("bisect-git")
            let run = try Harness.run(["bisect", "--git", repository.path, "--good", good, "--bad", bad, "--scenario", "failopen-socket-overflow",
                                       "--verify-revert", "--out", out.path], output: out)
            #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
            let report = try Self.report(run)
            #expect(report.culprit?.commit == restoring, "\(report.answer)")
            #expect(report.culprit?.files == ["net/netfilter/nfnetlink_queue.c"])
            #expect(report.culprit?.subject == "netfilter: nfnetlink_queue: honor NFQA_CFG_F_FAIL_OPEN when netlink unicast fails")
            #expect(report.oldOutcome == .dropped && report.newOutcome == .reinjected)
            #expect(report.buildsBeyondEnds <= Bisection.depth(8) + 1, "\(report.buildsBeyondEnds) builds beyond the ends")
            let broken = report.steps.first { $0.label == String(log[3].prefix(12)) }
            #expect(broken?.verdict == "skip" && broken?.reason == "the build failed", "\(report.steps.map { "\($0.label) \($0.verdict) \($0.reason)" })")
            #expect(report.verification?.verdict == .confirmed, "\(report.verification?.text ?? "no verification")")
            #expect(report.verification?.detail.contains("reverting it on") == true)
            #expect(run.stdout.contains("with commit \(restoring)"))
            // The user's checkout is untouched: kmatrix built in its own worktree.
            #expect(Harness.shell("git -C '\(repository.path)' status --porcelain").isEmpty)
            #expect(!FileManager.default.fileExists(atPath: repository.appendingPathComponent("vmlinux").path))
            let steps = report.steps.filter { $0.phase == .search }.map { "\($0.label) \($0.verdict) build \(Int($0.buildS ?? 0)) s total \(Int($0.durationS)) s" }
            print("bisect steps: \(steps)")

            // A rerun reuses every finished step: only boots for the verification remain.
            let again = try Harness.run(["bisect", "--git", repository.path, "--good", good, "--bad", bad, "--scenario", "failopen-socket-overflow",
                                         "--resume", "--out", out.appendingPathComponent("again").path], output: out.appendingPathComponent("again"))
            #expect(again.status == 0)
            let rerun = try BisectReport.decode(Data(contentsOf: out.appendingPathComponent("again/bisect.json")))
            #expect(rerun.steps.filter { $0.phase == .search }.allSatisfy { $0.cached }, "\(rerun.steps.map { "\($0.label) \($0.cached)" })")
            #expect(rerun.culprit?.commit == restoring)
            #expect(Harness.kmatrixLeftovers().isEmpty)
        }
    }
}
