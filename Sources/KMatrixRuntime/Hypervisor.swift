import Foundation
import KMatrixCore

/// How QEMU executes guest code: decided by a probe, never by the presence of /dev/kvm.
public enum Accelerator: String, Sendable, Codable {
    case kvm
    case tcg
}

/// Everything needed to define one transient guest domain.
public struct MachineSpec: Sendable, Equatable {
    public enum Boot: Sendable, Equatable {
        /// Direct kernel boot: our initramfs rootfs, no disk.
        case kernel(kernel: URL, initrd: URL, cmdline: String)
        /// A distro disk booted by its own bootloader through a qcow2 overlay, with a NoCloud seed ISO.
        case disk(overlay: URL, seed: URL?)
    }

    public var name: String
    public var runID: String
    /// The run's owning process, written into the domain's metadata so any kmatrix can tell
    /// whether the domain's run still lives.
    public var owner: RunOwner
    public var boot: Boot
    public var memoryMiB: Int
    public var vcpus: Int
    /// Host port bound on 127.0.0.1 and forwarded to the guest's port 22.
    public var sshPort: Int
    /// Serial console (and `<console>`) log file.
    public var consoleLog: URL
    public var accelerator: Accelerator
    /// TCG's translation-block cache in MiB, or nil for QEMU's default (up to 1 GiB, touched
    /// lazily). Chosen per guest kind by its boot plan, from measurements.
    public var translationCacheMiB: Int?
    /// Under TCG, the CPU model QEMU emulates (nil: its default, qemu64).
    public var cpuModel: String?

    public init(name: String, runID: String, owner: RunOwner, boot: Boot, memoryMiB: Int, vcpus: Int, sshPort: Int, consoleLog: URL,
                accelerator: Accelerator, translationCacheMiB: Int?, cpuModel: String? = nil) {
        self.cpuModel = cpuModel
        self.name = name
        self.runID = runID
        self.owner = owner
        self.boot = boot
        self.memoryMiB = memoryMiB
        self.vcpus = vcpus
        self.sshPort = sshPort
        self.consoleLog = consoleLog
        self.accelerator = accelerator
        self.translationCacheMiB = translationCacheMiB
    }
}

/// A running guest. Destroying it twice is harmless.
public protocol VirtualMachine: Sendable {
    var name: String { get }
    func destroy() async throws
    /// The domain as the hypervisor runs it (libvirt's live XML), kept with the results.
    func definition() async -> String?
    /// Why the machine no longer runs, when the hypervisor says so; nil while it runs or when
    /// its state cannot be read (a hypervisor that cannot be asked proves nothing about the guest).
    func stopped() async -> MachineStop?
}

extension VirtualMachine {
    public func definition() async -> String? { nil }
    public func stopped() async -> MachineStop? { nil }
}

/// Why a guest's machine no longer runs.
public struct MachineStop: Sendable, Equatable {
    public var reason: String
    /// The hypervisor ended the machine, not the guest: libvirtd stopped or restarted, and libvirt
    /// destroys a connection's autodestroy guests with it. The orchestrator boots such a guest
    /// once more (docs/architecture.md, "Errors").
    public var byHypervisor: Bool

    public init(_ reason: String, byHypervisor: Bool = false) {
        self.reason = reason
        self.byHypervisor = byHypervisor
    }

    /// The error a wait that this stop ended raises: `what` says which wait.
    public func error(_ what: String) -> KMatrixError {
        KMatrixError(byHypervisor ? .hypervisorLost : .guestStopped, "the guest stopped \(what): \(reason)")
    }
}

/// Starts and finds guests. The libvirt-backed implementation is `LibvirtHypervisor` in the
/// `KMatrixLibvirt` target; every error it raises is a `KMatrixError`.
public protocol Hypervisor: Sendable {
    /// "libvirt 9.0.0, QEMU 7.2.0": recorded in results.
    func versions() async throws -> HypervisorVersions
    /// Whether KVM really works here (a short probe), else TCG.
    func detectAccelerator() async -> Accelerator
    func start(_ spec: MachineSpec) async throws -> any VirtualMachine
    /// Domains carrying kmatrix's run metadata, with the run each belongs to.
    func kmatrixDomains() async throws -> [DomainRecord]
    func destroyDomain(named name: String) async throws
    /// Where one run's guest files go on this hypervisor's host.
    func storage(runID: String) -> any GuestStorage
    /// How SSH reaches the host's 127.0.0.1; nil when that is this machine's.
    var jump: SSHJump? { get }
    /// A name for the host, for cells and messages ("local" for this machine).
    var hostName: String { get }
    /// Removes the run volumes of these dead runs of this machine's registry; returns what went.
    func collectRunFiles(ofRuns dead: Set<String>) async -> [String]
    /// What the host has, for spreading guests: its CPUs and free memory (nil: unknown).
    func capacity() async -> (cpus: Int?, freeMemoryMiB: Int?)
}

