import Foundation
import Testing
import KMatrixCore

extension EndToEnd {
    /// Interrupted and killed runs, for real: nothing they started outlives them (SIGINT,
    /// SIGTERM), and what a SIGKILL leaves is removed by `kmatrix gc` — which leaves a live run
    /// alone, whatever cache it uses.
    @Suite(.serialized, .enabled(if: Harness.virtualMachinesEnabled, "set KMATRIX_E2E_VMS=1 (scripts/test does)"))
    struct CleanupTests {
        /// The legacy fixture's bzImage: a kernel file whose rootfs image a fresh cache must build.
        static var legacyBzImage: URL { Harness.sharedCache.appendingPathComponent("images/legacy-failopen-bzimage/bzImage") }

        @Test func noChildOutlivesARunInterruptedDuringAnImageBuild() throws {
            let build = try Harness.run(["images", "build", "legacy-6.1-failopen-reverted"])
            try #require(build.status == 0, "\(build.stderr)")
            let cache = try Harness.privateCache("interrupt-build")
            defer { try? FileManager.default.removeItem(at: cache) }
            for signal in [SIGINT, SIGTERM] {
                let logs = cache.appendingPathComponent("logs")
                try? FileManager.default.removeItem(at: logs)
                try? FileManager.default.removeItem(at: cache.appendingPathComponent("images"))
                let run = try Harness.run(["run", "--kernel", Self.legacyBzImage.path, "--scenario", "failopen-socket-overflow"], cache: cache,
                                          interruptWhen: { _ in
                                              // The rootfs recipe is running: its log exists and its children with it.
                                              ((try? FileManager.default.contentsOfDirectory(atPath: logs.path)) ?? []).contains { $0.hasPrefix("kernel-image") }
                                                  && !Harness.markedProcesses().isEmpty
                                          }, signal: signal)
                #expect(run.status == 3, "signal \(signal): \(run.stderr)")
                #expect(Harness.markedProcesses().isEmpty, "signal \(signal) left \(Harness.markedProcesses())")
                #expect(Harness.kmatrixLeftovers(cache: cache).isEmpty)
                let result = try run.results()
                #expect(result.cells.first?.failure?.kind == .interrupted, "\(result.cells.first?.reason ?? "")")
                #expect(run.stderr.contains("the run was interrupted"))
            }
        }

        @Test func aFullOutputFilesystemIsRefusedBeforeAnythingBoots() throws {
            let folder = try Harness.scratchDirectory("full-output")
            defer { try? FileManager.default.removeItem(at: folder) }
            #expect(Harness.shell("mount -t tmpfs -o size=64k tmpfs '\(folder.path)' && head -c 60000 /dev/zero > '\(folder.path)/filler'; echo $?")
                .trimmingCharacters(in: .whitespacesAndNewlines) == "0")
            defer { _ = Harness.shell("umount '\(folder.path)'") }
            let out = folder.appendingPathComponent("run")
            let run = try Harness.run(["run", "--guest", "debian-12-6.1", "--out", out.path], limit: 120)
            #expect(run.status == 3, "\(run.stderr)")
            #expect(run.stderr.contains("KiB free; a run needs 16 MiB there"), "\(run.stderr)")
            #expect(run.stderr.contains("free some space there or pass another --out"), "\(run.stderr)")
            #expect(!run.stderr.contains("booting"))
            #expect(Harness.kmatrixLeftovers().isEmpty)
        }

        @Test func gcRemovesWhatAKilledRunLeftAndNothingElse() throws {
            let bystander = FileManager.default.temporaryDirectory.appendingPathComponent("kmatrix-not-a-run-\(UUID().uuidString.prefix(6))")
            try Data("mine".utf8).write(to: bystander)
            defer { try? FileManager.default.removeItem(at: bystander) }
            let run = try Harness.run(["run", "--guest", "debian-12-6.1", "--guest", "host", "--scenario", "failopen-socket-overflow"],
                                      interruptWhen: { out in
                                          FileManager.default.fileExists(atPath: out.appendingPathComponent("console/debian-12-6.1.log").path)
                                      }, signal: SIGKILL)
            #expect(run.status == 137 || run.status == 9 || run.status != 0)
            // Its domain died with its libvirt connection (autodestroy); its folder and keys remain.
            let left = Harness.kmatrixLeftovers()
            #expect(left.contains { $0.hasPrefix("run folder ") }, "\(left)")
            let gc = try Harness.run(["gc"])
            #expect(gc.status == 0, "\(gc.stderr)")
            #expect(gc.stdout.contains("removed run folder"), "\(gc.stdout)")
            #expect(Harness.kmatrixLeftovers().isEmpty, "\(Harness.kmatrixLeftovers())")
            #expect(FileManager.default.fileExists(atPath: bystander.path), "gc touches only what carries a run's marker")
        }

        @Test func gcLeavesALiveRunAlone() throws {
            let process = Process()
            process.executableURL = Harness.binary
            let out = try Harness.scratchDirectory("live")
            process.arguments = ["run", "--guest", "debian-12-6.1", "--scenario", "failopen-socket-overflow", "--out", out.path]
            process.currentDirectoryURL = Harness.packageRoot
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            let exited = DispatchSemaphore(value: 0)
            process.terminationHandler = { _ in exited.signal() }
            try process.run()
            var waited = false
            defer { if !waited { kill(process.processIdentifier, SIGINT); exited.wait() } }
            while process.isRunning && !FileManager.default.fileExists(atPath: out.appendingPathComponent("console/debian-12-6.1.log").path) {
                Thread.sleep(forTimeInterval: 0.1)
            }
            let gc = try Harness.run(["gc"])
            #expect(gc.status == 0, "\(gc.stderr)")
            #expect(gc.stderr.contains("uses this cache, so cached images are not pruned now"), "\(gc.stderr)")
            // And a gc of another cache, which knows nothing of the run's folder.
            let cache = try Harness.privateCache("third")
            defer { try? FileManager.default.removeItem(at: cache) }
            let other = try Harness.run(["gc"], cache: cache)
            #expect(other.status == 0, "\(other.stderr)")
            #expect(!other.stdout.contains("domain kmatrix-"), "\(other.stdout)")
            #expect(process.isRunning, "gc must not disturb the live run")
            #expect(Harness.shell("virsh -c qemu:///system list --name").contains("kmatrix-"), "the live run's guest is still there")
            kill(process.processIdentifier, SIGINT)
            exited.wait()
            waited = true
            #expect(Harness.kmatrixLeftovers().isEmpty)
        }
    }
}
