import Foundation
import KMatrixCore

/// Boots `kernel` and `cloud` guests through a `Hypervisor`, reaches them over SSH and runs the
/// probe there. The steps are the same for every image kind; a `BootPlan` says what each means.
/// Everything a guest holds (domain, overlay, seed, SSH master) is released by `shutdown`, and
/// by the launcher itself when the launch fails half-way.
public struct VirtualMachineLauncher: GuestLauncher {
    let hypervisor: any Hypervisor
    let images: ImageCatalog
    let keys: RunKeys
    let accelerator: Accelerator
    let commands: any CommandRunner
    /// A guest's own scratch folder inside the run's folder.
    let scratch: @Sendable (String) -> URL
    /// Waits for sshd's banner on a local forward (nil: try SSH without looking first).
    let awaitBanner: (@Sendable (Int, Duration) async -> Bool)?
    let versions: HypervisorVersions?

    public init(hypervisor: any Hypervisor, images: ImageCatalog, keys: RunKeys, accelerator: Accelerator, commands: any CommandRunner,
                versions: HypervisorVersions?, scratch: @escaping @Sendable (String) -> URL,
                awaitBanner: (@Sendable (Int, Duration) async -> Bool)?) {
        self.hypervisor = hypervisor
        self.images = images
        self.keys = keys
        self.accelerator = accelerator
        self.commands = commands
        self.scratch = scratch
        self.awaitBanner = awaitBanner
        self.versions = versions
    }

    public func unavailability(_ guest: GuestSpec, context: RunContext) async -> CellFailure? {
        if let missing = images.unavailability(of: guest) { return missing }
        return await images.archiveUnavailability(of: guest)
    }

    func plan(for guest: GuestSpec) throws -> any BootPlan {
        switch guest.image {
        case .host: throw KMatrixError(.invalidInput, "the host guest does not boot a VM")
        case .kernel(let source): KernelBootPlan(source: source, images: images)
        case .cloud(let image): CloudBootPlan(image: image, images: images, commands: commands)
        }
    }

