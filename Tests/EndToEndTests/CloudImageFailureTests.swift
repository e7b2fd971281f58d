import Foundation
import Testing
import KMatrixCore

extension EndToEnd {
    /// Bad vendor images: each gives a clear reason in its cells and leaves no overlay or domain.
    @Suite(.serialized, .enabled(if: Harness.virtualMachinesEnabled, "set KMATRIX_E2E_VMS=1 (scripts/test does)"))
    struct CloudImageFailureTests {
        /// Bad images are planted in a cache of the suite's own, never in the shared one.
        static let cache: URL = {
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("kmatrix-e2e-cloud-cache-\(getpid())")
            try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            return url
        }()
        static let cloud = cache.appendingPathComponent("images/cloud")

        /// A matrix with one cloud guest whose image is `file` in the image store.
        func matrix(file: String, sha256: String? = nil, ready: Int = 240) throws -> URL {
            let url = try Harness.scratchDirectory("matrix").appendingPathComponent("matrix.yaml")
            try Data("""
            defaults:
              timeouts: { ready: \(ready) }
            guests:
              - name: vendor
                kernel: 4.18.0-513.el8.x86_64
                image: { kind: cloud, file: \(file), user: cloud-user\(sha256.map { ", sha256: \($0)" } ?? "") }
            expect:
              failopen-socket-overflow:
                - { outcome: reinjected }

            """.utf8).write(to: url)
            return url
        }

        func image(_ name: String, _ make: String) throws -> URL {
            try FileManager.default.createDirectory(at: Self.cloud, withIntermediateDirectories: true)
            let url = Self.cloud.appendingPathComponent(name)
            _ = Harness.shell("rm -f '\(url.path)'; \(make.replacingOccurrences(of: "OUT", with: "'\(url.path)'"))")
            return url
        }

        func runSingleCell(_ matrix: URL) throws -> (Harness.Outcome, CellResult) {
            let run = try Harness.run(["run", "--matrix", matrix.path, "--scenario", "failopen-socket-overflow"], cache: Self.cache)
            return (run, try #require(try run.results().cells.first))
        }

        @Test func truncatedImageIsReportedAndRefusedByImagesAdd() throws {
            let standin = Harness.sharedCache.appendingPathComponent("images/cloud-standin/debian-11-cloud-standin.qcow2")
            let build = try Harness.run(["images", "build", "cloud-standin-debian-11"])
            try #require(build.status == 0 && FileManager.default.fileExists(atPath: standin.path), "\(build.stderr)")
            let truncated = try image("kmatrix-test-truncated.qcow2", "head -c 20000000 '\(standin.path)' > OUT")
            defer { try? FileManager.default.removeItem(at: truncated) }

            let (run, cell) = try runSingleCell(try matrix(file: truncated.lastPathComponent))
            #expect(run.status == 3, "no cell could run: infrastructure failure")
            #expect(cell.outcome == .error)
            #expect(cell.reason.contains("corrupt or truncated"), "\(cell.reason)")
            #expect(cell.expected == .reinjected)
            #expect(Harness.kmatrixLeftovers(cache: Self.cache).isEmpty)

            let add = try Harness.run(["images", "add", "rhel-8", truncated.path], cache: Self.cache)
            #expect(add.status == 2)
            #expect(add.stderr.contains("corrupt or truncated"), "\(add.stderr)")
            #expect(!FileManager.default.fileExists(atPath: Self.cloud.appendingPathComponent("rhel-8.9-x86_64-kvm.qcow2").path))
        }

        @Test func wrongChecksumIsReported() throws {
            let blank = try image("kmatrix-test-checksum.qcow2", "qemu-img create -q -f qcow2 OUT 64M")
            defer { try? FileManager.default.removeItem(at: blank) }
            let (run, cell) = try runSingleCell(try matrix(file: blank.lastPathComponent, sha256: String(repeating: "0", count: 64)))
            #expect(run.status == 3, "no cell could run: infrastructure failure")
            #expect(cell.outcome == .error)
            #expect(cell.reason.contains("expected \(String(repeating: "0", count: 64))"), "\(cell.reason)")
            #expect(Harness.kmatrixLeftovers(cache: Self.cache).isEmpty)
        }

        @Test func diskThatNeverBootsTimesOutWithAReasonAndLeavesNothing() throws {
            let blank = try image("kmatrix-test-blank.qcow2", "qemu-img create -q -f qcow2 OUT 64M")
            defer { try? FileManager.default.removeItem(at: blank) }
            let (run, cell) = try runSingleCell(try matrix(file: blank.lastPathComponent, ready: 15))
            #expect(run.status == 3, "no cell could run: infrastructure failure")
            #expect(cell.outcome == .error)
            #expect(cell.reason.contains("SSH not reachable within 15 s"), "\(cell.reason)")
            #expect(cell.reason.contains("15 s"))
            #expect(FileManager.default.fileExists(atPath: run.output.appendingPathComponent("console/vendor.log").path))
            #expect(Harness.kmatrixLeftovers(cache: Self.cache).isEmpty)
        }
    }
}
