import Foundation
import KMatrixCore

/// Remembers what was learned about a file (its sha256, whether it is a sound disk image) for as
/// long as the file is the same one: same path, size, mtime and inode. A vendor image of several
/// GB is then hashed and checked once, on `images add` or when it changes, not on every run.
public struct VerdictCache: Sendable {
    let directory: URL

    public init(directory: URL) {
        self.directory = directory
    }

    public struct Verdict: Sendable, Codable, Equatable {
        public var identity: FileIdentity
        public var sha256: String?
        /// The disk format qemu-img reported, once the image passed its checks.
        public var diskFormat: String?
        /// The guest-visible size qemu-img reported.
        public var virtualSize: UInt64?
    }

    func file(for path: String) -> URL {
        directory.appendingPathComponent(FileDigests.sha256(of: Data(path.utf8)).prefix(32) + ".json")
    }

    public func verdict(for identity: FileIdentity) -> Verdict? {
        guard let data = FileManager.default.contents(atPath: file(for: identity.path).path),
              let verdict = try? JSONDecoder().decode(Verdict.self, from: data), verdict.identity == identity else { return nil }
        return verdict
    }

    /// Records a verdict; a cache that cannot be written only costs time later.
    public func remember(_ verdict: Verdict) {
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        if let data = try? JSONEncoder().encode(verdict) { try? data.write(to: file(for: verdict.identity.path), options: .atomic) }
    }

    /// The file's sha256, from the cache when the file is unchanged.
    public func sha256(of url: URL, what: String, digests: FileDigests) async throws -> String {
        let identity = try FileIdentity.regularFile(url, what: what)
        if let known = verdict(for: identity)?.sha256 { return known }
        let digest = try await digests.sha256(of: url)
        var verdict = verdict(for: identity) ?? Verdict(identity: identity)
        verdict.sha256 = digest
        remember(verdict)
        return digest
    }
}

extension VerdictCache.Verdict {
    init(identity: FileIdentity) {
        self.init(identity: identity, sha256: nil, diskFormat: nil, virtualSize: nil)
    }

    init(identity: FileIdentity, sha256: String?, diskFormat: String?) {
        self.init(identity: identity, sha256: sha256, diskFormat: diskFormat, virtualSize: nil)
    }
}

/// Checks that a file is a disk image QEMU can boot without surprises — one implementation for
/// runs and `images add` alike: a regular file, qcow2 or raw, no backing file (it would make
/// QEMU open another file, named inside the image), qcow2 passing `qemu-img check`, raw carrying
/// a partition table.
public struct DiskInspector: Sendable {
    let commands: any CommandRunner

    public init(commands: any CommandRunner) {
        self.commands = commands
    }

    struct ImageInfo: Decodable {
        var format: String
        var virtualSize: Int64?
        var backingFilename: String?

        enum CodingKeys: String, CodingKey {
            case format
            case virtualSize = "virtual-size"
            case backingFilename = "backing-filename"
        }
    }

    /// The image's format, or a `KMatrixError(.image)` saying what is wrong with it.
    public func validate(_ url: URL) async throws -> String {
        try await inspect(url).format
    }

    /// The guest-visible size of a disk the recipe built (already checked).
    public func virtualSize(_ url: URL) async throws -> UInt64 {
        let info = try await commands.run("qemu-img", ["info", "--output=json", "--", url.path], timeout: .seconds(60))
        guard info.succeeded, let parsed = try? JSONDecoder().decode(ImageInfo.self, from: info.stdout) else {
            throw KMatrixError(.image, "\(url.path) is not a disk image qemu-img can read")
        }
        return UInt64(max(0, parsed.virtualSize ?? 0))
    }

    /// The checks of `validate`, with the disk's guest-visible size.
    public func inspect(_ url: URL) async throws -> (format: String, virtualSize: UInt64) {
        _ = try FileIdentity.regularFile(url, what: "disk image")
        let info = try await commands.run("qemu-img", ["info", "--output=json", "--", url.path], timeout: .seconds(60))
        guard info.succeeded, let parsed = try? JSONDecoder().decode(ImageInfo.self, from: info.stdout) else {
            throw KMatrixError(.image, "\(url.path) is not a disk image qemu-img can read: \(info.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        if let backing = parsed.backingFilename {
            throw KMatrixError(.image, "\(url.path) refers to a backing file (\(InputRules.quoted(backing))); register a standalone image (qemu-img convert -O qcow2 it first)")
        }
        switch parsed.format {
        case "qcow2":
            let check = try await commands.run("qemu-img", ["check", "-q", "--", url.path], timeout: .seconds(600))
            guard check.succeeded else {
                throw KMatrixError(.image, "\(url.path) is corrupt or truncated (qemu-img check: \(check.stderr.trimmingCharacters(in: .whitespacesAndNewlines)))")
            }
        case "raw":
            guard Self.hasPartitionTable(url) else {
                throw KMatrixError(.image, "\(url.path) is not a disk image: qemu-img reads it as raw bytes, and it has no MBR or GPT partition table")
            }
        default:
            throw KMatrixError(.image, "\(url.path) is a \(parsed.format) image; kmatrix boots qcow2 and raw disks (convert it with qemu-img convert -O qcow2)")
        }
        return (parsed.format, UInt64(max(0, parsed.virtualSize ?? 0)))
    }

    /// What QEMU would open besides the image itself, read from a qcow2 header: a backing file
    /// (its offset at byte 8) or an external data file (incompatible feature bit 2 of a version 3
    /// header). One read of 80 bytes, so it runs at every boot, not only when the image was
    /// checked: a verdict remembered for a file is never all that stands between it and QEMU.
    public static func qcow2HeaderProblem(_ url: URL) -> String? {
        guard let handle = try? FileHandle(forReadingFrom: url) else { return "cannot be read" }
        defer { try? handle.close() }
        let bytes = [UInt8]((try? handle.read(upToCount: 80)) ?? Data())
        guard bytes.count >= 4, bytes[0..<4] == [0x51, 0x46, 0x49, 0xFB] else { return nil }
        guard bytes.count >= 80 else { return "has a truncated qcow2 header" }
        func number(_ offset: Int, _ length: Int) -> UInt64 { bytes[offset..<offset + length].reduce(0) { $0 << 8 | UInt64($1) } }
        if number(8, 8) != 0 { return "refers to a backing file" }
        if number(4, 4) >= 3 && number(72, 8) & 0x4 != 0 { return "keeps its data in an external data file" }
        return nil
    }

    /// An MBR boot signature at 510, or a GPT header at 512.
    static func hasPartitionTable(_ url: URL) -> Bool {
        guard let handle = try? FileHandle(forReadingFrom: url), let head = try? handle.read(upToCount: 520) else { return false }
        try? handle.close()
        let bytes = [UInt8](head)
        guard bytes.count >= 520 else { return false }
        return (bytes[510] == 0x55 && bytes[511] == 0xAA) || Array(bytes[512..<520]) == Array("EFI PART".utf8)
    }
}