    public func launch(_ guest: GuestSpec, context: RunContext, progress: @escaping @Sendable (GuestPhase) -> Void) async throws -> any GuestSession {
        let plan = try plan(for: guest)
        let console = context.consoleLog(for: guest.name)
        do {
            try FileManager.default.createDirectory(at: console.deletingLastPathComponent(), withIntermediateDirectories: true)
        } catch {
            throw KMatrixError.from(error, whileDoing: "creating \(console.deletingLastPathComponent().path)")
        }
        try? FileManager.default.removeItem(at: console)
        let domainName = "kmatrix-\(context.runID)-\(guest.name)"
        let prepared = try await plan.prepare(guest, context: context, scratch: scratch(guest.name), domainName: domainName, keys: keys)
        var provenance = prepared.provenance
        provenance.accelerator = accelerator.rawValue

        progress(.booting)
        let storage = hypervisor.storage(runID: context.runID)
        var hostFiles: [URL] = []
        var localFiles = prepared.cleanup
        var port = 0
        let machine: any VirtualMachine
        let channel: any ConsoleChannel
        do {
            let boot: MachineSpec.Boot
            switch prepared.files {
            case let .kernel(kernel, kernelSha256, initrd, initrdSha256, cmdline):
                boot = .kernel(kernel: try await storage.place(kernel, key: kernelSha256),
                               initrd: try await storage.place(initrd, key: initrdSha256), cmdline: cmdline)
            case let .disk(base, baseSha256, seed):
                let hostBase = try await storage.place(base.url, key: baseSha256)
                let hostSeed = try await storage.placeForRun(seed, name: "\(guest.name)-seed.iso")
                if hostSeed != seed { hostFiles.append(hostSeed) }
                let scratchFolder = scratch(guest.name)
                // The base is only ever read: every write of the guest lands in the overlay.
                let overlay = try await storage.overlay(of: hostBase, format: base.format, virtualSize: base.virtualSize,
                                                        name: "\(guest.name)-overlay.qcow2", localScratch: scratchFolder)
                if overlay.deletingLastPathComponent() != scratchFolder { hostFiles.append(overlay) }
                boot = .disk(overlay: overlay, seed: hostSeed)
            }
            channel = try await storage.console(name: "\(guest.name).log", local: console)
            if channel.hostPath != console { hostFiles.append(channel.hostPath) }
            machine = try await start(boot: boot, guest: guest, context: context, domainName: domainName, console: channel.hostPath,
                                      translationCacheMiB: prepared.translationCacheMiB, port: &port)
            await channel.start()
            if let definition = await machine.definition() {
                // What exactly was booted, with the results: domains/<guest>.xml.
                let folder = context.outputDirectory.appendingPathComponent("domains")
                try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                try? Data(definition.utf8).write(to: folder.appendingPathComponent("\(guest.name).xml"))
            }
        } catch {
            await storage.release(hostFiles)
            Self.remove(localFiles)
            if port != 0 { LoopbackPort.release(port) }
            throw error
        }
        localFiles += []
        let log = ConsoleLog(url: console, clock: context.clock, channelFailure: { [channel] in channel.failure() },
                             machineStopped: { await machine.stopped() })
        var target = SSHTarget(port: port, user: plan.user, keys: keys)
        target.jump = hypervisor.jump
        target.awaitBanner = hypervisor.jump == nil ? awaitBanner : nil
        let ssh = SSHClient(target: target, commands: commands, clock: context.clock)
        provenance.host = hypervisor.hostName
        provenance.qemu = versions?.qemu
        provenance.libvirt = versions?.libvirt
        var session = VirtualMachineSession(machine: machine, ssh: ssh, console: log, channel: channel, storage: storage, hostFiles: hostFiles,
                                            cleanupFiles: localFiles, port: port,
                                            identity: GuestIdentity(kernel: "unknown", distro: "unknown"), provenance: provenance,
                                            probePath: plan.probePath, sudo: plan.user != "root",
                                            consumerPlacement: guest.consumers.isEmpty ? nil : .inGuest(guest.consumers))
        do {
            progress(.waitingForReady)
            let reachableWithin = try await plan.waitForConsole(log, context: context)
            session.missingFeatures = log.missingFeatures()
            if session.missingFeatures.contains(where: { $0.id == MissingFeature.networkInterface }) {
                throw KMatrixError(.noNetwork, "the guest has no network interface, so SSH cannot reach it")
            }
            let first: CommandResult
            do {
                first = try await ssh.waitUntilReachable(within: reachableWithin, probe: Self.identityCommand,
                                                         stopped: log.machineStopped) { log.crashLine() }
            } catch let error as KMatrixError where error.code == .ssh {
                throw plan.explainUnreachable(error, console: log)
            }
            session.identity = try Self.identity(from: first)
            if plan.deploysProbe {
                progress(.deploying)
                let sudo = session.sudo
                try await Self.settling(clock: context.clock) {
                    try await Self.deploy(probe: context.probe, to: plan.probePath, sudo: sudo, over: ssh, timeout: .seconds(context.timeouts.deploy))
                }
                // Kernel guests carry their consumers in the initramfs; a distro disk gets them now.
                for name in guest.consumers {
                    guard let bundle = context.consumers[name] else { throw KMatrixError(.probe, "consumer \(name) was not built for this run") }
                    try await Self.settling(clock: context.clock) {
                        try await Self.deploy(consumer: bundle, sudo: sudo, over: ssh, timeout: .seconds(context.timeouts.deploy))
                    }
                }
            }
            return session
        } catch {
            await Task { await session.shutdown() }.value
            throw error
        }
    }

