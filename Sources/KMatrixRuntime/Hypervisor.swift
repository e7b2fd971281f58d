import Foundation

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

    public init(name: String, runID: String, boot: Boot, memoryMiB: Int, vcpus: Int, sshPort: Int, consoleLog: URL, accelerator: Accelerator,
                translationCacheMiB: Int? = nil) {
        self.name = name
        self.runID = runID
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
    public init(name: String, runID: String?) {
        self.name = name
        self.runID = runID
    }
}
