import Foundation
import Testing
@testable import KMatrixCore

/// Kernel sets: Debian's version order, what the resolver prints (a real recording,
/// Fixtures/kernel-index-cloud.tsv, seven suites on 2026-12-06), selection, expansion into rows,
/// the report's series groups and the nightly comparison of a newly published kernel.
@Suite struct KernelSetTests {
    static func listed() throws -> [ArchiveKernel] {
        let text = try String(contentsOf: Fixture.url("kernel-index-cloud.tsv"), encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            try #require(ArchiveKernel.parse(line: String(line), flavour: .cloud), "\(line)")
        }
    }

    @Test(arguments: [
        ("6.1.170-3", "6.1.176-1", -1), ("6.12.43-1~bpo12+1", "6.12.43-1", -1), ("1:7.0", "7.1", 1), ("6.12.9-1", "6.12.10-1", -1),
        ("1.0~rc1", "1.0", -1), ("1.0a", "1.0", 1), ("6.1.176-1~deb11u1", "6.1.176-1", -1), ("2.0", "2.0", 0), ("1.0-1", "1.0-1.1", -1),
    ])
    func debianVersionsSortAsDpkgSortsThem(a: String, b: String, order: Int) {
        #expect(DebianVersion.compare(a, b).signum() == order)
        #expect(DebianVersion.compare(b, a).signum() == -order)
    }

    @Test func theRecordedIndexParsesWithItsSplitAndUnlistedKernels() throws {
        let kernels = try Self.listed()
        #expect(kernels.count == 88)
        #expect(kernels.filter { $0.unavailable != nil }.count == 16)
        let split = try #require(kernels.first { $0.release == "7.3.4+deb13-cloud-amd64" })
        #expect(split.package == "linux-binary-7.3.4+deb13-cloud-amd64")
        #expect(split.parts.map(\.package) == ["linux-modules-7.3.4+deb13-cloud-amd64"])
        #expect(split.pins.count == 2 && split.pins[0].hasPrefix("trixie-backports:pool/main/l/linux-signed-amd64/linux-binary-7.3.4"))
        let security = try #require(kernels.first { $0.release == "6.12.118+deb13-cloud-amd64" })
        #expect(security.pool.hasPrefix("pool/updates/main/"))
        let unlisted = try #require(kernels.first { $0.release == "6.19.10+deb13-cloud-amd64" })
        #expect(unlisted.unavailable?.contains("but not its linux-modules-6.19.10+deb13-cloud-amd64") == true)
    }

    @Test(arguments: [
        "6.1.0-47-cloud-amd64\tbookworm\tlinux-image-6.1.0-47-cloud-amd64\t6.1.170-3\t\(String(repeating: "a", count: 64))\tpool/main/l/x/../../etc/passwd.deb",
        "6.1.0-47-cloud-amd64\tbookworm\tlinux-image-6.1.0-47-cloud-amd64\t6.1.170-3\t\(String(repeating: "a", count: 64))\t/etc/passwd",
        "6.1.0-47-cloud-amd64\tsid\tlinux-image-6.1.0-47-cloud-amd64\t6.1.170-3\t\(String(repeating: "a", count: 64))\tpool/main/l/x/a.deb",
        "6.1.0-47-cloud-amd64\tbookworm\t--output=/etc/x\t6.1.170-3\t\(String(repeating: "a", count: 64))\tpool/main/l/x/a.deb",
        "6.1.0-47-cloud-amd64\tbookworm\tlinux-image-x\t6.1.170-3 $(id)\t\(String(repeating: "a", count: 64))\tpool/main/l/x/a.deb",
        "6.1.0-47-cloud-amd64\tbookworm\tlinux-image-x\t6.1.170-3\tnot-a-digest\tpool/main/l/x/a.deb",
        "../../x\tbookworm\tlinux-image-x\t6.1.170-3\t\(String(repeating: "a", count: 64))\tpool/main/l/x/a.deb",
        "-\t6.19.10\ttrixie-backports\t6.19.10-1\tlinux modules",
        // fullwidth hex digits pass Character.isHexDigit
        "6.1.0-47-cloud-amd64\tbookworm\tlinux-image-x\t6.1.170-3\t\(String(repeating: "ａ", count: 64))\tpool/main/l/x/a.deb",
        // a release too long, or with '~', to name a domain
        "\(String(repeating: "6", count: 60))\tbookworm\tlinux-image-x\t6.1.170-3\t\(String(repeating: "a", count: 64))\tpool/main/l/x/a.deb",
        "6.1.0~rc1\tbookworm\tlinux-image-x\t6.1.170-3\t\(String(repeating: "a", count: 64))\tpool/main/l/x/a.deb",
    ])
    func aLineThatIsNotPlainDataIsRefused(line: String) {
        #expect(ArchiveKernel.parse(line: line, flavour: .cloud) == nil)
    }

