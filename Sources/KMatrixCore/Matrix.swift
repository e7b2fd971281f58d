/// `matrix.yaml`, validated: guests × scenarios × expected outcomes.
public struct Matrix: Sendable, Hashable {
    public var guests: [GuestSpec]
    /// The scenarios to run, in catalogue order.
    public var scenarios: [Scenario]
    /// Scenario name → rules; the first rule whose `when` matches the kernel wins.
    public var expectations: [String: [ExpectationRule]]
    public var defaults: Defaults
    /// The libvirt hosts to spread guests over (`hosts:`); empty means this machine's.
    public var hosts: [HostEntry]
    /// Users' own NFQUEUE consumers (`consumers:`), in the order the file declares them.
    public var consumers: [ConsumerSpec]
    /// Sets of a distribution's kernels (`kernels:`), each expanded to one row per kernel once
    /// the archive's index is read (`KernelSet.select`, `Matrix.expanding`).
    public var kernelSets: [KernelSet] = []

    public init(guests: [GuestSpec], scenarios: [Scenario] = Scenario.catalogue, expectations: [String: [ExpectationRule]] = [:], defaults: Defaults = Defaults(),
                hosts: [HostEntry] = [], consumers: [ConsumerSpec] = []) {
        self.guests = guests
        self.scenarios = scenarios
        self.expectations = expectations
        self.defaults = defaults
        self.hosts = hosts
        self.consumers = consumers
    }

    /// The probe's scenarios, then each consumer's that some guest runs: the report's columns.
    public var allScenarios: [Scenario] {
        scenarios + consumers.filter { consumer in guests.contains { $0.consumers.contains(consumer.name) } }.flatMap(\.scenarios)
    }

    public func consumer(named name: String) -> ConsumerSpec? {
        consumers.first { $0.name == name }
    }

    /// The matrix with its kernel sets expanded to rows (named by release, after the matrix's
    /// own guests), given what the archive lists. A release that names a guest already is left
    /// to that guest.
    public func expanding(_ listed: [KernelSet.Flavour: [ArchiveKernel]]) -> Matrix {
        var matrix = self
        var names = Set(guests.map(\.name))
        for set in kernelSets {
            for kernel in set.select(listed[set.flavour] ?? []) where names.insert(kernel.release).inserted {
                var guest = GuestSpec(name: kernel.release, image: .kernel(.archive(kernel)), nominalKernel: kernel.release)
                guest.consumers = set.consumers
                matrix.guests.append(matrix.sizedForConsumers(guest))
            }
        }
        matrix.kernelSets = []
        return matrix
    }

    /// The guest with its memory raised to what its consumers ask for (kept as it was otherwise).
    public func sizedForConsumers(_ guest: GuestSpec) -> GuestSpec {
        var guest = guest
        let memory = memoryMiB(of: guest)
        if memory != guest.memoryMiB ?? defaults.memoryMiB { guest.memoryMiB = memory }
        return guest
    }

    /// A guest's memory: its own (or the default), raised to what its consumers ask for.
    public func memoryMiB(of guest: GuestSpec) -> Int {
        let own = guest.memoryMiB ?? defaults.memoryMiB
        return guest.consumers.compactMap { consumer(named: $0)?.memoryMiB }.reduce(own, max)
    }

    /// The expected outcome of one cell. Guest overrides win over the version rules; a rule with a
    /// `when` cannot be judged without a kernel version, so an unknown kernel yields nil there.
    public func expectation(guest: GuestSpec, scenario: String, kernel: KernelVersion?) -> Outcome? {
        if let override = guest.expect[scenario] { return override }
        for rule in expectations[scenario] ?? [] {
            guard let condition = rule.when else { return rule.outcome }
            guard let kernel else { return nil }
            if condition.matches(kernel) { return rule.outcome }
        }
        return nil
    }
}

public struct Defaults: Sendable, Hashable {
    public var memoryMiB: Int = 256
    public var vcpus: Int = 1
    public var timeouts = PhaseTimeouts()
    public init() {}
}

/// Per-phase limits, in seconds. Generous: guests run under TCG on two cores.
public struct PhaseTimeouts: Sendable, Hashable, Codable {
    public var boot: Double = 60
    public var ready: Double = 240
    public var deploy: Double = 60
    public var scenario: Double = 180
    public init() {}
}

