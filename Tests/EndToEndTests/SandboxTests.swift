import Foundation
import Testing
import KMatrixCore

extension EndToEnd {
    /// `kmatrix bisect --git` on a tree someone else wrote: the tree's own git configuration
    /// names programs (a clean filter here, run by `git status` during the dirty-tree check),
    /// and they run as the unprivileged build user in the sandbox, never as root.
    @Suite(.serialized, .enabled(if: Harness.isRoot && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare"),
                                 "needs root and util-linux's unshare"))
    struct SandboxTests {
        @Test func aTreesGitFiltersRunWithoutRoot() throws {
            let tree = try Harness.scratchDirectory("hostile-tree")
            defer { try? FileManager.default.removeItem(at: tree) }
            let cache = try Harness.privateCache("sandbox")
            defer { try? FileManager.default.removeItem(at: cache) }
            let pwned = "/root/kmatrix-e2e-filter-ran-as-root-\(UUID().uuidString.prefix(6))"
            let script = """
            set -e
            cd '\(tree.path)'
            git init -q -b main
            git -c user.name=t -c user.email=t@example.invalid commit -q --allow-empty -m start
            printf 'one\\n' > file.txt
            printf '* filter=evil\\n' > .gitattributes
            git add file.txt .gitattributes
            git -c user.name=t -c user.email=t@example.invalid commit -q -m files
            git config filter.evil.clean "sh -c 'id -u > /mnt/kmatrix/work/filter-uid; touch \(pwned); cat'"
            printf 'two\\n' > file.txt
            """
            #expect(Harness.shell(script + "\necho ok").contains("ok"))
            let run = try Harness.run(["bisect", "--git", tree.path, "--good", "HEAD~1", "--bad", "HEAD", "--scenario", "failopen-socket-overflow"],
                                      cache: cache)
            // The change to file.txt makes the tree dirty: refused, after the filter ran.
            #expect(run.status == 2, "\(run.stderr)")
            #expect(run.stderr.contains("has uncommitted changes"), "\(run.stderr)")
            let uid = try String(contentsOf: cache.appendingPathComponent("bisect/sandbox/filter-uid"), encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(uid != "0" && !uid.isEmpty, "the tree's filter ran as uid \(uid)")
            #expect(!FileManager.default.fileExists(atPath: pwned), "the tree's filter wrote into root's home")
            #expect(Harness.shell("getent passwd kmatrix-build | cut -d: -f3").trimmingCharacters(in: .whitespacesAndNewlines) == uid)
        }
    }
}
