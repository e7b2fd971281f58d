import Foundation
import KMatrixCore
#if canImport(Glibc)
import Glibc
#endif

/// One commit of a kernel tree.
public struct Commit: Sendable, Hashable, Codable {
    public var sha: String
    public var subject: String
    public var shortSHA: String { String(sha.prefix(12)) }
}

/// A user's kernel git repository, read-only, and kmatrix's clone of it: every git command runs
/// in the build sandbox (`BuildSandbox`), never as root, since a tree's configuration can name
/// programs (filters, `diff.external`) that git would run. The clone shares the tree's objects
/// (`--shared`) and lives in the sandbox's work folder, reused between steps so builds are
/// incremental; the user's checkout is never written.
public struct GitTree: Sendable {
    /// The tree's top on this machine (the folder holding `.git`).
    public let repository: URL
    let sandbox: BuildSandbox
    /// kmatrix's clone, as the sandbox sees it.
    let clone: String

    /// Opens `path` (or the tree it lies in) as a git work tree, or says why it is not one (exit 2).
    public static func open(_ path: URL, workFolder: URL, images: URL, commands: any CommandRunner) async throws -> GitTree {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw KMatrixError(.invalidInput, "--git \(path.path) is not a directory")
        }
        let top = try Self.top(of: path.standardizedFileURL.resolvingSymlinksInPath())
        let key = String(FileDigests.sha256(of: Data(top.path.utf8)).prefix(16))
        let sandbox = try BuildSandbox.prepare(sourceTree: top, workFolder: workFolder, images: images, commands: commands)
        let tree = GitTree(repository: top, sandbox: sandbox, clone: "\(BuildSandbox.work)/trees/\(key)")
        let check = try await tree.git(["rev-parse", "--git-dir"])
        guard check.succeeded else {
            throw KMatrixError(.invalidInput, "--git \(top.path) cannot be read as a git tree by the build user \(BuildSandbox.user) "
                + "(\(check.stderr.trimmingCharacters(in: .whitespacesAndNewlines))); its files must be readable by other users")
        }
        return tree
    }

    /// The nearest folder at or above `path` that holds a `.git` directory. A `.git` file (a
    /// worktree or submodule) points at a repository elsewhere, which the sandbox would not see.
    static func top(of path: URL) throws -> URL {
        var folder = path
        while true {
            var info = stat()
            let dotGit = folder.appendingPathComponent(".git").path
            if lstat(dotGit, &info) == 0 {
                guard (info.st_mode & S_IFMT) == S_IFDIR else {
                    throw KMatrixError(.invalidInput, "--git \(folder.path) is a git worktree or submodule (its .git is a file); give the main checkout")
                }
                return folder
            }
            let parent = folder.deletingLastPathComponent()
            guard parent.path != folder.path else { throw KMatrixError(.invalidInput, "--git \(path.path) is not inside a git tree") }
            folder = parent
        }
    }

    /// Options for every git call: the tree belongs to another user than the sandbox's (git
    /// refuses such a tree unless told, on its command line, that it is safe), no optional
    /// locks on a read-only tree, and neither hooks nor fsmonitor even for the build user.
    static func options(in directory: String) -> [String] {
        safeDirectories + ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "advice.detachedHead=false",
                           "--no-optional-locks", "-C", directory]
    }

    /// The tree as the sandbox sees it, as a work tree and as the repository a clone reads
    /// (upload-pack checks the `.git` folder itself).
    static let safeDirectories = ["-c", "safe.directory=\(BuildSandbox.source)", "-c", "safe.directory=\(BuildSandbox.source)/.git"]

    func git(_ arguments: [String], in directory: String = BuildSandbox.source, timeout: Duration = .seconds(600)) async throws -> CommandResult {
        try await sandbox.run("git", Self.options(in: directory) + arguments, timeout: timeout)
    }

    func checkedGit(_ arguments: [String], in directory: String = BuildSandbox.source, timeout: Duration = .seconds(600)) async throws -> String {
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
            guard let sha = parts.first, sha.count == 40, sha.allSatisfy(\.isHexDigit) else { continue }
            commits.append(Commit(sha: String(sha), subject: parts.count > 1 ? String(parts[1]) : ""))
        }
        return commits
    }

    public func treeHash(_ commit: String) async throws -> String {
        let hash = try await checkedGit(["rev-parse", "\(commit)^{tree}"])
        guard hash.count == 40, hash.allSatisfy(\.isHexDigit) else { throw KMatrixError(.command, "git named no tree for \(commit.prefix(12))") }
        return hash
    }

    /// Subject, author date and touched files of a commit.
    public func details(_ commit: String) async throws -> (subject: String, date: String, files: [String]) {
        let subject = try await checkedGit(["log", "-1", "--format=%s", commit])
        let date = try await checkedGit(["log", "-1", "--format=%aI", commit])
        let files = try await checkedGit(["diff-tree", "--no-commit-id", "--name-only", "-r", commit]).split(separator: "\n").map(String.init)
        return (subject, date, files)
    }

    /// kmatrix's clone of the tree, made once in the sandbox's work folder, then reused.
    public func prepareClone() async throws {
        if (try? await git(["rev-parse", "--is-inside-work-tree"], in: clone))?.succeeded == true { return }
        _ = try await sandbox.run("rm", ["-rf", clone], timeout: .seconds(600))
        _ = try await sandbox.run("mkdir", ["-p", "\(BuildSandbox.work)/trees"], timeout: .seconds(30))
        let result = try await sandbox.run("git", Self.safeDirectories + ["clone", "--quiet", "--shared", "--no-checkout",
                                                   BuildSandbox.source, clone], timeout: .seconds(1800))
        guard result.succeeded else {
            throw KMatrixError(.command, "cloning \(repository.path) into the bisect work folder failed: \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    /// Puts the clone at `commit`. Only changed files get new times, so make rebuilds only
    /// what they affect; build outputs (ignored files) stay.
    public func checkout(_ commit: String) async throws {
        _ = try await checkedGit(["checkout", "--quiet", "--force", "--detach", commit], in: clone, timeout: .seconds(1800))
        _ = try await checkedGit(["clean", "-fdq"], in: clone)
    }

    /// Reverts `commit` on top of what is checked out, without committing.
    public func revertWithoutCommit(_ commit: String) async throws {
        let result = try await git(["revert", "--no-commit", commit], in: clone)
        guard result.succeeded else {
            _ = try? await git(["revert", "--abort"], in: clone)
            throw KMatrixError(.command, "git revert \(commit.prefix(12)) does not apply cleanly: \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    /// The clone as the sandbox sees it, for the build recipe's `--tree`.
    public var clonePath: String { clone }

    /// Runs the kernel-tree recipe in the sandbox (its stderr to `log`, a file root owns).
    public func build(_ arguments: [String], log: URL, timeout: Duration) async throws -> CommandResult {
        try await sandbox.run("bash", ["\(BuildSandbox.images)/kernel-tree/build.sh"] + arguments, timeout: timeout, errors: .file(log))
    }

    public var workFolder: URL { sandbox.workFolder }
}
