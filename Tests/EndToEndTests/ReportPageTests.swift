import Foundation
import Testing
import KMatrixCore

extension EndToEnd {
    /// report.html and history.html from real runs, rendered by a real headless browser
    /// (Debian's chromium): the DOM holds every cell with its outcome, mismatches are marked,
    /// verdicts are there, and the page asks the network for nothing.
    @Suite(.serialized, .enabled(if: Harness.chromium != nil, "needs chromium (scripts/host-setup.sh --with-tests installs it)"))
    struct ReportPageTests {
        /// A host row expected to drop where it re-injects: one honest mismatch in the page.
        static let matrix = """
        guests:
          - name: host
            image: { kind: host }
            expect: { failopen-socket-overflow: dropped }
          - name: rhel-7.9
            kernel: 3.10.0-1160.el7.x86_64
            image: { kind: cloud, file: rhel-server-7.9-x86_64-kvm.qcow2, user: cloud-user }
        expect:
          failopen-socket-overflow:
            - { when: "kernel < 4.6", outcome: dropped }
            - { outcome: reinjected }
          strict-socket-overflow:
            - { outcome: dropped }
          live-consumer:
            - { outcome: delivered }
        scenarios: [failopen-socket-overflow, strict-socket-overflow, live-consumer]

        """

        struct Page {
            var dom: String
            var requests: [String]
        }

        /// Loads `file` headless: its DOM after load, the URLs it requested (from chromium's net
        /// log), and a screenshot at `width` px.
        static func load(_ file: URL, screenshot: URL, width: Int = 1280) throws -> Page {
            let browser = try #require(Harness.chromium)
            let netlog = file.deletingLastPathComponent().appendingPathComponent("netlog-\(UUID().uuidString.prefix(6)).json")
            // Nothing can leave: every host name resolves to nothing.
            let common = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=\(width),1000"]
            let dom = Harness.shell(([browser] + common + ["--log-net-log=\(netlog.path)", "--dump-dom", file.absoluteString])
                .map { "'\($0)'" }.joined(separator: " ") + " 2>/dev/null")
            _ = Harness.shell(([browser] + common + ["--screenshot=\(screenshot.path)", file.absoluteString]).map { "'\($0)'" }.joined(separator: " ") + " 2>/dev/null")
            return Page(dom: dom, requests: try pageRequests(netlog))
        }

