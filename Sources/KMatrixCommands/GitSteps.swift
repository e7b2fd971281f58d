import Foundation
import KMatrixCore
import KMatrixRuntime

/// A kernel git tree: each candidate is a commit, built in kmatrix's worktree of the tree
/// (incremental: only what a commit changed recompiles, through ccache), cached by tree hash +
/// config hash — builds and results alike, so a rerun skips finished steps.
struct GitSteps: BisectSteps {
    let tree: GitTree
    let commits: [Commit]
    let worktree: URL
    let builds: URL
    let config: URL?
    let configHash: String
    let makeJobs: Int
    let cache: CacheLayout
    let recipe: URL
    let commands: any CommandRunner
    let verifyRevert: Bool

    var mode: BisectReport.Mode { .git }

    var candidates: [BisectReport.Candidate] {
        commits.enumerated().map { BisectReport.Candidate(index: $0, label: $1.shortSHA, detail: $1.subject) }
    }

    static func make(path: URL, good: String, bad: String, config: URL?, makeJobs: Int, cache: CacheLayout, commands: any CommandRunner,
                     verifyRevert: Bool) async throws -> GitSteps {
        let tree = try await GitTree.open(path, commands: commands)
        if try await tree.isDirty() {
            throw KMatrixError(.invalidInput, "\(tree.repository.path) has uncommitted changes; bisect tests commits only: commit or stash them first")
        }
        let goodSHA = try await tree.resolve(good, flag: "--good")
        let badSHA = try await tree.resolve(bad, flag: "--bad")
        guard goodSHA != badSHA else { throw KMatrixError(.invalidInput, "--good and --bad name the same commit \(goodSHA.prefix(12))") }
        let commits = try await tree.commits(from: goodSHA, to: badSHA)
        let checkout = try CommandContext.current.checkout()
        let recipe = checkout.images.appendingPathComponent("kernel-tree/build.sh")
        // The config's identity: the base config and every input that shapes the build.
        var material = Data()
        if let config {
            _ = try FileIdentity.regularFile(config, what: "--config")
            do { material += try Data(contentsOf: config) } catch { throw KMatrixError.from(error, whileDoing: "reading --config") }
        } else {
            material += Data("tinyconfig".utf8)
        }
        for input in ["kernel-config/rootfs.fragment", "kernel-tree/identity.fragment", "kernel-tree/build.sh", "lib.sh"] {
            material += (try? Data(contentsOf: checkout.images.appendingPathComponent(input))) ?? Data()
        }
        let repositoryKey = String(FileDigests.sha256(of: Data(tree.repository.path.utf8)).prefix(16))
        let bisect = cache.root.appendingPathComponent("bisect")
        return GitSteps(tree: tree, commits: commits, worktree: bisect.appendingPathComponent("trees/\(repositoryKey)"),
                        builds: bisect.appendingPathComponent("builds"), config: config,
                        configHash: String(FileDigests.sha256(of: material).prefix(16)), makeJobs: makeJobs, cache: cache, recipe: recipe,
                        commands: commands, verifyRevert: verifyRevert)
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
            try await tree.worktree(at: worktree, startingAt: commits[0].sha)
            try await tree.checkout(commits[index].sha, in: worktree)
        }
    }

    /// A failed build is remembered too: its reason comes back at once on a rerun.
    struct Failure: Codable {
        var reason: String
        var logTail: String?
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
        let started = ContinuousClock.now
        let log = directory.appendingPathComponent("recipe.log")
        var arguments = [recipe.path, "--tree", worktree.path, "--out", directory.path, "--jobs", String(makeJobs), "--cache", cache.root.path]
        if let config { arguments += ["--config", config.path] }
        let result = try await commands.run("bash", arguments, timeout: .seconds(7200), errors: .file(log))
        let seconds = (ContinuousClock.now - started).seconds
        let text = String(decoding: FileManager.default.contents(atPath: log.path) ?? Data(), as: UTF8.self)
        let tail = text.split(whereSeparator: \.isNewline).suffix(12).joined(separator: "\n")
        let reason: String
        switch result.status {
        case 0:
            return (.bzImage(path: bzImage.path, modules: nil), StepMeasurement(buildS: seconds))
        case 3:
            let missing = text.split(separator: "\n").compactMap { $0.starts(with: "missing: ") ? String($0.dropFirst("missing: ".count)) : nil }
            reason = "the config lost options kmatrix's rootfs needs: \(missing.joined(separator: ", "))"
        case 4:
            reason = "the build failed"
        default:
            throw KMatrixError(.image, "building a kernel from \(worktree.path) failed (exit \(result.status)): \(tail.split(separator: "\n").suffix(3).joined(separator: " / "))")
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
        var confirmed = "confirmed: \(commits[lastOld].shortSHA) \(parentCell.outcome.rawValue) and \(culprit.shortSHA) \(culpritCell.outcome.rawValue) again (\(report.repeats) runs each)"
        if verifyRevert, let last = commits.last {
            let directory = builds.appendingPathComponent("revert-\(culprit.sha.prefix(12))-on-\(last.sha.prefix(12))-\(configHash)")
            let (source, measurement) = try await build(directory, progress: { _ in }) {
                try await tree.worktree(at: worktree, startingAt: commits[0].sha)
                try await tree.checkout(last.sha, in: worktree)
                try await tree.revertWithoutCommit(culprit.sha, in: worktree)
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
            try? await tree.checkout(last.sha, in: worktree)
        }
        report.verification = problems.isEmpty ? confirmed : "disagrees: " + problems.joined(separator: "; ")
    }
}