    @Test func selectionKeepsOneRowPerReleaseInVersionOrder() throws {
        let kernels = try Self.listed()
        let all = KernelSet(suites: ["bookworm", "bookworm-security"], versions: .all).select(kernels)
        #expect(all.first?.release == "6.1.0-47-cloud-amd64")
        #expect(Set(all.map(\.release)).count == all.count, "6.1.0-50 is in bookworm and bookworm-security: one row")
        #expect(zip(all, all.dropFirst()).allSatisfy { DebianVersion.compare($0.version, $1.version) < 0 })
        #expect(all.allSatisfy { $0.suite.hasPrefix("bookworm") })
        let perSeries = KernelSet(suites: ["bookworm-security"], versions: .newestPerSeries).select(kernels)
        #expect(perSeries.map(\.series) == ["6.1", "6.12"])
        #expect(perSeries.map(\.release) == ["6.1.0-57-cloud-amd64", "6.12.118+deb12-cloud-amd64"])
        let newest = KernelSet(suites: ["trixie-backports"], versions: .newest).select(kernels)
        #expect(newest.map(\.release) == ["7.3.4+deb13-cloud-amd64"])
        let rule = KernelSet(suites: ["bullseye-security"], versions: try #require(KernelSet.Versions(parsing: ">= 6.1"))).select(kernels)
        #expect(!rule.isEmpty && rule.allSatisfy { $0.series == "6.1" })
        #expect(KernelSet(suites: ["bookworm"], flavour: .amd64).select(kernels).isEmpty, "the cloud index lists no amd64 kernels")
    }

    @Test func aSetExpandsToRowsNamedByRelease() throws {
        let matrix = try MatrixParser.parse("""
        consumers:
          a: { files: [{ from: a, to: bin/a }], start: ["{bundle}/bin/a"], memory_mib: 512 }
        kernels:
          - { debian: [bookworm, trixie-backports], flavour: cloud, versions: newest per series, consumers: [a] }
        guests:
          - { name: 6.1.0-50-cloud-amd64, image: { kind: kernel, suite: bookworm } }
        """, file: "m.yaml")
        let expanded = matrix.expanding([.cloud: try Self.listed()])
        #expect(expanded.kernelSets.isEmpty)
        let rows = expanded.guests.dropFirst().map(\.name)
        #expect(!rows.contains("6.1.0-50-cloud-amd64"), "a release that names a guest already stays that guest's")
        #expect(rows.map { ArchiveKernel.series(of: $0) } == ["6.16", "6.17", "6.18", "6.19", "7.0", "7.1", "7.2", "7.3"], "\(rows)")
        // --shard K/N splits a set's rows, each in exactly one shard
        let shards = (1...3).map { Shard.pick(expanded.guests, shard: $0, of: 3).map(\.name) }
        #expect(shards.allSatisfy { !$0.isEmpty && $0.count < expanded.guests.count }, "\(shards)")
        #expect(shards.flatMap { $0 }.sorted() == expanded.guests.map(\.name).sorted())
        let split = try #require(expanded.guests.first { $0.name == "7.3.4+deb13-cloud-amd64" })
        #expect(split.nominalKernel == "7.3.4+deb13-cloud-amd64" && split.consumers == ["a"] && split.memoryMiB == 512)
        #expect(InputRules.nameProblem("6.12.117+deb13-cloud-amd64") == nil)
        let skipped = try #require(expanded.guests.first { $0.name == "7.1.13+deb13-cloud-amd64" })
        if case .kernel(.archive(let kernel)) = skipped.image { #expect(kernel.unavailable != nil) } else { Issue.record("not an archive kernel") }
    }

    @Test(arguments: [
        ("kernels: [{ debian: [sid] }]", "unknown Debian suite \"sid\""),
        ("kernels: [{ debian: [bookworm], flavour: rt }]", "unknown flavour \"rt\""),
        ("kernels: [{ debian: [bookworm], versions: sometimes }]", "versions \"sometimes\" is not all, newest"),
        ("kernels: [{ flavour: cloud }]", "a kernel set needs its suites"),
        ("kernels: [{ debian: [bookworm], consumers: [x] }]", "unknown consumer \"x\""),
    ])
    func badSetsSayWhy(yaml: String, message: String) throws {
        do {
            _ = try MatrixParser.parse(yaml + "\n", file: "m.yaml")
            Issue.record("accepted")
        } catch {
            #expect(error.message.contains(message), "\(error)")
        }
    }

    static func row(_ release: String, affected: Outcome) -> [CellResult] {
        [CellResult(guest: release, scenario: "failopen-socket-overflow", kernel: release, distro: "kmatrix initramfs (linux-image-\(release) 1)",
                    outcome: affected)]
    }

    static func run(_ rows: [(String, Outcome)], id: String = "r1") -> RunResult {
        RunResult(run: RunMetadata(id: id, started: Date(timeIntervalSince1970: 0), durationS: 1, host: "h", hostKernel: "6.18", matrix: "m", kmatrixVersion: "t"),
                  guests: rows.map(\.0), scenarios: ["failopen-socket-overflow"], cells: rows.flatMap { row($0.0, affected: $0.1) })
    }

    @Test func aLongTableIsReadSeriesBySeriesWithASummaryEach() throws {
        let releases = (47...57).map { ("6.1.0-\($0)-cloud-amd64", Outcome.reinjected) } + [("5.10.0-46-cloud-amd64", .reinjected)]
            + [("6.12.90+deb13-cloud-amd64", .reinjected), ("6.12.118+deb13-cloud-amd64", .dropped)]
        let page = HTMLReportTests.withoutIndentation(HTMLReport.render(Self.run(releases)))
        let groups = page.components(separatedBy: "<tr class=\"group\">").dropFirst().map { $0.prefix(300) }
        #expect(groups.count == 3)
        #expect(groups[0].contains("kmatrix initramfs · 6.12 series") && groups[1].contains("· 6.1 series") && groups[2].contains("· 5.10 series"))
        #expect(page.contains("6.1.0-47-cloud-amd64 … 6.1.0-57-cloud-amd64 (11 kernels): not affected; rmem fix: unknown; probes: unknown"))
        #expect(page.contains("6.12.90+deb13-cloud-amd64 … 6.12.118+deb13-cloud-amd64 (2 kernels): from 6.12.90+deb13-cloud-amd64: not affected; "
            + "rmem fix: unknown; probes: unknown; from 6.12.118+deb13-cloud-amd64: affected"))
        let newestFirst = try #require(page.range(of: "data-guest=\"6.1.0-57-cloud-amd64\"")).lowerBound < (try #require(page.range(of: "data-guest=\"6.1.0-47-cloud-amd64\"")).lowerBound)
        #expect(newestFirst)
    }

