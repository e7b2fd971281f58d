import Foundation
import Testing
import KMatrixCore

/// A second libvirt host on this machine that only SSH reaches (Fixtures/second-host.sh): its
/// own daemon, state and pool in a private mount namespace, and an sshd on 127.0.0.2.
final class SecondHost: @unchecked Sendable {
    // Written once in init; read only afterwards.
    let directory: URL
    let port: Int
    let uri: String
    static let script = Harness.packageRoot.appendingPathComponent("Tests/EndToEndTests/Fixtures/second-host.sh").path
    static let pool = "/var/lib/libvirt/kmatrix-pool/"

    init() throws {
        directory = URL(fileURLWithPath: "/tmp/kmatrix-e2e-host2-\(getpid())-\(UInt16.random(in: 1000...9999))")
        port = Int.random(in: 30000...39999)
        let printed = Harness.shell("'\(Self.script)' start '\(directory.path)' \(port) 2>&1").trimmingCharacters(in: .whitespacesAndNewlines)
        guard printed.hasPrefix("qemu+ssh://") else { throw Harness.HarnessError("the second host did not come up: \(printed)") }
        uri = printed
    }

    var name: String { "127.0.0.2:\(port)" }

    func virsh(_ command: String) -> String { Harness.shell("virsh -c '\(uri)' \(command) 2>&1") }

    /// kmatrix's run volumes and domains still on the host.
    func leftovers() -> [String] {
        let domains = virsh("list --all --name").split(separator: "\n").map(String.init).filter { $0.hasPrefix("kmatrix-") }
        let volumes = virsh("vol-list --pool kmatrix").split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
            .filter { $0.hasPrefix("kmatrix-run-") }
        return domains + volumes
    }

    func stopLibvirt() { _ = Harness.shell("'\(Self.script)' stop-libvirt '\(directory.path)'") }

    func stop() { _ = Harness.shell("'\(Self.script)' stop '\(directory.path)'") }
}

extension EndToEnd {
    @Suite(.serialized, .enabled(if: Harness.virtualMachinesEnabled && FileManager.default.isExecutableFile(atPath: "/usr/sbin/sshd"),
                                 "needs KMATRIX_E2E_VMS=1 and openssh-server (scripts/host-setup.sh --with-tests)"))
    struct RemoteHostTests {
        @Test func aKernelGuestAndACloudGuestRunOnAHostOnlySSHReaches() throws {
            let host = try SecondHost()
            defer { host.stop() }
            // The host named in matrix.yaml (`hosts:`), as a lab's checked-in matrix would.
            let folder = try Harness.scratchDirectory("remote-matrix")
            defer { try? FileManager.default.removeItem(at: folder) }
            let matrix = folder.appendingPathComponent("matrix.yaml")
            let defaultMatrix = try Harness.run(["matrix"]).stdout
            try Data(("hosts:\n  - { uri: \"\(host.uri)\", jobs: 2 }\n" + defaultMatrix).utf8).write(to: matrix)
            let run = try Harness.run(["run", "--matrix", matrix.path, "--guest", "debian-12-6.1", "--guest", "cloud-standin-debian-11",
                                       "--scenario", "failopen-socket-overflow", "--scenario", "strict-socket-overflow"])
            #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
            let result = try run.results()
            #expect(result.cells.count == 4)
            #expect(result.cells.allSatisfy { $0.matches == true }, "\(run.stdout)")
            #expect(result.cells.allSatisfy { $0.provenance?.host == host.name }, "\(result.cells.map { $0.provenance?.host ?? "nil" })")
            #expect(result.cell(guest: "cloud-standin-debian-11", scenario: "failopen-socket-overflow")?.distro?.contains("Debian GNU/Linux 11") == true)
            // The domains named only the second host's pool: nothing of this machine's files.
            for guest in ["debian-12-6.1", "cloud-standin-debian-11"] {
                let xml = try String(contentsOf: run.output.appendingPathComponent("domains/\(guest).xml"), encoding: .utf8)
                let paths = xml.matches(of: /<(?:kernel|initrd)>([^<]+)<|(?:file|path)='([^']+)'/).map { String($0.output.1 ?? $0.output.2 ?? "") }
                    .filter { $0.hasPrefix("/") && !$0.hasPrefix("/dev/") }
                #expect(!paths.isEmpty)
                #expect(paths.allSatisfy { $0.hasPrefix(SecondHost.pool) }, "\(guest): \(paths)")
            }
            // The console came back: the kernel guest's ready marker is in the local log.
            #expect(try String(contentsOf: run.output.appendingPathComponent("console/debian-12-6.1.log"), encoding: .utf8).contains("KMATRIX-READY"))
            #expect(host.leftovers().isEmpty, "\(host.leftovers())")
            #expect(Harness.kmatrixLeftovers().isEmpty)
            // The cached base volumes stay for the next run.
            #expect(host.virsh("vol-list --pool kmatrix").contains("kmatrix-"))
        }

