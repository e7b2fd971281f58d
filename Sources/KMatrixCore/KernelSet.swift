/// A set of a distribution's kernels in the matrix (`kernels:`), expanded to one row per kernel
/// release once the archive's index is read (docs/architecture.md, "Kernel sets").
public struct KernelSet: Sendable, Hashable {
    public enum Flavour: String, Sendable, Hashable, CaseIterable, Codable {
        /// `linux-image-*-cloud-amd64`: what Debian's cloud images boot.
        case cloud
        /// `linux-image-*-amd64`: the generic flavour.
        case amd64
    }

    public enum Versions: Sendable, Hashable {
        case all
        /// The newest kernel of the whole set.
        case newest
        /// The newest kernel of each series (5.10, 6.1, 6.12, …).
        case newestPerSeries
        /// Kernels whose version matches, e.g. ">= 6.1".
        case rule(VersionRule)

        public init?(parsing text: String) {
            switch text.trimmingCharacters(in: .whitespaces) {
            case "all": self = .all
            case "newest": self = .newest
            case "newest per series": self = .newestPerSeries
            case let other:
                guard let rule = try? VersionRule(parsing: other.contains("kernel") ? other : "kernel \(other)") else { return nil }
                self = .rule(rule)
            }
        }
    }

    /// Debian suites (`bookworm-security`, `trixie-backports`, …) whose indices list the kernels.
    public var suites: [String]
    public var flavour: Flavour
    public var versions: Versions
    /// Users' consumers the set's rows run.
    public var consumers: [String]

    public init(suites: [String], flavour: Flavour = .cloud, versions: Versions = .all, consumers: [String] = []) {
        self.suites = suites
        self.flavour = flavour
        self.versions = versions
        self.consumers = consumers
    }

    /// Suites a set may name: each release with its updates, security and backports archives.
    public static let knownSuites: [String] = ["bullseye", "bookworm", "trixie"].flatMap { release in
        ["", "-updates", "-security", "-backports"].map { release + $0 }
    }

    /// The rows of this set among what the archive lists, oldest first: one per release (the
    /// newest package version of it, wherever several suites list it), then filtered.
    public func select(_ listed: [ArchiveKernel]) -> [ArchiveKernel] {
        var newest: [String: ArchiveKernel] = [:]
        for kernel in listed where suites.contains(kernel.suite) && kernel.flavour == flavour {
            if let seen = newest[kernel.release], DebianVersion.compare(seen.version, kernel.version) >= 0 { continue }
            newest[kernel.release] = kernel
        }
        let ordered = newest.values.sorted { lhs, rhs in
            let order = DebianVersion.compare(lhs.version, rhs.version)
            return order != 0 ? order < 0 : lhs.release < rhs.release
        }
        switch versions {
        case .all:
            return ordered
        case .newest:
            return ordered.last.map { [$0] } ?? []
        case .newestPerSeries:
            var last: [String: ArchiveKernel] = [:]
            for kernel in ordered { last[kernel.series] = kernel }
            return ordered.filter { last[$0.series] == $0 }
        case .rule(let rule):
            return ordered.filter { KernelVersion(release: $0.release).map(rule.matches) ?? false }
        }
    }
}

/// One kernel package of a Debian archive, as its signed index lists it.
public struct ArchiveKernel: Sendable, Hashable, Codable {
    /// `uname -r`, the row's name: `6.1.0-57-cloud-amd64`, `6.12.118+deb13-cloud-amd64`.
    public var release: String
    public var flavour: KernelSet.Flavour
    public var suite: String
    /// The package holding the kernel, its version and sha256 (from the index).
    public var package: String
    public var version: String
    public var sha256: String
    /// Where the package is in the suite's pool (`pool/main/l/linux-signed-amd64/….deb`).
    public var pool: String
    /// Further packages a split kernel (6.19 on: linux-image is a meta package) needs, as
    /// `name=version` with their sha256.
    public var parts: [Part]
    /// Why the kernel cannot be booted from the archive (a part its index does not list, a file
    /// its pool no longer has): its row is `skipped` with this reason.
    public var unavailable: String?

