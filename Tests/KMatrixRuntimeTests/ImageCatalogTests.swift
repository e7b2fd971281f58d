import Foundation
import Synchronization
import Testing
import KMatrixCore
import KMatrixTestSupport
@testable import KMatrixRuntime

struct ImageCatalogTests {
    /// A copy, not a link: the download's owner can change the download, not what kmatrix boots.
    @Test func registrationCopiesACheckedImageIntoTheImageFolderOnly() async throws {
        let world = try LauncherWorld()
        defer { world.root.remove() }
        var bytes = [UInt8](repeating: 7, count: 2048)
        bytes[510] = 0x55
        bytes[511] = 0xAA
        let download = try world.root.file("downloads/rhel.img", bytes: bytes)
        let disk = try await world.catalog.register(CloudImage(file: "rhel-7.9.img", user: "cloud-user"), from: download)
        #expect(disk.url == world.cache.cloudImages.appendingPathComponent("rhel-7.9.img"))
        #expect(disk.sha256 == FileDigests.sha256(of: Data(bytes)))
        #expect(FileManager.default.contentsEqual(atPath: disk.url.path, andPath: download.path))
        let registered = try FileIdentity.regularFile(disk.url, what: "x"), original = try FileIdentity.regularFile(download, what: "x")
        #expect(registered.inode != original.inode)
        try Data([UInt8](repeating: 9, count: 2048)).write(to: download)
        #expect(try Data(contentsOf: disk.url) == Data(bytes))
    }