    @Test func aNewlyPublishedKernelIsANewRowFlaggedWhenItsSeriesVerdictChanges() throws {
        let monday = Self.run([("6.1.0-56-cloud-amd64", .reinjected), ("6.1.0-57-cloud-amd64", .reinjected)])
        let tuesday = Self.run([("6.1.0-56-cloud-amd64", .reinjected), ("6.1.0-57-cloud-amd64", .reinjected), ("6.1.0-58-cloud-amd64", .dropped)], id: "r2")
        let comparison = Comparison.compare(base: monday, new: tuesday)
        #expect(comparison.text.contains("new guest 6.1.0-58-cloud-amd64: affected; rmem fix: unknown; probes: unknown"))
        #expect(comparison.text.contains("NEW KERNEL DIFFERS 6.1.0-58-cloud-amd64: affected; rmem fix: unknown; probes: unknown (the kernel before it in its series, "
            + "6.1.0-57-cloud-amd64: not affected; rmem fix: unknown; probes: unknown)"), "\(comparison.text)")
        #expect(comparison.hasRegression)
        let quiet = Comparison.compare(base: monday, new: Self.run([("6.1.0-56-cloud-amd64", .reinjected), ("6.1.0-57-cloud-amd64", .reinjected),
                                                                     ("6.1.0-58-cloud-amd64", .reinjected)], id: "r3"))
        #expect(!quiet.hasRegression && quiet.text.contains("new guest 6.1.0-58-cloud-amd64"))
        // A new kernel whose answer is unknown (its cell skipped) differs in words, not in answer.
        let unknown = Comparison.compare(base: monday, new: Self.run([("6.1.0-56-cloud-amd64", .reinjected), ("6.1.0-57-cloud-amd64", .reinjected),
                                                                       ("6.1.0-58-cloud-amd64", .skipped)], id: "r4"))
        #expect(!unknown.text.contains("NEW KERNEL DIFFERS"), "\(unknown.text)")
        let gone = Comparison.compare(base: tuesday, new: monday)
        #expect(gone.text.contains("removed guest 6.1.0-58-cloud-amd64"))
    }
}
