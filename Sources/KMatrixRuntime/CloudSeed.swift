import Foundation
import KMatrixCore
import Yams

/// Copy-on-write overlays and cloud-init NoCloud seeds for cloud guests. The seed's YAML is
/// emitted by Yams from typed values: nothing from matrix.yaml is ever pasted into YAML text.
enum CloudSeed {
    struct UserData: Encodable {
        struct SystemInfo: Encodable {
            struct DefaultUser: Encodable { var name: String }
            var defaultUser: DefaultUser
            enum CodingKeys: String, CodingKey { case defaultUser = "default_user" }
        }
        var users = ["default"]
        var systemInfo: SystemInfo
        var sshAuthorizedKeys: [String]
        /// Without it sudo complains about the hostname on every call.
        var manageEtcHosts = true
        // No `ssh_pwauth`: setting it makes cloud-init's config stage rewrite sshd_config and
        // restart sshd, which resets the connections kmatrix opens as soon as the key works.

        enum CodingKeys: String, CodingKey {
            case users
            case systemInfo = "system_info"
            case sshAuthorizedKeys = "ssh_authorized_keys"
            case manageEtcHosts = "manage_etc_hosts"
        }
    }

    struct MetaData: Encodable {
        var instanceID: String
        var localHostname: String
        enum CodingKeys: String, CodingKey {
            case instanceID = "instance-id"
            case localHostname = "local-hostname"
        }
    }

    static func userData(user: String, publicKey: String) throws -> String {
        guard InputRules.userProblem(user) == nil else { throw KMatrixError(.invalidInput, "user \(InputRules.quoted(user)) is not a POSIX user name") }
        let document = UserData(systemInfo: .init(defaultUser: .init(name: user)), sshAuthorizedKeys: [publicKey])
        return "#cloud-config\n" + (try YAMLEncoder().encode(document))
    }

    static func metaData(instance: String) throws -> String {
        let hostname = String(instance.lowercased().unicodeScalars.map { InputRules.isAlphanumeric($0) ? Character($0) : "-" }.prefix(63))
        return try YAMLEncoder().encode(MetaData(instanceID: instance, localHostname: hostname))
    }

    static func write(to seed: URL, user: String, publicKey: String, instance: String, commands: any CommandRunner) async throws {
        let directory = seed.deletingLastPathComponent().appendingPathComponent("seed")
        let userData = directory.appendingPathComponent("user-data")
        let metaData = directory.appendingPathComponent("meta-data")
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try Data(try Self.userData(user: user, publicKey: publicKey).utf8).write(to: userData)
            try Data(try Self.metaData(instance: instance).utf8).write(to: metaData)
        } catch let error as KMatrixError {
            throw error
        } catch {
            throw KMatrixError.from(error, whileDoing: "writing the cloud-init seed")
        }
        try await commands.checked("genisoimage", ["-quiet", "-output", seed.path, "-volid", "cidata", "-joliet", "-rock",
                                                    userData.path, metaData.path], timeout: .seconds(60))
    }
}