extension Hypervisor {
    public var jump: SSHJump? { nil }
    public var hostName: String { "local" }
    public func collectRunFiles(ofRuns dead: Set<String>) async -> [String] { [] }
    public func capacity() async -> (cpus: Int?, freeMemoryMiB: Int?) { (nil, nil) }
}

public struct HypervisorVersions: Sendable, Codable, Equatable {
    public var libvirt: String
    public var qemu: String
    public init(libvirt: String, qemu: String) {
        self.libvirt = libvirt
        self.qemu = qemu
    }
}

/// A domain kmatrix started, found by its metadata.
public struct DomainRecord: Sendable, Equatable {
    public var name: String
    public var runID: String?
    /// The run's owning process, when the metadata names one (kmatrix before 0.3 did not).
    public var owner: RunOwner?
    public init(name: String, runID: String?, owner: RunOwner?) {
        self.name = name
        self.runID = runID
        self.owner = owner
    }
}

/// Where a guest's files live on its hypervisor's host (docs/architecture.md, "Several hosts").
/// A local hypervisor reads this machine's files where they are; a remote one gets them
/// uploaded into a storage pool of its own, and the domain names only that host's paths.
public protocol GuestStorage: Sendable {
    /// `file` (a kernel, an initramfs, a base disk), as a path on the host; `key` names its
    /// content, so a file already there is not uploaded again.
    func place(_ file: URL, key: String) async throws -> URL
    /// A file of this run (a seed), as a path on the host; removed by `release`.
    func placeForRun(_ file: URL, name: String) async throws -> URL
    /// A copy-on-write overlay of a placed base disk (the base is never written).
    func overlay(of base: URL, format: String, virtualSize: UInt64, name: String, localScratch: URL) async throws -> URL
    /// The serial console's file on the host, and a local copy kept in step with it.
    func console(name: String, local: URL) async throws -> any ConsoleChannel
    /// Removes what `placeForRun`, `overlay` and `console` made.
    func release(_ paths: [URL]) async
}

/// A guest's console log on its host, mirrored into a local file that `ConsoleLog` reads.
public protocol ConsoleChannel: Sendable {
    var hostPath: URL { get }
    /// Starts mirroring once the domain runs.
    func start() async
    /// Brings the local copy up to date a last time and stops.
    func close() async
    /// Why the console can no longer be read (its host stopped answering), or nil.
    func failure() -> KMatrixError?
}

extension ConsoleChannel {
    public func failure() -> KMatrixError? { nil }
}

/// How SSH reaches a 127.0.0.1 port on the hypervisor's host: directly (local), or through
/// the host's own SSH server with the login its libvirt URI names.
public typealias SSHJump = HostURI.SSHLogin

/// This machine's files, where they are: the fast path of a local `qemu:///system`.
public struct LocalStorage: GuestStorage {
    let commands: any CommandRunner

    public init(commands: any CommandRunner) {
        self.commands = commands
    }

    public func place(_ file: URL, key: String) async throws -> URL { file }
    public func placeForRun(_ file: URL, name: String) async throws -> URL { file }

    public func overlay(of base: URL, format: String, virtualSize: UInt64, name: String, localScratch: URL) async throws -> URL {
        let overlay = localScratch.appendingPathComponent("overlay.qcow2")
        try await commands.checked("qemu-img", ["create", "-q", "-f", "qcow2", "-F", format, "-b", base.path, "--", overlay.path], timeout: .seconds(60))
        return overlay
    }

    public func console(name: String, local: URL) async throws -> any ConsoleChannel { LocalConsole(hostPath: local) }

    public func release(_ paths: [URL]) async {
        for path in paths { try? FileManager.default.removeItem(at: path) }
    }

    struct LocalConsole: ConsoleChannel {
        let hostPath: URL
        func start() async {}
        func close() async {}
    }
}