    @Test func aPathAsFileNameIsRefusedAndNothingOutsideIsTouched() async throws {
        let world = try LauncherWorld()
        defer { world.root.remove() }
        let victim = try world.root.file("victim", "keep me")
        let download = try world.registerDisk("ok.img")
        await #expect(throws: KMatrixError.self) {
            _ = try await world.catalog.register(CloudImage(file: "../../victim", user: "cloud-user"), from: download)
        }
        #expect(try String(contentsOf: victim, encoding: .utf8) == "keep me")
    }

    @Test func randomBytesAreNotADiskImage() async throws {
        let world = try LauncherWorld()
        defer { world.root.remove() }
        let noise = try world.root.file("noise.img", bytes: (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
        let error = await #expect(throws: KMatrixError.self) {
            _ = try await world.catalog.register(CloudImage(file: "noise.img", user: "cloud-user"), from: noise)
        }
        #expect(error?.code == .invalidInput)
        #expect(error?.message.contains("no MBR or GPT partition table") == true)
        #expect(!FileManager.default.fileExists(atPath: world.cache.cloudImages.appendingPathComponent("noise.img").path))
    }

    @Test func aDeviceIsRefusedBeforeAnythingReadsIt() async throws {
        let world = try LauncherWorld()
        defer { world.root.remove() }
        let error = await #expect(throws: KMatrixError.self) {
            _ = try await world.catalog.register(CloudImage(file: "zero.img", user: "cloud-user"), from: URL(fileURLWithPath: "/dev/zero"))
        }
        #expect(error?.message.contains("is a device, not a regular file") == true)
        #expect(world.commands.calls(of: "qemu-img").isEmpty)
        await #expect(throws: KMatrixError.self) { _ = try await FileDigests().sha256(of: URL(fileURLWithPath: "/dev/zero")) }
    }

    @Test func anImageWithABackingFileIsRefused() async throws {
        let world = try LauncherWorld()
        let commands = FakeCommands()
        commands.on("qemu-img", containing: "info") { _ in .ok(#"{"format": "qcow2", "backing-filename": "/etc/shadow"}"#) }
        defer { world.root.remove() }
        let disk = try world.registerDisk("layered.qcow2")
        let error = await #expect(throws: KMatrixError.self) { _ = try await DiskInspector(commands: commands).validate(disk) }
        #expect(error?.message.contains("backing file") == true)
    }

    @Test func aCheckedImageIsNotCheckedOrHashedAgainUntilItChanges() async throws {
        let world = try LauncherWorld()
        defer { world.root.remove() }
        let disk = try world.registerDisk("vendor.img")
        let sum = FileDigests.sha256(of: try Data(contentsOf: disk))
        let image = CloudImage(file: "vendor.img", sha256: sum, user: "cloud-user")
        _ = try await world.catalog.cloudDisk(image, guest: "vendor")
        _ = try await world.catalog.cloudDisk(image, guest: "vendor")
        #expect(world.commands.calls(of: "qemu-img").count == 1)
        // Touch it: the verdict no longer applies.
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: 10)], ofItemAtPath: disk.path)
        _ = try await world.catalog.cloudDisk(image, guest: "vendor")
        #expect(world.commands.calls(of: "qemu-img").count == 2)
    }

    @Test func aWrongChecksumIsAnImageError() async throws {
        let world = try LauncherWorld()
        defer { world.root.remove() }
        _ = try world.registerDisk("vendor.img")
        let error = await #expect(throws: KMatrixError.self) {
            _ = try await world.catalog.cloudDisk(CloudImage(file: "vendor.img", sha256: String(repeating: "0", count: 64), user: "u"), guest: "vendor")
        }
        #expect(error?.code == .image)
        #expect(error?.message.contains("expected \(String(repeating: "0", count: 64))") == true)
    }

    @Test func aFailedKernelBuildLeavesNoEmptyImageFolder() async throws {
        let world = try LauncherWorld()
        defer { world.root.remove() }
        let commands = FakeCommands()
        commands.on("bash") { call in
            if let index = call.arguments.firstIndex(of: "--out") {
                try FileManager.default.createDirectory(atPath: call.arguments[index + 1], withIntermediateDirectories: true)
            }
            return .failed(1, "kernel-rootfs: error: line 3: dpkg-deb failed")
        }
        let catalog = ImageCatalog(checkout: Checkout(root: world.root.url), cache: world.cache, commands: commands)
        var header = [UInt8](repeating: 0, count: 1024)
        header.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
        let bzImage = try world.root.file("bzImage", bytes: header)
        await #expect(throws: KMatrixError.self) { _ = try await catalog.kernelImage(.bzImage(path: bzImage.path, modules: nil), probe: world.probe) }
        let folders = (try? FileManager.default.contentsOfDirectory(atPath: world.cache.images.path)) ?? []
        #expect(folders.filter { $0.hasPrefix("kernel-file-") }.isEmpty)
    }

    /// gc's share of the image cache: old `--kernel` images, rootfs builds nothing refers to,
    /// and digests of files that are gone; what is in use stays.
    func left(_ folder: URL) -> Set<String> { Set((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []) }

    @Test func pruneRemovesOnlyWhatNoRunWillAskFor() throws {
        let world = try LauncherWorld()
        defer { world.root.remove() }
        let images = "cache/images/"
        _ = try world.root.file(images + "kernel-file-0ld/manifest.json", #"{"build_id": "b-old", "kernel_release": "6.1.0"}"#)
        _ = try world.root.file(images + "kernel-file-fresh/manifest.json", #"{"build_id": "b-fresh", "kernel_release": "6.1.0"}"#)
        _ = try world.root.file(images + "kernel-bookworm/manifest.json", #"{"build_id": "b-suite", "kernel_release": "6.1.0"}"#)
        let old = Date().addingTimeInterval(-31 * 86400)
        try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: world.cache.images.appendingPathComponent("kernel-file-0ld").path)
        try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: world.cache.images.appendingPathComponent("kernel-bookworm").path)
        for id in ["b-old", "b-fresh", "b-suite", "b-orphan"] { _ = try world.root.file("cache/builds/\(id)/manifest.json", "{}") }
        let kept = try world.root.file("kernel.deb", "deb")
        let live = String(repeating: "a", count: 32), dead = String(repeating: "b", count: 32)
        _ = try world.root.file("cache/digests/\(live)", "1:2:3:4:5 \(String(repeating: "c", count: 64)) \(kept.path)\n")
        _ = try world.root.file("cache/digests/\(dead)", "1:2:3:4:5 \(String(repeating: "c", count: 64)) \(world.root.url.path)/gone dir/k.deb\n")
        _ = try world.root.file("cache/digests/\(live).4242", "1:2:3:4:5 \(String(repeating: "c", count: 64)) \(kept.path)\n")
        for name in ["consumers/agent-old/manifest.json", "consumers/agent-new/manifest.json", "initrd-layers/0ld.gz", "initrd-layers/new.gz"] {
            _ = try world.root.file(images + name, "x")
        }
        for name in ["consumers/agent-old", "initrd-layers/0ld.gz"] {
            try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: world.cache.images.appendingPathComponent(name).path)
        }
        // A kernel set's rows: their images, their downloaded packages, and the shared userspace
        // a kept row still refers to.
        _ = try world.root.file(images + "kernel-pkg-0ld/manifest.json", #"{"build_id": "b-pkg-old", "kernel_release": "6.1.0", "base_id": "u1"}"#)
        _ = try world.root.file(images + "kernel-pkg-new/manifest.json", #"{"build_id": "b-pkg-new", "kernel_release": "6.1.0", "base_id": "u2"}"#)
        try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: world.cache.images.appendingPathComponent("kernel-pkg-0ld").path)
        for id in ["b-pkg-old", "b-pkg-new", "base-u1", "base-u2"] { _ = try world.root.file("cache/builds/\(id)/manifest.json", "{}") }
        let oldDeb = String(repeating: "d", count: 64), newDeb = String(repeating: "e", count: 64)
        for name in [oldDeb, newDeb] {
            _ = try world.root.file("cache/debs/\(name).deb", "deb")
            _ = try world.root.file("cache/debs/\(name).meta", "package=x")
        }
        try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: world.cache.root.appendingPathComponent("debs/\(oldDeb).deb").path)

        let removed = world.catalog.prune(unusedDays: 30)
        #expect(Set(removed) == ["image kernel-file-0ld", "rootfs build b-old", "rootfs build b-orphan",
                                 "digest of \(world.root.url.path)/gone dir/k.deb", "digest of \(live).4242",
                                 "consumer bundle agent-old", "initramfs with consumers 0ld.gz",
                                 "image kernel-pkg-0ld", "rootfs build b-pkg-old", "rootfs build base-u1", "kernel package \(oldDeb.prefix(16))"])
        #expect(left(world.cache.root.appendingPathComponent("debs")) == ["\(newDeb).deb", "\(newDeb).meta"])
        #expect(left(world.cache.consumers) == ["agent-new"])
        #expect(left(world.cache.layeredInitramfs) == ["new.gz"])
        #expect(left(world.cache.images) == ["kernel-file-fresh", "kernel-bookworm", "kernel-pkg-new", "consumers", "initrd-layers"])
        #expect(left(world.cache.builds) == ["b-fresh", "b-suite", "b-pkg-new", "base-u2"])
        #expect(left(world.cache.recipeDigests) == [live])
    }

    @Test func aManifestPruneCannotReadKeepsEveryBuild() throws {
        let world = try LauncherWorld()
        defer { world.root.remove() }
        _ = try world.root.file("cache/images/kernel-file-new/manifest.json", #"{"build_id": "b-new", "format": 2}"#)
        _ = try world.root.file("cache/builds/b-new/manifest.json", "{}")
        #expect(world.catalog.prune(unusedDays: 30).isEmpty)
        #expect(FileManager.default.fileExists(atPath: world.cache.builds.appendingPathComponent("b-new").path))
    }

    @Test func everyRecipeTheMatrixAcceptsHasItsScript() throws {
        let images = CLIPackage.root.appendingPathComponent("images")
        for script in Recipes.all.map(\.script) + [Recipes.rootfs, Recipes.consumer] {
            #expect(FileManager.default.isReadableFile(atPath: images.appendingPathComponent(script).path), "\(script)")
        }
        #expect(try MatrixParser.parse("guests:\n  - { name: l, image: { kind: kernel, recipe: legacy-failopen } }\n", file: "m").guests.count == 1)
    }
}

