import Foundation
import Testing
@testable import KMatrixCore

/// Files and URIs other people wrote, tried as an attacker would (issue: "a file kmatrix reads
/// is data"): every case below was a hole once, and stays closed.
@Suite struct HostURITests {
    @Test(arguments: [
        "qemu+ext:///system?command=/tmp/evil.sh",
        "qemu+ssh://lab.example/system?command=/tmp/evil.sh",
        "qemu+ssh://lab.example/system?netcat=/tmp/nc",
        "qemu+ssh://lab.example/system?socket=/run/other.sock",
        "qemu+ssh://lab.example/system?proxy=native",
        "qemu+ssh://lab.example/system?mode=legacy",
        "qemu:///system?socket=/nonexistent/libvirt-sock",
        "qemu+unix:///system",
        "qemu+tcp://lab.example/system",
        "qemu+tls://lab.example/system",
        "qemu+libssh2://lab.example/system?known_hosts=/x",
        "qemu:///session",
        "qemu+ssh:///system",
        "qemu+ssh://-oProxyCommand=x/system",
        "qemu+ssh://lab.example/session",
        "qemu+ssh://lab.example/system?keyfile=relative/key",
        "qemu+ssh://lab.example/system?keyfile=/a/../etc/shadow",
        "qemu+ssh://lab.example/system?keyfile=/a;b",
        "qemu+ssh://lab.example/system?no_verify=yes",
        "qemu+ssh://lab.example/system?keyfile=/a&keyfile=/b",
        "qemu+ssh://Root@lab.example/system",
        "qemu+ssh://lab.example:70000/system",
        "qemu+ssh://lab.example/system#x",
        "xen:///system",
        "",
    ])
    func refused(_ text: String) {
        guard case .failure = HostURI.parse(text) else {
            Issue.record("\(text) was accepted")
            return
        }
    }

    @Test func acceptedAndUnderstood() throws {
        #expect(try HostURI.parse("qemu:///system").get().location == .local)
        #expect(try HostURI.parse("test:///default").get().isLocal)
        let remote = try HostURI.parse("qemu+ssh://root@127.0.0.2:2222/system?keyfile=/tmp/kmatrix-x/id_ed25519&no_verify=1").get()
        guard case .ssh(let login) = remote.location else { Issue.record("not ssh"); return }
        #expect(login == HostURI.SSHLogin(user: "root", host: "127.0.0.2", port: 2222, keyFile: "/tmp/kmatrix-x/id_ed25519", skipHostKeyCheck: true))
        #expect(remote.hostName == "127.0.0.2:2222")
        #expect(try HostURI.parse("qemu+ssh://[::1]:22/system").get().hostName == "[::1]:22")
    }

    @Test func theRefusalNamesWhy() {
        let problem = HostURI.problem("qemu+ssh://lab/system?command=/tmp/evil.sh") ?? ""
        #expect(problem.contains("\"command\""))
        #expect(problem.contains("only keyfile and no_verify are accepted"))
        #expect(HostURI.problem("qemu+ext:///system?command=/x")?.contains("other transports such as ext") == true)
    }

    @Test func aMatrixThatNamesAProgramIsRefusedWithItsLine() {
        let yaml = "hosts:\n  - { uri: \"qemu+ext:///system?command=/tmp/evil.sh\" }\nguests:\n  - { name: host, image: { kind: host } }\n"
        #expect(throws: MatrixError.self) { try MatrixParser.parse(yaml, file: "m.yaml") }
        do {
            _ = try MatrixParser.parse(yaml, file: "m.yaml")
        } catch {
            #expect(error.description.hasPrefix("m.yaml:2:"))
            #expect(error.description.contains("is not a libvirt URI kmatrix accepts"))
        }
    }
}

@Suite struct ResultReaderTests {
    static func sample() throws -> Data { try ReportTests.sampleRun().encoded() }

    /// The sample run with one value replaced, as text.
    static func tampered(_ replace: (String) -> String) throws -> Data {
        Data(replace(String(decoding: try sample(), as: UTF8.self)).utf8)
    }

    static func reading(_ data: Data) -> String? {
        do {
            _ = try ResultReader.read(data, name: "x.json")
            return nil
        } catch let error as KMatrixError {
            #expect(error.code == .invalidInput)
            return error.message
        } catch {
            return "\(error)"
        }
    }

    @Test func theSampleReadsBack() throws {
        let result = try ResultReader.read(try Self.sample(), name: "x.json")
        #expect(result == (try ReportTests.sampleRun()))
    }