public struct ExpectationRule: Sendable, Hashable {
    public var when: VersionRule?
    public var outcome: Outcome
    public init(when: VersionRule? = nil, outcome: Outcome) {
        self.when = when
        self.outcome = outcome
    }
}

public struct GuestSpec: Sendable, Hashable, Identifiable {
    public var name: String
    public var image: ImageSpec
    public var memoryMiB: Int?
    public var vcpus: Int?
    /// Per-scenario expected outcomes that override the version rules.
    public var expect: [String: Outcome]
    /// The kernel release this guest is known to run (vendor images), used to state an
    /// expectation before the guest boots; the observed `uname -r` replaces it.
    public var nominalKernel: String?
    /// A kernel given on the command line has no name of its own: its row is labelled with the
    /// `uname -r` it reports once booted.
    public var labelledByKernel: Bool
    /// Names of the users' consumers (`Matrix.consumers`) this guest runs beside the probe.
    public var consumers: [String] = []
    public var id: String { name }

    public init(name: String, image: ImageSpec, memoryMiB: Int? = nil, expect: [String: Outcome] = [:], nominalKernel: String? = nil,
                labelledByKernel: Bool = false) {
        self.name = name
        self.image = image
        self.memoryMiB = memoryMiB
        self.expect = expect
        self.nominalKernel = nominalKernel
        self.labelledByKernel = labelledByKernel
    }
}

public enum ImageSpec: Sendable, Hashable {
    /// This machine's own kernel, inside a network namespace kmatrix creates.
    case host
    /// A kernel booted directly with kmatrix's initramfs rootfs.
    case kernel(KernelSource)
    /// A distribution disk image booted through its own bootloader.
    case cloud(CloudImage)

    public var kind: String {
        switch self {
        case .host: "host"
        case .kernel: "kernel"
        case .cloud: "cloud"
        }
    }

    /// Rough boot cost, for starting the slowest guests first: a distro's own boot with
    /// cloud-init takes minutes under TCG, our initramfs seconds, the host none.
    public var bootCost: Int {
        switch self {
        case .host: 0
        case .kernel: 1
        case .cloud: 2
        }
    }
}

public enum KernelSource: Sendable, Hashable {
    /// The current cloud kernel of a Debian suite (bullseye, bookworm, trixie), from the archive.
    case debian(suite: String)
    /// Kernel packages on this machine; split packages go together (Ubuntu's linux-image +
    /// linux-modules, RHEL's kernel-core + kernel-modules).
    case packages(PackageFormat, paths: [String])
    /// A bare kernel image on this machine, with its modules directory if it has one.
    case bzImage(path: String, modules: String?)
    /// One kernel of a kernel set: an exact package of Debian's archive, checked by its sha256.
    case archive(ArchiveKernel)
    /// A kernel built by a recipe under `images/` (e.g. `legacy-failopen`).
    case recipe(String)
}

extension KernelSource {
    /// The files on this machine the guest boots from (none for archive kernels and recipes).
    public var files: [String] {
        switch self {
        case .debian, .recipe, .archive: []
        case .packages(_, let paths): paths
        case .bzImage(let path, let modules): [path] + (modules.map { [$0] } ?? [])
        }
    }
}

public enum PackageFormat: String, Sendable, Hashable {
    case deb
    case rpm
}

public struct CloudImage: Sendable, Hashable {
    /// File name inside the image store (`kmatrix images add` puts it there).
    public var file: String
    public var sha256: String?
    /// The distribution's default cloud user, who gets the run's SSH key.
    public var user: String
    /// Where a user obtains the image.
    public var source: String?
    /// A recipe under `images/` that builds the image here (the stand-in).
    public var recipe: String?

    public init(file: String, sha256: String? = nil, user: String, source: String? = nil, recipe: String? = nil) {
        self.file = file
        self.sha256 = sha256
        self.user = user
        self.source = source
        self.recipe = recipe
    }
}

/// One libvirt host of `hosts:` in matrix.yaml.
public struct HostEntry: Sendable, Hashable {
    /// Checked against kmatrix's whitelist when read (`HostURI`).
    public var uri: HostURI
    /// Guests it boots at once (default: from its CPUs and memory).
    public var jobs: Int?
    public init(uri: HostURI, jobs: Int? = nil) {
        self.uri = uri
        self.jobs = jobs
    }
}
