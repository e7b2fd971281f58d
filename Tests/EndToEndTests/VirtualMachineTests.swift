import Foundation
import Testing
import KMatrixCore

/// Real guests booted through libvirt under QEMU, one shared run for the whole suite (booting is
/// the expensive part): two stock Debian kernels, the legacy-semantics fixture kernel and the
/// cloud-image stand-in, each with the two socket-overflow scenarios.
enum SharedVirtualMachineRun {
    static let guests = ["debian-12-6.1", "debian-13-6.12", "legacy-6.1-failopen-reverted", "cloud-standin-debian-11"]

    static let outcome: Result<Harness.Outcome, any Error> = Result {
        try Harness.run(["run"] + guests.flatMap { ["--guest", $0] }
                        + ["--scenario", "failopen-socket-overflow", "--scenario", "strict-socket-overflow", "--scenario", "liveness-probe"])
    }

    static func result() throws -> (Harness.Outcome, RunResult) {
        let run = try outcome.get()
        return (run, try run.results())
    }
}

extension EndToEnd {
    @Suite(.serialized, .enabled(if: Harness.virtualMachinesEnabled, "set KMATRIX_E2E_VMS=1 (scripts/test does)"))
    struct VirtualMachineTests {
        @Test func stockKernelsReinjectAndStrictDrops() throws {
            let (run, result) = try SharedVirtualMachineRun.result()
            for guest in ["debian-12-6.1", "debian-13-6.12"] {
                let failOpen = try #require(result.cell(guest: guest, scenario: "failopen-socket-overflow"), "stderr: \(run.stderr)")
                #expect(failOpen.outcome == .reinjected, "\(guest): \(failOpen.reason)")
                #expect(failOpen.lost == 0)
                #expect(failOpen.enobufs >= 1)
                let strict = try #require(result.cell(guest: guest, scenario: "strict-socket-overflow"))
                #expect(strict.outcome == .dropped, "\(guest): \(strict.reason)")
                #expect(strict.lost > 0 && strict.lost == strict.counters?.queueUserDropped)
            }
            #expect(result.cell(guest: "debian-12-6.1", scenario: "failopen-socket-overflow")?.kernel?.hasPrefix("6.1.") == true)
            #expect(result.cell(guest: "debian-13-6.12", scenario: "failopen-socket-overflow")?.kernel?.hasPrefix("6.12.") == true)
            #expect(result.run.accelerator != nil)
            // Debian's kernels carry a PVH entry, so they boot as the decompressed ELF; the legacy
            // fixture's minimal config has none and boots as its bzImage (docs/architecture.md, "Boot").
            for (guest, file) in [("debian-12-6.1", "vmlinux"), ("debian-13-6.12", "vmlinux"), ("legacy-6.1-failopen-reverted", "vmlinuz")] {
                let xml = try String(contentsOf: run.output.appendingPathComponent("domains/\(guest).xml"), encoding: .utf8)
                let kernel = try #require(xml.firstMatch(of: /<kernel>([^<]+)<\/kernel>/)).output.1
                #expect(kernel.hasSuffix("/" + file), "\(guest) boots \(kernel)")
            }
        }

        @Test func legacyFixtureDropsWhereItsStockTwinReinjects() throws {
            let (run, result) = try SharedVirtualMachineRun.result()
            let legacy = try #require(result.cell(guest: "legacy-6.1-failopen-reverted", scenario: "failopen-socket-overflow"), "stderr: \(run.stderr)")
            #expect(legacy.outcome == .dropped, "\(legacy.reason)")
            #expect(legacy.lost > 0)
            #expect(legacy.lost == legacy.counters?.queueUserDropped)
            #expect(legacy.kernel?.contains("kmatrix-legacy-failopen") == true)
            let twin = try #require(result.cell(guest: "debian-12-6.1", scenario: "failopen-socket-overflow"))
            #expect(twin.outcome == .reinjected)
            let probes = try #require(result.cell(guest: "legacy-6.1-failopen-reverted", scenario: "liveness-probe"))
            #expect(probes.outcome == .dropped, "\(probes.reason)")
            let twinProbes = try #require(result.cell(guest: "debian-12-6.1", scenario: "liveness-probe"))
            #expect(twinProbes.outcome == .reinjected, "\(twinProbes.reason)")
        }

        @Test func cloudStandInRunsThroughTheCloudImagePath() throws {
            let (run, result) = try SharedVirtualMachineRun.result()
            let cell = try #require(result.cell(guest: "cloud-standin-debian-11", scenario: "failopen-socket-overflow"), "stderr: \(run.stderr)")
            #expect(cell.outcome == .reinjected, "\(cell.reason)")
            #expect(cell.distro?.contains("Debian GNU/Linux 11") == true)
            #expect(cell.kernel?.hasPrefix("5.10.") == true)
        }