    public struct Part: Sendable, Hashable, Codable {
        public var package: String
        public var version: String
        public var sha256: String
        public var pool: String
        public init(package: String, version: String, sha256: String, pool: String) {
            self.package = package
            self.version = version
            self.sha256 = sha256
            self.pool = pool
        }
    }

    public init(release: String, flavour: KernelSet.Flavour, suite: String, package: String, version: String, sha256: String, pool: String = "",
                parts: [Part] = [], unavailable: String? = nil) {
        self.unavailable = unavailable
        self.pool = pool
        self.release = release
        self.flavour = flavour
        self.suite = suite
        self.package = package
        self.version = version
        self.sha256 = sha256
        self.parts = parts
    }

    /// "6.1", "6.12", "7.3": the first two numbers of the release.
    public var series: String { Self.series(of: release) }

    public static func series(of release: String) -> String {
        KernelVersion(release: release).map { "\($0.major).\($0.minor)" } ?? release
    }
}

extension ArchiveKernel.Part {
    /// Whether one field the resolver printed cannot be trusted into a command line.
    static func fieldProblem(_ text: String) -> Bool {
        text.isEmpty || text.utf8.count > 200 || !text.unicodeScalars.allSatisfy { InputRules.isAlphanumeric($0) || ".+~:-_".unicodeScalars.contains($0) }
    }

    /// Whether a pool path is not one: `pool/main/<letter>/<source>/<file>.deb` (the security
    /// archive's: `pool/updates/main/…`), plain characters.
    static func poolProblem(_ path: String) -> Bool {
        var parts = path.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 6 && parts[1] == "updates" { parts.remove(at: 1) }
        return parts.count != 5 || parts[0] != "pool" || parts[1] != "main" || !path.hasSuffix(".deb") || path.utf8.count > 300
            || parts.contains { $0.isEmpty || $0 == "." || $0 == ".." }
            || !path.unicodeScalars.allSatisfy { InputRules.isAlphanumeric($0) || "/.+~_%-".unicodeScalars.contains($0) }
    }
}

extension ArchiveKernel {
    /// The recipe's `--pin` arguments: every package the kernel needs, by suite, pool path and sha256.
    public var pins: [String] {
        ["\(suite):\(pool)@\(sha256)"] + parts.map { "\(suite):\($0.pool)@\($0.sha256)" }
    }
}

extension ArchiveKernel {
    /// One line of `images/kernel-set/resolve.sh`: `release suite package version sha256 [part=version@sha256]…`,
    /// tab-separated. Every field is checked: the line came from an index over the network.
    public static func parse(line: String, flavour: KernelSet.Flavour) -> ArchiveKernel? {
        let fields = line.split(separator: "\t").map(String.init)
        // `-  RELEASE SUITE VERSION PART`: listed, but a part of it is not in the index.
        if fields.first == "-" {
            guard fields.count == 5, InputRules.releaseProblem(fields[1]) == nil, InputRules.nameProblem(fields[1]) == nil, KernelSet.knownSuites.contains(fields[2]),
                  !ArchiveKernel.Part.fieldProblem(fields[3]), ConsumerSpec.packageProblem(fields[4]) == nil else { return nil }
            return ArchiveKernel(release: fields[1], flavour: flavour, suite: fields[2], package: "linux-image-\(fields[1])", version: fields[3], sha256: "",
                                 unavailable: "Debian's \(fields[2]) index lists linux-image-\(fields[1]) \(fields[3]) but not its \(fields[4]), "
                                    + "so it cannot be fetched and checked")
        }
        // ASCII only: Character.isHexDigit also takes fullwidth digits.
        func isSha256(_ text: some StringProtocol) -> Bool { text.utf8.count == 64 && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) } }
        // The release names the row, and so domains and namespaces: a guest name's rules too.
        guard fields.count >= 6, InputRules.releaseProblem(fields[0]) == nil, InputRules.nameProblem(fields[0]) == nil, KernelSet.knownSuites.contains(fields[1]),
              ConsumerSpec.packageProblem(fields[2]) == nil, !ArchiveKernel.Part.fieldProblem(fields[3]), isSha256(fields[4]),
              !ArchiveKernel.Part.poolProblem(fields[5]) else { return nil }
        var parts: [Part] = []
        for field in fields.dropFirst(6) {
            let pieces = field.split(separator: "@", omittingEmptySubsequences: false)
            guard pieces.count == 3, let equals = pieces[0].firstIndex(of: "=") else { return nil }
            let part = Part(package: String(pieces[0][..<equals]), version: String(pieces[0][pieces[0].index(after: equals)...]), sha256: String(pieces[1]),
                            pool: String(pieces[2]))
            guard ConsumerSpec.packageProblem(part.package) == nil, !Part.fieldProblem(part.version), isSha256(part.sha256),
                  !Part.poolProblem(part.pool) else { return nil }
            parts.append(part)
        }
        return ArchiveKernel(release: fields[0], flavour: flavour, suite: fields[1], package: fields[2], version: fields[3], sha256: fields[4],
                             pool: fields[5], parts: parts)
    }
}

