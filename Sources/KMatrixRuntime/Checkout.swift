import Foundation
import KMatrixCore
#if canImport(Glibc)
import Glibc
#endif

/// The kmatrix checkout: the probe's source and the image recipes.
public struct Checkout: Sendable {
    public var root: URL

    public init(root: URL) {
        self.root = root
    }

    public var probeSource: URL { root.appendingPathComponent("probe") }
    public var probeBinary: URL { probeSource.appendingPathComponent("kmatrix-probe") }
    public var images: URL { root.appendingPathComponent("images") }
    /// The host prerequisites, declared once (docs/architecture.md, "Host"): host-setup.sh,
    /// `kmatrix doctor` and the recipes read this list.
    public var prerequisites: URL { root.appendingPathComponent("scripts/prerequisites") }

    /// Finds the checkout by walking up from `start` (the working directory), then from the
    /// executable (`.build/release/kmatrix` lives inside it). `KMATRIX_ROOT` overrides both.
    public static func discover(environment: [String: String], from start: URL, executable: URL?) throws -> Checkout {
        if let root = environment["KMATRIX_ROOT"] {
            return Checkout(root: URL(fileURLWithPath: root).standardizedFileURL)
        }
        for origin in [start] + (executable.map { [$0.resolvingSymlinksInPath().deletingLastPathComponent()] } ?? []) {
            var directory = origin.standardizedFileURL
            while directory.path != "/" {
                if FileManager.default.fileExists(atPath: directory.appendingPathComponent("probe/kmatrix-probe.c").path) {
                    return Checkout(root: directory)
                }
                directory.deleteLastPathComponent()
            }
        }
        throw KMatrixError(.hostNotReady, "cannot find the kmatrix checkout (probe/kmatrix-probe.c); run kmatrix from inside it or set KMATRIX_ROOT")
    }

    /// Builds the static probe if it is missing or older than its source.
    public func ensureProbe(commands: any CommandRunner) async throws -> URL {
        try await commands.checked("make", ["-s", "-C", probeSource.path], timeout: .seconds(120))
        guard FileManager.default.isExecutableFile(atPath: probeBinary.path) else {
            throw KMatrixError(.probe, "make -C probe did not produce \(probeBinary.path)")
        }
        return probeBinary
    }
}

/// Where kmatrix keeps what it downloads and builds, outside the repository, keyed by content
/// (`~/.cache/kmatrix`, or `KMATRIX_CACHE`). The one description of its layout.
public struct CacheLayout: Sendable {
    public var root: URL

    public init(root: URL) {
        self.root = root
    }

    public static func `default`(environment: [String: String], home: URL) -> CacheLayout {
        CacheLayout(root: environment["KMATRIX_CACHE"].map { URL(fileURLWithPath: $0).standardizedFileURL }
            ?? home.appendingPathComponent(".cache/kmatrix"))
    }

    /// Finished images, one folder each (`kernel-<suite>`, `kernel-file-<digests>`, recipe outputs).
    public var images: URL { root.appendingPathComponent("images") }
    /// Vendor disk images registered with `kmatrix images add`.
    public var cloudImages: URL { images.appendingPathComponent("cloud") }
    /// Users' consumers as bundles (`<name>-<key>`), one folder each.
    public var consumers: URL { images.appendingPathComponent("consumers") }
    /// Kernel guests' initramfs with consumer layers appended, by content.
    public var layeredInitramfs: URL { images.appendingPathComponent("initrd-layers") }
    /// Rootfs builds by build id (the kernel-rootfs recipe's own store).
    public var builds: URL { root.appendingPathComponent("builds") }
    /// Downloaded packages by sha256.
    public var debs: URL { root.appendingPathComponent("debs") }
    /// The kernel-rootfs recipe's digests of the files it checks every run, by their stat identity:
    /// one entry each, `<identity> <sha256> <path>`.
    public var recipeDigests: URL { root.appendingPathComponent("digests") }
    /// Recipe output of runs, one log per image.
    public var logs: URL { root.appendingPathComponent("logs") }
    /// Per-run folders (keys, overlays, ledgers).
    public var runs: URL { RunDirectory.runsDirectory(cache: root) }
    /// Verdicts about files that are expensive to check (digests, disk validation).
    public var verdicts: URL { root.appendingPathComponent("verdicts") }
    /// KVM-or-TCG verdict for this boot of the host.
    public var accelerator: URL { root.appendingPathComponent("accelerator") }
}

public enum FilePaths {
    /// `mkdir -p` with the system's own reason on failure ("Not a directory", "Read-only file
    /// system"), which Foundation's errors do not always carry.
    public static func createDirectory(_ url: URL, mode: mode_t = 0o755) throws {
        var path = ""
        for component in url.standardizedFileURL.pathComponents where component != "/" {
            path += "/" + component
            if mkdir(path, mode) != 0 && errno != EEXIST {
                throw KMatrixError(.io, "cannot create \(path): \(String(cString: strerror(errno)))")
            }
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw KMatrixError(.io, "cannot create \(url.path): \(path) is a file, not a directory")
            }
        }
    }

    /// `path` as an absolute file URL: itself when absolute, else inside `base` (a directory).
    public static func resolve(_ path: String, against base: URL) -> URL {
        (path.starts(with: "/") ? URL(fileURLWithPath: path) : base.appendingPathComponent(path)).standardizedFileURL
    }
}