        @Test func doctorChecksAndGcCleansTheSecondHostToo() throws {
            let host = try SecondHost()
            defer { host.stop() }
            let doctor = try Harness.run(["doctor", "--connect", "qemu:///system", "--connect", host.uri])
            #expect(doctor.status == 0, "\(doctor.stdout)\n\(doctor.stderr)")
            let libvirtLines = doctor.stdout.split(separator: "\n").filter { $0.hasPrefix("ok    libvirt (") }
            #expect(libvirtLines.count == 2, "\(doctor.stdout)")
            #expect(libvirtLines.contains { $0.contains("(\(host.name))") && $0.contains(host.uri) }, "\(doctor.stdout)")

            // A run killed outright on the second host leaves its volumes there and its folder here.
            let killed = try Harness.run(["run", "--connect", host.uri, "--guest", "debian-12-6.1", "--scenario", "failopen-socket-overflow"],
                                         interruptWhen: { _ in host.virsh("list --name").contains("kmatrix-") }, signal: SIGKILL)
            #expect(killed.killedBySignal && killed.status == SIGKILL)
            #expect(!host.leftovers().isEmpty)
            // What another machine's run keeps on the shared host: a domain whose owner is of
            // another boot, and a run volume of a run this machine never registered.
            let foreign = try Harness.scratchDirectory("foreign-domain")
            defer { try? FileManager.default.removeItem(at: foreign) }
            let xml = foreign.appendingPathComponent("domain.xml")
            try Data("""
            <domain type='qemu'><name>kmatrix-foreign01-guest</name>
              <metadata><kmatrix:run xmlns:kmatrix='https://kmatrix.dev/xmlns/run/1' id='foreign01'
                boot='11111111-2222-4333-8444-555555555555' pid='1' start='1'/></metadata>
              <memory unit='MiB'>64</memory><os><type arch='x86_64' machine='pc'>hvm</type></os>
            </domain>
            """.utf8).write(to: xml)
            #expect(host.virsh("define '\(xml.path)'").contains("defined"))
            #expect(host.virsh("vol-create-as kmatrix kmatrix-run-foreign01-seed.iso 1M --format raw").contains("created"))
            defer {
                _ = host.virsh("undefine kmatrix-foreign01-guest")
                _ = host.virsh("vol-delete --pool kmatrix kmatrix-run-foreign01-seed.iso")
            }
            let gc = try Harness.run(["gc", "--connect", host.uri])
            #expect(gc.status == 0, "\(gc.stdout)\n\(gc.stderr)")
            #expect(gc.stdout.contains(" on \(host.name)"), "\(gc.stdout)")
            #expect(host.leftovers().sorted() == ["kmatrix-foreign01-guest", "kmatrix-run-foreign01-seed.iso"], "\(host.leftovers())")
            #expect(gc.stdout.contains("left domain kmatrix-foreign01-guest on \(host.name) was not started by a run of this machine's current boot"),
                    "\(gc.stdout)")
            #expect(Harness.kmatrixLeftovers().isEmpty)
        }

        @Test func twoHostsSplitTheGuestsAndAHostThatDiesErrorsOnlyItsOwn() throws {
            let host = try SecondHost()
            defer { host.stop() }
            let guests = ["debian-11-5.10", "debian-12-6.1", "debian-13-6.12", "legacy-6.1-failopen-reverted"].flatMap { ["--guest", $0] }
            let split = try Harness.run(["run", "--connect", "qemu:///system", "--connect", host.uri, "--scenario", "failopen-socket-overflow"] + guests)
            #expect(split.status == 0, "\(split.stdout)\n\(split.stderr)")
            let hosts = Set(try split.results().cells.compactMap { $0.provenance?.host })
            #expect(hosts == ["local", host.name], "\(hosts)")

            // The second host's libvirtd stops once its guests are booting: only they fail.
            var stopped = false
            let dying = try Harness.run(["run", "--connect", "qemu:///system", "--connect", host.uri, "--scenario", "failopen-socket-overflow"] + guests,
                                        whileRunning: { _ in
                                            guard !stopped, host.virsh("list --name").contains("kmatrix-") else { return stopped }
                                            host.stopLibvirt()
                                            stopped = true
                                            return true
                                        })
            #expect(stopped)
            let cells = try dying.results().cells
            let local = cells.filter { $0.provenance?.host == "local" }
            let remote = cells.filter { $0.provenance?.host != "local" }
            #expect(local.count + remote.count == 4)
            #expect(!remote.isEmpty && remote.allSatisfy { $0.outcome == .error && $0.reason.contains(host.name) }, "\(remote.map(\.reason))")
            #expect(!local.isEmpty && local.allSatisfy { $0.matches == true }, "\(local.map(\.reason))")
            #expect(dying.status == 1)
            // A host that dies is noticed within seconds, not at the end of a boot deadline.
            let took = try dying.results().run.durationS
            #expect(took < 200, "\(took) s")
            #expect(Harness.kmatrixLeftovers().isEmpty)
            // The dead host's guests outlive its libvirtd; the fixture must not leave them to the next test.
            host.stop()
            #expect(Harness.shell("pgrep -f 'qemu-system[-]x86_64.*kmatrix-pool' || true").isEmpty)
        }
    }
}
