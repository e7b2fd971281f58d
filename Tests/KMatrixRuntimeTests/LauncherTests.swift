import Foundation
import Testing
import KMatrixCore
import KMatrixTestSupport
@testable import KMatrixRuntime

/// A world for the VM launcher: a temporary cache and checkout, a fake hypervisor, and fake
/// commands that play the recipes, qemu-img, genisoimage and ssh.
struct LauncherWorld {
    let root: TemporaryDirectory
    let commands = FakeCommands()
    let cache: CacheLayout
    let catalog: ImageCatalog
    let probe: URL
    let keys: RunKeys

    init() throws {
        root = try TemporaryDirectory("launcher")
        cache = CacheLayout(root: root.url.appendingPathComponent("cache"))
        catalog = ImageCatalog(checkout: Checkout(root: root.url.appendingPathComponent("checkout")), cache: cache, commands: commands)
        probe = try root.file("probe", "#!/bin/sh\n")
        let keyDirectory = root.url.appendingPathComponent("keys")
        keys = RunKeys(directory: keyDirectory)
        _ = try root.file("keys/id_ed25519.pub", "ssh-ed25519 AAAAC3Nz kmatrix-test\n")
        // The kernel-rootfs recipe: writes its three outputs into --out.
        commands.on("bash") { call in
            guard let index = call.arguments.firstIndex(of: "--out") else { return .failed(2, "no --out") }
            let out = URL(fileURLWithPath: call.arguments[index + 1])
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            try Data("kernel".utf8).write(to: out.appendingPathComponent("vmlinuz"))
            try Data("initramfs".utf8).write(to: out.appendingPathComponent("initramfs.gz"))
            try Data(#"{"build_id": "b1d", "kernel_release": "6.1.0-57-cloud-amd64", "deb_sha256": "d3b"}"#.utf8)
                .write(to: out.appendingPathComponent("manifest.json"))
            return .ok()
        }
        commands.playSSHMasters()
        commands.on("qemu-img", containing: "info") { _ in .ok(#"{"format": "raw", "virtual-size": 1048576}"#) }
        commands.on("ssh", containing: "uname -r; (. /etc/os-release 2>/dev/null && echo \"$PRETTY_NAME\") || echo 'kmatrix initramfs'") { _ in
            .ok("6.1.0-57-cloud-amd64\nDebian GNU/Linux 11 (bullseye)\n")
        }
    }

    func context() -> RunContext {
        var defaults = Defaults()
        defaults.timeouts.ready = 5
        defaults.timeouts.deploy = 5
        return RunContext(runID: "run1", owner: .test, outputDirectory: root.url.appendingPathComponent("out"), probe: probe, defaults: defaults, ledger: UnrecordedRun(), clock: .continuous)
    }

    func launcher(_ hypervisor: FakeHypervisor) -> VirtualMachineLauncher {
        let scratch = root.url.appendingPathComponent("run")
        return VirtualMachineLauncher(hypervisor: hypervisor, images: catalog, keys: keys, accelerator: .tcg, commands: commands,
                                      versions: nil, scratch: { scratch.appendingPathComponent($0) }, awaitBanner: nil)
    }

    /// A raw disk with an MBR boot signature, registered under the cache's image folder.
    func registerDisk(_ name: String) throws -> URL {
        var bytes = [UInt8](repeating: 0, count: 4096)
        bytes[510] = 0x55
        bytes[511] = 0xAA
        return try root.file("cache/images/cloud/\(name)", bytes: bytes)
    }
}

struct LauncherTests {
    @Test func aKernelGuestBootsDirectlyWithTheKeyOnTheCommandLine() async throws {
        let world = try LauncherWorld()
        defer { world.root.remove() }
        let hypervisor = FakeHypervisor()
        let guest = GuestSpec(name: "debian-12-6.1", image: .kernel(.debian(suite: "bookworm")))
        let session = try await world.launcher(hypervisor).launch(guest, context: world.context()) { _ in }
        let spec = try #require(hypervisor.started.first)
        #expect(spec.name == "kmatrix-run1-debian-12-6.1")
        #expect(spec.memoryMiB == 256 && spec.vcpus == 1)
        guard case .kernel(let kernel, let initrd, let cmdline) = spec.boot else {
            Issue.record("a kernel guest must boot directly, got \(spec.boot)")
            return
        }
        #expect(kernel.lastPathComponent == "vmlinuz" && initrd.lastPathComponent == "initramfs.gz")
        #expect(cmdline.hasPrefix(KernelBootPlan.commandLine + " kmatrix.sshkey="))
        let key = try #require(Data(base64Encoded: String(cmdline.split(separator: "=").last ?? "")))
        #expect(String(decoding: key, as: UTF8.self) == "ssh-ed25519 AAAAC3Nz kmatrix-test")
        #expect(session.identity.kernel == "6.1.0-57-cloud-amd64")
        #expect(session.provenance.imageSha256 == "d3b" && session.provenance.rootfsBuildId == "b1d")
        // Root logs in; the probe is in the image, nothing is copied.
        let login = try #require(world.commands.calls(of: "ssh").first?.arguments)
        #expect(login[try #require(login.firstIndex(of: "-l")) + 1] == "root")
        #expect(world.commands.calls(of: "ssh").allSatisfy { $0.input == nil || $0.input?.isEmpty == true })
        await session.shutdown()
        #expect(hypervisor.destroyed == ["kmatrix-run1-debian-12-6.1"])
    }

    @Test func aCloudGuestBootsAnOverlayOfTheBaseWithASeedAndGetsTheProbeCopied() async throws {
        let world = try LauncherWorld()
        defer { world.root.remove() }
        let base = try world.registerDisk("vendor.img")
        let hypervisor = FakeHypervisor(storageCommands: world.commands) { _ in "Cloud-init v. 20.4.1 finished at Wed, 02 Dec 2026\r\n" }
        let guest = GuestSpec(name: "vendor", image: .cloud(CloudImage(file: "vendor.img", user: "cloud-user")), memoryMiB: 1024)
        let session = try await world.launcher(hypervisor).launch(guest, context: world.context()) { _ in }
        let spec = try #require(hypervisor.started.first)
        guard case .disk(let overlay, let seed) = spec.boot else {
            Issue.record("a cloud guest must boot from its disk, got \(spec.boot)")
            return
        }
        let scratch = world.root.url.appendingPathComponent("run/vendor")
        #expect(overlay == scratch.appendingPathComponent("overlay.qcow2"))
        #expect(seed == scratch.appendingPathComponent("seed.iso"))
        #expect(spec.memoryMiB == 1024)
        let create = try #require(world.commands.calls(of: "qemu-img").first { $0.arguments.first == "create" })
        #expect(create.arguments.contains(base.path) && create.arguments.contains("raw") && create.arguments.last == overlay.path)
        #expect(world.commands.calls(of: "genisoimage").count == 1)
        let userData = try String(contentsOf: scratch.appendingPathComponent("seed/user-data"), encoding: .utf8)
        #expect(userData.contains("ssh-ed25519 AAAAC3Nz kmatrix-test"))
        // The probe travels over SSH, and runs with sudo.
        let copy = try #require(world.commands.calls(of: "ssh").first { $0.input?.isEmpty == false })
        #expect(copy.input == (try Data(contentsOf: world.probe)))
        #expect(session.provenance.accelerator == "tcg")
        await session.shutdown()
        #expect(!FileManager.default.fileExists(atPath: scratch.path), "the overlay and seed go with the guest")
        #expect(FileManager.default.fileExists(atPath: base.path), "the base is never touched")
    }

    @Test func aKernelWithoutANetworkInterfaceIsNoNetworkAndTornDown() async throws {
        let world = try LauncherWorld()
        defer { world.root.remove() }
        let hypervisor = FakeHypervisor { _ in "KMATRIX-MISSING eth0 (CONFIG_VIRTIO_PCI and CONFIG_VIRTIO_NET)\r\nKMATRIX-READY\r\n" }
        let guest = GuestSpec(name: "bare", image: .kernel(.debian(suite: "bookworm")))
        let error = await #expect(throws: KMatrixError.self) {
            _ = try await world.launcher(hypervisor).launch(guest, context: world.context()) { _ in }
        }
        #expect(error?.code == .noNetwork)
        #expect(hypervisor.destroyed == ["kmatrix-run1-bare"])
        #expect(world.commands.calls(of: "ssh").isEmpty)
    }

    @Test func aFailedDomainStartRemovesTheOverlay() async throws {
        let world = try LauncherWorld()
        defer { world.root.remove() }
        _ = try world.registerDisk("vendor.img")
        let hypervisor = FakeHypervisor(startError: KMatrixError(.hypervisor, "starting domain failed: no space"))
        let guest = GuestSpec(name: "vendor", image: .cloud(CloudImage(file: "vendor.img", user: "cloud-user")))
        await #expect(throws: KMatrixError.self) { _ = try await world.launcher(hypervisor).launch(guest, context: world.context()) { _ in } }
        #expect(!FileManager.default.fileExists(atPath: world.root.url.appendingPathComponent("run/vendor").path))
    }

    @Test func anAbsentVendorImageIsASkipWithInstructions() async throws {
        let world = try LauncherWorld()
        defer { world.root.remove() }
        let guest = GuestSpec(name: "rhel-7.9", image: .cloud(CloudImage(file: "rhel.qcow2", user: "cloud-user", source: "the portal")))
        let failure = try #require(await world.launcher(FakeHypervisor()).unavailability(guest, context: world.context()))
        #expect(failure.kind == .imageMissing)
        #expect(failure.message.contains("download it from the portal, then run `kmatrix images add rhel-7.9 /path/to/rhel.qcow2`"))
    }
}

extension LauncherTests {
    /// The deploy round trip says what is missing by its exit code, and the guest is torn down.
    @Test func aGuestWithoutPasswordlessSudoIsADeployFailureThatSaysSo() async throws {
        let world = try LauncherWorld()
        defer { world.root.remove() }
        _ = try world.registerDisk("vendor.img")
        world.commands.on("ssh", where: { $0.input?.isEmpty == false }) { _ in .failed(91, "sudo: a password is required") }
        let hypervisor = FakeHypervisor { _ in "login: " }
        let guest = GuestSpec(name: "vendor", image: .cloud(CloudImage(file: "vendor.img", user: "cloud-user")))
        let error = await #expect(throws: KMatrixError.self) { _ = try await world.launcher(hypervisor).launch(guest, context: world.context()) { _ in } }
        #expect(error?.code == .probe)
        #expect(error?.message == "passwordless sudo does not work for the default user (sudo: a password is required); cloud-init must grant it")
        #expect(hypervisor.destroyed == ["kmatrix-run1-vendor"])
    }
}

/// The deploy round trip's shell text, run by a real shell with a stand-in `sudo` first on PATH.
struct DeployScriptTests {
    func deploy(sudo: String) async throws -> (Result<Void, KMatrixError>, URL) {
        let root = try TemporaryDirectory("deploy")
        let probe = try root.file("probe", "#!/bin/sh\necho probe\n")
        let bin = root.url.appendingPathComponent("bin")
        let sudoFile = try root.file("bin/sudo", sudo)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: sudoFile.path)
        let commands = FakeCommands()
        commands.on("ssh") { call in
            try await SystemCommandRunner(runMarker: nil, clock: .continuous).run("env", ["PATH=\(bin.path):/usr/bin:/bin", "sh", "-c", call.arguments.last ?? ""],
                                                input: call.input, timeout: .seconds(10))
        }
        var target = SSHTarget(port: 40222, user: "cloud-user", keys: RunKeys(directory: root.url.appendingPathComponent(String(repeating: "k", count: 120))))
        target.awaitBanner = nil
        let installed = root.url.appendingPathComponent("kmatrix-probe")
        do {
            try await VirtualMachineLauncher.deploy(probe: probe, to: installed.path, sudo: true, over: SSHClient(target: target, commands: commands, clock: .continuous),
                                                    timeout: .seconds(10))
            return (.success(()), installed)
        } catch let error as KMatrixError {
            return (.failure(error), installed)
        }
    }

    @Test func withSudoTheProbeIsInstalledExecutable() async throws {
        let (result, installed) = try await deploy(sudo: "#!/bin/sh\n[ \"$1\" = -n ] && shift\nexec \"$@\"\n")
        defer { try? FileManager.default.removeItem(at: installed.deletingLastPathComponent()) }
        if case .failure(let error) = result { Issue.record("deploy failed: \(error.message)") }
        #expect(FileManager.default.isExecutableFile(atPath: installed.path))
        #expect(!FileManager.default.fileExists(atPath: installed.path + ".part"))
    }

    @Test func aSudoThatAsksForAPasswordIsNamedAsSuch() async throws {
        let (result, installed) = try await deploy(sudo: "#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n")
        defer { try? FileManager.default.removeItem(at: installed.deletingLastPathComponent()) }
        guard case .failure(let error) = result else {
            Issue.record("a guest without passwordless sudo must not deploy")
            return
        }
        #expect(error.message == "passwordless sudo does not work for the default user (sudo: a password is required); cloud-init must grant it")
    }
}
