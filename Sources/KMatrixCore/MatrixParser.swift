import Yams

/// A problem in `matrix.yaml`, pointing at the line that causes it and saying how to fix it.
public struct MatrixError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String
    public var fix: String

    public var description: String {
        "\(file):\(line):\(column): \(message)\n  fix: \(fix)"
    }
}

public enum MatrixParser {
    static let suites = ["bullseye", "bookworm", "trixie"]

    public static func parse(_ text: String, file: String) throws(MatrixError) -> Matrix {
        let context = Context(file: file)
        if let violation = YAMLGuard.check(text) {
            throw MatrixError(file: file, line: violation.line, column: violation.column, message: violation.message, fix: violation.fix)
        }
        let root: Node
        do {
            guard let composed = try Yams.compose(yaml: text) else {
                throw context.error(at: nil, "the file is empty", fix: "start from the default matrix: kmatrix matrix > matrix.yaml")
            }
            root = composed
        } catch let error as MatrixError {
            throw error
        } catch let error as YamlError {
            throw context.error(yaml: error)
        } catch {
            throw context.error(at: nil, "cannot read YAML: \(error)", fix: "check the file's syntax")
        }
        return try context.matrix(root)
    }

    struct Context {
        var file: String

        func error(at node: Node?, _ message: String, fix: String) -> MatrixError {
            MatrixError(file: file, line: node?.mark?.line ?? 1, column: node?.mark?.column ?? 1, message: message, fix: fix)
        }

        func error(yaml: YamlError) -> MatrixError {
            switch yaml {
            case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
                 .composer(let context, let problem, let mark, _):
                let detail = context.map { "\(problem) \($0.text)" } ?? problem
                return MatrixError(file: file, line: mark.line, column: mark.column, message: "invalid YAML: \(InputRules.quoted(detail, limit: 200).dropFirst().dropLast())",
                                   fix: "check indentation and quoting on this line and the one before")
            case .duplicatedKeysInMapping(let duplicates, let context):
                // Yams marks the first occurrence; the mistake is the second one.
                let key = duplicates.first ?? ""
                let lines = Self.lines(defining: key, in: context.text)
                if lines.count >= 2 {
                    return MatrixError(file: file, line: lines[1], column: 1, message: "duplicate key \(InputRules.quoted(key)) (first on line \(lines[0]))",
                                       fix: "keep one of them")
                }
                return MatrixError(file: file, line: context.mark.line, column: context.mark.column,
                                   message: "duplicate key \(duplicates.map { InputRules.quoted($0) }.joined(separator: ", "))", fix: "keep one of them")
            default:
                return MatrixError(file: file, line: 1, column: 1, message: "invalid YAML: \(yaml)", fix: "check the file's syntax")
            }
        }

        /// Lines (1-based) where `key:` starts a mapping entry, in block or flow style.
        static func lines(defining key: String, in text: String) -> [Int] {
            guard !key.isEmpty else { return [] }
            var found: [Int] = []
            for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                var rest = Substring(line).drop { $0 == " " || $0 == "-" || $0 == "{" || $0 == "\t" }
                if rest.first == "\"" || rest.first == "'" { rest = rest.dropFirst() }
                guard rest.starts(with: key) else { continue }
                let after = rest.dropFirst(key.count).drop { $0 == "\"" || $0 == "'" || $0 == " " }
                if after.first == ":" { found.append(index + 1) }
            }
            return found
        }

        func mapping(_ node: Node, _ what: String, allowed: [String]) throws(MatrixError) -> [(key: String, keyNode: Node, value: Node)] {
            guard case .mapping(let mapping) = node else {
                throw error(at: node, "\(what) must be a mapping (key: value)", fix: "write \(what) as `key: value` lines; allowed keys: \(allowed.joined(separator: ", "))")
            }
            var seen = Set<String>()
            var entries: [(key: String, keyNode: Node, value: Node)] = []
            for (keyNode, value) in mapping {
                guard let key = keyNode.string else { throw error(at: keyNode, "keys must be strings", fix: "quote the key") }
                guard allowed.contains(key) else {
                    throw error(at: keyNode, "unknown key \(InputRules.quoted(key)) in \(what)", fix: "use one of: \(allowed.joined(separator: ", "))")
                }
                guard seen.insert(key).inserted else { throw error(at: keyNode, "duplicate key \(InputRules.quoted(key)) in \(what)", fix: "keep one of them") }
                entries.append((key, keyNode, value))
            }
            return entries
        }