    @Test func numbersKmatrixCannotComputeWithAreRefusedWithTheirPlace() throws {
        let minimum = try Self.tampered { $0.replacingOccurrences(of: "\"sent\" : 2000", with: "\"sent\" : -9223372036854775808") }
        #expect(Self.reading(minimum)?.contains("cells[0].sent") == true, "\(Self.reading(minimum) ?? "accepted")")
        let huge = try Self.tampered { $0.replacingOccurrences(of: "\"duration_s\" : 1.5", with: "\"duration_s\" : 1e300") }
        #expect(Self.reading(huge)?.contains("out of range") == true, "\(Self.reading(huge) ?? "accepted")")
        let schema = try Self.tampered { $0.replacingOccurrences(of: "\"schema\" : \(RunResult.currentSchema)", with: "\"schema\" : 1e20") }
        #expect(Self.reading(schema) == "x.json is not a kmatrix results.json (schema: \"1e+20\" is out of range (at most 2^53 in size))"
                || Self.reading(schema)?.contains("schema") == true, "\(Self.reading(schema) ?? "accepted")")
        let digits = try Self.tampered { $0.replacingOccurrences(of: "\"schema\" : \(RunResult.currentSchema)", with: "\"schema\" : 123456789012345678901234") }
        #expect(Self.reading(digits)?.contains("schema") == true && Self.reading(digits)?.contains("not JSON") == false)
        let negative = try Self.tampered { $0.replacingOccurrences(of: "\"sent\" : 2000", with: "\"sent\" : -1") }
        #expect(Self.reading(negative)?.contains("negative count") == true)
        let newer = try Self.tampered { $0.replacingOccurrences(of: "\"schema\" : \(RunResult.currentSchema)", with: "\"schema\" : 9") }
        #expect(Self.reading(newer)?.contains("written by a newer kmatrix") == true)
    }

    @Test func controlCharactersInNamesAreRefused() throws {
        let escape = try Self.tampered { $0.replacingOccurrences(of: "\"guest\" : \"host\"", with: "\"guest\" : \"host\\u001b]0;pwned\\u0007\"") }
        #expect(Self.reading(escape)?.contains("control characters") == true, "\(Self.reading(escape) ?? "accepted")")
        let newline = try Self.tampered { $0.replacingOccurrences(of: "\"kernel\" : \"6.18.44-fc-v595\"", with: "\"kernel\" : \"6.18\\nfake\"") }
        #expect(Self.reading(newline) != nil)
        let runID = try Self.tampered { $0.replacingOccurrences(of: "\"id\" : \"", with: "\"id\" : \"`x` ") }
        #expect(Self.reading(runID)?.contains("run.id") == true, "\(Self.reading(runID) ?? "accepted")")
    }

    @Test func notJSONIsSaidOnce() {
        #expect(Self.reading(Data("{".utf8)) == "x.json is not a kmatrix results.json (not JSON)")
        #expect(Self.reading(Data("[]".utf8))?.contains("wrong kind") == true || Self.reading(Data("[]".utf8)) != nil)
    }
}

@Suite struct SafeTextTests {
    @Test func theTerminalSeesEscapesNotSequences() {
        #expect(SafeText.terminal("a\u{1B}]0;title\u{07}b\rc") == "a\\u{1b}]0;title\\u{7}b\\rc")
        #expect(SafeText.terminal("left\u{202E}right") == "left\\u{202e}right")
        #expect(SafeText.terminal("two\nlines", keepLines: true) == "two\nlines")
        #expect(SafeText.terminal("two\nlines") == "two\\nlines")
        #expect(SafeText.terminal("6.1.0-57-cloud-amd64 ü") == "6.1.0-57-cloud-amd64 ü")
    }

    @Test func markdownKeepsItsTableAndCodeSpans() {
        #expect(SafeText.markdown("a|b") == "a\\|b")
        #expect(SafeText.markdown("`rm -rf`") == "\\`rm -rf\\`")
        #expect(SafeText.markdown("<script>") == "\\<script\\>")
        #expect(SafeText.markdown("x\ny") == "x\\\\ny")
        #expect(!SafeText.markdown("\u{1B}[31m").unicodeScalars.contains("\u{1B}"))
    }