/// Debian's version ordering (deb-version(7)): epoch, then upstream and revision compared part by
/// part — runs of non-digits by character, `~` before everything and letters before the rest,
/// runs of digits by value.
public enum DebianVersion {
    /// Negative, zero or positive as `a` sorts before, with or after `b`.
    public static func compare(_ a: String, _ b: String) -> Int {
        let (ea, ua, ra) = split(a), (eb, ub, rb) = split(b)
        if ea != eb { return ea < eb ? -1 : 1 }
        let upstream = compareParts(ua, ub)
        return upstream != 0 ? upstream : compareParts(ra, rb)
    }

    static func split(_ version: String) -> (Int, String, String) {
        var rest = Substring(version)
        var epoch = 0
        if let colon = rest.firstIndex(of: ":"), let value = Int(rest[..<colon]) {
            epoch = value
            rest = rest[rest.index(after: colon)...]
        }
        if let dash = rest.lastIndex(of: "-") {
            return (epoch, String(rest[..<dash]), String(rest[rest.index(after: dash)...]))
        }
        return (epoch, String(rest), "")
    }

    static func order(_ character: Character?) -> Int {
        guard let character else { return 0 }
        if character == "~" { return -1 }
        if character.isLetter { return Int(character.asciiValue ?? 0) }
        return Int(character.asciiValue ?? 0) + 256
    }

    static func compareParts(_ a: String, _ b: String) -> Int {
        var x = Substring(a), y = Substring(b)
        while !x.isEmpty || !y.isEmpty {
            let xText = x.prefix { !$0.isNumber }, yText = y.prefix { !$0.isNumber }
            x = x.dropFirst(xText.count)
            y = y.dropFirst(yText.count)
            var i = xText.startIndex, j = yText.startIndex
            while i != xText.endIndex || j != yText.endIndex {
                let ci: Character? = i == xText.endIndex ? nil : xText[i]
                let cj: Character? = j == yText.endIndex ? nil : yText[j]
                let oi = order(ci), oj = order(cj)
                if oi != oj { return oi < oj ? -1 : 1 }
                if i != xText.endIndex { i = xText.index(after: i) }
                if j != yText.endIndex { j = yText.index(after: j) }
            }
            let xDigits = x.prefix { $0.isNumber }, yDigits = y.prefix { $0.isNumber }
            x = x.dropFirst(xDigits.count)
            y = y.dropFirst(yDigits.count)
            let xValue = xDigits.drop { $0 == "0" }, yValue = yDigits.drop { $0 == "0" }
            if xValue.count != yValue.count { return xValue.count < yValue.count ? -1 : 1 }
            if xValue != yValue { return xValue < yValue ? -1 : 1 }
        }
        return 0
    }
}
