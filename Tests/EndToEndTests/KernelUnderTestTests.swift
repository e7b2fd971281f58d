import Foundation
import Testing
import KMatrixCore

extension EndToEnd {
    /// `kmatrix run --kernel …`: "validate a new kernel release" with every kind of kernel file,
    /// booted for real through libvirt. Rows are labelled with the observed `uname -r`, and
    /// expectations come from the matrix's version rules alone.
    @Suite(.serialized, .enabled(if: Harness.virtualMachinesEnabled, "set KMATRIX_E2E_VMS=1 (scripts/test does)"))
    struct KernelUnderTestTests {
        static let scenarios = ["--scenario", "failopen-socket-overflow", "--scenario", "strict-socket-overflow"]

        @Test func debRpmPairAndBzImageWithModulesAreJudgedByVersionRules() throws {
            let debs = try Harness.cachedKernelDebs()
            let work = try Harness.scratchDirectory("kernels")
            defer { try? FileManager.default.removeItem(at: work) }

            // RHEL 8-style split RPMs (kernel-core + kernel-modules) made from the bookworm kernel.
            let rpms = Harness.shell("'\(Harness.packageRoot.path)/Tests/EndToEndTests/Fixtures/kernel-rpms.sh' '\(try #require(debs["bookworm"]).path)' '\(work.path)/rpms'")
                .split(separator: "\n").map(String.init).filter { $0.hasSuffix(".rpm") }
            #expect(rpms.count == 2, "kernel-rpms.sh made \(rpms)")
            // A bare vmlinuz with its modules directory, from the bullseye kernel.
            let unpacked = work.appendingPathComponent("bullseye")
            _ = Harness.shell("mkdir -p '\(unpacked.path)' && dpkg-deb -x '\(try #require(debs["bullseye"]).path)' '\(unpacked.path)'")
            let vmlinuz = try #require(try FileManager.default.contentsOfDirectory(atPath: unpacked.appendingPathComponent("boot").path).first { $0.hasPrefix("vmlinuz-") })
            let release = String(vmlinuz.dropFirst("vmlinuz-".count))

            let run = try Harness.run(["run", "--kernel", try #require(debs["trixie"]).path, "--kernel", rpms.joined(separator: ","),
                                       "--kernel", unpacked.appendingPathComponent("boot/\(vmlinuz)").path,
                                       "--modules", unpacked.appendingPathComponent("lib/modules").path] + Self.scenarios)
            #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
            let result = try run.results()
            #expect(result.guests.count == 3)
            for guest in result.guests {
                let failOpen = try #require(result.cell(guest: guest, scenario: "failopen-socket-overflow"))
                #expect(failOpen.kernel == guest, "the row is labelled with the observed uname -r")
                #expect(failOpen.outcome == .reinjected && failOpen.expected == .reinjected, "\(guest): \(failOpen.reason)")
                let strict = try #require(result.cell(guest: guest, scenario: "strict-socket-overflow"))
                #expect(strict.outcome == .dropped && strict.lost == strict.counters?.queueUserDropped, "\(guest): \(strict.reason)")
                #expect(failOpen.provenance?.imageSha256?.count == 64)
                #expect(failOpen.provenance?.rootfsBuildId?.count == 64)
            }
            #expect(result.guests.contains(release))
            #expect(result.guests.contains { $0.hasPrefix("6.12.") })
            #expect(result.guests.contains { $0.hasPrefix("6.1.") })
            #expect(Harness.kmatrixLeftovers().isEmpty)
        }

        /// Every run asks the kernel-rootfs recipe whether its image is up to date: it remembers
        /// the digests of the package and the outputs by what stat says of them, and a changed
        /// output (same size and mtime, another byte: only ctime tells) is noticed and replaced.
        @Test func theRecipeRemembersDigestsAndNoticesAChangedOutput() throws {
            let deb = try #require(try Harness.cachedKernelDebs()["bookworm"])
            let cache = try Harness.privateCache("digests")
            defer { try? FileManager.default.removeItem(at: cache) }
            let out = cache.appendingPathComponent("out")
            let build = "'\(Harness.packageRoot.path)/images/kernel-rootfs/build.sh' --probe '\(Harness.packageRoot.path)/probe/kmatrix-probe'"
                + " --cache '\(cache.path)' --deb '\(deb.path)' --out '\(out.path)' 2>&1"
            #expect(Harness.shell(build).contains("kernel-rootfs: done: "))
            let second = Harness.shell(build)
            #expect(second.contains("kernel-rootfs: up to date: "), "\(second)")
            let remembered = Harness.shell("cat '\(cache.path)'/digests/*")
            let debSha = Harness.shell("sha256sum '\(deb.path)' | cut -d' ' -f1").trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(remembered.split(separator: "\n").count == 3, "the package, the initramfs and the boot kernel: \(remembered)")
            #expect(remembered.contains(" \(debSha) \(deb.resolvingSymlinksInPath().path)\n"))

            let initramfs = out.appendingPathComponent("initramfs.gz").path
            _ = Harness.shell("cp -p '\(initramfs)' '\(cache.path)/mtime' && printf x | dd of='\(initramfs)' bs=1 seek=100 conv=notrunc 2>/dev/null"
                              + " && touch -r '\(cache.path)/mtime' '\(initramfs)'")
            // The output is a hard link into the build store, so the store changed too: the
            // build is made again, not reused.
            let third = Harness.shell(build)
            #expect(third.contains("kernel-rootfs: building ") && !third.contains("reusing"), "\(third)")
            let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("manifest.json"))) as? [String: Any]
            let published = Harness.shell("sha256sum '\(initramfs)' | cut -d' ' -f1").trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(manifest?["initramfs_sha256"] as? String == published)
        }

        @Test func bareKernelWithoutItsModulesSaysWhatItLacks() throws {
            let debs = try Harness.cachedKernelDebs()
            let work = try Harness.scratchDirectory("bare")
            defer { try? FileManager.default.removeItem(at: work) }
            _ = Harness.shell("dpkg-deb --fsys-tarfile '\(try #require(debs["bookworm"]).path)' | tar -x -C '\(work.path)' --wildcards './boot/vmlinuz-*'")
            let boot = work.appendingPathComponent("boot")
            let vmlinuz = try #require(try FileManager.default.contentsOfDirectory(atPath: boot.path).first)

            let run = try Harness.run(["run", "--kernel", boot.appendingPathComponent(vmlinuz).path, "--scenario", "failopen-socket-overflow"])
            #expect(run.status == 3, "no cell could run: infrastructure failure")
            let cell = try #require(try run.results().cells.first)
            #expect(cell.outcome == .error)
            #expect(cell.reason.contains("the kernel lacks: eth0 (CONFIG_VIRTIO_PCI and CONFIG_VIRTIO_NET)"), "\(cell.reason)")
            #expect(cell.failure?.kind == .noNetwork)
            #expect(cell.reason.contains("CONFIG_NETFILTER_NETLINK_QUEUE"))
            #expect(Harness.kmatrixLeftovers().isEmpty)
        }
    }
}
