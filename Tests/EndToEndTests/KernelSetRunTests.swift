import Foundation
import Testing
import KMatrixCore

extension EndToEnd {
    /// A kernel set for real: Debian's signed indices read, three kernels of two suites fetched
    /// by their pool path and sha256, booted with the shared userspace plus their own modules
    /// layer, rows named by the release each kernel reports, and paired by compare.
    @Suite(.serialized, .enabled(if: Harness.virtualMachinesEnabled, "set KMATRIX_E2E_VMS=1 (scripts/test does)"))
    struct KernelSetRunTests {
        @Test func threeKernelsOfTwoSuitesExpandNameAndPair() throws {
            let work = try Harness.scratchDirectory("kernel-set")
            defer { try? FileManager.default.removeItem(at: work) }
            let matrix = work.appendingPathComponent("matrix.yaml")
            try Data("""
            kernels:
              - { debian: [bookworm], flavour: cloud, versions: all }
              - { debian: [trixie], flavour: cloud, versions: newest }
            scenarios: [failopen-socket-overflow, strict-socket-overflow]
            expect:
              failopen-socket-overflow: [{ when: "kernel < 4.6", outcome: dropped }, { outcome: reinjected }]
              strict-socket-overflow: [{ outcome: dropped }]
            """.utf8).write(to: matrix)
            let run = try Harness.run(["run", "--matrix", matrix.path])
            #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
            let result = try run.results()
            let bookworm = result.guests.filter { $0.hasPrefix("6.1.") }, trixie = result.guests.filter { $0.hasPrefix("6.12.") }
            #expect(bookworm.count >= 2 && trixie.count == 1 && result.guests.count == bookworm.count + 1, "\(result.guests)")
            #expect(run.stderr.contains("kernel sets: \(result.guests.count) kernels"))
            for guest in result.guests {
                let cell = try #require(result.cell(guest: guest, scenario: "failopen-socket-overflow"))
                #expect(cell.kernel == guest, "the row is named by the release the kernel reports")
                #expect(cell.outcome == .reinjected, "\(guest): \(cell.reason)")
                #expect(cell.provenance?.imageSha256?.count == 64)
                #expect(cell.distro?.contains("linux-image-\(guest)") == true, "\(cell.distro ?? "")")
            }
            // Every image starts with the same userspace archive: built once.
            let manifests = try FileManager.default.contentsOfDirectory(atPath: Harness.sharedCache.appendingPathComponent("images").path)
                .filter { $0.hasPrefix("kernel-pkg-") }
                .compactMap { try? JSONSerialization.jsonObject(with: Data(contentsOf: Harness.sharedCache.appendingPathComponent("images/\($0)/manifest.json"))) as? [String: Any] }
                .filter { ($0["kernel_release"] as? String).map(result.guests.contains) ?? false }
            #expect(manifests.count == result.guests.count)
            #expect(Set(manifests.compactMap { $0["base_id"] as? String }).count == 1)
            #expect(manifests.allSatisfy { ($0["layer_size"] as? Int ?? Int.max) < 2 << 20 }, "a kernel's own archive is its modules: small")

            // Last night knew one kernel less: tonight's compare names it as a new row with its
            // verdict, and pairs every other row by its release.
            var lastNight = result
            let newest = try #require(bookworm.last)
            lastNight.guests.removeAll { $0 == newest }
            lastNight.cells.removeAll { $0.guest == newest }
            let baseline = work.appendingPathComponent("last-night.json")
            try lastNight.encoded().write(to: baseline)
            let compare = try Harness.run(["compare", baseline.path, run.output.appendingPathComponent("results.json").path])
            #expect(compare.stdout.contains("new guest \(newest): not affected"), "\(compare.stdout)\(compare.stderr)")
            #expect(compare.stdout.split(separator: "\n").count == 1, "nothing else changed: \(compare.stdout)")
            #expect(Harness.kmatrixLeftovers().isEmpty)
        }
    }
}
