import Foundation
import KMatrixCore

/// The files a guest boots from, on this machine; the launcher places them on the hypervisor's
/// host (`GuestStorage`) and turns them into the domain's boot.
enum BootFiles: Sendable {
    /// A kernel and our initramfs, each with its content's sha256.
    case kernel(kernel: URL, kernelSha256: String, initrd: URL, initrdSha256: String, cmdline: String)
    /// A distribution disk (booted through an overlay, never written) and the run's NoCloud seed.
    case disk(base: CloudDisk, baseSha256: String, seed: URL)
}

/// What a boot plan hands the launcher: what to boot, what to record about the image, and the
/// local files to remove when the guest goes.
struct PreparedBoot: Sendable {
    var files: BootFiles
    var provenance: Provenance
    var cleanup: [URL]
    /// TCG translation-block cache for this kind of guest (nil: QEMU's default).
    var translationCacheMiB: Int?
}

/// How one kind of image becomes a reachable guest (docs/architecture.md, "Images"): the
/// launcher does the same steps for every kind, the plan says what each step means for it.
protocol BootPlan: Sendable {
    /// Who kmatrix logs in as.
    var user: String { get }
    /// Whether the probe is copied in over SSH (cloud images) or already in the image (ours).
    var deploysProbe: Bool { get }
    /// The probe's path inside the guest once it is there.
    var probePath: String { get }
    func prepare(_ guest: GuestSpec, context: RunContext, scratch: URL, domainName: String, keys: RunKeys) async throws -> PreparedBoot
    /// Waits until the console says SSH is worth trying; returns how long SSH may then take.
    func waitForConsole(_ console: ConsoleLog, context: RunContext) async throws -> Duration
    /// A better sentence for an SSH wait that ran out, when the console explains it.
    func explainUnreachable(_ error: KMatrixError, console: ConsoleLog) -> KMatrixError
}

extension BootPlan {
    func explainUnreachable(_ error: KMatrixError, console: ConsoleLog) -> KMatrixError { error }
}

/// A kernel booted directly with kmatrix's initramfs rootfs: the run's key on the kernel
/// command line, the probe in the image, root login, ready when /init prints its marker.
struct KernelBootPlan: BootPlan {
    let source: KernelSource
    let images: ImageCatalog

    /// Printed by our initramfs once dropbear listens (images/kernel-rootfs/init).
    static let readyMarker = "KMATRIX-READY"
    /// Saves seconds under TCG; `acpi=noirq` alone makes 5.10 and 6.1 WARN, `pci=nomsi` with it does not.
    static let commandLine = "console=ttyS0 panic=-1 quiet cryptomgr.notests acpi=noirq pci=nomsi"

    /// An initramfs guest runs little code: 32 MiB of translated code holds it (measured: no
    /// slower than QEMU's default), and keeps host RSS per guest low.
    static let translationCacheMiB: Int? = 32

    var user: String { "root" }
    var deploysProbe: Bool { false }
    var probePath: String { "/usr/bin/kmatrix-probe" }

    func prepare(_ guest: GuestSpec, context: RunContext, scratch: URL, domainName: String, keys: RunKeys) async throws -> PreparedBoot {
        let image = try await withTimeout(.seconds(3600), clock: context.clock, what: "building the image of \(guest.name)") {
            try await images.kernelImage(source, probe: context.probe)
        }
        // base64 keeps the key one token of the command line, whatever it holds.
        let key = Data(try keys.publicKey().utf8).base64EncodedString()
        var provenance = Provenance()
        provenance.imageSha256 = image.kernelSha256
        provenance.rootfsBuildId = image.rootfsBuildID
        var layers: [ConsumerBundle] = []
        for name in guest.consumers {
            guard let bundle = context.consumers[name] else { throw KMatrixError(.image, "consumer \(name) was not built for this run") }
            layers.append(bundle)
        }
        let initrd = try await images.layeredInitramfs(image, layers: layers)
        return PreparedBoot(files: .kernel(kernel: image.kernel, kernelSha256: image.bootKernelSha256, initrd: initrd.url,
                                           initrdSha256: initrd.sha256, cmdline: "\(Self.commandLine) kmatrix.sshkey=\(key)"),
                            provenance: provenance, cleanup: [], translationCacheMiB: Self.translationCacheMiB)
    }

    func waitForConsole(_ console: ConsoleLog, context: RunContext) async throws -> Duration {
        try await console.waitFor([Self.readyMarker], within: .seconds(context.timeouts.ready), what: "the rootfs ready marker")
        return .seconds(context.timeouts.deploy)
    }
}

/// A distribution disk booted by its own bootloader through a copy-on-write overlay (the base is
/// never written), with a NoCloud seed that installs the run's key for the default user.
struct CloudBootPlan: BootPlan {
    let image: CloudImage
    let images: ImageCatalog
    let commands: any CommandRunner

    /// A distro boot runs systemd, udev and cloud-init's Python: 32 MiB thrashes (a Debian 11
    /// disk took ~70 s to SSH against ~45 s with QEMU's default). 256 MiB is as fast as the
    /// default (median 49.3 s against 51.2 s over 4 interleaved boots) at 60 % of the host RSS
    /// (542 against 926 MiB peak for a 512 MiB guest, and SSH at 0.99× plain QEMU's time);
    /// README, "Benchmarks".
    static let translationCacheMiB: Int? = 256

    var user: String { image.user }
    var deploysProbe: Bool { true }
    var probePath: String { "/tmp/kmatrix-probe" }

    func prepare(_ guest: GuestSpec, context: RunContext, scratch: URL, domainName: String, keys: RunKeys) async throws -> PreparedBoot {
        let base = try await images.cloudDisk(image, guest: guest.name)
        var provenance = Provenance()
        provenance.imageSha256 = base.sha256 ?? image.sha256
        do {
            try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        } catch {
            throw KMatrixError.from(error, whileDoing: "creating \(scratch.path)")
        }
        let seed = scratch.appendingPathComponent("seed.iso")
        let baseSha256: String
        do {
            baseSha256 = try await images.digest(of: base)
            try await CloudSeed.write(to: seed, user: image.user, publicKey: try keys.publicKey(), instance: domainName, commands: commands)
        } catch {
            try? FileManager.default.removeItem(at: scratch)
            throw error
        }
        return PreparedBoot(files: .disk(base: base, baseSha256: baseSha256, seed: seed), provenance: provenance, cleanup: [scratch],
                            translationCacheMiB: Self.translationCacheMiB)
    }

    func waitForConsole(_ console: ConsoleLog, context: RunContext) async throws -> Duration {
        .seconds(context.timeouts.ready)
    }

    func explainUnreachable(_ error: KMatrixError, console: ConsoleLog) -> KMatrixError {
        let text = console.text()
        if text.isEmpty {
            return KMatrixError(.boot, "\(error.message); the console stayed empty: the disk did not boot, or its bootloader and kernel do not log to the serial port ttyS0", cause: error)
        }
        if text.contains("login:") && !text.contains("Cloud-init v. ") {
            return KMatrixError(.boot, "the guest reached its login prompt but cloud-init never ran: the image has no cloud-init, "
                + "or it does not read the NoCloud seed (a disk labelled cidata), so the run's SSH key was never installed", cause: error)
        }
        let tail = console.tail(lines: 6).replacingOccurrences(of: "\n", with: " ⏎ ")
        return KMatrixError(error.code, "\(error.message); console tail: \(tail)", cause: error)
    }
}
