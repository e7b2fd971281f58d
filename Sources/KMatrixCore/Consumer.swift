/// A user's own NFQUEUE consumer, declared once under `consumers:` in matrix.yaml and run by the
/// guests that list it (docs/architecture.md, "Consumers"). kmatrix knows nothing of any
/// particular consumer: what to deploy, how to start it and which packet sizes to try are data.
public struct ConsumerSpec: Sendable, Hashable {
    /// Debian packages, resolved with their dependencies from the archive of one suite.
    public struct DebianPackages: Sendable, Hashable {
        public var suite: String
        public var packages: [String]
        public init(suite: String, packages: [String]) {
            self.suite = suite
            self.packages = packages
        }
    }

    /// A file of the user's (a static binary, a config) copied into the bundle.
    public struct File: Sendable, Hashable {
        /// On this machine (relative paths are relative to the matrix file, like kernel files).
        public var from: String
        /// Inside the bundle: a relative path with no `..`.
        public var to: String
        public init(from: String, to: String) {
            self.from = from
            self.to = to
        }
    }

    /// Which experiments run with this consumer.
    public enum Kind: String, Sendable, Hashable, CaseIterable, Codable {
        /// Stall, burst of one packet size, resume: which limit trips and what the kernel did.
        case overflow
        /// TCP connects with a 1 s timeout behind the stalled consumer, as a kubelet probe.
        case liveness
        /// The published mitigation (rmem_default/rmem_max raised) before the consumer starts.
        case rmem
    }

    /// How the consumer is told to stop once a cell is measured.
    public enum StopSignal: String, Sendable, Hashable, CaseIterable {
        case sigterm, sigint, sigkill

        public var number: Int {
            switch self {
            case .sigterm: 15
            case .sigint: 2
            case .sigkill: 9
            }
        }
    }

    public var name: String
    public var debian: DebianPackages?
    public var files: [File]
    /// The command, with `{bundle}`, `{dir}` and `{queue}` replaced per cell.
    public var start: [String]
    /// A command whose first line of output names the consumer's version (same placeholders).
    public var version: [String]?
    /// Payload sizes of the overflow scenarios, in bytes.
    public var sizes: [Int]
    public var kinds: [Kind]
    /// How long the consumer may take to be ready (its `ready` wait).
    public var readySeconds: Int
    /// Text its output shows once it is fully started (e.g. Suricata's "Engine started"). A
    /// consumer binds its queue before it sets the queue's flags (fail-open), so a bound queue
    /// alone can be a consumer caught half configured by the stall.
    public var readyLog: String?
    public var stop: StopSignal
    /// Guests running it get at least this much memory.
    public var memoryMiB: Int?

    public static let defaultSizes = [64, 1500, 8000]
    /// Placeholders a command may use.
    public static let placeholders = ["bundle", "dir", "queue"]

    public init(name: String, debian: DebianPackages? = nil, files: [File] = [], start: [String], version: [String]? = nil,
                sizes: [Int] = ConsumerSpec.defaultSizes, kinds: [Kind] = Kind.allCases, readySeconds: Int = 30, stop: StopSignal = .sigterm,
                memoryMiB: Int? = nil) {
        self.name = name
        self.debian = debian
        self.files = files
        self.start = start
        self.version = version
        self.sizes = sizes
        self.kinds = kinds
        self.readySeconds = readySeconds
        self.stop = stop
        self.memoryMiB = memoryMiB
    }

    /// The scenarios this consumer adds, in column order: one overflow per size, then liveness
    /// and rmem at the largest size (the one most likely to overflow the socket).
    public var scenarios: [Scenario] {
        let largest = sizes.max() ?? 1500
        var scenarios: [Scenario] = []
        for kind in kinds {
            switch kind {
            case .overflow:
                scenarios += sizes.map { Scenario.consumer(self, kind: .overflow, payload: $0) }
            case .liveness, .rmem:
                scenarios.append(Scenario.consumer(self, kind: kind, payload: largest))
            }
        }
        return scenarios
    }

    /// A command template with its placeholders filled in; each element stays one argument.
    public static func expand(_ template: [String], bundle: String, dir: String, queue: Int) -> [String] {
        template.map { argument in
            argument.replacingOccurrences(of: "{bundle}", with: bundle)
                .replacingOccurrences(of: "{dir}", with: dir)
                .replacingOccurrences(of: "{queue}", with: String(queue))
        }
    }

    /// Why one argument of a command template cannot be used, or nil. Arguments are passed to
    /// `execv` one by one (never through a shell), but they cross SSH and appear in reports.
    public static func argumentProblem(_ argument: String) -> String? {
        guard !argument.isEmpty, argument.utf8.count <= 1000 else { return "must be 1 to 1000 bytes" }
        guard !argument.unicodeScalars.contains(where: InputRules.isControl) else { return "contains control characters" }
        var rest = Substring(argument)
        while let open = rest.firstIndex(of: "{") {
            guard let close = rest[open...].firstIndex(of: "}") else { return "has a '{' without '}'" }
            let name = String(rest[rest.index(after: open)..<close])
            guard placeholders.contains(name) else {
                return "uses {\(name)}; the placeholders are \(placeholders.map { "{\($0)}" }.joined(separator: ", "))"
            }
            rest = rest[rest.index(after: close)...]
        }
        return nil
    }

    /// Why a ready text cannot be used, or nil: one line of plain text, passed to the probe as one
    /// argument and shown in reports.
    public static func readyLogProblem(_ text: String) -> String? {
        guard !text.isEmpty, text.utf8.count <= 200 else { return "must be 1 to 200 bytes" }
        guard !text.unicodeScalars.contains(where: InputRules.isControl) else { return "contains control characters" }
        return nil
    }

