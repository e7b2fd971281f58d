import Foundation
import KMatrixCore

/// A kernel and kmatrix's initramfs rootfs, ready for direct kernel boot.
public struct KernelImage: Sendable {
    /// What the guest boots: the shipped bzImage, or its decompressed PVH vmlinux when the kernel
    /// has that entry (docs/architecture.md, "Boot").
    public var kernel: URL
    public var initramfs: URL
    public var kernelRelease: String?
    /// sha256 of the kernel package or image the guest boots.
    public var kernelSha256: String?
    public var rootfsBuildID: String?
    /// sha256 of the two boot files themselves (what a remote host's pool names them by).
    public var bootKernelSha256: String
    public var initramfsSha256: String
}

/// A cloud guest's base disk, checked.
public struct CloudDisk: Sendable {
    public var url: URL
    public var format: String
    public var sha256: String?
    /// The disk's size as the guest sees it (an overlay's capacity on a remote host).
    public var virtualSize: UInt64 = 0
}

/// `manifest.json` of images/kernel-rootfs (a kernel plus our initramfs).
struct KernelImageManifest: Decodable {
    var buildId: String
    var kernelRelease: String
    var debSha256: String?
    var vmlinuzSha256: String?
    var initramfsSha256: String?
    /// `vmlinux` when the recipe found a PVH entry, else `vmlinuz`; absent in older images.
    var bootKernel: String?
    var bootKernelSha256: String?
    /// The shared userspace archive the initramfs starts with (`builds/base-<id>`); absent in
    /// images built before the userspace was shared.
    var baseId: String?
}

/// `manifest.json` of images/legacy-kernel.
struct LegacyKernelManifest: Decodable {
    var buildId: String
    var kernelRelease: String
}

/// `manifest.json` of images/cloud-standin.
struct CloudImageManifest: Decodable {
    var buildId: String
    var image: String
    var sha256: String
    var kernelRelease: String?
}

