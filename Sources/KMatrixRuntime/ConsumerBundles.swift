import Foundation
import KMatrixCore

/// A user's consumer, built by images/consumer/build.sh: the same bundle as a folder (the host
/// guest), a tarball (distro guests, over SSH) and an initramfs layer (kernel guests).
public struct ConsumerBundle: Sendable {
    public var name: String
    public var tree: URL
    public var tarball: URL
    public var layer: URL
    public var layerSha256: String
    public var layerBytes: Int
    /// Packages and file digests; the version line is added per guest, where it runs.
    public var identity: ConsumerIdentity
}

/// `manifest.json` of images/consumer.
struct ConsumerManifest: Decodable {
    var name: String
    var inputKey: String
    var suite: String?
    var packages: [ConsumerIdentity.Package]
    var files: [ConsumerIdentity.File]
    var bundleSha256: String
    var layerSha256: String
    var layerBytes: Int
}

/// Where the users' consumers live inside a guest, and where their working folders go.
public struct ConsumerPlacement: Sendable, Hashable {
    /// Bundle folder by consumer name (the guest's own absolute paths).
    public var bundles: [String: String]
    public var workRoot: String

    public init(bundles: [String: String], workRoot: String) {
        self.bundles = bundles
        self.workRoot = workRoot
    }

    /// In VM guests: the layer's (and the tarball's) fixed place.
    public static func inGuest(_ names: [String]) -> ConsumerPlacement {
        ConsumerPlacement(bundles: Dictionary(uniqueKeysWithValues: names.map { ($0, "\(guestRoot)/\($0)") }), workRoot: "/tmp/kmatrix-consumers")
    }

    public static let guestRoot = "/opt/kmatrix/consumers"
}

extension ImageCatalog {
    /// The consumer's bundle, built (or found up to date) by its recipe; concurrent requests for
    /// one consumer share the build. A package the suite does not have is the user's mistake
    /// (`invalidInput`, exit 2), found before anything boots.
    public func consumerBundle(_ spec: ConsumerSpec) async throws -> ConsumerBundle {
        var contents: [String] = []
        for file in spec.files {
            contents.append(try await verdicts.sha256(of: URL(fileURLWithPath: file.from), what: "file of consumer \(spec.name)", digests: digests))
        }
        let out = cache.consumers.appendingPathComponent("\(spec.name)-\(Self.consumerSlot(spec, contents: contents))")
        let key = "consumer:" + out.lastPathComponent
        if let running = consumerBuilds[key] { return try await running.value }
        let task = Task { try await buildConsumer(spec, out: out) }
        consumerBuilds[key] = task
        do {
            return try await task.value
        } catch {
            consumerBuilds[key] = nil
            throw error
        }
    }

    /// One folder per content (name, suite, packages, each file's digest and place in the
    /// bundle): the same consumer declared by two matrices shares one bundle, a changed file gets
    /// its own (and gc ages the old one out).
    nonisolated static func consumerSlot(_ spec: ConsumerSpec, contents: [String]) -> String {
        var text = "\(spec.name)\n\(spec.debian?.suite ?? "")\n\(spec.debian?.packages.joined(separator: " ") ?? "")\n"
        for (file, digest) in zip(spec.files, contents) { text += "\(digest) \(file.to)\n" }
        return String(FileDigests.sha256(of: Data(text.utf8)).prefix(16))
    }

