import Foundation
import KMatrixCore
import KMatrixRuntime

/// What a libvirt URI says about where its host is. `qemu:///system` is this machine;
/// `qemu+ssh://user@host:port/system?keyfile=…&no_verify=1` is another one, whose guests SSH
/// reaches through that same login. Every part that ends up on a command line is checked.
struct RemoteURI {
    var hostName: String
    var jump: SSHJump?

    static func parse(_ uri: String) throws -> RemoteURI {
        guard let components = URLComponents(string: uri), let scheme = components.scheme else {
            throw KMatrixError(.invalidInput, "--connect \(InputRules.quoted(uri)) is not a libvirt URI (e.g. qemu:///system, qemu+ssh://lab/system)")
        }
        let host = components.host ?? ""
        let transport = scheme.split(separator: "+", maxSplits: 1).dropFirst().first.map(String.init)
        if host.isEmpty || host == "localhost" && transport == nil {
            return RemoteURI(hostName: "local", jump: nil)
        }
        guard transport == nil || transport == "ssh" || transport == "libssh" || transport == "libssh2" else {
            throw KMatrixError(.invalidInput, "--connect \(InputRules.quoted(uri)): guests on another host are reached over SSH, so the URI must use ssh (qemu+ssh://…)")
        }
        guard host.unicodeScalars.allSatisfy({ InputRules.isAlphanumeric($0) || ".-:[]".unicodeScalars.contains($0) }),
              let first = host.unicodeScalars.first, InputRules.isAlphanumeric(first) || first == "[" else {
            throw KMatrixError(.invalidInput, "--connect host \(InputRules.quoted(host)) is not a host name or address")
        }
        if let user = components.user, let problem = InputRules.userProblem(user) {
            throw KMatrixError(.invalidInput, "--connect user \(InputRules.quoted(user)) \(problem)")
        }
        let query = Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        if let keyfile = query["keyfile"], let problem = InputRules.pathProblem(keyfile) {
            throw KMatrixError(.invalidInput, "--connect keyfile \(problem)")
        }
        let jump = SSHJump(user: components.user, host: host, port: components.port, identityFile: query["keyfile"],
                           skipHostKeyCheck: query["no_verify"] == "1")
        return RemoteURI(hostName: components.port.map { "\(host):\($0)" } ?? host, jump: jump)
    }
}
