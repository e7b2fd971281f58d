import Foundation
import Testing

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
