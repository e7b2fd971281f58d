import Foundation
import KMatrixCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Boots `kernel` and `cloud` guests through a `Hypervisor`, reaches them over SSH and runs the
/// probe there. Everything a guest holds (domain, overlay, seed, SSH master) is released by
/// `shutdown`, and by the launcher itself when the launch fails half-way.
public struct VirtualMachineLauncher: GuestLauncher {
    let hypervisor: any Hypervisor
    let images: ImageStore
    let keys: RunKeys
    let accelerator: Accelerator
    let commands: any CommandRunner
    let scratch: URL

    /// Printed by our initramfs once dropbear listens (images/kernel-rootfs/init).
    static let readyMarker = "KMATRIX-READY"
    /// cloud-init's last line: "Cloud-init v. 20.4.1 finished at …".
    static let cloudInitFinished = " finished at "

    public init(hypervisor: any Hypervisor, images: ImageStore, keys: RunKeys, accelerator: Accelerator, commands: any CommandRunner, scratch: URL) {
        self.hypervisor = hypervisor
        self.images = images
        self.keys = keys
        self.accelerator = accelerator
        self.commands = commands
        self.scratch = scratch
    }

    public func unavailableReason(_ guest: GuestSpec, context: RunContext) async -> String? {
        Self.missingImageReason(guest, images: images)
    }

    /// Why a guest's image is not on this machine (with how to get it), or nil when it is.
    public static func missingImageReason(_ guest: GuestSpec, images: ImageStore) -> String? {
        switch guest.image {
        case .cloud(let image) where !images.cloudImagePresent(image):
            return ImageStore.missingCloudImage(image, expectedAt: images.cloudDirectory.appendingPathComponent(image.file))
        case .kernel(let source) where source.files.contains(where: { !FileManager.default.fileExists(atPath: $0) }):
            return "kernel file \(source.files.filter { !FileManager.default.fileExists(atPath: $0) }.joined(separator: ", ")) does not exist"
        default:
            return nil
        }
    }