/// Every guest image, in one place (docs/architecture.md, "Images"): the cache layout, building
/// through the recipes under `images/`, validation, status for `images list`, registration of
/// vendor downloads and pruning. Concurrent requests for the same kernel image share one build.
public actor ImageCatalog {
    public let checkout: Checkout
    public nonisolated let cache: CacheLayout
    let commands: any CommandRunner
    let digests: FileDigests
    let verdicts: VerdictCache
    let disks: DiskInspector
    /// Recipes' output on this process's stderr (`images build`), or in a log file per image.
    let showBuildOutput: Bool
    var builds: [String: Task<KernelImage, any Error>] = [:]
    var consumerBuilds: [String: Task<ConsumerBundle, any Error>] = [:]
    /// Kernel-set rows whose packages the archive's pool no longer has (found while fetching).
    var goneFromPool: [String: String] = [:]


    public init(checkout: Checkout, cache: CacheLayout, commands: any CommandRunner, showBuildOutput: Bool = false) {
        self.checkout = checkout
        self.cache = cache
        self.commands = commands
        self.digests = FileDigests()
        self.verdicts = VerdictCache(directory: cache.verdicts)
        self.disks = DiskInspector(commands: commands)
        self.showBuildOutput = showBuildOutput
    }

    // MARK: status

    /// Why a guest's image is not on this machine, with how to get it (a `skipped` cell), or nil.
    public nonisolated func unavailability(of guest: GuestSpec) -> CellFailure? {
        if case .kernel(.archive(let kernel)) = guest.image, let reason = kernel.unavailable {
            return CellFailure(.imageMissing, phase: .prepare, reason)
        }
        guard case .cloud(let image) = guest.image, image.recipe == nil else { return nil }
        let registered = cache.cloudImages.appendingPathComponent(image.file)
        guard !FileManager.default.fileExists(atPath: registered.path) else { return nil }
        return CellFailure(.imageMissing, phase: .prepare, Self.missingCloudImage(image, guest: guest.name, expectedAt: registered))
    }

    public nonisolated static func missingCloudImage(_ image: CloudImage, guest: String, expectedAt path: URL) -> String {
        var text = "image \(image.file) is not present (looked in \(path.deletingLastPathComponent().path))"
        if let source = image.source { text += "; download it from \(source)" }
        text += ", then run `kmatrix images add \(guest) /path/to/\(image.file)`"
        return text
    }

    /// One line for `images list`: what is there, or how to get it.
    public nonisolated func status(of guest: GuestSpec) -> String {
        switch guest.image {
        case .host:
            return "this machine's kernel"
        case .kernel(.debian(let suite)):
            return built(kernel: "kernel-\(suite)") ?? "not built yet: `kmatrix images build \(guest.name)` (downloads the \(suite) kernel)"
        case .kernel(.recipe(let name)):
            return built(kernel: "kernel-\(name)") ?? "not built yet: `kmatrix images build \(guest.name)` (compiles a kernel, ~10 min)"
        case .kernel(.archive(let kernel)):
            if let reason = kernel.unavailable { return "UNAVAILABLE: \(reason)" }
            return built(kernel: "kernel-pkg-" + kernel.sha256.prefix(16)) ?? "not built yet (\(kernel.package) \(kernel.version) from \(kernel.suite))"
        case .kernel(let source):
            let missing = source.files.filter { !FileManager.default.fileExists(atPath: $0) }
            return missing.isEmpty ? "kernel files \(source.files.joined(separator: ", "))" : "MISSING: \(missing.joined(separator: ", ")) does not exist"
        case .cloud(let image):
            if let recipe = image.recipe, let definition = Recipes.named(recipe, kind: .cloud) {
                let path = cache.images.appendingPathComponent(definition.output).appendingPathComponent(image.file)
                return FileManager.default.fileExists(atPath: path.path) ? "built: \(path.path)" : "not built yet: `kmatrix images build \(guest.name)`"
            }
            if let missing = unavailability(of: guest) { return "MISSING: " + missing.message }
            return "present: \(cache.cloudImages.appendingPathComponent(image.file).path)"
        }
    }

    nonisolated func built(kernel folder: String) -> String? {
        let directory = cache.images.appendingPathComponent(folder)
        guard let manifest: KernelImageManifest = Self.manifest(in: directory) else { return nil }
        return "built: kernel \(manifest.kernelRelease), \(directory.path)"
    }

    static func manifest<T: Decodable>(in directory: URL) -> T? {
        guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent("manifest.json").path) else { return nil }
        return try? JSONCoding.decoder.decode(T.self, from: data)
    }

    /// `images build` of one guest: builds what a recipe makes and says what is there; nil for
    /// guests nothing is built for (the host).
    public func build(_ guest: GuestSpec, probe: URL) async throws -> String? {
        switch guest.image {
        case .host:
            return nil
        case .kernel(let source):
            let image = try await kernelImage(source, probe: probe)
            return "\(image.kernelRelease ?? "?") rootfs \(image.rootfsBuildID?.prefix(12) ?? "?")"
        case .cloud(let image):
            guard image.recipe != nil else { return "vendor image, not built here (`kmatrix images list` says how to get it)" }
            return try await cloudDisk(image, guest: guest.name).url.path
        }
    }

    // MARK: kernel images

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
        case .archive(let kernel): "archive-\(kernel.sha256)"
        }
    }

    /// Why a kernel-set row cannot boot although its index lists it (its pool lost the file),
    /// once fetching found out: a `skipped` cell, not an error.
    public func archiveUnavailability(of guest: GuestSpec) -> CellFailure? {
        guard case .kernel(.archive(let kernel)) = guest.image, let reason = goneFromPool[kernel.sha256] else { return nil }
        return CellFailure(.imageMissing, phase: .prepare, reason)
    }

    private func build(_ source: KernelSource, key: String, probe: URL) async throws -> KernelImage {
        let recipe = checkout.images.appendingPathComponent(Recipes.rootfs).path
        var arguments = ["--probe", probe.path, "--cache", cache.root.path]
        let out: URL
        var kernelFile: URL?
        switch source {
        case .debian(let suite):
            out = cache.images.appendingPathComponent("kernel-\(suite)")
            arguments += ["--suite", suite]
        case .recipe(let name):
            guard let definition = Recipes.named(name, kind: .kernel) else {
                throw KMatrixError(.invalidInput, "unknown kernel recipe \(InputRules.quoted(name)); known: \(Recipes.names(.kernel).joined(separator: ", "))")
            }
            let kernelOut = cache.images.appendingPathComponent(definition.output)
            try await runRecipe(checkout.images.appendingPathComponent(definition.script).path,
                                ["--cache", cache.root.path, "--out", kernelOut.path], what: "\(name) kernel", limit: .seconds(3600))
            guard let built: LegacyKernelManifest = Self.manifest(in: kernelOut) else {
                throw KMatrixError(.image, "the \(name) recipe finished without a readable manifest.json in \(kernelOut.path)")
            }
            let bzImage = kernelOut.appendingPathComponent("bzImage")
            kernelFile = bzImage
            out = cache.images.appendingPathComponent("kernel-\(name)")
            arguments += ["--suite", name, "--bzimage", bzImage.path]
            _ = built.buildId
        case .packages(let format, let paths):
            let files = try Self.kernelFiles(paths)
            kernelFile = files.first
            out = try await slot(for: files)
            for file in files { arguments += ["--\(format.rawValue)", file.path] }
        case .archive(let kernel):
            if let reason = kernel.unavailable ?? goneFromPool[kernel.sha256] { throw KMatrixError(.image, reason) }
            out = cache.images.appendingPathComponent("kernel-pkg-" + kernel.sha256.prefix(16))
            arguments += ["--suite", kernel.suite, "--flavour", kernel.flavour.rawValue] + kernel.pins.flatMap { ["--pin", $0] }
        case .bzImage(let path, let modules):
            let files = try Self.kernelFiles([path])
            kernelFile = files.first
            out = try await slot(for: files)
            arguments += ["--bzimage", files[0].path] + (modules.map { ["--modules", $0] } ?? [])
        }
        let existed = FileManager.default.fileExists(atPath: out.path)
        do {
            try await runRecipe(recipe, arguments + ["--out", out.path], what: "kernel image \(out.lastPathComponent)", limit: .seconds(1800), special: [5])
        } catch let error as RecipeStatus where error.status == 5 {
            if !existed { try? FileManager.default.removeItem(at: out) }
            guard case .archive(let kernel) = source else { throw error.failure }
            let reason = "Debian's \(kernel.suite) index lists \(kernel.package) \(kernel.version) but its pool no longer has the file (HTTP 404)"
            goneFromPool[kernel.sha256] = reason
            throw KMatrixError(.image, reason)
        } catch let error as RecipeStatus {
            if !existed { try? FileManager.default.removeItem(at: out) }
            throw error.failure
        } catch {
            // A failed first build must not leave an empty folder that looks like an image.
            if !existed { try? FileManager.default.removeItem(at: out) }
            throw error
        }
        // Its age tells `kmatrix gc` when an image built for a --kernel file was last used.
        try? FileManager.default.setAttributes([.modificationDate: Date()], ofItemAtPath: out.path)
        guard let manifest: KernelImageManifest = Self.manifest(in: out) else {
            throw KMatrixError(.image, "the kernel-rootfs recipe finished without a readable manifest.json in \(out.path)")
        }
        var kernelSha256 = manifest.debSha256
        if kernelSha256 == nil, let kernelFile { kernelSha256 = try await verdicts.sha256(of: kernelFile, what: "kernel file", digests: digests) }
        let bootFile = manifest.bootKernel == "vmlinux" ? "vmlinux" : "vmlinuz"
        let kernel = out.appendingPathComponent(bootFile), initramfs = out.appendingPathComponent("initramfs.gz")
        var bootKernelSha256 = manifest.bootKernel == nil ? manifest.vmlinuzSha256 : manifest.bootKernelSha256
        if bootKernelSha256 == nil { bootKernelSha256 = try await verdicts.sha256(of: kernel, what: "kernel", digests: digests) }
        var initramfsSha256 = manifest.initramfsSha256
        if initramfsSha256 == nil { initramfsSha256 = try await verdicts.sha256(of: initramfs, what: "initramfs", digests: digests) }
        return KernelImage(
            kernel: kernel, initramfs: initramfs,
            kernelRelease: manifest.kernelRelease, kernelSha256: kernelSha256, rootfsBuildID: manifest.buildId,
            bootKernelSha256: bootKernelSha256 ?? "", initramfsSha256: initramfsSha256 ?? "")
    }

    /// Kernel files as absolute paths, each a readable regular file.
    static func kernelFiles(_ paths: [String]) throws -> [URL] {
        let files = paths.map { URL(fileURLWithPath: $0).standardizedFileURL }
        for file in files { _ = try FileIdentity.regularFile(file, what: "kernel file") }
        return files
    }

    /// One output folder per set of kernel files, named by their content.
    func slot(for files: [URL]) async throws -> URL {
        var digests: [String] = []
        for file in files { digests.append(String(try await verdicts.sha256(of: file, what: "kernel file", digests: self.digests).prefix(16))) }
        return cache.images.appendingPathComponent("kernel-file-" + digests.joined(separator: "-"))
    }

    /// Runs a recipe; a failure is a `KMatrixError`, or a `RecipeStatus` for the statuses the
    /// caller gives a meaning (`special`).
    func runRecipe(_ script: String, _ arguments: [String], what: String, limit: Duration, special: Set<Int32> = []) async throws {
        do {
            try FileManager.default.createDirectory(at: cache.logs, withIntermediateDirectories: true)
        } catch {
            throw KMatrixError.from(error, whileDoing: "creating \(cache.logs.path)")
        }
        let name = String(what.unicodeScalars.map { InputRules.isAlphanumeric($0) || $0 == "-" ? Character($0) : "-" })
        let log = cache.logs.appendingPathComponent(name + ".log")
        let result = try await commands.run("bash", [script] + arguments, timeout: limit, errors: showBuildOutput ? .passthrough : .file(log))
        guard result.succeeded else {
            let tail = showBuildOutput ? "" : String(decoding: FileManager.default.contents(atPath: log.path) ?? Data(), as: UTF8.self)
                .split(whereSeparator: \.isNewline).suffix(4).joined(separator: " / ")
            let failure = KMatrixError(.image, "building the \(what) failed (exit \(result.status))" + (tail.isEmpty ? "" : ": \(tail); full log: \(log.path)"))
            if special.contains(result.status) { throw RecipeStatus(status: result.status, failure: failure) }
            throw failure
        }
    }

    /// A recipe that exited non-zero: its status (some mean something: 5, a file gone from the
    /// archive's pool) and the error to show.
    struct RecipeStatus: Error {
        var status: Int32
        var failure: KMatrixError
    }

    // MARK: cloud images

    /// A cloud guest's base disk: registered by `images add`, or built by its recipe; checked
    /// (and, when the matrix names a sha256, hashed) only when the file changed since last time.
    public func cloudDisk(_ image: CloudImage, guest: String) async throws -> CloudDisk {
        if let recipe = image.recipe {
            guard let definition = Recipes.named(recipe, kind: .cloud) else {
                throw KMatrixError(.invalidInput, "unknown cloud image recipe \(InputRules.quoted(recipe))")
            }
            let out = cache.images.appendingPathComponent(definition.output)
            try await runRecipe(checkout.images.appendingPathComponent(definition.script).path,
                                ["--cache", cache.root.path, "--out", out.path], what: "cloud image \(recipe)", limit: .seconds(1800))
            guard let manifest: CloudImageManifest = Self.manifest(in: out), manifest.image == image.file else {
                throw KMatrixError(.image, "the \(recipe) recipe did not produce \(image.file) with a manifest in \(out.path)")
            }
            // The recipe wrote the image and its digest together: trust both.
            let disk = out.appendingPathComponent(image.file)
            let identity = try FileIdentity.regularFile(disk, what: "disk image")
            if let problem = DiskInspector.qcow2HeaderProblem(disk) { throw KMatrixError(.image, "\(disk.path) \(problem)") }
            var verdict = verdicts.verdict(for: identity) ?? .init(identity: identity, sha256: manifest.sha256, diskFormat: "qcow2")
            if verdict.virtualSize == nil {
                verdict.virtualSize = try await disks.virtualSize(disk)
                verdicts.remember(verdict)
            }
            return CloudDisk(url: disk, format: "qcow2", sha256: manifest.sha256, virtualSize: verdict.virtualSize ?? 0)
        }
        let registered = cache.cloudImages.appendingPathComponent(image.file)
        guard FileManager.default.fileExists(atPath: registered.path) else {
            throw KMatrixError(.image, Self.missingCloudImage(image, guest: guest, expectedAt: registered))
        }
        return try await verify(registered, expecting: image.sha256)
    }

    /// Validates a disk (and its sha256 when one is expected), remembering the verdict.
    func verify(_ url: URL, expecting expected: String?, alwaysHash: Bool = false) async throws -> CloudDisk {
        let identity = try FileIdentity.regularFile(url, what: "disk image")
        if let problem = DiskInspector.qcow2HeaderProblem(url) {
            throw KMatrixError(.image, "\(url.path) \(problem); register a standalone image (qemu-img convert -O qcow2 it first)")
        }
        var verdict = verdicts.verdict(for: identity) ?? .init(identity: identity)
        if verdict.diskFormat == nil || verdict.virtualSize == nil {
            let checked = try await disks.inspect(url)
            verdict.diskFormat = checked.format
            verdict.virtualSize = checked.virtualSize
            verdicts.remember(verdict)
        }
        if (expected != nil || alwaysHash) && verdict.sha256 == nil {
            verdict.sha256 = try await digests.sha256(of: url)
            verdicts.remember(verdict)
        }
        if let expected, let actual = verdict.sha256, actual != expected {
            throw KMatrixError(.image, "\(url.path) has sha256 \(actual), expected \(expected): the download is corrupt or a different release")
        }
        return CloudDisk(url: url, format: verdict.diskFormat ?? "qcow2", sha256: verdict.sha256, virtualSize: verdict.virtualSize ?? 0)
    }

    /// The disk's sha256 (once per file: remembered), which a remote host's pool names it by.
    public func digest(of disk: CloudDisk) async throws -> String {
        if let known = disk.sha256 { return known }
        return try await verdicts.sha256(of: disk.url, what: "disk image", digests: digests)
    }

    /// `images add`: copies a downloaded vendor image into the image folder under the name the
    /// matrix gives (a reflink where the file system can, so a multi-GB image costs no space),
    /// then checks and hashes the copy. A copy, not a link: the file's owner keeps no handle on
    /// what kmatrix boots as root. Nothing outside that folder is written or removed.
    public func register(_ image: CloudImage, from file: URL) async throws -> CloudDisk {
        guard InputRules.fileNameProblem(image.file) == nil else {
            throw KMatrixError(.invalidInput, "image file \(InputRules.quoted(image.file)) is not a plain file name")
        }
        let source = file.standardizedFileURL.resolvingSymlinksInPath()
        _ = try FileIdentity.regularFile(source, what: "disk image")
        let folder = cache.cloudImages
        let destination = folder.appendingPathComponent(image.file)
        guard destination.deletingLastPathComponent().standardizedFileURL.path == folder.standardizedFileURL.path else {
            throw KMatrixError(.invalidInput, "image file \(InputRules.quoted(image.file)) would leave \(folder.path)")
        }
        let staging = folder.appendingPathComponent(".\(image.file).\(getpid()).new")
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try? FileManager.default.removeItem(at: staging)
            try FileCopy.copy(source, to: staging)
        } catch {
            try? FileManager.default.removeItem(at: staging)
            throw KMatrixError.from(error, whileDoing: "copying \(source.path) into \(folder.path)")
        }
        let checked: CloudDisk
        do {
            checked = try await verify(staging, expecting: image.sha256, alwaysHash: true)
        } catch {
            try? FileManager.default.removeItem(at: staging)
            if let error = error as? KMatrixError, error.code == .image {
                throw KMatrixError(.invalidInput, error.message.replacingOccurrences(of: staging.path, with: source.path), cause: error)
            }
            throw error
        }
        // rename(2) replaces the old registration in one step, and never follows a link.
        guard rename(staging.path, destination.path) == 0 else {
            let problem = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: staging)
            throw KMatrixError(.io, "cannot register \(destination.path): \(problem)")
        }
        let registered = try FileIdentity.regularFile(destination, what: "disk image")
        verdicts.remember(.init(identity: registered, sha256: checked.sha256, diskFormat: checked.format, virtualSize: checked.virtualSize))
        return CloudDisk(url: destination, format: checked.format, sha256: checked.sha256, virtualSize: checked.virtualSize)
    }

    // MARK: pruning

    /// Removes what no run will ask for again: images built for `--kernel` files and unused for
    /// `unusedDays`, rootfs builds no image refers to any more, and the recipe's digests of files
    /// that are gone. Returns what went.
    public nonisolated func prune(unusedDays: Int) -> [String] {
        let manager = FileManager.default
        // Only real folders of this user are pruned: a `builds` that is a link would point the
        // removal at whatever it names (docs/architecture.md, "Cleanup").
        guard OwnedFolder.problem(cache.root) == nil, OwnedFolder.problem(cache.images) == nil else { return [] }
        let cutoff = Date().addingTimeInterval(-Double(unusedDays) * 86400)
        // Removes what was not touched since the cutoff (every use touches it); true if it went.
        func removeIfUnused(_ url: URL) -> Bool {
            let modified = (try? manager.attributesOfItem(atPath: url.path)[.modificationDate] as? Date) ?? Date()
            return modified < cutoff && (try? manager.removeItem(at: url)) != nil
        }
        var removed: [String] = []
        let images = (try? manager.contentsOfDirectory(atPath: cache.images.path)) ?? []
        // Images of --kernel files and of kernel sets' rows: made for a file or a package that
        // may never come back; touched at every use.
        for name in images where name.starts(with: "kernel-file-") || name.starts(with: "kernel-pkg-") {
            if removeIfUnused(cache.images.appendingPathComponent(name)) { removed.append("image \(name)") }
        }
        // Consumers' bundles and the initramfs they were appended to: touched at every use.
        for folder in [cache.consumers, cache.layeredInitramfs] where OwnedFolder.problem(folder) == nil {
            let names = (try? manager.contentsOfDirectory(atPath: folder.path)) ?? []
            for name in names where !name.hasSuffix(".lock") || !names.contains(String(name.dropLast(5))) {
                guard removeIfUnused(folder.appendingPathComponent(name)), !name.hasSuffix(".lock") else { continue }
                removed.append(folder == cache.consumers ? "consumer bundle \(name)" : "initramfs with consumers \(name)")
                // The recipe's lock beside a bundle goes with it.
                try? manager.removeItem(at: folder.appendingPathComponent(name + ".lock"))
            }
        }
        // Downloaded kernel packages: a kernel set's are touched whenever their row is built, and
        // any of them comes back from the archive when asked for again.
        if OwnedFolder.problem(cache.debs) == nil {
            for name in (try? manager.contentsOfDirectory(atPath: cache.debs.path)) ?? [] where name.hasSuffix(".deb") {
                guard removeIfUnused(cache.debs.appendingPathComponent(name)) else { continue }
                try? manager.removeItem(at: cache.debs.appendingPathComponent(String(name.dropLast(4)) + ".meta"))
                removed.append("kernel package \(name.prefix(16))")
            }
        }
        var referenced: Set<String> = []
        var unreadable = false
        for name in (try? manager.contentsOfDirectory(atPath: cache.images.path)) ?? [] where name.starts(with: "kernel-") {
            let folder = cache.images.appendingPathComponent(name)
            if let manifest: KernelImageManifest = Self.manifest(in: folder) {
                referenced.insert(manifest.buildId)
                if let base = manifest.baseId { referenced.formUnion(["base-\(base)", "base-\(base).lock"]) }
            } else if manager.fileExists(atPath: folder.appendingPathComponent("manifest.json").path) {
                unreadable = true
            }
        }
        // A manifest this version cannot read may refer to any build: then none is an orphan.
        let builds = OwnedFolder.problem(cache.builds) == nil ? ((try? manager.contentsOfDirectory(atPath: cache.builds.path)) ?? []) : []
        for id in builds where !unreadable && !referenced.contains(id) && !id.starts(with: ".") {
            if (try? manager.removeItem(at: cache.builds.appendingPathComponent(id))) != nil { removed.append("rootfs build \(id.prefix(12))") }
        }
        let digests = OwnedFolder.problem(cache.recipeDigests) == nil ? ((try? manager.contentsOfDirectory(atPath: cache.recipeDigests.path)) ?? []) : []
        for entry in digests {
            let url = cache.recipeDigests.appendingPathComponent(entry)
            let line = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
            let fields = line.trimmingCharacters(in: .newlines).split(separator: " ", maxSplits: 2)
            // An entry is named by 32 hex digits; anything else (`<name>.<pid>`) is a write that
            // was interrupted, and an entry without its path is worthless either way.
            let named = entry.utf8.count == 32 && entry.allSatisfy(\.isHexDigit)
            let path = named && fields.count == 3 ? String(fields[2]) : nil
            if path.map({ !manager.fileExists(atPath: $0) }) ?? true, (try? manager.removeItem(at: url)) != nil {
                removed.append("digest of \(path ?? entry)")
            }
        }
        return removed
    }
}
