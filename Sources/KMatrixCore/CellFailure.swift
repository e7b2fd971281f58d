/// Why a cell has no measurement, as data (docs/architecture.md, "Errors"): what failed, in which
/// phase of the guest's life, and the console line that shows it. The cell's `reason` is the
/// sentence rendered from it; code decides on `kind`, never on the sentence.
public struct CellFailure: Sendable, Hashable, Codable {
    /// What a cell reports, where `KMatrixError.Code` is what an operation raised. They are not
    /// parallel by accident: every code has exactly one kind (`init(_:phase:)`, where the phase
    /// tells a probe that failed to deploy from one that failed to run), and the kinds no
    /// operation raises — an absent image, a scenario never run, evidence that contradicts
    /// itself — exist only here. Add a code, and the compiler asks for its kind.
    public enum Kind: String, Sendable, Hashable, Codable, CaseIterable {
        /// The guest's image is not on this machine (skipped, with how to get it).
        case imageMissing = "image-missing"
        /// The host cannot run this guest at all (not root, no namespaces, libvirt unreachable).
        case hostUnavailable = "host-unavailable"
        /// The image could not be built or failed verification.
        case image
        /// The guest did not start, or never reached its ready point.
        case boot
        /// The guest's kernel panicked or oopsed; its remaining cells cannot run.
        case guestPanic = "guest-panic"
        /// The guest's virtual machine stopped under the run (its QEMU exited or was killed).
        case guestStopped = "guest-stopped"
        /// libvirtd stopped or restarted under the run and destroyed the guest with the run's
        /// connection: the host's fault, not the kernel's. The guest is booted once more; this
        /// kind remains only when that second boot was lost the same way.
        case hypervisorLost = "hypervisor-lost"
        /// The guest came up without a network interface, so SSH cannot reach it.
        case noNetwork = "no-network"
        case ssh
        /// Copying the probe, or a prerequisite inside the guest (sudo, iptables), failed.
        case deploy
        /// The probe ran and failed, or printed nothing readable.
        case probe
        /// The probe's numbers contradict each other: nothing is proven.
        case inconsistentEvidence = "inconsistent-evidence"
        case timeout
        /// The user interrupted the run.
        case interrupted
        /// An earlier failure of the same guest kept this scenario from running.
        case notRun = "not-run"
        /// Anything else (an external tool, kmatrix's own files).
        case infrastructure
    }

    public enum Phase: String, Sendable, Hashable, Codable {
        case prepare, boot, ready, deploy, scenario, teardown
    }

    public var kind: Kind
    public var phase: Phase
    /// The sentence that says what happened, without the diagnostics below.
    public var message: String
    /// The console line behind the failure (the panic, the missing driver), if any.
    public var consoleLine: String?
    /// What the guest's kernel reported missing (`KMATRIX-MISSING` lines), the likely cause.
    public var missingFeatures: [String]

    public init(_ kind: Kind, phase: Phase, _ message: String, consoleLine: String? = nil, missingFeatures: [String] = []) {
        self.kind = kind
        self.phase = phase
        self.message = message
        self.consoleLine = consoleLine
        self.missingFeatures = missingFeatures
    }

    /// The cell's `reason`.
    public var reason: String {
        var text = message
        if let consoleLine, !message.contains(consoleLine) { text += " (console: \(consoleLine))" }
        if !missingFeatures.isEmpty { text += "; the kernel lacks: \(missingFeatures.joined(separator: ", "))" }
        return text
    }

    /// A failure that ends the guest: its later scenarios are not attempted (a guest that crashed,
    /// has no network or stopped answering SSH would fail them all the same way, slowly).
    public var endsGuest: Bool {
        switch kind {
        case .guestPanic, .guestStopped, .hypervisorLost, .noNetwork, .interrupted, .hostUnavailable, .ssh: true
        default: false
        }
    }

    /// The failure a `KMatrixError` stands for, in `phase`.
    public init(_ error: KMatrixError, phase: Phase) {
        let kind: Kind = switch error.code {
        case .invalidInput, .command, .io: .infrastructure
        case .hostNotReady: .hostUnavailable
        case .hypervisor: .boot
        case .image: .image
        case .boot: .boot
        case .guestPanic: .guestPanic
        case .guestStopped: .guestStopped
        case .hypervisorLost: .hypervisorLost
        case .noNetwork: .noNetwork
        case .ssh: .ssh
        case .probe: phase == .scenario ? .probe : .deploy
        case .timeout: .timeout
        case .interrupted: .interrupted
        }
        self.init(kind, phase: phase, error.message, consoleLine: error.consoleLine)
    }
}