    private func buildConsumer(_ spec: ConsumerSpec, out: URL) async throws -> ConsumerBundle {
        var arguments = ["--cache", cache.root.path, "--out", out.path, "--name", spec.name]
        if let debian = spec.debian {
            arguments += ["--suite", debian.suite]
            for package in debian.packages { arguments += ["--package", package] }
        }
        for file in spec.files {
            _ = try FileIdentity.regularFile(URL(fileURLWithPath: file.from), what: "file of consumer \(spec.name)")
            arguments += ["--file", file.from, file.to]
        }
        do {
            try FilePaths.createDirectory(cache.consumers)
            try FilePaths.createDirectory(cache.logs)
        } catch {
            throw KMatrixError.from(error, whileDoing: "creating \(cache.consumers.path)")
        }
        let log = cache.logs.appendingPathComponent("consumer-\(spec.name).log")
        let script = checkout.images.appendingPathComponent(Recipes.consumer).path
        let result = try await commands.run("bash", [script] + arguments, timeout: .seconds(1800), errors: showBuildOutput ? .passthrough : .file(log))
        let lines = String(decoding: FileManager.default.contents(atPath: log.path) ?? Data(), as: UTF8.self).split(whereSeparator: \.isNewline)
        let tail = lines.suffix(3).joined(separator: " / ")
        switch result.status {
        case 0: break
        case 3:
            let why = lines.last.map { String($0.dropFirst($0.hasPrefix("consumer: ") ? 10 : 0)) } ?? "a package is not in the suite"
            throw KMatrixError(.invalidInput, "consumer \(spec.name): \(SafeText.terminal(why)); check debian.packages and debian.suite "
                + "(packages.debian.org lists what each suite has)")
        case 4:
            throw KMatrixError(.image, "consumer \(spec.name): Debian's archive cannot be reached to resolve its packages (\(tail)); full log: \(log.path)")
        default:
            throw KMatrixError(.image, "building consumer \(spec.name) failed (exit \(result.status)): \(tail); full log: \(log.path)")
        }
        guard let manifest: ConsumerManifest = Self.manifest(in: out) else {
            throw KMatrixError(.image, "the consumer recipe finished without a readable manifest.json in \(out.path)")
        }
        // Its age tells `kmatrix gc` when the bundle was last used.
        try? FileManager.default.setAttributes([.modificationDate: Date()], ofItemAtPath: out.path)
        return ConsumerBundle(
            name: spec.name, tree: out.appendingPathComponent("tree"), tarball: out.appendingPathComponent("bundle.tar.gz"),
            layer: out.appendingPathComponent("layer.cpio.gz"), layerSha256: manifest.layerSha256, layerBytes: manifest.layerBytes,
            identity: ConsumerIdentity(suite: manifest.suite, packages: manifest.packages, files: manifest.files, bundleSha256: manifest.bundleSha256))
    }

    /// A kernel guest's initramfs with its consumers' layers appended (the kernel unpacks
    /// concatenated archives in turn), cached by the parts' digests.
    public func layeredInitramfs(_ image: KernelImage, layers: [ConsumerBundle]) async throws -> (url: URL, sha256: String) {
        guard !layers.isEmpty else { return (image.initramfs, image.initramfsSha256) }
        let key = FileDigests.sha256(of: Data(([image.initramfsSha256] + layers.map(\.layerSha256)).joined(separator: "\n").utf8))
        let file = cache.layeredInitramfs.appendingPathComponent(String(key.prefix(32)) + ".gz")
        if !FileManager.default.fileExists(atPath: file.path) {
            let staging = cache.layeredInitramfs.appendingPathComponent(".\(file.lastPathComponent).\(getpid()).new")
            do {
                try FilePaths.createDirectory(cache.layeredInitramfs)
                guard FileManager.default.createFile(atPath: staging.path, contents: nil) else {
                    throw KMatrixError(.io, "cannot create \(staging.path)")
                }
                let handle = try FileHandle(forWritingTo: staging)
                defer { try? handle.close() }
                for part in [image.initramfs] + layers.map(\.layer) {
                    let reader = try FileHandle(forReadingFrom: part)
                    defer { try? reader.close() }
                    while let chunk = try reader.read(upToCount: 4 << 20), !chunk.isEmpty { try handle.write(contentsOf: chunk) }
                }
                try handle.close()
                guard rename(staging.path, file.path) == 0 else { throw KMatrixError(.io, "cannot rename \(staging.path): \(String(cString: strerror(errno)))") }
            } catch {
                try? FileManager.default.removeItem(at: staging)
                throw KMatrixError.from(error, whileDoing: "appending consumer layers to \(image.initramfs.path)")
            }
        }
        try? FileManager.default.setAttributes([.modificationDate: Date()], ofItemAtPath: file.path)
        return (file, try await verdicts.sha256(of: file, what: "initramfs", digests: digests))
    }
}