        func string(_ node: Node, _ what: String) throws(MatrixError) -> String {
            guard case .scalar(let scalar) = node, !scalar.string.isEmpty else {
                throw error(at: node, "\(what) must be a non-empty string", fix: "write \(what) as a plain value")
            }
            return scalar.string
        }

        /// A string that must pass one of `InputRules`' checks.
        func checked(_ node: Node, _ what: String, _ rule: (String) -> String?, fix: String) throws(MatrixError) -> String {
            let value = try string(node, what)
            if let problem = rule(value) {
                throw error(at: node, "\(what) \(InputRules.quoted(value)) \(problem)", fix: fix)
            }
            return value
        }

        func int(_ node: Node, _ what: String, range: ClosedRange<Int>) throws(MatrixError) -> Int {
            guard let value = node.int, range.contains(value) else {
                throw error(at: node, "\(what) must be a whole number from \(range.lowerBound) to \(range.upperBound)", fix: "write e.g. \(what): \(range.lowerBound)")
            }
            return value
        }

        func outcome(_ node: Node) throws(MatrixError) -> Outcome {
            let text = try string(node, "outcome")
            guard let outcome = Outcome(rawValue: text), Outcome.expectable.contains(outcome) else {
                throw error(at: node, "\(InputRules.quoted(text)) is not an outcome a cell can be expected to have",
                            fix: "use one of: \(Outcome.expectable.map(\.rawValue).joined(separator: ", "))")
            }
            return outcome
        }

        func scenarioName(_ node: Node) throws(MatrixError) -> String {
            let name = try string(node, "scenario name")
            guard Scenario.named(name) != nil else {
                throw error(at: node, "unknown scenario \(InputRules.quoted(name))", fix: "use one of: \(Scenario.catalogue.map(\.name).joined(separator: ", "))")
            }
            return name
        }

        func matrix(_ root: Node) throws(MatrixError) -> Matrix {
            var matrix = Matrix(guests: [])
            var sawGuests = false
            let entries = try mapping(root, "the matrix", allowed: ["guests", "scenarios", "expect", "defaults", "hosts", "consumers", "kernels"])
            // Consumers first: guests name them and expectations name their scenarios.
            if let entry = entries.first(where: { $0.key == "consumers" }) {
                matrix.consumers = try consumers(entry.value)
            }
            let scenarioNames = Scenario.catalogue.map(\.name) + matrix.consumers.flatMap(\.scenarios).map(\.name)
            for entry in entries {
                switch entry.key {
                case "guests":
                    sawGuests = true
                    matrix.guests = try guests(entry.value, consumers: matrix.consumers.map(\.name), scenarioNames: scenarioNames)
                case "scenarios":
                    guard case .sequence(let sequence) = entry.value else {
                        throw error(at: entry.value, "scenarios must be a list of scenario names", fix: "write scenarios: [failopen-socket-overflow, strict-socket-overflow]")
                    }
                    var names: [String] = []
                    for node in sequence { names.append(try scenarioName(node)) }
                    matrix.scenarios = Scenario.catalogue.filter { names.contains($0.name) }
                case "expect":
                    matrix.expectations = try expectations(entry.value, scenarioNames: scenarioNames)
                case "defaults":
                    matrix.defaults = try defaults(entry.value)
                case "hosts":
                    matrix.hosts = try hosts(entry.value)
                case "kernels":
                    matrix.kernelSets = try kernelSets(entry.value, consumers: matrix.consumers.map(\.name))
                default:
                    break
                }
            }
            guard (sawGuests && !matrix.guests.isEmpty) || !matrix.kernelSets.isEmpty else {
                throw error(at: root, "the matrix has no guests", fix: "add a `guests:` list, e.g. `- { name: host, image: { kind: host } }`, or a `kernels:` set")
            }
            matrix.guests = matrix.guests.map(matrix.sizedForConsumers)
            return matrix
        }

        static let consumerSuites = ["bullseye", "bookworm", "bookworm-backports", "trixie"]

