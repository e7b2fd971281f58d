import Foundation
import Testing
import KMatrixCore
import KMatrixTestSupport
@testable import KMatrixCommands

/// The bad-input corpus: every input error is exit 2 with one sentence, found before the first
/// boot — no command runs, nothing is created in the cache, nothing outside is touched.
struct BadInputTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        /// matrix.yaml written into the working directory, if any.
        var matrix: String?
        /// Files to create (relative name → contents).
        var files: [String: String] = [:]
        var arguments: [String]
        var message: String
        var status: Int32 = 2
        var testDescription: String { name }
    }

    static let hostMatrix = "guests:\n  - { name: host, image: { kind: host } }\n"

    static func cloudMatrix(_ image: String) -> String {
        "guests:\n  - name: vendor\n    image: { kind: cloud, \(image) }\n"
    }

    static let cases: [Case] = [
        Case(name: "user as an ssh option", matrix: cloudMatrix("file: a.qcow2, user: \"-oProxyCommand=touch /tmp/pwned\""),
             arguments: ["run"], message: "matrix.yaml:3:48: user \"-oProxyCommand=touch /tmp/pwned\" is not a POSIX user name"),
        Case(name: "user with a newline", matrix: cloudMatrix("file: a.qcow2, user: \"root\\nruncmd: [touch /tmp/x]\""),
             arguments: ["run"], message: "user \"root\\nruncmd: [touch /tmp/x]\" is not a POSIX user name"),
        Case(name: "image file as a path", matrix: cloudMatrix("file: ../../../../tmp/x, user: cloud-user"),
             arguments: ["images", "add", "vendor", "/etc/hostname"], message: "matrix.yaml:3:33: image file \"../../../../tmp/x\" must be a plain file name"),
        Case(name: "guest name longer than a domain allows", matrix: "guests:\n  - { name: \(String(repeating: "a", count: 200)), image: { kind: host } }\n",
             arguments: ["run"], message: "is 200 characters long; at most 48"),
        Case(name: "guest name that is an option", matrix: "guests:\n  - { name: -rf, image: { kind: host } }\n",
             arguments: ["run"], message: "must start with a letter or a digit"),
        Case(name: "a deb that does not exist", matrix: "guests:\n  - { name: k, image: { kind: kernel, deb: /does/not/exist.deb } }\n",
             arguments: ["run"], message: "cannot read kernel file of k /does/not/exist.deb: No such file or directory"),
        Case(name: "a deb that is a device", matrix: "guests:\n  - { name: k, image: { kind: kernel, deb: /dev/zero } }\n",
             arguments: ["run"], message: "kernel file of k /dev/zero is a device, not a regular file"),
        Case(name: "a deb that is not one", matrix: "guests:\n  - { name: k, image: { kind: kernel, deb: fake.deb } }\n", files: ["fake.deb": "MZ"],
             arguments: ["run"], message: "is none of a .deb, an .rpm or a bzImage, not a Debian package"),
        Case(name: "--kernel on a device", arguments: ["run", "--kernel", "/dev/zero"], message: "--kernel file /dev/zero is a device, not a regular file"),
        Case(name: "--kernel that does not exist", arguments: ["run", "--kernel", "nope.deb"], message: "No such file or directory"),
        Case(name: "--kernel that is no kernel", files: ["vmlinuz": "not a kernel"], arguments: ["run", "--kernel", "vmlinuz"],
             message: "is none of a .deb, an .rpm or a bzImage"),
        Case(name: "--modules that does not exist", files: ["bzImage": String(repeating: "\0", count: 0x202) + "HdrS"],
             arguments: ["run", "--kernel", "bzImage", "--modules", "/does/not/exist"], message: "modules directory /does/not/exist of kernel-bzImage does not exist"),
        Case(name: "--modules without a bare kernel", matrix: hostMatrix, arguments: ["run", "--modules", "/lib/modules"],
             message: "--modules goes with a bare kernel image"),
        Case(name: "--kernel row name that is no name", files: ["bzImage": String(repeating: "\0", count: 0x202) + "HdrS"],
             arguments: ["run", "--kernel", "../x=bzImage"], message: "No such file or directory"),
        Case(name: "--kernel row name with spaces", files: ["bzImage": String(repeating: "\0", count: 0x202) + "HdrS"],
             arguments: ["run", "--kernel", "my row=bzImage"], message: "--kernel row name \"my row\" may hold only letters"),
        Case(name: "--out that is a file", matrix: hostMatrix, files: ["taken": "x"], arguments: ["run", "--out", "taken"],
             message: "taken is a file, not a directory"),
        Case(name: "--out under a file", matrix: hostMatrix, files: ["taken": "x"], arguments: ["run", "--out", "taken/sub"],
             message: "cannot use"),
        Case(name: "--baseline that does not exist", matrix: hostMatrix, arguments: ["run", "--baseline", "nope.json"],
             message: "cannot read results file"),
        Case(name: "--baseline that is not results", matrix: hostMatrix, files: ["old.json": "{\"schema\": 1}"],
             arguments: ["run", "--baseline", "old.json"], message: "old.json is not a kmatrix results.json (missing run)"),
        Case(name: "negative --tolerance as its own argument", files: ["a.json": "{}"], arguments: ["compare", "a.json", "a.json", "--tolerance", "-1"],
             message: "--tolerance must be a number from 0 to 1"),
        Case(name: "NaN --tolerance", files: ["a.json": "{}"], arguments: ["compare", "a.json", "a.json", "--tolerance", "nan"],
             message: "--tolerance must be a number from 0 to 1"),
        Case(name: "negative --unused-days", arguments: ["gc", "--unused-days", "-1"], message: "--unused-days must be a whole number from 0 to 3650"),
        Case(name: "--repeat 0", matrix: hostMatrix, arguments: ["run", "--repeat", "0"], message: "--repeat must be from 1 to 100"),
        Case(name: "unknown scenario", matrix: hostMatrix, arguments: ["run", "--scenario", "failopen-socket-overflo"],
             message: "unknown scenario \"failopen-socket-overflo\"; did you mean failopen-socket-overflow?"),
        Case(name: "duplicate key", matrix: "guests:\n  - { name: host, image: { kind: host } }\nexpect: {}\nexpect: {}\n",
             arguments: ["run"], message: "matrix.yaml:4:1: duplicate key \"expect\" (first on line 3)"),
        Case(name: "alias bomb in keys", matrix: "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\n{*c: 1}: 2\n",
             arguments: ["run"], message: "matrix.yaml:4:2: an alias used as (part of) a mapping key"),
        Case(name: "too many aliases", matrix: "a: &a x\nb: [" + Array(repeating: "*a", count: 65).joined(separator: ", ") + "]\n",
             arguments: ["run"], message: "more than 64 aliases"),
        Case(name: "deep nesting", matrix: "a: " + String(repeating: "[", count: 40) + String(repeating: "]", count: 40) + "\n",
             arguments: ["run"], message: "nested deeper than 32 levels"),
        Case(name: "binary matrix", matrix: "guests:\u{1B}[31m\u{7}\0\n", arguments: ["run"], message: "matrix.yaml:1:8: the file holds binary data (control character 0x1b)"),
        Case(name: "matrix that is a device", arguments: ["run", "--matrix", "/dev/zero"], message: "the matrix file /dev/zero is a device"),
        Case(name: "images add of a device", matrix: cloudMatrix("file: a.qcow2, user: cloud-user"), arguments: ["images", "add", "vendor", "/dev/zero"],
             message: "disk image /dev/zero is a device, not a regular file"),
        Case(name: "--connect that runs a program", matrix: hostMatrix, arguments: ["run", "--connect", "qemu+ext:///system?command=/tmp/evil.sh"],
             message: "is not a libvirt URI kmatrix accepts"),
        Case(name: "--connect over ssh that runs a program", arguments: ["doctor", "--connect", "qemu+ssh://lab.example/system?command=/tmp/evil.sh"],
             message: "carries \"command\", which kmatrix refuses"),
        Case(name: "--connect with a socket", arguments: ["gc", "--connect", "qemu:///system?socket=/run/other.sock"],
             message: "names a local libvirt other than qemu:///system"),
        Case(name: "hosts: that run a program", matrix: "hosts:\n  - { uri: \"qemu+ssh://lab/system?netcat=/tmp/nc\" }\n" + hostMatrix,
             arguments: ["doctor"], message: "matrix.yaml:2:12: uri \"qemu+ssh://lab/system?netcat=/tmp/nc\" carries \"netcat\""),
        Case(name: "doctor with a matrix that does not exist", arguments: ["doctor", "--matrix", "nope.yaml"], message: "nope.yaml"),
        Case(name: "gc with a matrix that does not exist", arguments: ["gc", "--matrix", "nope.yaml"], message: "nope.yaml"),
        Case(name: "a negative shard", matrix: hostMatrix, arguments: ["run", "--shard", "-1/3"], message: "--shard must be K/N with 1 ≤ K ≤ N"),
        Case(name: "a baseline whose numbers overflow", matrix: hostMatrix, files: ["old.json": #"{"schema": 1e20}"#],
             arguments: ["run", "--baseline", "old.json"], message: "old.json is not a kmatrix results.json (schema: \"1e+20\" is out of range"),
        Case(name: "a consumer on the host guest", matrix: "consumers: { a: { files: [{ from: a, to: a }], start: [\"{bundle}/a\"] } }\n"
             + "guests:\n  - { name: host, image: { kind: host }, consumers: [a] }\n",
             arguments: ["run"], message: "matrix.yaml:3:53: the host guest cannot run a consumer: its command would run as root on this machine"),
        Case(name: "a consumer file outside the matrix's folder", matrix: "consumers: { a: { files: [{ from: /etc/shadow, to: a }], start: [\"{bundle}/a\"] } }\n"
             + "guests:\n  - { name: k, image: { kind: kernel, suite: bookworm }, consumers: [a] }\n",
             arguments: ["run"], message: "matrix.yaml:1:35: from \"/etc/shadow\" must be relative to the matrix file's folder"),
        Case(name: "a consumer file above the matrix's folder", matrix: "consumers: { a: { files: [{ from: ../x, to: a }], start: [\"{bundle}/a\"] } }\n"
             + "guests:\n  - { name: k, image: { kind: kernel, suite: bookworm }, consumers: [a] }\n",
             arguments: ["run"], message: "has a part \"..\" that must be a plain file name"),
        Case(name: "a consumer file that is missing", matrix: "consumers: { a: { files: [{ from: agent, to: bin/agent }], start: [\"{bundle}/bin/agent\"] } }\n"
             + "guests:\n  - { name: k, image: { kind: kernel, suite: bookworm }, consumers: [a] }\n",
             arguments: ["run"], message: "cannot read file bin/agent of consumer a"),
        Case(name: "--consumer without --kernel", matrix: hostMatrix, arguments: ["run", "--consumer", "suricata"],
             message: "--consumer goes with --kernel"),
        Case(name: "--consumer the matrix does not declare", files: ["bzImage": String(repeating: "\0", count: 0x202) + "HdrS"],
             arguments: ["run", "--kernel", "bzImage", "--consumer", "nope"], message: "unknown consumer \"nope\""),
        Case(name: "images add for a guest that is not cloud", matrix: hostMatrix, files: ["disk.img": "x"], arguments: ["images", "add", "host", "disk.img"],
             message: "host is a host guest built here; only vendor cloud guests take a downloaded image"),
    ]

    @Test(arguments: cases)
    func refusedBeforeAnythingRuns(_ example: Case) async throws {
        let world = try CLIWorld()
        if let matrix = example.matrix { _ = try world.file("matrix.yaml", matrix) }
        for (name, contents) in example.files { _ = try world.file(name, contents) }
        let before = world.root.listing()
        let started = ContinuousClock.now
        let status = await world.run(example.arguments)
        #expect(status == example.status, "stderr: \(world.stderr)")
        #expect(world.stderr.contains(example.message), "stderr: \(world.stderr)")
        #expect(ContinuousClock.now - started < .seconds(5), "refused at once, never hanging")
        #expect(world.commands.calls.isEmpty, "no command may run: \(world.commands.calls.map(\.executable))")
        #expect(world.root.listing() == before, "nothing created or removed")
        #expect(!world.stderr.contains("NSCocoaErrorDomain") && !world.stderr.contains("Error Domain="))
        #expect(!world.stderr.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" }, "no raw control characters on the terminal")
        #expect(world.stderr.split(separator: "\n").count <= 6, "one sentence, not a dump: \(world.stderr)")
    }

    /// A link beside the matrix may point anywhere: where it leads is what counts.
    @Test func aConsumerFileThatLinksOutOfTheMatrixFolderIsRefused() async throws {
        let world = try CLIWorld()
        _ = try world.file("matrix.yaml", "consumers: { a: { files: [{ from: agent.conf, to: a.conf }], start: [\"{bundle}/a\"] } }\n"
                           + "guests:\n  - { name: k, image: { kind: kernel, suite: bookworm }, consumers: [a] }\n")
        try FileManager.default.createSymbolicLink(atPath: world.root.url.appendingPathComponent("agent.conf").path, withDestinationPath: "/etc/hostname")
        #expect(await world.run(["run"]) == 2)
        #expect(world.stderr.contains("matrix.yaml: file \"agent.conf\" of consumer a leads out of the matrix file's folder (to \"/etc/hostname\")"), "\(world.stderr)")
        #expect(world.commands.calls.isEmpty)
    }

    @Test func theUnknownGuestErrorIsBoundedAndSuggests() async throws {
        let world = try CLIWorld()
        let guests = (1...40).map { "  - { name: guest-\($0), image: { kind: host } }" }.joined(separator: "\n")
        _ = try world.file("matrix.yaml", "guests:\n\(guests)\n")
        #expect(await world.run(["run", "--guest", "guest-41x"]) == 2)
        #expect(world.stderr.contains("unknown guest \"guest-41x\"; did you mean guest-1, guest-4, guest-10?"), "\(world.stderr)")
        #expect(world.stderr.contains("and 28 more (`kmatrix matrix` prints them all)"))
        #expect(!world.stderr.contains("guest-39"))
    }
}
