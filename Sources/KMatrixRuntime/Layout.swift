import Foundation

/// Where kmatrix finds its own files (probe source, image recipes) and keeps built artefacts.
public struct Layout: Sendable {
    /// The repository checkout holding `probe/` and `images/`.
    public var root: URL
    /// Built images, downloaded packages, keys: outside the repository, keyed by content.
    public var cache: URL

    public init(root: URL, cache: URL) {
        self.root = root
        self.cache = cache
    }

    public var probeSource: URL { root.appendingPathComponent("probe") }
    public var probeBinary: URL { probeSource.appendingPathComponent("kmatrix-probe") }
    public var images: URL { root.appendingPathComponent("images") }

    /// Finds the checkout by walking up from the working directory, then from the executable
    /// (`.build/release/kmatrix` lives inside it). `KMATRIX_ROOT` overrides both.
    public static func discover(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Layout {
        let cache = environment["KMATRIX_CACHE"].map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/kmatrix")
        if let root = environment["KMATRIX_ROOT"] {
            return Layout(root: URL(fileURLWithPath: root), cache: cache)
        }
        let starts = [
            URL(fileURLWithPath: FileManager.default.currentDirectoryPath),
            URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath().deletingLastPathComponent(),
        ]
        for start in starts {
            var directory = start.standardizedFileURL
            while directory.path != "/" {
                if FileManager.default.fileExists(atPath: directory.appendingPathComponent("probe/kmatrix-probe.c").path) {
                    return Layout(root: directory, cache: cache)
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
