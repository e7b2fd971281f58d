import Crypto
import Dispatch
import Foundation
import KMatrixCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Who a file is, as `stat` says: enough to tell whether a verdict about its content still holds
/// without reading it again (a multi-GB vendor image is hashed once, not on every run).
public struct FileIdentity: Sendable, Hashable, Codable {
    public var path: String
    public var size: Int64
    public var modified: Int64
    public var modifiedNanoseconds: Int64
    public var inode: UInt64
    public var device: UInt64
    /// The status-change time: setting mtime back after writing a file changes it, so a file
    /// rewritten and dated back does not pass for the one a verdict was remembered for.
    public var changed: Int64
    public var changedNanoseconds: Int64

    /// The identity of a regular file (symlinks followed). Anything else — a device such as
    /// /dev/zero, a FIFO, a directory — is refused: reading it could block or never end.
    public static func regularFile(_ url: URL, what: String) throws -> FileIdentity {
        var info = stat()
        guard stat(url.path, &info) == 0 else {
            throw KMatrixError(.invalidInput, "cannot read \(what) \(url.path): \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            let kind = switch info.st_mode & S_IFMT {
            case S_IFDIR: "a directory"
            case S_IFCHR, S_IFBLK: "a device"
            case S_IFIFO: "a pipe"
            case S_IFSOCK: "a socket"
            default: "not a regular file"
            }
            throw KMatrixError(.invalidInput, "\(what) \(url.path) is \(kind), not a regular file")
        }
        guard access(url.path, R_OK) == 0 else {
            throw KMatrixError(.invalidInput, "cannot read \(what) \(url.path): \(String(cString: strerror(errno)))")
        }
        return FileIdentity(path: url.path, size: Int64(info.st_size), modified: Int64(info.st_mtim.tv_sec),
                            modifiedNanoseconds: Int64(info.st_mtim.tv_nsec), inode: UInt64(info.st_ino), device: UInt64(info.st_dev),
                            changed: Int64(info.st_ctim.tv_sec), changedNanoseconds: Int64(info.st_ctim.tv_nsec))
    }
}

/// SHA-256 of files with swift-crypto, read in 1 MiB chunks on a dispatch queue (never on the
/// cooperative pool, which has one thread per core), stopping as soon as the task is cancelled.
public struct FileDigests: Sendable {
    public init() {}

    static let queue = DispatchQueue(label: "kmatrix.digests", qos: .utility, attributes: .concurrent)

    public func sha256(of url: URL) async throws -> String {
        _ = try FileIdentity.regularFile(url, what: "file")
        let cancelled = CancelFlag()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<String, any Error>) in
                Self.queue.async {
                    continuation.resume(with: Result { try Self.hash(url, cancelled: cancelled) })
                }
            }
        } onCancel: {
            cancelled.set()
        }
    }

    static func hash(_ url: URL, cancelled: CancelFlag) throws -> String {
        let handle: FileHandle
        do {
            handle = try FileHandle(forReadingFrom: url)
        } catch {
            throw KMatrixError.from(error, whileDoing: "hashing \(url.path)")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        while true {
            if cancelled.isSet { throw KMatrixError(.interrupted, "interrupted while hashing \(url.path)") }
            let chunk: Data
            do {
                chunk = try handle.read(upToCount: 1 << 20) ?? Data()
            } catch {
                throw KMatrixError.from(error, whileDoing: "hashing \(url.path)")
            }
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// SHA-256 of bytes in memory (the probe, small manifests).
    public static func sha256(of data: Data) -> String {
        SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }
}

/// Set once from a cancellation handler, read by blocking work on another thread.
final class CancelFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}

/// A private copy of someone else's file: a reflink where the file system shares blocks (btrfs,
/// XFS: instant, no space), else the kernel's `sendfile`. The copy is a file of its own,
/// 0600, created afresh (never through a link); what the original's owner does to the original
/// later does not reach it.
public enum FileCopy {
    static let ficlone: UInt = 0x4004_9409

    public static func copy(_ source: URL, to destination: URL) throws {
        let input = open(source.path, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw KMatrixError(.invalidInput, "cannot read \(source.path): \(String(cString: strerror(errno)))") }
        defer { close(input) }
        var info = stat()
        guard fstat(input, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw KMatrixError(.invalidInput, "\(source.path) is not a regular file")
        }
        let output = open(destination.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard output >= 0 else { throw KMatrixError(.io, "cannot create \(destination.path): \(String(cString: strerror(errno)))") }
        defer { close(output) }
        if ioctl(output, ficlone, input) == 0 { return }
        var remaining = Int(info.st_size)
        while remaining > 0 {
            let copied = sendfile(output, input, nil, min(remaining, 1 << 30))
            if copied < 0 && errno == EINTR { continue }
            guard copied > 0 else {
                let problem = copied == 0 ? "the file shrank while it was copied" : String(cString: strerror(errno))
                unlink(destination.path)
                throw KMatrixError(.io, "copying \(source.path) to \(destination.path) failed: \(problem)")
            }
            remaining -= copied
        }
    }
}