    @Test func aHostileRowStaysInItsCellInEveryReport() throws {
        var run = try ReportTests.sampleRun()
        let hostile = "evil|`x`<b>\u{1B}[2J"
        run.cells = run.cells.map { cell in
            var cell = cell
            if cell.guest == "host" { cell.guest = hostile }
            return cell
        }
        run.guests = run.guests.map { $0 == "host" ? hostile : $0 }
        let markdown = Report.markdown(run)
        #expect(!markdown.contains("\u{1B}"))
        #expect(markdown.contains("evil\\|\\`x\\`\\<b\\>"))
        let table = Report.table(run)
        #expect(!table.contains("\u{1B}"))
        let history = HistoryBuilder.build([run]).markdown()
        #expect(!history.contains("\u{1B}") && !history.contains("evil|"))
        let html = HTMLReport.render(run)
        #expect(!html.contains("<b>") && html.contains("evil|`x`&lt;b&gt;"))
    }
}

@Suite struct ReportsOpenNothingTests {
    /// A results.json is data: a console log it names is a name, never a file to read.
    @Test func aNamedConsoleLogIsNeverRead() throws {
        var run = try ReportTests.sampleRun()
        let marker = "kmatrix-secret-\(UUID().uuidString)"
        let secret = FileManager.default.temporaryDirectory.appendingPathComponent(marker)
        try Data("\(marker)\n".utf8).write(to: secret)
        defer { try? FileManager.default.removeItem(at: secret) }
        for index in run.cells.indices {
            run.cells[index].expected = .delivered
            run.cells[index].evidence = Evidence(unicastFailures: 0, bypassedFullQueue: 0, messagesRead: 0, consoleLog: secret.path)
        }
        let merged = try Merge.merge([run])
        for text in [HTMLReport.render(merged), JUnitReport.xml(merged), Report.markdown(merged)] {
            #expect(!text.contains("\(marker)\n"), "a report read the file a cell named")
            #expect(!text.contains("last lines"))
        }
    }

    @Test func theTailARunKeptIsShownAndBounded() throws {
        let console = (1...200).map { "line \($0) \u{1B}[1;31mred\u{1B}[0m\r" }.joined(separator: "\n")
        let tail = try #require(ConsoleTail.make(console))
        #expect(tail.split(separator: "\n").count == ConsoleTail.maximumLines)
        #expect(tail.hasSuffix("line 200 red"))
        #expect(!tail.contains("\u{1B}") && !tail.contains("\r"))
        #expect(ConsoleTail.make(String(repeating: "x", count: 100_000))?.count ?? 0 <= ConsoleTail.maximumLineLength + 1)
        #expect(ConsoleTail.make("") == nil)
    }
}

@Suite struct MergeInputTests {
    @Test func theSameRunTwiceCountsOnceAndTwoRunsClaimingOneIDAreRefused() throws {
        let run = try ReportTests.sampleRun()
        let once = try Merge.merge([run])
        let thrice = try Merge.merge([run, run, run])
        #expect(thrice == once)
        #expect(thrice.run.sources?.count == 1)
        var forged = run
        forged.cells[0].outcome = .dropped
        #expect(throws: KMatrixError.self) { try Merge.merge([run, forged]) }
    }

    @Test func severalValuesAreAListNeverAString() throws {
        let (a, b) = try MergeTests.shards()
        var c = b
        c.run.id = "0320ef"
        c.run.host = "ci-c, with a comma"
        let merged = try Merge.merge([Merge.merge([a, b]), c])
        #expect(merged.run.distinct(\.host) == ["ci-a", "ci-b", "ci-c, with a comma"])
        #expect(merged.run.host == "ci-a")
    }

    @Test func flakyOnlyAndEmptyMergesSayWhy() throws {
        let (a, b) = try MergeTests.shards()
        var onlyFlaky = try Merge.merge([a, b])
        onlyFlaky.cells = onlyFlaky.cells.filter { $0.outcome == .flaky }
        #expect(onlyFlaky.exitStatus == .differs)
        #expect(onlyFlaky.statusSentence?.contains("flaky") == true)
        var empty = a
        empty.cells = []
        #expect(empty.exitStatus == .infrastructure)
        #expect(empty.statusSentence == "nothing was tested: there are no cells")
    }

    @Test func aLargeMergeIsIndexedNotScanned() throws {
        // 1000 rows × 1000 scenarios named, one cell per row: lookups for every pair stay cheap.
        var run = try ReportTests.sampleRun()
        run.scenarios = (0..<1000).map { "s\($0)" }
        run.guests = (0..<1000).map { "g\($0)" }
        run.cells = (0..<1000).map { CellResult(guest: "g\($0)", scenario: "s\($0)", outcome: .delivered, reason: "r") }
        let merged = try Merge.merge([run])
        #expect(merged.cells.count == 1000)
        #expect(merged.cell(guest: "g999", scenario: "s999")?.outcome == .delivered)
        #expect(merged.cell(guest: "g999", scenario: "s998") == nil)
    }
}
