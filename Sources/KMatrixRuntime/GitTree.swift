import Foundation
import KMatrixCore

/// One commit of a kernel tree.
public struct Commit: Sendable, Hashable, Codable {
    public var sha: String
    public var subject: String
    public var shortSHA: String { String(sha.prefix(12)) }
}

/// A user's kernel git repository, read-only: kmatrix builds in a worktree of its own under the
/// cache (reused between steps, so builds are incremental) and never touches the user's checkout.
public struct GitTree: Sendable {
    public let repository: URL
    let commands: any CommandRunner

    /// Opens `path` as a git work tree, or says why it is not one (exit 2).
    public static func open(_ path: URL, commands: any CommandRunner) async throws -> GitTree {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw KMatrixError(.invalidInput, "--git \(path.path) is not a directory")
        }
        let top = try await commands.run("git", hardening + ["-C", path.path, "rev-parse", "--show-toplevel"], timeout: .seconds(30))
        guard top.succeeded else { throw KMatrixError(.invalidInput, "--git \(path.path) is not a git tree (\(top.stderr.trimmingCharacters(in: .whitespacesAndNewlines)))") }
        let root = URL(fileURLWithPath: top.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines))
        return GitTree(repository: root, commands: commands)
    }

    /// git runs as root on someone else's tree: no hooks and no fsmonitor (both run programs the
    /// tree's config names). git's own ownership check (safe.directory) stays on: a tree that
    /// belongs to another user is refused, with git's reason.
    static let hardening = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "advice.detachedHead=false"]

    func git(_ arguments: [String], in directory: URL? = nil, timeout: Duration = .seconds(600)) async throws -> CommandResult {
        try await commands.run("git", Self.hardening + ["-C", (directory ?? repository).path] + arguments, timeout: timeout)
    }

    func checkedGit(_ arguments: [String], in directory: URL? = nil, timeout: Duration = .seconds(600)) async throws -> String {
        let result = try await git(arguments, in: directory, timeout: timeout)
        guard result.succeeded else {
            throw KMatrixError(.command, "git \(arguments.prefix(3).joined(separator: " ")) failed: \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Uncommitted changes to tracked files: bisecting commits would silently ignore them.
    public func isDirty() async throws -> Bool {
        !(try await checkedGit(["status", "--porcelain", "--untracked-files=no"])).isEmpty
    }

    /// The full commit id a revision names, or a sentence saying it names none (exit 2).
    public func resolve(_ revision: String, flag: String) async throws -> String {
        guard !revision.isEmpty, InputRules.textProblem(revision, limit: 200) == nil else {
            throw KMatrixError(.invalidInput, "\(flag) \(InputRules.quoted(revision)) is not a revision")
        }
        // --end-of-options: a revision can never be read as an option.
        let result = try await git(["rev-parse", "--verify", "--quiet", "--end-of-options", "\(revision)^{commit}"])
        let sha = result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        guard result.succeeded, sha.count == 40, sha.allSatisfy(\.isHexDigit) else {
            throw KMatrixError(.invalidInput, "\(flag) \(InputRules.quoted(revision)) is not a commit of \(repository.path)")
        }
        return sha
    }

    /// `good`, then every first-parent commit after it up to and including `bad`, oldest first.
    public func commits(from good: String, to bad: String) async throws -> [Commit] {
        let ancestor = try await git(["merge-base", "--is-ancestor", good, bad])
        guard ancestor.succeeded else {
            throw KMatrixError(.invalidInput, "--good \(good.prefix(12)) is not an ancestor of --bad \(bad.prefix(12)): give the older commit as --good")
        }
        let listing = try await checkedGit(["log", "--reverse", "--first-parent", "--ancestry-path", "--format=%H %s", "\(good)..\(bad)"])
        var commits = [Commit(sha: good, subject: try await checkedGit(["log", "-1", "--format=%s", good]))]
        for line in listing.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard let sha = parts.first else { continue }
            commits.append(Commit(sha: String(sha), subject: parts.count > 1 ? String(parts[1]) : ""))
        }
        return commits
    }

    public func treeHash(_ commit: String) async throws -> String {
        try await checkedGit(["rev-parse", "\(commit)^{tree}"])
    }

    /// Subject, author date and touched files of a commit.
    public func details(_ commit: String) async throws -> (subject: String, date: String, files: [String]) {
        let subject = try await checkedGit(["log", "-1", "--format=%s", commit])
        let date = try await checkedGit(["log", "-1", "--format=%aI", commit])
        let files = try await checkedGit(["diff-tree", "--no-commit-id", "--name-only", "-r", commit]).split(separator: "\n").map(String.init)
        return (subject, date, files)
    }

    /// kmatrix's worktree of this repository at `directory`: made once, then reused.
    public func worktree(at directory: URL, startingAt commit: String) async throws {
        if FileManager.default.fileExists(atPath: directory.appendingPathComponent(".git").path),
           (try? await git(["rev-parse", "--is-inside-work-tree"], in: directory))?.succeeded == true {
            return
        }
        try? FileManager.default.removeItem(at: directory)
        try FilePaths.createDirectory(directory.deletingLastPathComponent())
        _ = try await checkedGit(["worktree", "prune"])
        _ = try await checkedGit(["worktree", "add", "--detach", "--force", directory.path, commit], timeout: .seconds(1800))
    }

    /// Puts the worktree at `commit`. Only changed files get new times, so make rebuilds only
    /// what they affect; build outputs (ignored files) stay.
    public func checkout(_ commit: String, in worktree: URL) async throws {
        _ = try await checkedGit(["checkout", "--quiet", "--force", "--detach", commit], in: worktree, timeout: .seconds(1800))
        _ = try await checkedGit(["clean", "-fdq"], in: worktree)
    }

    /// Reverts `commit` on top of what is checked out, without committing.
    public func revertWithoutCommit(_ commit: String, in worktree: URL) async throws {
        let result = try await git(["revert", "--no-commit", commit], in: worktree)
        guard result.succeeded else {
            _ = try? await git(["revert", "--abort"], in: worktree)
            throw KMatrixError(.command, "git revert \(commit.prefix(12)) does not apply cleanly: \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