    /// Starts the domain with an SSH forward port. This machine can ask its own kernel for a free
    /// port; a remote host's cannot be seen from here, so a random one is tried and, should it be
    /// taken there (the domain fails to start), another.
    func start(boot: MachineSpec.Boot, guest: GuestSpec, context: RunContext, domainName: String, console: URL, translationCacheMiB: Int?,
               port: inout Int) async throws -> any VirtualMachine {
        let attempts = hypervisor.jump == nil ? 1 : 4
        var lastError: (any Error)?
        for _ in 0..<attempts {
            port = hypervisor.jump == nil ? try LoopbackPort.reserve() : Int.random(in: 20000...60999)
            let spec = MachineSpec(name: domainName, runID: context.runID, owner: context.owner, boot: boot, memoryMiB: guest.memoryMiB ?? context.defaults.memoryMiB,
                                   vcpus: guest.vcpus ?? context.defaults.vcpus, sshPort: port, consoleLog: console, accelerator: accelerator,
                                   translationCacheMiB: translationCacheMiB, cpuModel: guest.consumers.isEmpty ? nil : Self.consumerCPUModel)
            let hypervisor = self.hypervisor
            do {
                return try await withTimeout(.seconds(context.timeouts.boot), clock: context.clock, what: "the domain start") {
                    try await hypervisor.start(spec)
                }
            } catch let error as KMatrixError where error.code == .hypervisor {
                lastError = error
                if hypervisor.jump == nil { LoopbackPort.release(port) }
            }
        }
        throw lastError ?? KMatrixError(.boot, "the domain did not start")
    }

