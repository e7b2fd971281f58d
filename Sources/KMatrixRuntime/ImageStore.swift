import Foundation
import KMatrixCore

/// A kernel and kmatrix's initramfs rootfs, ready for direct kernel boot.
public struct KernelImage: Sendable {
    public var kernel: URL
    public var initramfs: URL
    public var kernelRelease: String?
    /// sha256 of the kernel package or image the guest boots.
    public var kernelSha256: String?
    public var rootfsBuildID: String?
}

/// Builds and finds guest images in the cache (`~/.cache/kmatrix`), through the recipes under
/// `images/`. Builds are content-addressed by the recipes themselves, so asking twice is cheap;
/// concurrent requests for the same image share one build.
public actor ImageStore {
    let layout: Layout
    let commands: any CommandRunner
    /// Recipes' output on this process's stderr (`images build`), or in a log file per image.
    let showBuildOutput: Bool
    var builds: [String: Task<KernelImage, any Error>] = [:]

    public init(layout: Layout, commands: any CommandRunner, showBuildOutput: Bool = false) {
        self.layout = layout
        self.commands = commands
        self.showBuildOutput = showBuildOutput
    }

    nonisolated var logDirectory: URL { layout.cache.appendingPathComponent("logs") }

    nonisolated var imagesDirectory: URL { layout.cache.appendingPathComponent("images") }
    /// Registered cloud images (vendor downloads, `kmatrix images add`) and built stand-ins.
    public nonisolated var cloudDirectory: URL { imagesDirectory.appendingPathComponent("cloud") }

    public func kernelImage(_ source: KernelSource, probe: URL) async throws -> KernelImage {
        let key = Self.key(for: source)
        if let running = builds[key] { return try await running.value }
        let task = Task { try await build(source, key: key, probe: probe) }
        builds[key] = task
        do {
            return try await task.value
        } catch {
            builds[key] = nil
            throw error
        }
    }

    static func key(for source: KernelSource) -> String {
        switch source {
        case .debian(let suite): "debian-\(suite)"
        case .recipe(let name): "recipe-\(name)"
        case .packages(let format, let paths): "\(format.rawValue)-\(paths.joined(separator: ","))"
        case .bzImage(let path, let modules): "bzimage-\(path)-\(modules ?? "")"
        }
    }

    private func build(_ source: KernelSource, key: String, probe: URL) async throws -> KernelImage {
        let recipe = layout.images.appendingPathComponent("kernel-rootfs/build.sh").path
        var arguments = ["--probe", probe.path, "--cache", layout.cache.path]
        let out: URL
        var kernelFile: URL?
        switch source {
        case .debian(let suite):
            out = imagesDirectory.appendingPathComponent("kernel-\(suite)")
            arguments += ["--suite", suite]
        case .recipe(let name):
            guard MatrixParser.kernelRecipes.contains(name) else {
                throw KMatrixError(.image, "unknown kernel recipe \"\(name)\"; known: \(MatrixParser.kernelRecipes.joined(separator: ", "))")
            }
            let kernelOut = imagesDirectory.appendingPathComponent("legacy-failopen-bzimage")
            try await runRecipe(layout.images.appendingPathComponent("legacy-kernel/build.sh").path,
                                ["--cache", layout.cache.path, "--out", kernelOut.path], what: "legacy fail-open kernel", limit: .seconds(3600))
            let bzImage = kernelOut.appendingPathComponent("bzImage")
            kernelFile = bzImage
            out = imagesDirectory.appendingPathComponent("kernel-legacy-failopen")
            arguments += ["--suite", "legacy-failopen", "--bzimage", bzImage.path]
        case .packages(let format, let paths):
            let files = try Self.existing(paths)
            kernelFile = files.first
            out = Self.slot(for: files, in: imagesDirectory)
            for file in files { arguments += ["--\(format.rawValue)", file.path] }
        case .bzImage(let path, let modules):
            let files = try Self.existing([path])
            kernelFile = files.first
            out = Self.slot(for: files, in: imagesDirectory)
            arguments += ["--bzimage", files[0].path] + (modules.map { ["--modules", $0] } ?? [])
        }
        try await runRecipe(recipe, arguments + ["--out", out.path], what: "kernel image \(key)", limit: .seconds(1800))
        // Its age tells `kmatrix gc` when an image built for a --kernel file was last used.
        try? FileManager.default.setAttributes([.modificationDate: Date()], ofItemAtPath: out.path)
        let manifest = Self.manifest(at: out)
        return KernelImage(
            kernel: out.appendingPathComponent("vmlinuz"), initramfs: out.appendingPathComponent("initramfs.gz"),
            kernelRelease: manifest["kernel_release"] as? String,
            kernelSha256: (manifest["deb_sha256"] as? String) ?? kernelFile.flatMap(FileDigest.sha256(of:)),
            rootfsBuildID: manifest["build_id"] as? String)
    }

    static func existing(_ paths: [String]) throws -> [URL] {
        let files = paths.map { URL(fileURLWithPath: $0).standardizedFileURL }
        for file in files where !FileManager.default.fileExists(atPath: file.path) {
            throw KMatrixError(.image, "kernel file \(file.path) does not exist")
        }
        return files
    }

    /// One output directory per set of kernel files; the recipe's build id covers their content anyway.
    static func slot(for files: [URL], in directory: URL) -> URL {
        let digests = files.map { String((FileDigest.sha256(of: $0) ?? "unknown").prefix(16)) }
        return directory.appendingPathComponent("kernel-file-" + digests.joined(separator: "-"))
    }

    func runRecipe(_ script: String, _ arguments: [String], what: String, limit: Duration) async throws {
        try FileManager.default.createDirectory(at: logDirectory, withIntermediateDirectories: true)
        let log = logDirectory.appendingPathComponent(what.map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "-" }.reduce("") { $0 + String($1) } + ".log")
        let result = try await commands.run("bash", [script] + arguments, timeout: limit, errors: showBuildOutput ? .passthrough : .file(log))
        guard result.succeeded else {
            let tail = showBuildOutput ? "" : String(decoding: FileManager.default.contents(atPath: log.path) ?? Data(), as: UTF8.self)
                .split(whereSeparator: \.isNewline).suffix(4).joined(separator: " / ")
            throw KMatrixError(.image, "building the \(what) failed (exit \(result.status))" + (tail.isEmpty ? "" : ": \(tail); full log: \(log.path)"))
        }
    }

    static func manifest(at directory: URL) -> [String: Any] {
        guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent("manifest.json").path),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [:] }
        return object
    }

    /// Removes what no run will ask for again: images built for `--kernel` files and unused for
    /// `unusedDays`, and recipe builds no image refers to any more. Returns what went.
    public nonisolated func prune(unusedDays: Int) -> [String] {
        let manager = FileManager.default
        let cutoff = Date().addingTimeInterval(-Double(unusedDays) * 86400)
        var removed: [String] = []
        let images = (try? manager.contentsOfDirectory(atPath: imagesDirectory.path)) ?? []
        for name in images where name.hasPrefix("kernel-file-") {
            let url = imagesDirectory.appendingPathComponent(name)
            let modified = (try? manager.attributesOfItem(atPath: url.path)[.modificationDate] as? Date) ?? Date()
            if modified < cutoff, (try? manager.removeItem(at: url)) != nil { removed.append("image \(name)") }
        }
        let referenced = Set(((try? manager.contentsOfDirectory(atPath: imagesDirectory.path)) ?? []).compactMap {
            Self.manifest(at: imagesDirectory.appendingPathComponent($0))["build_id"] as? String
        })
        let builds = layout.cache.appendingPathComponent("builds")
        for id in (try? manager.contentsOfDirectory(atPath: builds.path)) ?? [] where !referenced.contains(id) && !id.hasPrefix(".") {
            if (try? manager.removeItem(at: builds.appendingPathComponent(id))) != nil { removed.append("rootfs build \(id.prefix(12))") }
        }
        return removed
    }

    /// A cloud guest's base image: registered by `images add`, or built by its recipe.
    public func cloudBase(_ image: CloudImage) async throws -> URL {
        let registered = cloudDirectory.appendingPathComponent(image.file)
        if let recipe = image.recipe {
            let out = imagesDirectory.appendingPathComponent(recipe)
            try await runRecipe(layout.images.appendingPathComponent("\(recipe)/build.sh").path,
                                ["--cache", layout.cache.path, "--out", out.path], what: "cloud image \(recipe)", limit: .seconds(1800))
            return out.appendingPathComponent(image.file)
        }
        guard FileManager.default.fileExists(atPath: registered.path) else {
            throw KMatrixError(.image, Self.missingCloudImage(image, expectedAt: registered))
        }
        return registered
    }

    public nonisolated func cloudImagePresent(_ image: CloudImage) -> Bool {
        image.recipe != nil || FileManager.default.fileExists(atPath: cloudDirectory.appendingPathComponent(image.file).path)
    }

    public static func missingCloudImage(_ image: CloudImage, expectedAt path: URL) -> String {
        var text = "image \(image.file) is not present (looked in \(path.deletingLastPathComponent().path))"
        if let source = image.source { text += "; download it from \(source)" }
        text += ", then run `kmatrix images add <guest> /path/to/\(image.file)`"
        return text
    }
}