        func kernelSets(_ node: Node, consumers: [String]) throws(MatrixError) -> [KernelSet] {
            try list(node, "kernels", fix: "write kernels: [{ debian: [bookworm-security, trixie-backports], flavour: cloud, versions: all }]") { item throws(MatrixError) in
                var set = KernelSet(suites: [])
                for field in try mapping(item, "a kernel set", allowed: ["debian", "flavour", "versions", "consumers"]) {
                    switch field.key {
                    case "debian":
                        set.suites = try list(field.value, "debian", fix: "write debian: [bookworm-security, trixie-backports]") { suite throws(MatrixError) in
                            let name = try string(suite, "suite")
                            guard KernelSet.knownSuites.contains(name) else {
                                throw error(at: suite, "unknown Debian suite \(InputRules.quoted(name))",
                                            fix: "use bullseye, bookworm or trixie, each optionally with -updates, -security or -backports")
                            }
                            return name
                        }
                    case "flavour":
                        let text = try string(field.value, "flavour")
                        guard let flavour = KernelSet.Flavour(rawValue: text) else {
                            throw error(at: field.value, "unknown flavour \(InputRules.quoted(text))", fix: "use cloud or amd64")
                        }
                        set.flavour = flavour
                    case "versions":
                        let text = try string(field.value, "versions")
                        guard let versions = KernelSet.Versions(parsing: text) else {
                            throw error(at: field.value, "versions \(InputRules.quoted(text)) is not all, newest, \"newest per series\" or a version rule",
                                        fix: "write versions: all, or e.g. versions: \">= 6.1\"")
                        }
                        set.versions = versions
                    default:
                        set.consumers = try list(field.value, "consumers", fix: "name entries of the top-level consumers:") { name throws(MatrixError) in
                            let text = try string(name, "consumer")
                            guard consumers.contains(text) else { throw error(at: name, "unknown consumer \(InputRules.quoted(text))", fix: "declare it under consumers:") }
                            return text
                        }
                    }
                }
                guard !set.suites.isEmpty else { throw error(at: item, "a kernel set needs its suites", fix: "add debian: [bookworm-security]") }
                return set
            }
        }