    public func launch(_ guest: GuestSpec, context: RunContext, progress: @escaping @Sendable (GuestPhase) -> Void) async throws -> any GuestSession {
        let memory = guest.memoryMiB ?? context.defaults.memoryMiB
        let console = context.consoleLog(for: guest.name)
        try FileManager.default.createDirectory(at: console.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? FileManager.default.removeItem(at: console)
        let port = try LoopbackPort.reserve()
        let domainName = "kmatrix-\(context.runID)-\(guest.name)"
        var cleanupFiles: [URL] = []

        let boot: MachineSpec.Boot
        var provenance = Provenance(accelerator: accelerator.rawValue)
        let user: String
        let ready: String
        let deployProbe: Bool
        switch guest.image {
        case .host:
            throw KMatrixError(.invalidInput, "the host guest does not boot a VM")
        case .kernel(let source):
            let image = try await withTimeout(.seconds(3600), what: "image build") { try await images.kernelImage(source, probe: context.probe) }
            let key = Data(try keys.publicKey().utf8).base64EncodedString()
            let cmdline = "console=ttyS0 panic=-1 quiet cryptomgr.notests acpi=noirq pci=nomsi kmatrix.sshkey=\(key)"
            boot = .kernel(kernel: image.kernel, initrd: image.initramfs, cmdline: cmdline)
            provenance.imageSha256 = image.kernelSha256
            provenance.rootfsBuildId = image.rootfsBuildID
            user = "root"
            ready = Self.readyMarker
            deployProbe = false
        case .cloud(let image):
            let base = try await images.cloudBase(image)
            if let expected = image.sha256 {
                let actual = FileDigest.sha256(of: base)
                guard actual == expected else {
                    throw KMatrixError(.image, "\(base.path) has sha256 \(actual ?? "unreadable"), expected \(expected): the download is corrupt or a different release")
                }
            }
            provenance.imageSha256 = image.sha256
            let directory = scratch.appendingPathComponent(guest.name)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            cleanupFiles.append(directory)
            let overlay = directory.appendingPathComponent("overlay.qcow2")
            let seed = directory.appendingPathComponent("seed.iso")
            do {
                try await CloudSeed.overlay(base: base, at: overlay, commands: commands)
                try await CloudSeed.write(to: seed, user: image.user, publicKey: try keys.publicKey(), instance: domainName, commands: commands)
            } catch {
                Self.remove(cleanupFiles)
                throw error
            }
            boot = .disk(overlay: overlay, seed: seed)
            user = image.user
            ready = Self.cloudInitFinished
            deployProbe = true
        }

        progress(.booting)
        let spec = MachineSpec(name: domainName, runID: context.runID, boot: boot, memoryMiB: memory, vcpus: guest.vcpus ?? context.defaults.vcpus,
                               sshPort: port, consoleLog: console, accelerator: accelerator)
        let machine: any VirtualMachine
        do {
            machine = try await withTimeout(.seconds(context.timeouts.boot), what: "domain start") { try await hypervisor.start(spec) }
        } catch {
            Self.remove(cleanupFiles)
            throw error
        }
        let log = ConsoleLog(url: console)
        let ssh = SSHClient(target: SSHTarget(port: port, user: user, keys: keys), commands: commands)
        var session = VirtualMachineSession(machine: machine, ssh: ssh, console: log, cleanupFiles: cleanupFiles,
                                            identity: GuestIdentity(kernel: "unknown", distro: "unknown"), provenance: provenance,
                                            probePath: "/usr/bin/kmatrix-probe", sudo: user != "root")
        do {
            progress(.waitingForReady)
            if deployProbe {
                do {
                    try await log.waitFor(ready, within: .seconds(context.timeouts.ready), what: "cloud-init's final message",
                                          silentHint: "the disk did not boot, or its bootloader and kernel do not log to the serial port ttyS0")
                } catch let error as KMatrixError where error.code == .boot {
                    let console = log.text()
                    guard console.contains("login:") && !console.contains("Cloud-init v. ") else { throw error }
                    throw KMatrixError(.boot, "the guest reached its login prompt but cloud-init never ran: the image has no cloud-init, "
                        + "or it does not read the NoCloud seed (a CD labelled cidata), so the run's SSH key was never installed")
                }
            } else {
                try await log.waitFor(ready, within: .seconds(context.timeouts.ready), what: "the rootfs ready marker")
            }
            session.missingFeatures = log.missingFeatures()
            if let nic = session.missingFeatures.first(where: { $0.hasPrefix("eth0") }) {
                throw KMatrixError(.boot, "the guest has no network interface, so SSH cannot reach it: the kernel lacks \(nic)"
                    + (session.missingFeatures.count > 1 ? "; it also lacks: \(session.missingFeatures.filter { $0 != nic }.joined(separator: ", "))" : ""))
            }
            try await ssh.waitUntilReachable(within: .seconds(context.timeouts.deploy)) { log.crashLine() }
            session.identity = try await Self.identity(ssh)
            if deployProbe {
                progress(.deploying)
                session.probePath = try await Self.deploy(probe: context.probe, over: ssh, timeout: .seconds(context.timeouts.deploy))
                try await Self.checkPrerequisites(ssh, sudo: session.sudo)
            }
            return session
        } catch {
            await Task { await session.shutdown() }.value
            throw error
        }
    }

    static func identity(_ ssh: SSHClient) async throws -> GuestIdentity {
        let result = try await ssh.run("uname -r; (. /etc/os-release 2>/dev/null && echo \"$PRETTY_NAME\") || echo 'kmatrix initramfs'", timeout: .seconds(30))
        let lines = result.stdoutText.split(separator: "\n").map { String($0).trimmingCharacters(in: .whitespaces) }
        guard let kernel = lines.first, !kernel.isEmpty else {
            throw KMatrixError(.ssh, "the guest did not report its kernel (uname -r printed nothing)")
        }
        return GuestIdentity(kernel: kernel, distro: lines.dropFirst().first ?? "unknown")
    }

    /// Dropbear and minimal images have no scp/sftp: stream the binary through `cat`.
    static func deploy(probe: URL, over ssh: SSHClient, timeout: Duration) async throws -> String {
        let data = try Data(contentsOf: probe)
        let path = "/tmp/kmatrix-probe"
        let result = try await ssh.run("cat > \(path).part && chmod 755 \(path).part && mv \(path).part \(path)", input: data, timeout: timeout)
        guard result.succeeded else { throw KMatrixError(.probe, "copying the probe failed: \(result.stderr)") }
        return path
    }

    /// What a distro guest must offer before a scenario can mean anything.
    static func checkPrerequisites(_ ssh: SSHClient, sudo: Bool) async throws {
        let prefix = sudo ? "sudo -n " : ""
        let sudoCheck = try await ssh.run("\(prefix)true", timeout: .seconds(30))
        guard sudoCheck.succeeded else {
            throw KMatrixError(.probe, "passwordless sudo does not work for the default user (\(sudoCheck.stderr.trimmingCharacters(in: .whitespacesAndNewlines))); cloud-init must grant it")
        }
        let tools = try await ssh.run("\(prefix)sh -c 'PATH=$PATH:/sbin:/usr/sbin; command -v iptables-legacy || command -v iptables || command -v iptables-nft || command -v nft'", timeout: .seconds(30))
        guard tools.succeeded else {
            throw KMatrixError(.probe, "the guest has neither iptables nor nft; install one in the image (RHEL 7: iptables, RHEL 8: iptables-nft or nftables)")
        }
    }

    static func remove(_ files: [URL]) {
        for file in files { try? FileManager.default.removeItem(at: file) }
    }
}

struct VirtualMachineSession: GuestSession {
    let machine: any VirtualMachine
    let ssh: SSHClient
    let console: ConsoleLog
    let cleanupFiles: [URL]
    var identity: GuestIdentity
    var provenance: Provenance
    var probePath: String
    let sudo: Bool
    var missingFeatures: [String] = []