        /// URLs the page asked for, from chromium's net log: request jobs with an initiator.
        /// The browser's own background requests (component updates) say "not an origin"; a
        /// file:// page's requests say "null".
        static func pageRequests(_ netlog: URL) throws -> [String] {
            let log = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: netlog)) as? [String: Any])
            let constants = try #require(log["constants"] as? [String: Any])
            let types = try #require(constants["logEventTypes"] as? [String: Int])
            let start = try #require(types["URL_REQUEST_START_JOB"])
            let events = (log["events"] as? [[String: Any]]) ?? []
            return events.compactMap { event -> String? in
                guard event["type"] as? Int == start, let parameters = event["params"] as? [String: Any],
                      let initiator = parameters["initiator"] as? String, initiator != "not an origin" else { return nil }
                return parameters["url"] as? String
            }
        }

        /// The check itself can fail: a page with an external image and stylesheet is caught.
        @Test func theRequestDetectorSeesAPagesExternalReferences() throws {
            let work = try Harness.scratchDirectory("control")
            let page = work.appendingPathComponent("control.html")
            try Data(#"<html><body><img src="http://example.invalid/x.png"><link rel=stylesheet href="https://fonts.example.invalid/a.css"></body></html>"#.utf8).write(to: page)
            let loaded = try Self.load(page, screenshot: work.appendingPathComponent("control.png"))
            #expect(Set(loaded.requests) == ["http://example.invalid/x.png", "https://fonts.example.invalid/a.css"])
        }

        @Test func reportAndHistoryPagesHoldEveryCellAndAskTheNetworkForNothing() throws {
            let work = try Harness.scratchDirectory("pages")
            let matrix = work.appendingPathComponent("matrix.yaml")
            try Data(Self.matrix.utf8).write(to: matrix)
            let nights = work.appendingPathComponent("nights")
            var last: Harness.Outcome?
            for night in 1...2 {
                last = try Harness.run(["run", "--matrix", matrix.path], output: nights.appendingPathComponent("night-\(night)"))
                #expect(last?.status == 1, "one cell differs on purpose: \(last?.stderr ?? "")")
            }
            let run = try #require(last)
            let report = run.output.appendingPathComponent("report.html")
            let html = try String(contentsOf: report, encoding: .utf8)
            #expect(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"), "self-contained")

            let page = try Self.load(report, screenshot: run.output.appendingPathComponent("report-1280.png"))
            let result = try run.results()
            for cell in result.cells {
                #expect(page.dom.contains("data-guest=\"\(cell.guest)\" data-scenario=\"\(cell.scenario)\" data-outcome=\"\(cell.outcome.rawValue)\""),
                        "\(cell.guest)/\(cell.scenario) is in the page")
            }
            #expect(page.dom.components(separatedBy: "mismatch\"").count - 1 == result.cells.filter { $0.matches == false }.count)
            #expect(page.dom.contains("class=\"verdict\" data-guest=\"host\""))
            #expect(page.dom.contains("not affected"))
            #expect(page.requests.isEmpty, "the page asked for \(page.requests)")
            #expect(FileManager.default.fileExists(atPath: run.output.appendingPathComponent("report-1280.png").path))

            let history = try Harness.run(["history", nights.path, "--out", work.appendingPathComponent("history").path])
            #expect(history.status == 0, "\(history.stderr)")
            let historyPage = try Self.load(work.appendingPathComponent("history/history.html"),
                                            screenshot: work.appendingPathComponent("history/history-1280.png"))
            #expect(historyPage.dom.contains("host"))
            #expect(historyPage.dom.contains("failopen-socket-overflow"))
            #expect(historyPage.requests.isEmpty, "the page asked for \(historyPage.requests)")
            let json = try JSONSerialization.jsonObject(with: Data(contentsOf: work.appendingPathComponent("history/history.json"))) as? [String: Any]
            #expect((json?["nights"] as? [Any])?.count == 2)
        }
    }

    /// `--kernel NAME=FILE`: a row that keeps its name across kernels, so two validation runs
    /// pair by it and `compare` reports the flip together with the kernel change.
    @Suite(.serialized, .enabled(if: Harness.virtualMachinesEnabled, "set KMATRIX_E2E_VMS=1 (scripts/test does)"))
    struct NamedKernelRowTests {
        @Test func aCandidateThatStopsReinjectingIsARegressionWithItsKernelChange() throws {
            let debs = try Harness.cachedKernelDebs()
            let stock = try #require(debs["bookworm"])
            let build = try Harness.run(["images", "build", "legacy-6.1-failopen-reverted"])
            try #require(build.status == 0, "\(build.stderr)")
            let legacy = Harness.sharedCache.appendingPathComponent("images/legacy-failopen-bzimage/bzImage")
            let scenario = ["--scenario", "failopen-socket-overflow"]
            let before = try Harness.run(["run", "--kernel", "candidate=\(stock.path)"] + scenario)
            #expect(before.status == 0, "\(before.stderr)")
            let after = try Harness.run(["run", "--kernel", "candidate=\(legacy.path)"] + scenario)
            #expect(after.status == 1, "the legacy kernel drops where the rules expect a re-injection")
            let old = try before.results(), new = try after.results()
            #expect(old.guests == ["candidate"] && new.guests == ["candidate"])
            #expect(old.cells.first?.kernel?.hasPrefix("6.1.0-") == true)
            #expect(new.cells.first?.kernel == "6.1.192-kmatrix-legacy-failopen")
            let compare = try Harness.run(["compare", before.output.appendingPathComponent("results.json").path,
                                           after.output.appendingPathComponent("results.json").path])
            #expect(compare.status == 1)
            #expect(compare.stdout.contains("kernel candidate: \(old.cells.first?.kernel ?? "?") → 6.1.192-kmatrix-legacy-failopen"), "\(compare.stdout)")
            #expect(compare.stdout.contains("REGRESSION candidate / failopen-socket-overflow: reinjected → dropped"), "\(compare.stdout)")
            #expect(Harness.kmatrixLeftovers().isEmpty)
        }
    }
}

extension EndToEnd {
    /// `run --shard K/N` on each "machine", then `merge`: every guest in exactly one shard, one
    /// table of them all, every source run listed.
    @Suite(.serialized) struct ShardAndMergeTests {
        @Test func shardsCoverTheMatrixOnceAndMergeIntoOneTable() throws {
            let work = try Harness.scratchDirectory("shards")
            let matrix = work.appendingPathComponent("matrix.yaml")
            try Data("""
            guests:
              - { name: host, image: { kind: host } }
              - { name: host-2, image: { kind: host } }
              - { name: host-3, image: { kind: host } }
            scenarios: [failopen-socket-overflow, strict-socket-overflow]
            expect:
              failopen-socket-overflow: [{ outcome: reinjected }]
              strict-socket-overflow: [{ outcome: dropped }]

            """.utf8).write(to: matrix)
            var rows: [[String]] = []
            for shard in 1...2 {
                let run = try Harness.run(["run", "--matrix", matrix.path, "--shard", "\(shard)/2"], output: work.appendingPathComponent("out/\(shard)"))
                #expect(run.status == 0, "\(run.stderr)")
                rows.append(try run.results().guests)
            }
            #expect(Set(rows[0]).isDisjoint(with: rows[1]))
            #expect(Set(rows[0] + rows[1]) == ["host", "host-2", "host-3"])
            let merged = try Harness.run(["merge", work.appendingPathComponent("out").path, "--out", work.appendingPathComponent("merged").path])
            #expect(merged.status == 0, "\(merged.stderr)")
            let result = try RunResult.decode(Data(contentsOf: work.appendingPathComponent("merged/results.json")))
            #expect(Set(result.guests) == ["host", "host-2", "host-3"])
            #expect(result.cells.count == 6)
            #expect(result.run.sources?.count == 2)
            for file in ["matrix.md", "report.html", "results.xml"] {
                #expect(FileManager.default.fileExists(atPath: work.appendingPathComponent("merged/\(file)").path))
            }
            #expect(merged.stdout.contains("6 of 6 cells matched"))
            #expect(Harness.kmatrixLeftovers().isEmpty)
        }
    }
}