        func consumers(_ node: Node) throws(MatrixError) -> [ConsumerSpec] {
            let keys = ["debian", "files", "start", "version", "sizes", "scenarios", "ready_timeout", "ready_log", "stop", "memory_mib"]
            var consumers: [ConsumerSpec] = []
            guard case .mapping(let declared) = node, !declared.isEmpty else {
                throw error(at: node, "consumers must map each consumer's name to its definition",
                            fix: "write consumers: { my-agent: { files: [{ from: ./my-agent, to: bin/my-agent }], start: [\"{bundle}/bin/my-agent\", \"{queue}\"] } }")
            }
            for (nameNode, definition) in declared {
                let name = try checked(nameNode, "consumer name", InputRules.nameProblem,
                                       fix: "use up to \(InputRules.maximumNameLength) letters, digits, '-', '.', '_' and '+', starting with a letter or digit")
                if consumers.contains(where: { $0.name == name }) {
                    throw error(at: nameNode, "duplicate consumer \(InputRules.quoted(name))", fix: "give each consumer its own name")
                }
                var spec = ConsumerSpec(name: name, start: [])
                var sawStart = false
                for field in try mapping(definition, "consumer \(InputRules.quoted(name))", allowed: keys) {
                    switch field.key {
                    case "debian":
                        var suite: String?
                        var packages: [String] = []
                        for item in try mapping(field.value, "debian", allowed: ["suite", "packages"]) {
                            if item.key == "suite" {
                                let value = try string(item.value, "suite")
                                guard Self.consumerSuites.contains(value) else {
                                    throw error(at: item.value, "unknown Debian suite \(InputRules.quoted(value))", fix: "use one of: \(Self.consumerSuites.joined(separator: ", "))")
                                }
                                suite = value
                            } else {
                                packages = try list(item.value, "packages", fix: "write packages: [suricata]") { node throws(MatrixError) in
                                    try checked(node, "package", ConsumerSpec.packageProblem, fix: "write the Debian package's name, e.g. suricata")
                                }
                            }
                        }
                        guard let suite, !packages.isEmpty else {
                            throw error(at: field.value, "debian needs a suite and packages", fix: "write debian: { suite: trixie, packages: [suricata] }")
                        }
                        spec.debian = ConsumerSpec.DebianPackages(suite: suite, packages: packages)
                    case "files":
                        spec.files = try list(field.value, "files", fix: "write files: [{ from: ./agent.yaml, to: agent.yaml }]") { item throws(MatrixError) in
                            var from: String?
                            var to: String?
                            for part in try mapping(item, "a file", allowed: ["from", "to"]) {
                                if part.key == "from" {
                                    from = try checked(part.value, "from", ConsumerSpec.sourcePathProblem,
                                                       fix: "give the file's path relative to the matrix file's folder, which must hold it (e.g. agent/agent.yaml)")
                                } else {
                                    to = try checked(part.value, "to", ConsumerSpec.bundlePathProblem,
                                                     fix: "give a path inside the bundle, e.g. bin/my-agent or etc/agent.conf")
                                }
                            }
                            guard let from, let to else { throw error(at: item, "a file needs from and to", fix: "write { from: ./agent.yaml, to: agent.yaml }") }
                            return ConsumerSpec.File(from: from, to: to)
                        }
                        var seen = Set<String>()
                        for file in spec.files where !seen.insert(file.to).inserted {
                            throw error(at: field.value, "two files go to \(InputRules.quoted(file.to))", fix: "give each file its own place in the bundle")
                        }
                    case "start":
                        sawStart = true
                        spec.start = try command(field.value, "start")
                        guard spec.start[0].hasPrefix("{bundle}/") || spec.start[0].hasPrefix("/") else {
                            throw error(at: field.value, "start must begin with the program's absolute path",
                                        fix: "write it as {bundle}/bin/NAME (a program of the bundle) or an absolute path in the guest")
                        }
                    case "version":
                        spec.version = try command(field.value, "version")
                    case "sizes":
                        spec.sizes = try list(field.value, "sizes", fix: "write sizes: [64, 1500, 8000]") { node throws(MatrixError) in
                            try int(node, "a size", range: 8...65507)
                        }
                        guard Set(spec.sizes).count == spec.sizes.count else {
                            throw error(at: field.value, "sizes lists a size twice", fix: "list each size once")
                        }
                    case "scenarios":
                        spec.kinds = try list(field.value, "scenarios", fix: "write scenarios: [overflow, liveness, rmem]") { node throws(MatrixError) in
                            let text = try string(node, "scenario kind")
                            guard let kind = ConsumerSpec.Kind(rawValue: text) else {
                                throw error(at: node, "unknown consumer scenario \(InputRules.quoted(text))",
                                            fix: "use one of: \(ConsumerSpec.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
                            }
                            return kind
                        }
                    case "ready_timeout": spec.readySeconds = try int(field.value, "ready_timeout", range: 1...600)
                    case "ready_log":
                        spec.readyLog = try checked(field.value, "ready_log", ConsumerSpec.readyLogProblem,
                                                    fix: "give a line the consumer prints once it is fully started, e.g. \"Engine started\"")
                    case "stop":
                        let text = try string(field.value, "stop")
                        guard let signal = ConsumerSpec.StopSignal(rawValue: text) else {
                            throw error(at: field.value, "unknown stop signal \(InputRules.quoted(text))",
                                        fix: "use one of: \(ConsumerSpec.StopSignal.allCases.map(\.rawValue).joined(separator: ", "))")
                        }
                        spec.stop = signal
                    case "memory_mib": spec.memoryMiB = try int(field.value, "memory_mib", range: 128...65536)
                    default: break
                    }
                }
                guard sawStart else {
                    throw error(at: definition, "consumer \(InputRules.quoted(name)) has no start command",
                                fix: "add start: [\"{bundle}/bin/NAME\", \"-q\", \"{queue}\"]")
                }
                guard spec.debian != nil || !spec.files.isEmpty else {
                    throw error(at: definition, "consumer \(InputRules.quoted(name)) deploys nothing",
                                fix: "add debian: { suite: trixie, packages: [NAME] } or files: [{ from: ./NAME, to: bin/NAME }]")
                }
                consumers.append(spec)
            }
            return consumers
        }

        /// A command as a list of arguments, each checked (`ConsumerSpec.argumentProblem`).
        func command(_ node: Node, _ what: String) throws(MatrixError) -> [String] {
            try list(node, what, fix: "write \(what): [\"{bundle}/bin/NAME\", \"--flag\", \"{queue}\"], one argument per item") { item throws(MatrixError) in
                try checked(item, "argument", ConsumerSpec.argumentProblem, fix: "write one argument; placeholders: {bundle}, {dir}, {queue}")
            }
        }

        /// A non-empty YAML list, each item read by `read`.
        func list<T>(_ node: Node, _ what: String, fix: String, _ read: (Node) throws(MatrixError) -> T) throws(MatrixError) -> [T] {
            guard case .sequence(let items) = node, !items.isEmpty else {
                throw error(at: node, "\(what) must be a non-empty list", fix: fix)
            }
            var values: [T] = []
            for item in items { values.append(try read(item)) }
            return values
        }

        func hosts(_ node: Node) throws(MatrixError) -> [HostEntry] {
            guard case .sequence(let sequence) = node, !sequence.isEmpty else {
                throw error(at: node, "hosts must be a list of libvirt hosts", fix: "write - { uri: \"qemu+ssh://root@lab/system\", jobs: 4 }")
            }
            var hosts: [HostEntry] = []
            for item in sequence {
                var uri: HostURI?
                var jobs: Int?
                for field in try mapping(item, "a host", allowed: ["uri", "jobs"]) {
                    if field.key == "uri" {
                        let text = try checked(field.value, "uri", { InputRules.textProblem($0, limit: 1000) ?? HostURI.problem($0) },
                                               fix: "write \(HostURI.localSystem) or qemu+ssh://[user@]host[:port]/system[?keyfile=/path&no_verify=1]")
                        uri = try? HostURI.parse(text).get()
                    } else {
                        jobs = try int(field.value, "jobs", range: 1...256)
                    }
                }
                guard let uri else { throw error(at: item, "this host has no uri", fix: "add uri: qemu+ssh://root@lab/system") }
                hosts.append(HostEntry(uri: uri, jobs: jobs))
            }
            return hosts
        }

        func defaults(_ node: Node) throws(MatrixError) -> Defaults {
            var defaults = Defaults()
            for entry in try mapping(node, "defaults", allowed: ["memory_mib", "vcpus", "timeouts"]) {
                switch entry.key {
                case "memory_mib": defaults.memoryMiB = try int(entry.value, "memory_mib", range: 128...65536)
                case "vcpus": defaults.vcpus = try int(entry.value, "vcpus", range: 1...64)
                case "timeouts":
                    for timeout in try mapping(entry.value, "timeouts", allowed: ["boot", "ready", "deploy", "scenario"]) {
                        let seconds = Double(try int(timeout.value, timeout.key, range: 1...7200))
                        switch timeout.key {
                        case "boot": defaults.timeouts.boot = seconds
                        case "ready": defaults.timeouts.ready = seconds
                        case "deploy": defaults.timeouts.deploy = seconds
                        default: defaults.timeouts.scenario = seconds
                        }
                    }
                default: break
                }
            }
            return defaults
        }

        func expectations(_ node: Node, scenarioNames names: [String]) throws(MatrixError) -> [String: [ExpectationRule]] {
            var result: [String: [ExpectationRule]] = [:]
            for entry in try mapping(node, "expect", allowed: names) {
                guard case .sequence(let rules) = entry.value, !rules.isEmpty else {
                    throw error(at: entry.value, "the expectations for \(entry.key) must be a list of rules",
                                fix: "write - { when: \"kernel < 4.6\", outcome: dropped } then - { outcome: reinjected }")
                }
                var parsed: [ExpectationRule] = []
                for ruleNode in rules {
                    var rule = ExpectationRule(outcome: .error)
                    var sawOutcome = false
                    for field in try mapping(ruleNode, "an expectation rule", allowed: ["when", "outcome"]) {
                        if field.key == "when" {
                            let text = try string(field.value, "when")
                            do {
                                rule.when = try VersionRule(parsing: text)
                            } catch {
                                throw self.error(at: field.value, "bad version rule \(InputRules.quoted(text)): \(error.message)",
                                                 fix: "write a rule like \"kernel < 4.6\" or \"kernel >= 4.6 and kernel < 5.0\"")
                            }
                        } else {
                            rule.outcome = try outcome(field.value)
                            sawOutcome = true
                        }
                    }
                    guard sawOutcome else {
                        throw error(at: ruleNode, "this rule has no outcome", fix: "add outcome: reinjected (or dropped, delivered, …)")
                    }
                    if let previous = parsed.last, previous.when == nil {
                        throw error(at: ruleNode, "this rule can never apply: the rule before it has no `when` and matches every kernel",
                                    fix: "move the rule without `when` to the end of the list")
                    }
                    parsed.append(rule)
                }
                result[entry.key] = parsed
            }
            return result
        }

        func guests(_ node: Node, consumers: [String], scenarioNames: [String]) throws(MatrixError) -> [GuestSpec] {
            guard case .sequence(let sequence) = node else {
                throw error(at: node, "guests must be a list", fix: "write each guest as a list item starting with `- name:`")
            }
            var guests: [GuestSpec] = []
            var lines: [String: Int] = [:]
            for guestNode in sequence {
                var name: String?
                var image: ImageSpec?
                var spec = GuestSpec(name: "", image: .host)
                var consumersNode: Node?
                for entry in try mapping(guestNode, "a guest", allowed: ["name", "image", "memory_mib", "vcpus", "expect", "kernel", "consumers"]) {
                    switch entry.key {
                    case "name":
                        let value = try checked(entry.value, "guest name", InputRules.nameProblem,
                                                fix: "use up to \(InputRules.maximumNameLength) letters, digits, '-', '.', '_' and '+', starting with a letter or digit")
                        if let first = lines[value] {
                            throw error(at: entry.value, "duplicate guest \(InputRules.quoted(value)) (first defined on line \(first))", fix: "give each guest its own name")
                        }
                        lines[value] = entry.value.mark?.line ?? 0
                        name = value
                    case "image": image = try self.image(entry.value)
                    case "memory_mib": spec.memoryMiB = try int(entry.value, "memory_mib", range: 128...65536)
                    case "vcpus": spec.vcpus = try int(entry.value, "vcpus", range: 1...64)
                    case "kernel": spec.nominalKernel = try checked(entry.value, "kernel", InputRules.releaseProblem,
                                                                   fix: "write the release as `uname -r` prints it, e.g. 3.10.0-1160.el7.x86_64")
                    case "expect":
                        for override in try mapping(entry.value, "a guest's expect", allowed: scenarioNames) {
                            spec.expect[override.key] = try outcome(override.value)
                        }
                    case "consumers":
                        consumersNode = entry.value
                        spec.consumers = try list(entry.value, "consumers", fix: "write consumers: [NAME], naming entries of the top-level consumers:") { item throws(MatrixError) in
                            let name = try string(item, "consumer")
                            guard consumers.contains(name) else {
                                throw error(at: item, consumers.isEmpty ? "unknown consumer \(InputRules.quoted(name)): the matrix declares none"
                                                                        : "unknown consumer \(InputRules.quoted(name))",
                                            fix: consumers.isEmpty ? "declare it under a top-level consumers: mapping" : "use one of: \(consumers.joined(separator: ", "))")
                            }
                            return name
                        }
                    default: break
                    }
                }
                guard let name else { throw error(at: guestNode, "this guest has no name", fix: "add name: my-guest") }
                guard let image else {
                    throw error(at: guestNode, "guest \"\(name)\" has no image", fix: "add image: { kind: host }, { kind: kernel, suite: bookworm } or { kind: cloud, file: …, user: … }")
                }
                if image == .host, !spec.consumers.isEmpty, let node = consumersNode {
                    throw error(at: node, "the host guest cannot run a consumer: its command would run as root on this machine, outside any VM",
                                fix: "give the consumer to a kernel guest booting this machine's kernel (kmatrix run --kernel) or to a VM guest")
                }
                spec.name = name
                spec.image = image
                guests.append(spec)
            }
            return guests
        }

        func image(_ node: Node) throws(MatrixError) -> ImageSpec {
            let keys = ["kind", "suite", "deb", "rpm", "bzimage", "modules", "recipe", "file", "sha256", "user", "source"]
            let entries = try mapping(node, "image", allowed: keys)
            var values: [String: (String, Node)] = [:]
            var packageLists: [String: [String]] = [:]
            for entry in entries {
                // deb and rpm take one file or a list (split kernel packages go together).
                if ["deb", "rpm"].contains(entry.key), case .sequence(let items) = entry.value {
                    guard !items.isEmpty else {
                        throw error(at: entry.value, "\(entry.key) lists no files", fix: "write \(entry.key): [/path/a.\(entry.key), /path/b.\(entry.key)]")
                    }
                    var paths: [String] = []
                    for item in items { paths.append(try checked(item, entry.key, InputRules.pathProblem, fix: "give the path to the file")) }
                    packageLists[entry.key] = paths
                    values[entry.key] = (paths[0], entry.value)
                } else if ["deb", "rpm", "bzimage", "modules"].contains(entry.key) {
                    values[entry.key] = (try checked(entry.value, entry.key, InputRules.pathProblem, fix: "give the path to the file"), entry.value)
                } else {
                    values[entry.key] = (try string(entry.value, entry.key), entry.value)
                }
            }
            guard let (kind, kindNode) = values["kind"] else {
                throw error(at: node, "the image has no kind", fix: "add kind: host, kernel or cloud")
            }
            func reject(_ unwanted: [String]) throws(MatrixError) {
                if let key = unwanted.first(where: { values[$0] != nil }), let (_, keyNode) = values[key] {
                    throw error(at: keyNode, "\"\(key)\" does not apply to a \(kind) image", fix: "remove it")
                }
            }
            switch kind {
            case "host":
                try reject(keys.filter { $0 != "kind" })
                return .host
            case "kernel":
                try reject(["file", "sha256", "user", "source"])
                let sources = ["suite", "deb", "rpm", "bzimage", "recipe"].filter { values[$0] != nil }
                guard sources.count == 1, let source = sources.first, let (value, valueNode) = values[source] else {
                    throw error(at: node, "a kernel image needs exactly one of suite, deb, rpm, bzimage or recipe",
                                fix: "e.g. { kind: kernel, suite: bookworm } or { kind: kernel, deb: /path/linux-image.deb }")
                }
                if values["modules"] != nil && source != "bzimage" {
                    throw error(at: node, "modules only goes with bzimage", fix: "remove modules, or boot a bzimage")
                }
                switch source {
                case "suite":
                    guard MatrixParser.suites.contains(value) else {
                        throw error(at: valueNode, "unknown Debian suite \(InputRules.quoted(value))", fix: "use one of: \(MatrixParser.suites.joined(separator: ", "))")
                    }
                    return .kernel(.debian(suite: value))
                case "recipe":
                    guard Recipes.named(value, kind: .kernel) != nil else {
                        throw error(at: valueNode, "unknown kernel recipe \(InputRules.quoted(value))", fix: "use one of: \(Recipes.names(.kernel).joined(separator: ", ")) (under images/)")
                    }
                    return .kernel(.recipe(value))
                case "bzimage":
                    return .kernel(.bzImage(path: value, modules: values["modules"]?.0))
                default:
                    return .kernel(.packages(source == "rpm" ? .rpm : .deb, paths: packageLists[source] ?? [value]))
                }
            case "cloud":
                try reject(["suite", "deb", "rpm", "bzimage", "modules"])
                guard let (file, fileNode) = values["file"] else {
                    throw error(at: node, "a cloud image needs a file", fix: "add file: the image's file name, e.g. rhel-server-7.9-x86_64-kvm.qcow2")
                }
                if let problem = InputRules.fileNameProblem(file) {
                    throw error(at: fileNode, "image file \(InputRules.quoted(file)) \(problem)",
                                fix: "give the image's file name only; `kmatrix images add GUEST /path/to/it` puts it in kmatrix's image folder")
                }
                guard let (user, userNode) = values["user"] else {
                    throw error(at: node, "a cloud image needs the distribution's default user", fix: "add user: cloud-user (RHEL), ubuntu or ec2-user")
                }
                if let problem = InputRules.userProblem(user) {
                    throw error(at: userNode, "user \(InputRules.quoted(user)) is not a POSIX user name: it \(problem)",
                                fix: "write the distribution's default user, e.g. cloud-user (RHEL), ubuntu or ec2-user")
                }
                if let (source, sourceNode) = values["source"], let problem = InputRules.textProblem(source) {
                    throw error(at: sourceNode, "source \(problem)", fix: "write where to download the image in one line")
                }
                if let (recipe, recipeNode) = values["recipe"], Recipes.named(recipe, kind: .cloud) == nil {
                    throw error(at: recipeNode, "unknown cloud image recipe \(InputRules.quoted(recipe))", fix: "use one of: \(Recipes.names(.cloud).joined(separator: ", ")) (under images/)")
                }
                if let (sum, sumNode) = values["sha256"], sum.count != 64 || !sum.allSatisfy(\.isHexDigit) {
                    throw error(at: sumNode, "sha256 must be 64 hexadecimal digits", fix: "copy the checksum from the vendor's download page")
                }
                return .cloud(CloudImage(file: file, sha256: values["sha256"]?.0.lowercased(), user: user, source: values["source"]?.0, recipe: values["recipe"]?.0))
            default:
                throw error(at: kindNode, "unknown image kind \(InputRules.quoted(kind))", fix: "use host, kernel or cloud")
            }
        }
    }
}