    var consoleLog: URL? { console.url }

    func runProbe(_ arguments: [String], scenario: Scenario, timeout: Duration) async throws -> CommandResult {
        let command = (sudo ? "sudo -n " : "") + ([probePath] + arguments).joined(separator: " ")
        return try await ssh.run(command, timeout: timeout)
    }

    func crashLine() async -> String? { console.crashLine() }

    func shutdown() async {
        await ssh.closeMaster()
        try? await machine.destroy()
        VirtualMachineLauncher.remove(cleanupFiles)
    }
}

/// A free TCP port on 127.0.0.1 for a guest's SSH forward. The kernel picks it; a process-wide
/// set keeps two guests of one run from being handed the same number.
enum LoopbackPort {
    private static let handedOut = Mutex<Set<Int>>([])

    static func reserve() throws -> Int {
        for _ in 0..<20 {
            let port = try ask()
            let fresh = handedOut.withLock { $0.insert(port).inserted }
            if fresh { return port }
        }
        throw KMatrixError(.boot, "could not find a free port on 127.0.0.1")
    }

    private static func ask() throws -> Int {
        let socketDescriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socketDescriptor >= 0 else { throw KMatrixError(.boot, "socket() failed: errno \(errno)") }
        defer { close(socketDescriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(socketDescriptor, socketAddress, length) == 0 && getsockname(socketDescriptor, socketAddress, &length) == 0
            }
        }
        guard bound else { throw KMatrixError(.boot, "cannot bind a port on 127.0.0.1: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Copy-on-write overlays and NoCloud seeds for cloud guests.
enum CloudSeed {
    static func overlay(base: URL, at overlay: URL, commands: any CommandRunner) async throws {
        let info = try await commands.run("qemu-img", ["info", "--output=json", base.path], timeout: .seconds(60))
        guard info.succeeded, let object = try? JSONSerialization.jsonObject(with: info.stdout) as? [String: Any],
              let format = object["format"] as? String else {
            throw KMatrixError(.image, "\(base.path) is not a readable disk image: \(info.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        let check = format == "qcow2" ? try await commands.run("qemu-img", ["check", "-q", base.path], timeout: .seconds(300)) : nil
        if let check, !check.succeeded {
            throw KMatrixError(.image, "\(base.path) is corrupt or truncated (qemu-img check: \(check.stderr.trimmingCharacters(in: .whitespacesAndNewlines)))")
        }
        // The base is only ever read: every write of the guest lands in the overlay.
        try await commands.checked("qemu-img", ["create", "-q", "-f", "qcow2", "-F", format, "-b", base.path, overlay.path], timeout: .seconds(60))
    }

    static func write(to seed: URL, user: String, publicKey: String, instance: String, commands: any CommandRunner) async throws {
        let directory = seed.deletingLastPathComponent().appendingPathComponent("seed")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let userData = """
        #cloud-config
        users:
          - default
        system_info:
          default_user:
            name: \(user)
        ssh_authorized_keys:
          - \(publicKey)
        manage_etc_hosts: true
        ssh_pwauth: false

        """
        let metaData = "instance-id: \(instance)\nlocal-hostname: \(instance.prefix(60))\n"
        try Data(userData.utf8).write(to: directory.appendingPathComponent("user-data"))
        try Data(metaData.utf8).write(to: directory.appendingPathComponent("meta-data"))
        try await commands.checked("genisoimage", ["-quiet", "-output", seed.path, "-volid", "cidata", "-joliet", "-rock",
                                                    directory.appendingPathComponent("user-data").path,
                                                    directory.appendingPathComponent("meta-data").path], timeout: .seconds(60))
    }
}