struct ResultStoreTests {
    func cell(_ guest: String) -> CellResult {
        CellResult(guest: guest, scenario: "failopen-socket-overflow", kernel: "6.1.0", outcome: .reinjected, expected: .reinjected, reason: "ok")
    }

    func store(_ directory: URL) -> ResultStore {
        ResultStore(directory: directory, scenarios: ["failopen-socket-overflow"],
                    metadata: RunMetadataSource(runID: "r", started: Date(), matrix: "m", versions: nil, accelerator: nil), logger: .silent)
    }

    @Test func resultsAreSavedAfterEveryGuestAndReportsAtTheEnd() async throws {
        let directory = try TemporaryDirectory("store")
        defer { directory.remove() }
        let store = store(directory.url)
        await store.add([cell("a")])
        let partial = try RunResult.decode(Data(contentsOf: directory.url.appendingPathComponent("results.json")))
        #expect(partial.cells.map(\.guest) == ["a"])
        #expect(!FileManager.default.fileExists(atPath: directory.url.appendingPathComponent("matrix.md").path))
        let final = try await store.finish([cell("a"), cell("b")])
        #expect(final.guests == ["a", "b"])
        #expect(directory.listing() == ["matrix.md", "report.html", "results.json", "results.xml"])
    }

    @Test func aFailedWriteIsReportedNotSwallowed() async throws {
        let directory = try TemporaryDirectory("store")
        defer { directory.remove() }
        let blocker = try directory.file("not-a-directory", "x")
        let store = store(blocker)
        await store.add([cell("a")])
        let error = await #expect(throws: KMatrixError.self) { try await store.finish([cell("a")]) }
        #expect(error?.code == .io)
        #expect(error?.message.contains("not-a-directory") == true)
    }
}