    /// A distro guest that just became reachable may still restart its sshd (a service or
    /// cloud-init reconfiguring it): a connection failure during setup is tried twice more.
    static func settling<T: Sendable>(clock: WaitClock, _ step: @Sendable () async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            do {
                return try await step()
            } catch let error as KMatrixError where error.code == .ssh && attempt < 2 {
                attempt += 1
                try? await clock.sleep(for: .seconds(1))
            }
        }
    }

    /// The guest's kernel and distribution: the first command kmatrix runs in every guest.
    static let identityCommand = "uname -r; (. /etc/os-release 2>/dev/null && echo \"$PRETTY_NAME\") || echo 'kmatrix initramfs'"

    static func identity(from result: CommandResult) throws -> GuestIdentity {
        let lines = result.stdoutText.split(whereSeparator: \.isNewline).map { String($0).trimmingCharacters(in: .whitespaces) }
        guard let kernel = lines.first, InputRules.releaseProblem(kernel) == nil else {
            throw KMatrixError(.ssh, "the guest did not report a kernel release (uname -r printed \(InputRules.quoted(lines.first ?? "")))")
        }
        let distro = lines.dropFirst().first.map { String($0.unicodeScalars.filter { !InputRules.isControl($0) }.prefix(120).map(Character.init)) }
        return GuestIdentity(kernel: kernel, distro: distro ?? "unknown")
    }

    /// Exit codes of the deploy command, one per thing that can be missing.
    enum DeployStatus: Int32 {
        case copyFailed = 90
        case noSudo = 91
        case noFirewall = 92
    }

    /// Copies the probe in and checks what a distro guest must offer before a scenario can mean
    /// anything (passwordless sudo, iptables or nft), in one SSH round trip: each costs about
    /// half a second under TCG. Dropbear and minimal images have no scp/sftp, so the binary
    /// streams through `cat`.
    static func deploy(probe: URL, to path: String, sudo: Bool, over ssh: SSHClient, timeout: Duration) async throws {
        let data: Data
        do {
            data = try Data(contentsOf: probe)
        } catch {
            throw KMatrixError.from(error, whileDoing: "reading the probe")
        }
        let part = ShellQuote.quote(path + ".part")
        let prefix = sudo ? "sudo -n " : ""
        // One sudo answers both questions: it fails before its shell runs (no sudo), or the
        // shell exits with noFirewall. Each sudo costs 0.2–0.3 s in a distro guest under TCG.
        let noFirewall = DeployStatus.noFirewall.rawValue
        let find = ShellQuote.quote("PATH=$PATH:/sbin:/usr/sbin; { command -v iptables-legacy || command -v iptables || command -v iptables-nft || command -v nft; } >/dev/null || exit \(noFirewall)")
        let script = "{ cat > \(part) && chmod 755 \(part) && mv \(part) \(ShellQuote.quote(path)); } || exit \(DeployStatus.copyFailed.rawValue); "
            + "\(prefix)sh -c \(find); status=$?; [ $status = 0 ] || [ $status = \(noFirewall) ] || exit \(DeployStatus.noSudo.rawValue); exit $status"
        let result = try await ssh.run(shell: script, input: data, timeout: timeout)
        let detail = result.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        switch DeployStatus(rawValue: result.status) {
        case .copyFailed?:
            throw KMatrixError(.probe, "copying the probe failed: \(detail)")
        case .noSudo?:
            throw KMatrixError(.probe, "passwordless sudo does not work for the default user (\(detail)); cloud-init must grant it")
        case .noFirewall?:
            throw KMatrixError(.probe, "the guest has neither iptables nor nft; install one in the image (RHEL 7: iptables, RHEL 8: iptables-nft or nftables)")
        case nil where !result.succeeded:
            throw KMatrixError(.probe, "deploying the probe failed (exit \(result.status)): \(detail)")
        case nil:
            return
        }
    }

    /// A user's consumer is a distribution's binary, built for machines people run: QEMU's
    /// default qemu64 model lacks SSE4.2, and Suricata 7's pattern matcher dies of SIGILL on it
    /// (docs/architecture.md, "Consumers"). Nehalem is x86-64-v2, what RHEL 9 itself requires.
    static let consumerCPUModel = "Nehalem"

    /// Unpacks a consumer's bundle at its fixed place (`ConsumerPlacement.guestRoot`), replacing
    /// any earlier copy, in one SSH round trip; the tarball streams through stdin.
    static func deploy(consumer: ConsumerBundle, sudo: Bool, over ssh: SSHClient, timeout: Duration) async throws {
        let data: Data
        do {
            data = try Data(contentsOf: consumer.tarball)
        } catch {
            throw KMatrixError.from(error, whileDoing: "reading \(consumer.tarball.path)")
        }
        let folder = ShellQuote.quote("\(ConsumerPlacement.guestRoot)/\(consumer.name)")
        let unpack = "rm -rf \(folder) && mkdir -p \(folder) && tar -xzf - --no-same-owner -C \(folder)"
        let result = try await ssh.run(shell: (sudo ? "sudo -n " : "") + "sh -c \(ShellQuote.quote(unpack))", input: data, timeout: timeout)
        guard result.succeeded else {
            throw KMatrixError(.probe, "deploying consumer \(consumer.name) failed (exit \(result.status)): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
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
    let channel: any ConsoleChannel
    let storage: any GuestStorage
    /// The run's files on the hypervisor's host (overlay, seed, console of a remote host).
    let hostFiles: [URL]
    let cleanupFiles: [URL]
    let port: Int
    var identity: GuestIdentity
    var provenance: Provenance
    var probePath: String
    let sudo: Bool
    let consumerPlacement: ConsumerPlacement?
    var missingFeatures: [MissingFeature] = []

    var consoleLog: URL? { console.url }

    func runProbe(_ arguments: [String], scenario: Scenario, timeout: Duration) async throws -> CommandResult {
        try await ssh.run((sudo ? ["sudo", "-n"] : []) + [probePath] + arguments, timeout: timeout)
    }

    func runConsumerCommand(_ arguments: [String], timeout: Duration) async throws -> CommandResult {
        try await ssh.run((sudo ? ["sudo", "-n"] : []) + arguments, timeout: timeout)
    }

    func crashLine() async -> String? { console.crashLine() }

    func stopped() async -> MachineStop? { await machine.stopped() }

    func shutdown() async {
        await ssh.close()
        try? await machine.destroy()
        await channel.close()
        await storage.release(hostFiles)
        VirtualMachineLauncher.remove(cleanupFiles)
        LoopbackPort.release(port)
    }
}
