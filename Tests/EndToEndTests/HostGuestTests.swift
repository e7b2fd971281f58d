import Foundation
import Testing
import KMatrixCore

extension EndToEnd {
    /// `kmatrix run --guest host` for real: this machine's kernel, inside a throwaway namespace.
    @Suite(.serialized) struct HostGuestTests {
        @Test func hostRowIsMeasuredAndHonest() throws {
            let run = try Harness.run(["run", "--guest", "host"])
            #expect(run.status == 0, "stderr: \(run.stderr)")
            let result = try run.results()
            #expect(result.cells.count == 6)

            let failOpen = try #require(result.cell(guest: "host", scenario: "failopen-socket-overflow"))
            #expect(failOpen.outcome == .reinjected)
            #expect(failOpen.enobufs >= 1)
            #expect(failOpen.lost == 0)
            #expect(failOpen.sent == 2000 && failOpen.received == 2000)
            #expect((failOpen.counters?.netlinkDrops ?? 0) > 0)

            let strict = try #require(result.cell(guest: "host", scenario: "strict-socket-overflow"))
            #expect(strict.outcome == .dropped)
            #expect(strict.lost > 0)
            #expect(strict.lost == strict.counters?.queueUserDropped)

            let queueFull = try #require(result.cell(guest: "host", scenario: "failopen-queue-full"))
            #expect(queueFull.outcome == .reinjected)
            #expect(queueFull.counters?.queueDropped == 0)
            #expect(queueFull.counters?.queueUserDropped == 0)
            #expect(queueFull.counters?.idSequence == 64)

            let kernel = try String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(failOpen.kernel == kernel)
            #expect(run.stdout.contains("host"))
            #expect(run.stdout.contains("6 of 6 cells matched"))
            #expect(FileManager.default.fileExists(atPath: run.output.appendingPathComponent("matrix.md").path))
            #expect(FileManager.default.fileExists(atPath: run.output.appendingPathComponent("results.xml").path))
            #expect(Harness.kmatrixLeftovers().isEmpty)
        }

        @Test func hostSysctlsAreUntouchedByTheMitigationScenario() throws {
            let before = try ["rmem_default", "rmem_max"].map { try String(contentsOfFile: "/proc/sys/net/core/\($0)", encoding: .utf8) }
            let run = try Harness.run(["run", "--guest", "host", "--scenario", "rmem-mitigation"])
            #expect(run.status == 0, "stderr: \(run.stderr)")
            #expect(try run.results().cells.first?.outcome == .reinjected)
            let after = try ["rmem_default", "rmem_max"].map { try String(contentsOfFile: "/proc/sys/net/core/\($0)", encoding: .utf8) }
            #expect(before == after)
        }

        @Test func badInputExitsTwoWithFileLineAndFix() throws {
            let matrix = FileManager.default.temporaryDirectory.appendingPathComponent("kmatrix-bad-\(UUID().uuidString.prefix(6)).yaml")
            try Data("guests:\n  - { name: host, image: { kind: host } }\nexpect:\n  live-consumer:\n    - { when: \"kernel ~ 4\", outcome: delivered }\n".utf8).write(to: matrix)
            let run = try Harness.run(["run", "--matrix", matrix.path])
            #expect(run.status == 2)
            #expect(run.stderr.contains("\(matrix.path):5:"))
            #expect(run.stderr.contains("fix:"))
            let unknown = try Harness.run(["run", "--guest", "nope"])
            #expect(unknown.status == 2)
            #expect(unknown.stderr.contains("unknown guest \"nope\"; known: host"))
            let files = try Harness.scratchDirectory("mixed")
            defer { try? FileManager.default.removeItem(at: files) }
            try Data("!<arch>\ndebian-binary   ".utf8).write(to: files.appendingPathComponent("linux-image.deb"))
            try Data([0xED, 0xAB, 0xEE, 0xDB, 3, 0]).write(to: files.appendingPathComponent("kernel-core.rpm"))
            let mixed = try Harness.run(["run", "--kernel", files.appendingPathComponent("linux-image.deb").path + "," + files.appendingPathComponent("kernel-core.rpm").path])
            #expect(mixed.status == 2)
            #expect(mixed.stderr.contains("give .deb files, .rpm files, or one bare kernel image"), "\(mixed.stderr)")
            let scenario = try Harness.run(["run", "--guest", "host", "--scenario", "nope"])
            #expect(scenario.status == 2)
            #expect(scenario.stderr.contains("failopen-socket-overflow"))
        }

        @Test func libvirtDownFailsOnlyTheVirtualMachineRows() throws {
            let run = try Harness.run(["run", "--guest", "host", "--guest", "debian-12-6.1", "--guest", "rhel-7.9", "--scenario", "failopen-socket-overflow"],
                                      wrappedIn: Harness.withoutLibvirt)
            #expect(run.status == 1, "\(run.stderr)")
            let result = try run.results()
            #expect(result.cell(guest: "host", scenario: "failopen-socket-overflow")?.outcome == .reinjected)
            let vm = try #require(result.cell(guest: "debian-12-6.1", scenario: "failopen-socket-overflow"))
            #expect(vm.outcome == .error)
            #expect(vm.reason.contains("cannot connect to libvirt"), "\(vm.reason)")
            #expect(vm.reason.contains("scripts/host-setup.sh"))
            #expect(result.cell(guest: "rhel-7.9", scenario: "failopen-socket-overflow")?.outcome == .skipped)
        }

        /// The first hostile pass's repro: a run with a cache of its own killed a process whose
        /// marker named a run it did not know. Nothing is another run's to end unless proven dead.
        @Test func aRunWithAnotherCacheLeavesWhatItCannotProveDeadAlone() throws {
            let victim = Process()
            victim.executableURL = URL(fileURLWithPath: "/bin/sleep")
            victim.arguments = ["300"]
            victim.environment = ["KMATRIX_RUN": "victim01", "PATH": "/usr/bin:/bin"]
            try victim.run()
            defer { kill(victim.processIdentifier, SIGKILL) }
            let cache = try Harness.privateCache("other-cache")
            defer { try? FileManager.default.removeItem(at: cache) }
            let run = try Harness.run(["run", "--guest", "host", "--scenario", "failopen-socket-overflow"], cache: cache)
            #expect(run.status == 0, "\(run.stderr)")
            let gc = try Harness.run(["gc"], cache: cache)
            #expect(gc.status == 0, "\(gc.stderr)")
            #expect(!gc.stdout.contains("victim01"), "\(gc.stdout)")
            Thread.sleep(forTimeInterval: 0.5)
            #expect(victim.isRunning, "a process of an unknown run was killed")
        }

        @Test func compareFlagsAFlippedCell() throws {
            let run = try Harness.run(["run", "--guest", "host", "--scenario", "failopen-socket-overflow"])
            let base = run.output.appendingPathComponent("results.json")
            var flipped = try run.results()
            flipped.cells[0].outcome = .dropped
            let changed = run.output.appendingPathComponent("flipped.json")
            try flipped.encoded().write(to: changed)
            let same = try Harness.run(["compare", base.path, base.path])
            #expect(same.status == 0)
            #expect(same.stdout == "no changes\n")
            let compare = try Harness.run(["compare", base.path, changed.path])
            #expect(compare.status == 1)
            #expect(compare.stdout.contains("REGRESSION host / failopen-socket-overflow: reinjected → dropped"))
        }
    }
}
