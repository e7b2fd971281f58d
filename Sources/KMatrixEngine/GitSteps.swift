import Foundation
import KMatrixCore
import KMatrixRuntime

/// A kernel git tree: each candidate is a commit, built in kmatrix's worktree of the tree
/// (incremental: only what a commit changed recompiles, through ccache), cached by tree hash +
/// config hash — builds and results alike, so a rerun skips finished steps.
struct GitSteps: BisectSteps {
    let tree: GitTree
    let commits: [Commit]
    /// Root's folder of finished steps (bzImage, manifest, logs, cached results), by tree hash +
    /// config hash; nothing the sandbox can write.
    let builds: URL
    /// The base config as the sandbox sees it, when --config was given.
    let config: String?
    let configHash: String
    let makeJobs: Int
    let recipe: URL
    let commands: any CommandRunner
    let verifyRevert: Bool
    let clock: WaitClock

    var mode: BisectReport.Mode { .git }

    var candidates: [BisectReport.Candidate] {
        commits.enumerated().map { BisectReport.Candidate(index: $0, label: $1.shortSHA, detail: $1.subject) }
    }

    static func make(path: URL, good: String, bad: String, config: URL?, makeJobs: Int, cache: CacheLayout, checkout: Checkout,
                     commands: any CommandRunner, verifyRevert: Bool, clock: WaitClock) async throws -> GitSteps {
        let bisect = cache.root.appendingPathComponent("bisect")
        let tree = try await GitTree.open(path, workFolder: bisect.appendingPathComponent("sandbox"), images: checkout.images, commands: commands)
        if try await tree.isDirty() {
            throw KMatrixError(.invalidInput, "\(tree.repository.path) has uncommitted changes; bisect tests commits only: commit or stash them first")
        }
        let goodSHA = try await tree.resolve(good, flag: "--good")
        let badSHA = try await tree.resolve(bad, flag: "--bad")
        guard goodSHA != badSHA else { throw KMatrixError(.invalidInput, "--good and --bad name the same commit \(goodSHA.prefix(12))") }
        let commits = try await tree.commits(from: goodSHA, to: badSHA)
        let recipe = checkout.images.appendingPathComponent("kernel-tree/build.sh")
        // The config's identity: the base config and every input that shapes the build.
        var material = Data()
        var sandboxConfig: String?
        if let config {
            _ = try FileIdentity.regularFile(config, what: "--config")
            do { material += try Data(contentsOf: config) } catch { throw KMatrixError.from(error, whileDoing: "reading --config") }
            // The sandbox sees only its work folder: the config goes there, as a copy.
            let name = "config-\(FileDigests.sha256(of: material).prefix(16))"
            try material.write(to: tree.workFolder.appendingPathComponent(name), options: .atomic)
            sandboxConfig = "\(BuildSandbox.work)/\(name)"
        } else {
            material += Data("tinyconfig".utf8)
        }
        for input in ["kernel-config/rootfs.fragment", "kernel-tree/identity.fragment", "kernel-tree/build.sh", "kernel-tree/sandbox.sh",
                      "kernel-tree/gitconfig", "lib.sh"] {
            material += (try? Data(contentsOf: checkout.images.appendingPathComponent(input))) ?? Data()
        }
        // The compiler and tools the recipe needs are installed as root, before anything runs as the build user.
        try await commands.checked("bash", [recipe.path, "--prepare-host"], timeout: .seconds(1800))
        return GitSteps(tree: tree, commits: commits, builds: bisect.appendingPathComponent("builds"), config: sandboxConfig,
                        configHash: String(FileDigests.sha256(of: material).prefix(16)), makeJobs: makeJobs, recipe: recipe,
                        commands: commands, verifyRevert: verifyRevert, clock: clock)
    }

    func buildDirectory(_ index: Int) async throws -> URL {
        builds.appendingPathComponent("\(try await tree.treeHash(commits[index].sha).prefix(20))-\(configHash)")
    }

    func resultCache(at index: Int, scenario: String, repeats: Int) async -> URL? {
        guard let directory = try? await buildDirectory(index) else { return nil }
        try? FilePaths.createDirectory(directory)
        return directory.appendingPathComponent("result-\(scenario)-x\(repeats).json")
    }

    func kernel(at index: Int, progress: @escaping @Sendable (String) -> Void) async throws -> (source: KernelSource?, measurement: StepMeasurement) {
        let directory = try await buildDirectory(index)
        return try await build(directory, progress: progress) {
            try await tree.prepareClone()
            try await tree.checkout(commits[index].sha)
        }
    }

    /// A failed build is remembered too: its reason comes back at once on a rerun.
    struct Failure: Codable {
        var reason: String
        var logTail: String?
    }

    /// What a build's exit status means (images/kernel-tree/build.sh).
    enum BuildStatus: Int32 {
        case built = 0
        case configLostOptions = 3
        case buildFailed = 4
    }

