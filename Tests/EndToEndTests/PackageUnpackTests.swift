import Foundation
import Testing
import KMatrixCore

extension EndToEnd {
    /// Packages are someone else's files: unpacked as root by the consumer bundle and the kernel
    /// rootfs recipes (`km_unpack_deb` in images/lib.sh), nothing they ship may carry a write or a
    /// read out of the folder they are unpacked into.
    @Suite(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/dpkg-deb"), "needs dpkg-deb"))
    struct PackageUnpackTests {
        @Test func linksAPackageShipsNeverLeadOutOfTheTree() throws {
            let work = try Harness.scratchDirectory("unpack")
            defer { try? FileManager.default.removeItem(at: work) }
            let outside = work.appendingPathComponent("outside").path
            let tree = work.appendingPathComponent("tree").path
            let unique = "kmatrix-e2e-unpack-\(UUID().uuidString.prefix(6))"
            defer { try? FileManager.default.removeItem(atPath: "/tmp/" + unique) }
            let script = work.appendingPathComponent("t.sh")
            try Data("""
            set -e
            cd '\(work.path)'
            mkdir -p outside tree
            control() { mkdir -p "$1/DEBIAN"; printf 'Package: %s\\nVersion: 1\\nArchitecture: all\\nMaintainer: t <t@example.invalid>\\nDescription: t\\n' "$1" >"$1/DEBIAN/control"; }
            # a: a link to an absolute folder outside (which a also ships, as its own path), a relative one climbing out, a setuid program
            control a
            mkdir -p a/usr/lib a/usr/bin 'a\(outside)'
            ln -s '\(outside)' a/usr/lib/evil
            ln -s ../../../../../../../../../../../../tmp a/usr/lib/climb
            printf x >a/usr/bin/tool; chmod 4755 a/usr/bin/tool
            dpkg-deb -b -Znone a a.deb >/dev/null
            # b: only files beneath a's links, no folder entries (dpkg-deb -b would add them), as
            # a hostile later package of the same closure would ship them
            control b
            mkdir -p b/data/usr/lib/evil b/data/usr/lib/climb
            printf planted >b/data/usr/lib/evil/x
            printf planted >b/data/usr/lib/climb/\(unique)
            (cd b/DEBIAN && tar -czf ../control.tar.gz ./control)
            (cd b/data && tar -cf ../data.tar ./usr/lib/evil/x ./usr/lib/climb/\(unique))
            printf '2.0\\n' >b/debian-binary
            (cd b && ar rc ../b.deb debian-binary control.tar.gz data.tar)
            KM_NAME=test
            source '\(Harness.packageRoot.path)/images/lib.sh'
            km_unpack_deb a.deb tree
            km_unpack_deb b.deb tree
            echo "outside: $(ls -A outside | wc -l)"
            echo "evil: $(readlink tree/usr/lib/evil)"
            echo "inside: $(cat 'tree\(outside)/x')"
            echo "mode: $(stat -c %a tree/usr/bin/tool)"
            echo "climb: $([ -L tree/usr/lib/climb ] && echo link || echo folder)"
            """.utf8).write(to: script)
            let output = Harness.shell("bash '\(script.path)' 2>&1")
            #expect(output.contains("outside: 0"), "\(output)")
            // The absolute link now names the same path inside the tree, where b's file went.
            #expect(output.contains("inside: planted"), "\(output)")
            #expect(output.contains("evil: ../../") && !output.contains("evil: /"), "\(output)")
            #expect(output.contains("removed usr/lib/climb: a link that leads out of the tree"), "\(output)")
            #expect(output.contains("climb: folder"), "\(output)")
            #expect(output.contains("mode: 755"), "\(output)")
            #expect(!FileManager.default.fileExists(atPath: "/tmp/" + unique))
            #expect(FileManager.default.fileExists(atPath: tree + "/usr/lib/climb/" + unique))
        }
    }
}

extension EndToEnd {
    /// `flavour:` picks the kernel packages of a suite's index: `cloud` the -cloud-amd64 ones,
    /// `amd64` the generic ones (neither cloud nor realtime). Read from lists apt already holds,
    /// with the archive unreachable (a closed port on loopback), so the index is this test's.
    @Suite(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/apt-get"), "needs apt"))
    struct KernelIndexFlavourTests {
        @Test(arguments: [("cloud", "6.1.0-57-cloud-amd64"), ("amd64", "6.1.0-57-amd64")])
        func aFlavourPicksItsKernels(flavour: String, release: String) throws {
            let cache = try Harness.scratchDirectory("flavour")
            defer { try? FileManager.default.removeItem(at: cache) }
            let sha = String(repeating: "a", count: 64)
            let stanzas = ["6.1.0-57-amd64", "6.1.0-57-cloud-amd64", "6.1.0-57-rt-amd64"].map { name in
                "Package: linux-image-\(name)\nVersion: 6.1.170-3\nFilename: pool/main/l/linux-signed-amd64/linux-image-\(name)_6.1.170-3_amd64.deb\nSHA256: \(sha)\nDepends: kmod\n"
            }
            let output = Harness.shell("""
            key=$(printf 'bookworm\\n' | sort -u | sha256sum | cut -c1-12)
            lists='\(cache.path)/apt/kernel-set-'$key/lists
            mkdir -p "$lists"
            printf '%s\\n' '\(stanzas.joined(separator: "\n"))' >"$lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages"
            KMATRIX_DEBIAN_MIRROR=http://127.0.0.1:9/debian '\(Harness.packageRoot.path)/images/kernel-set/resolve.sh' --cache '\(cache.path)' --flavour \(flavour) --suite bookworm 2>/dev/null
            """)
            let lines = output.split(separator: "\n").map(String.init)
            #expect(lines.count == 1, "\(output)")
            let kernel = try #require(lines.first.flatMap { ArchiveKernel.parse(line: $0, flavour: flavour == "cloud" ? .cloud : .amd64) }, "\(output)")
            #expect(kernel.release == release && kernel.suite == "bookworm" && kernel.sha256 == sha)
        }
    }
}
