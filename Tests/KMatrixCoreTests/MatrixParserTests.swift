import Testing
@testable import KMatrixCore

@Suite struct MatrixParserTests {
    func parseError(_ text: String) -> MatrixError? {
        do {
            _ = try MatrixParser.parse(text, file: "m.yaml")
            return nil
        } catch {
            return error
        }
    }

    @Test func defaultMatrixParsesAndCoversEveryScenario() throws {
        let matrix = try DefaultMatrix.load()
        #expect(matrix.scenarios.map(\.name) == Scenario.catalogue.map(\.name))
        #expect(matrix.guests.map(\.name).prefix(4) == ["host", "debian-11-5.10", "debian-12-6.1", "debian-13-6.12"])
        for scenario in Scenario.catalogue {
            #expect(matrix.expectations[scenario.name] != nil, "no expectation for \(scenario.name)")
        }
    }

    @Test func expectationsFollowKernelVersionAndOverrides() throws {
        let matrix = try DefaultMatrix.load()
        let rhel7 = try #require(matrix.guests.first { $0.name == "rhel-7.9" })
        let legacy = try #require(matrix.guests.first { $0.name == "legacy-6.1-failopen-reverted" })
        let host = try #require(matrix.guests.first { $0.name == "host" })
        #expect(matrix.expectation(guest: rhel7, scenario: "failopen-socket-overflow", kernel: KernelVersion(release: "3.10.0-1160.el7.x86_64")) == .dropped)
        #expect(matrix.expectation(guest: rhel7, scenario: "failopen-queue-full", kernel: KernelVersion(release: "3.10.0-1160.el7.x86_64")) == .reinjected)
        #expect(matrix.expectation(guest: host, scenario: "failopen-socket-overflow", kernel: KernelVersion(release: "4.14.336-256.557.amzn2.x86_64")) == .reinjected)
        #expect(matrix.expectation(guest: legacy, scenario: "failopen-socket-overflow", kernel: KernelVersion(6, 1, 0)) == .dropped)
        #expect(matrix.expectation(guest: legacy, scenario: "strict-socket-overflow", kernel: KernelVersion(6, 1, 0)) == .dropped)
        #expect(matrix.expectation(guest: host, scenario: "live-consumer", kernel: nil) == .delivered)
        #expect(matrix.expectation(guest: host, scenario: "failopen-socket-overflow", kernel: nil) == nil)
    }

    @Test func repositoryMatrixIsTheEmbeddedDefault() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("matrix.yaml")
        let onDisk = try String(contentsOf: path, encoding: .utf8)
        #expect(onDisk == DefaultMatrix.text, "matrix.yaml and DefaultMatrix.text differ: regenerate with scripts/embed-matrix")
    }

    @Test func parsesImagesOfEveryKind() throws {
        let matrix = try MatrixParser.parse("""
        guests:
          - { name: h, image: { kind: host } }
          - { name: k, image: { kind: kernel, deb: /tmp/linux-image.deb } }
          - { name: b, image: { kind: kernel, bzimage: /tmp/bzImage, modules: /tmp/mods } }
          - { name: r, image: { kind: kernel, rpm: [/tmp/kernel-core.rpm, /tmp/kernel-modules.rpm] } }
          - name: c
            kernel: 3.10.0-1160.el7.x86_64
            memory_mib: 1024
            image: { kind: cloud, file: x.qcow2, user: cloud-user, sha256: \(String(repeating: "A", count: 64)) }
        scenarios: [live-consumer, failopen-socket-overflow]
        """, file: "m.yaml")
        #expect(matrix.guests.map(\.image) == [
            .host,
            .kernel(.packages(.deb, paths: ["/tmp/linux-image.deb"])),
            .kernel(.bzImage(path: "/tmp/bzImage", modules: "/tmp/mods")),
            .kernel(.packages(.rpm, paths: ["/tmp/kernel-core.rpm", "/tmp/kernel-modules.rpm"])),
            .cloud(CloudImage(file: "x.qcow2", sha256: String(repeating: "a", count: 64), user: "cloud-user")),
        ])
        #expect(matrix.guests[4].memoryMiB == 1024)
        #expect(matrix.guests[4].nominalKernel == "3.10.0-1160.el7.x86_64")
        // Catalogue order, not file order.
        #expect(matrix.scenarios.map(\.name) == ["failopen-socket-overflow", "live-consumer"])
    }

    @Test(arguments: [
        // (yaml, line, fragment of the message, fragment of the fix)
        ("guests:\n  - name: a\n    image: { kind: host }\n  - name: a\n    image: { kind: host }\n", 4, "duplicate guest \"a\" (first defined on line 2)", "own name"),
        ("guests:\n  - { name: a, image: { kind: host } }\nexpect:\n  fail-open-overflow:\n    - { outcome: dropped }\n", 4, "unknown key \"fail-open-overflow\"", "failopen-socket-overflow"),
        ("guests:\n  - { name: a, image: { kind: host } }\nexpect:\n  live-consumer:\n    - { when: \"kernel ~ 4.6\", outcome: delivered }\n", 5, "bad version rule", "kernel < 4.6"),
        ("guests:\n  - { name: a, image: { kind: host } }\nexpect:\n  live-consumer:\n    - { outcome: maybe }\n", 5, "\"maybe\" is not an outcome", "reinjected"),
        ("guests:\n  - { name: a, image: { kind: host } }\nscenarios: [nope]\n", 3, "unknown scenario \"nope\"", "liveness-probe"),
        ("guests:\n  - { name: a, image: { kind: vm } }\n", 2, "unknown image kind \"vm\"", "host, kernel or cloud"),
        ("guests:\n  - { name: a, image: { kind: kernel, suite: buster } }\n", 2, "unknown Debian suite \"buster\"", "bookworm"),
        ("guests:\n  - { name: a, image: { kind: cloud, file: x.qcow2 } }\n", 2, "default user", "cloud-user"),
        ("guests:\n  - { name: a }\n", 2, "has no image", "kind: host"),
        ("guests:\n  - name: a\n    image: { kind: host\n", 4, "invalid YAML", "indentation"),
        ("gusts: []\n", 1, "unknown key \"gusts\"", "guests"),
        ("guests: []\n", 1, "no guests", "guests"),
        ("guests:\n  - { name: a, image: { kind: host } }\nexpect:\n  live-consumer:\n    - { outcome: delivered }\n    - { when: \"kernel < 4.6\", outcome: dropped }\n", 6, "can never apply", "end of the list"),
        ("guests:\n  - { name: \"a b\", image: { kind: host } }\n", 2, "may hold only letters, digits", "starting with a letter or digit"),
    ])
    func reportsFileLineAndFix(yaml: String, line: Int, message: String, fix: String) throws {
        let error = try #require(parseError(yaml))
        #expect(error.file == "m.yaml")
        #expect(error.line == line, "\(error)")
        #expect(error.message.contains(message), "\(error)")
        #expect(error.fix.contains(fix), "\(error)")
        #expect(error.description.hasPrefix("m.yaml:\(line):"))
    }
}

import Foundation