        @Test func everyCellMatchedAndNothingIsLeftBehind() throws {
            let (run, result) = try SharedVirtualMachineRun.result()
            #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
            #expect(result.cells.allSatisfy { $0.matches == true }, "\(run.stdout)")
            #expect(Harness.kmatrixLeftovers().isEmpty)
            let console = run.output.appendingPathComponent("console/debian-12-6.1.log")
            #expect(try String(contentsOf: console, encoding: .utf8).contains("KMATRIX-READY"))
        }

        @Test func interruptedMidBootLeavesNothing() throws {
            let run = try Harness.run(["run", "--guest", "debian-12-6.1", "--scenario", "failopen-socket-overflow"]) { out in
                FileManager.default.fileExists(atPath: out.appendingPathComponent("console/debian-12-6.1.log").path)
            }
            #expect(run.status != 0)
            #expect(Harness.kmatrixLeftovers().isEmpty)
            let result = try run.results()
            #expect(result.cells.first?.outcome == .error)
            #expect(result.cells.first?.reason.contains("interrupted") == true)
        }

        @Test func aGuestWhoseQEMUIsKilledSaysSoAndLeavesNothing() throws {
            let kill = Harness.OnceReady(guest: "debian-12-6.1") {
                _ = Harness.shell("pkill -KILL -f 'qemu-system[-]x86_64 -name guest=kmatrix-[0-9a-f]*-debian-12-6.1,'")
            }
            let run = try Harness.run(["run", "--guest", "debian-12-6.1"], whileRunning: kill.check)
            #expect(kill.done)
            let cells = try run.results().cells
            #expect(cells.count == 6)
            #expect(cells.allSatisfy { $0.outcome == .error })
            // Whichever step the kill landed in (SSH wait or a scenario), the cause is named.
            let first = try #require(cells.first { $0.failure?.kind != .notRun })
            #expect(first.failure?.kind == .guestStopped, "\(first.reason)")
            #expect(first.reason.contains("its QEMU process ended"), "\(first.reason)")
            // Its only guest measured nothing: infrastructure, not a mismatch.
            #expect(run.status == 3, "\(run.stderr)")
            #expect(Harness.kmatrixLeftovers().isEmpty)
        }

        /// libvirtd restarted mid-run (a package upgrade does that) destroys the run's guests with
        /// its connection: they are booted once more and every cell is still measured.
        @Test func aLibvirtdRestartMidRunCostsARebootNotTheCells() throws {
            let setup = Harness.packageRoot.appendingPathComponent("scripts/host-setup.sh").path
            let restart = Harness.OnceReady(guest: "debian-12-6.1") {
                _ = Harness.shell("pkill -x libvirtd; sleep 1; '\(setup)' >/dev/null 2>&1")
            }
            let run = try Harness.run(["run", "--guest", "debian-12-6.1", "--guest", "debian-11-5.10"], whileRunning: restart.check)
            #expect(restart.done)
            #expect(run.stderr.contains("booting it once more"), "\(run.stderr.suffix(3000))")
            let cells = try run.results().cells
            #expect(cells.count == 12)
            #expect(cells.allSatisfy { $0.matches == true }, "\(cells.map(\.reason))")
            #expect(run.status == 0, "\(run.stderr.suffix(3000))")
            #expect(Harness.kmatrixLeftovers().isEmpty)
        }

        @Test func vendorImagesWithoutFilesAreSkippedWithInstructions() throws {
            let run = try Harness.run(["run", "--guest", "rhel-7.9", "--guest", "amazonlinux-2"])
            // Nothing was tested: never exit 0, and say why.
            #expect(run.status == 3, "\(run.stderr)")
            #expect(run.stderr.contains("nothing was tested: every guest asked for lacks its image (amazonlinux-2, rhel-7.9)"), "\(run.stderr)")
            let result = try run.results()
            #expect(result.cells.count == 12)
            #expect(result.cells.allSatisfy { $0.outcome == .skipped })
            let reason = try #require(result.cells.first?.reason)
            #expect(reason.contains("rhel-server-7.9-x86_64-kvm.qcow2"))
            #expect(reason.contains("kmatrix images add"))
            #expect(result.cell(guest: "rhel-7.9", scenario: "failopen-socket-overflow")?.expected == .dropped)
            #expect(result.cell(guest: "amazonlinux-2", scenario: "failopen-socket-overflow")?.expected == .reinjected)
        }
    }
}