enum CLIPackage {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}

/// A kernel set's row whose package Debian's pool no longer serves (the recipe's exit 5) is
/// `skipped` with why, never an error; the recipe is given the pinned package, nothing else.
struct ArchiveKernelImageTests {
    @Test func aPackageGoneFromThePoolMakesTheRowSkipped() async throws {
        let root = try TemporaryDirectory("archive-kernel")
        defer { root.remove() }
        let commands = FakeCommands()
        commands.on("bash", containing: "--pin") { _ in .failed(5, "kernel-rootfs: the bullseye-security pool no longer has it (HTTP 404)") }
        let catalog = ImageCatalog(checkout: Checkout(root: root.url.appendingPathComponent("checkout")),
                                   cache: CacheLayout(root: root.url.appendingPathComponent("cache")), commands: commands)
        let kernel = ArchiveKernel(release: "5.10.0-44-cloud-amd64", flavour: .cloud, suite: "bullseye-security", package: "linux-image-5.10.0-44-cloud-amd64",
                                   version: "5.10.257-1", sha256: String(repeating: "5", count: 64),
                                   pool: "pool/updates/main/l/linux-signed-amd64/linux-image-5.10.0-44-cloud-amd64_5.10.257-1_amd64.deb")
        let guest = GuestSpec(name: kernel.release, image: .kernel(.archive(kernel)), nominalKernel: kernel.release)
        #expect(await catalog.archiveUnavailability(of: guest) == nil)
        await #expect(throws: KMatrixError.self) { try await catalog.kernelImage(.archive(kernel), probe: root.url.appendingPathComponent("probe")) }
        let skipped = try #require(await catalog.archiveUnavailability(of: guest))
        #expect(skipped.kind == .imageMissing)
        #expect(skipped.message == "Debian's bullseye-security index lists linux-image-5.10.0-44-cloud-amd64 5.10.257-1 but its pool no longer has the file (HTTP 404)")
        let call = try #require(commands.calls(of: "bash").first)
        #expect(call.arguments.contains("bullseye-security:\(kernel.pool)@\(kernel.sha256)"))
        #expect(!FileManager.default.fileExists(atPath: root.url.appendingPathComponent("cache/images/kernel-pkg-5555555555555555").path))
    }
}
