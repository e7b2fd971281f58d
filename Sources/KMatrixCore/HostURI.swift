/// A libvirt URI kmatrix agrees to open (docs/architecture.md, "Input"). libvirt reads far more
/// than an address from a URI: its `ext` transport runs `command=`, the ssh transports run
/// `netcat=` and `command=` on either end, `socket=`, `proxy=` and `mode=` pick what to connect
/// through. A URI from matrix.yaml or `--connect` would then run a program as root. So a URI is
/// held to a whitelist and everything else is refused:
///
/// - `qemu:///system`, this machine's system daemon (and `test:///default`, libvirt's in-process
///   test driver);
/// - `qemu+ssh://[user@]host[:port]/system`, whose query may hold only `keyfile=` (an absolute
///   path of plain characters) and `no_verify=` (0 or 1).
public struct HostURI: Sendable, Hashable {
    public enum Location: Sendable, Hashable {
        /// This machine's libvirt.
        case local
        /// Another machine's libvirt, over SSH; its guests' forwards listen on that host's 127.0.0.1.
        case ssh(SSHLogin)
    }

    /// The login libvirt's ssh transport uses, and kmatrix's ProxyCommand to that host with it.
    public struct SSHLogin: Sendable, Hashable {
        public var user: String?
        public var host: String
        public var port: Int?
        public var keyFile: String?
        /// `no_verify=1`: the host's key is not checked (a lab that says so).
        public var skipHostKeyCheck: Bool
    }

    public static let localSystem = "qemu:///system"
    public static let testDriver = "test:///default"
    static let sshPrefix = "qemu+ssh://"
    static let allowedQuery: Set<String> = ["keyfile", "no_verify"]

    /// The URI as given, which is what libvirt is handed.
    public var text: String
    public var location: Location

    /// A name for the host in cells and messages: "local", or host[:port].
    public var hostName: String {
        switch location {
        case .local: "local"
        case .ssh(let login): login.port.map { "\(login.host):\($0)" } ?? login.host
        }
    }

    public var isLocal: Bool { location == .local }

    /// The URI, or why it is refused (a sentence fragment after the URI).
    public static func parse(_ text: String) -> Result<HostURI, HostURIProblem> {
        if text == localSystem || text == testDriver { return .success(HostURI(text: text, location: .local)) }
        guard text.hasPrefix(sshPrefix) else {
            if text.hasPrefix("qemu:///") || text.hasPrefix("qemu://") {
                return .failure(HostURIProblem("names a local libvirt other than \(localSystem) or carries options; use \(localSystem)"))
            }
            return .failure(HostURIProblem("is not a libvirt URI kmatrix accepts: use \(localSystem) or qemu+ssh://[user@]host[:port]/system "
                + "(other transports such as ext, tcp, tls, unix or libssh are refused: they can name a program or socket for libvirt to use)"))
        }
        let rest = text.dropFirst(sshPrefix.count)
        guard let slash = rest.firstIndex(of: "/") else { return .failure(HostURIProblem("has no path; write …/system")) }
        let authority = rest[..<slash]
        var path = rest[slash...]
        var query: Substring = ""
        if let mark = path.firstIndex(of: "?") {
            query = path[path.index(after: mark)...]
            path = path[..<mark]
        }
        guard path == "/system" else { return .failure(HostURIProblem("must end in /system (the remote host's system daemon)")) }
        if authority.contains("#") || query.contains("#") { return .failure(HostURIProblem("must not carry a fragment")) }

        var user: String?
        var hostPort = authority
        if let at = authority.lastIndex(of: "@") {
            let name = String(authority[..<at])
            if let problem = InputRules.userProblem(name) { return .failure(HostURIProblem("user \(InputRules.quoted(name)) \(problem)")) }
            user = name
            hostPort = authority[authority.index(after: at)...]
        }
        var host = hostPort
        var port: Int?
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else { return .failure(HostURIProblem("has an unclosed [ in its host")) }
            host = hostPort[...close]
            let after = hostPort[hostPort.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return .failure(HostURIProblem("has text after its [address]")) }
                guard let number = Int(after.dropFirst()), (1...65535).contains(number) else { return .failure(HostURIProblem("has a port that is not 1–65535")) }
                port = number
            }
            let inner = host.dropFirst().dropLast()
            guard !inner.isEmpty, inner.unicodeScalars.allSatisfy({ $0.properties.isASCIIHexDigit || $0 == ":" || $0 == "." }) else {
                return .failure(HostURIProblem("host \(InputRules.quoted(host)) is not an IPv6 address"))
            }
        } else {
            if let colon = hostPort.lastIndex(of: ":") {
                guard let number = Int(hostPort[hostPort.index(after: colon)...]), (1...65535).contains(number) else {
                    return .failure(HostURIProblem("has a port that is not 1–65535"))
                }
                port = number
                host = hostPort[..<colon]
            }
            guard !host.isEmpty else { return .failure(HostURIProblem("names no host; a local libvirt is \(localSystem)")) }
            guard host.utf8.count <= 253, let first = host.unicodeScalars.first, InputRules.isAlphanumeric(first),
                  host.unicodeScalars.allSatisfy({ InputRules.isAlphanumeric($0) || $0 == "." || $0 == "-" }) else {
                return .failure(HostURIProblem("host \(InputRules.quoted(host)) is not a host name or address"))
            }
        }

        var keyFile: String?
        var skipHostKeyCheck = false
        var seen: Set<String> = []
        for item in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(parts[0])
            let value = parts.count > 1 ? String(parts[1]) : ""
            guard allowedQuery.contains(key) else {
                return .failure(HostURIProblem("carries \(InputRules.quoted(key, limit: 40)), which kmatrix refuses: libvirt's command, netcat, socket, proxy "
                    + "and mode options name a program or a socket to use, not data; only keyfile and no_verify are accepted"))
            }
            guard seen.insert(key).inserted else { return .failure(HostURIProblem("gives \(key) twice")) }
            switch key {
            case "keyfile":
                guard value.hasPrefix("/"), value.utf8.count <= 1024,
                      value.unicodeScalars.allSatisfy({ InputRules.isAlphanumeric($0) || "/._-+".unicodeScalars.contains($0) }),
                      !value.split(separator: "/").contains("..") else {
                    return .failure(HostURIProblem("keyfile must be an absolute path of letters, digits and /._-+"))
                }
                keyFile = value
            default:
                guard value == "0" || value == "1" else { return .failure(HostURIProblem("no_verify must be 0 or 1")) }
                skipHostKeyCheck = value == "1"
            }
        }
        let login = SSHLogin(user: user, host: String(host), port: port, keyFile: keyFile, skipHostKeyCheck: skipHostKeyCheck)
        return .success(HostURI(text: text, location: .ssh(login)))
    }

    /// Why `text` is refused, or nil (for input rules that speak in problems).
    public static func problem(_ text: String) -> String? {
        if case .failure(let problem) = parse(text) { return problem.message }
        return nil
    }

    /// `parse`, as the input error every command reports (exit 2).
    public static func checked(_ text: String, what: String = "--connect") throws -> HostURI {
        switch parse(text) {
        case .success(let uri): return uri
        case .failure(let problem): throw KMatrixError(.invalidInput, "\(what) \(InputRules.quoted(text, limit: 200)) \(problem.message)")
        }
    }
}

/// Why a libvirt URI is refused.
public struct HostURIProblem: Error, Sendable, Hashable {
    public var message: String
    public init(_ message: String) { self.message = message }
}