    /// Why a bundle path (`files[].to`) cannot be used, or nil: relative, inside the bundle.
    public static func bundlePathProblem(_ path: String) -> String? {
        relativePathProblem(path, inside: "the bundle")
    }

    /// Why a consumer's own file (`files[].from`) cannot be named so, or nil: relative to the
    /// matrix file and inside its folder (where it leads once links are followed is checked when
    /// the matrix is loaded).
    public static func sourcePathProblem(_ path: String) -> String? {
        relativePathProblem(path, inside: "the matrix file's folder")
    }

    static func relativePathProblem(_ path: String, inside place: String) -> String? {
        guard !path.isEmpty, path.utf8.count <= 200 else { return "must be 1 to 200 bytes" }
        guard !path.hasPrefix("/") else { return "must be relative to \(place)" }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        for part in parts {
            guard let problem = InputRules.fileNameProblem(String(part)) else { continue }
            return "has a part \(InputRules.quoted(String(part))) that \(problem)"
        }
        return nil
    }

    /// A Debian package name as the archive allows it (policy 5.6.1).
    public static func packageProblem(_ name: String) -> String? {
        guard name.utf8.count >= 2, name.utf8.count <= 100 else { return "must be 2 to 100 characters" }
        guard let first = name.unicodeScalars.first, ("a"..."z").contains(first) || ("0"..."9").contains(first),
              name.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || "+-.".unicodeScalars.contains($0) }) else {
            return "may hold only lower-case letters, digits and '+-.', starting with a letter or digit"
        }
        return nil
    }
}

/// Which consumer cell a scenario is: kept in results.json so reports and comparisons group
/// cells by consumer without reading scenario names.
public struct ConsumerCell: Sendable, Hashable, Codable {
    public var name: String
    public var kind: ConsumerSpec.Kind
    public var payloadBytes: Int
    /// What was deployed, once per guest: package versions or file digests.
    public var identity: ConsumerIdentity?
    /// What the consumer did during and after the stall (absent when the cell did not run).
    public var observed: ConsumerObservation?

    public init(name: String, kind: ConsumerSpec.Kind, payloadBytes: Int, identity: ConsumerIdentity? = nil, observed: ConsumerObservation? = nil) {
        self.name = name
        self.kind = kind
        self.payloadBytes = payloadBytes
        self.identity = identity
        self.observed = observed
    }
}

/// The deployed consumer, as precisely as a reader needs to reproduce it.
public struct ConsumerIdentity: Sendable, Hashable, Codable {
    public struct Package: Sendable, Hashable, Codable {
        public var name: String
        public var version: String
        public init(name: String, version: String) {
            self.name = name
            self.version = version
        }
    }

    public struct File: Sendable, Hashable, Codable {
        /// Inside the bundle.
        public var path: String
        public var sha256: String
        public init(path: String, sha256: String) {
            self.path = path
            self.sha256 = sha256
        }
    }

    /// The first line the consumer's version command printed in this guest.
    public var version: String?
    /// The Debian suite the packages came from.
    public var suite: String?
    /// The packages asked for (not their dependencies), with the versions deployed.
    public var packages: [Package]
    /// The user's files (binaries, configuration), by digest.
    public var files: [File]
    /// The whole bundle's digest (every file deployed).
    public var bundleSha256: String?

    public init(version: String? = nil, suite: String? = nil, packages: [Package] = [], files: [File] = [], bundleSha256: String? = nil) {
        self.version = version
        self.suite = suite
        self.packages = packages
        self.files = files
        self.bundleSha256 = bundleSha256
    }

    /// "suricata 7.0.10": the name and the first version number of the version line ("This is
    /// Suricata version 7.0.10 RELEASE"), else of the first package, else the name alone.
    public func label(name: String) -> String {
        let number = version?.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "(" || $0 == ")" }).first { word in
            word.first?.isNumber == true && word.contains(".") && word.allSatisfy { $0.isNumber || $0 == "." || $0 == "-" || $0 == "+" || $0.isLetter }
        }
        if let number { return "\(name) \(number)" }
        if let package = packages.first { return "\(name) \(package.version)" }
        return name
    }
}

/// What the consumer did in one cell (from the probe's `agent` object, docs/probe.md).
public struct ConsumerObservation: Sendable, Hashable, Codable {
    public enum Fate: String, Sendable, Hashable, Codable {
        /// Gave verdicts to fresh traffic after SIGCONT.
        case alive
        /// Still running, but fresh traffic got no verdict.
        case stuck
        /// Gone after the stall.
        case exited
    }

    /// Which limit the burst reached first.
    public enum Path: String, Sendable, Hashable, Codable {
        /// The queue reached its maxlen: the queue-full path (fails open since 3.6 when asked to).
        case queueFull = "queue-full"
        /// The unicast to the consumer's full socket failed (fails open from 4.6 on when asked to).
        case socketOverflow = "socket-overflow"
        /// Both happened in one burst.
        case both
    }

    public var path: Path?
    /// Packets the stalled consumer held in its queue.
    public var held: Int
    /// Datagrams of the burst that arrived while the consumer was stalled (went past it).
    public var passedWhileStalled: Int
    public var fate: Fate?
    public var exitStatus: Int?
    public var exitSignal: Int?
    /// The consumer's last output lines (bounded, cleaned).
    public var logTail: String?

    public init(path: Path? = nil, held: Int = 0, passedWhileStalled: Int = 0, fate: Fate? = nil, exitStatus: Int? = nil, exitSignal: Int? = nil,
                logTail: String? = nil) {
        self.path = path
        self.held = held
        self.passedWhileStalled = passedWhileStalled
        self.fate = fate
        self.exitStatus = exitStatus
        self.exitSignal = exitSignal
        self.logTail = logTail
    }
}