    func build(_ directory: URL, progress: @escaping @Sendable (String) -> Void, prepare: () async throws -> Void) async throws -> (source: KernelSource?, measurement: StepMeasurement) {
        let bzImage = directory.appendingPathComponent("bzImage")
        let manifest = directory.appendingPathComponent("manifest.json")
        let failed = directory.appendingPathComponent("failed.json")
        if FileManager.default.fileExists(atPath: manifest.path), FileManager.default.fileExists(atPath: bzImage.path) {
            progress("build cached")
            return (.bzImage(path: bzImage.path, modules: nil), StepMeasurement(buildS: nil, cached: false))
        }
        if let data = FileManager.default.contents(atPath: failed.path), let failure = try? JSONDecoder().decode(Failure.self, from: data) {
            progress("build failed before (cached)")
            return (nil, StepMeasurement(skip: failure.reason, logTail: failure.logTail, cached: true))
        }
        try FilePaths.createDirectory(directory)
        progress("checkout")
        try await prepare()
        progress("build (make -j\(makeJobs))")
        let started = clock.now
        let log = directory.appendingPathComponent("recipe.log")
        let out = "out-\(directory.lastPathComponent)"
        var arguments = ["--tree", tree.clonePath, "--out", "\(BuildSandbox.work)/\(out)", "--jobs", String(makeJobs), "--cache", BuildSandbox.work]
        if let config { arguments += ["--config", config] }
        let result = try await tree.build(arguments, log: log, timeout: .seconds(7200))
        let seconds = (clock.now - started).seconds
        let text = String(decoding: (FileManager.default.contents(atPath: log.path) ?? Data()).suffix(1 << 20), as: UTF8.self)
        let tail = text.split(whereSeparator: \.isNewline).suffix(12).joined(separator: "\n")
        let reason: String
        switch BuildStatus(rawValue: result.status) {
        case .built?:
            // What the build user wrote is copied out, never linked to or followed.
            let output = tree.workFolder.appendingPathComponent(out)
            try BuildSandbox.copyOut(output.appendingPathComponent("bzImage"), to: bzImage, limit: 256 << 20)
            try BuildSandbox.copyOut(output.appendingPathComponent("manifest.json"), to: manifest, limit: 64 << 10)
            return (.bzImage(path: bzImage.path, modules: nil), StepMeasurement(buildS: seconds))
        case .configLostOptions?:
            let missing = text.split(separator: "\n").compactMap { $0.starts(with: "missing: ") ? String($0.dropFirst("missing: ".count)) : nil }
            reason = "the config lost options kmatrix's rootfs needs: \(missing.joined(separator: ", "))"
        case .buildFailed?:
            reason = "the build failed"
        case nil:
            throw KMatrixError(.image, "building a kernel from \(tree.repository.path) failed (exit \(result.status)): \(tail.split(separator: "\n").suffix(3).joined(separator: " / "))")
        }
        try? JSONEncoder().encode(Failure(reason: reason, logTail: tail)).write(to: failed, options: .atomic)
        return (nil, StepMeasurement(skip: reason, buildS: seconds, logTail: tail))
    }

    func conclude(_ report: inout BisectReport, lastOld: Int, firstNew: Int, measure: (KernelSource, String) async throws -> CellResult) async throws {
        let culprit = commits[firstNew]
        let details = try await tree.details(culprit.sha)
        let parentImage = try await buildDirectory(lastOld).appendingPathComponent("manifest.json")
        let culpritImage = try await buildDirectory(firstNew).appendingPathComponent("manifest.json")
        func imageDigest(_ url: URL) -> String? {
            (try? JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])?["bzimage_sha256"] as? String
        }
        let identical = imageDigest(parentImage).map { $0 == imageDigest(culpritImage) } ?? false
        report.culprit = BisectReport.Culprit(commit: culprit.sha, subject: details.subject, date: details.date, files: details.files,
                                              identicalToParent: identical)
        // Verify: the parent and the culprit again, booted afresh.
        guard let old = report.oldOutcome, let new = report.newOutcome else { return }
        let parentCell = try await measure(.bzImage(path: try await buildDirectory(lastOld).appendingPathComponent("bzImage").path, modules: nil), commits[lastOld].shortSHA)
        let culpritCell = try await measure(.bzImage(path: try await buildDirectory(firstNew).appendingPathComponent("bzImage").path, modules: nil), culprit.shortSHA)
        var problems: [String] = []
        if parentCell.outcome != old { problems.append("the parent \(commits[lastOld].shortSHA) gave \(parentCell.outcome.rawValue), not \(old.rawValue)") }
        if culpritCell.outcome != new { problems.append("the culprit \(culprit.shortSHA) gave \(culpritCell.outcome.rawValue), not \(new.rawValue)") }
        var confirmed = "\(commits[lastOld].shortSHA) \(parentCell.outcome.rawValue) and \(culprit.shortSHA) \(culpritCell.outcome.rawValue) again (\(report.repeats) runs each)"
        if verifyRevert, let last = commits.last {
            let directory = builds.appendingPathComponent("revert-\(culprit.sha.prefix(12))-on-\(last.sha.prefix(12))-\(configHash)")
            let (source, measurement) = try await build(directory, progress: { _ in }) {
                try await tree.prepareClone()
                try await tree.checkout(last.sha)
                try await tree.revertWithoutCommit(culprit.sha)
            }
            if let source {
                let reverted = try await measure(source, "\(last.shortSHA)-revert")
                if reverted.outcome == old {
                    confirmed += "; reverting it on \(last.shortSHA) gives \(old.rawValue) again"
                } else {
                    problems.append("reverting it on \(last.shortSHA) gave \(reverted.outcome.rawValue), not \(old.rawValue)")
                }
            } else {
                problems.append("the revert of \(culprit.shortSHA) on \(last.shortSHA) could not be measured: \(measurement.skip ?? "no kernel")")
            }
            try? await tree.checkout(last.sha)
        }
        report.verification = problems.isEmpty
            ? BisectReport.Verification(.confirmed, confirmed)
            : BisectReport.Verification(.disagrees, problems.joined(separator: "; "))
    }
}
