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
                            modifiedNanoseconds: Int64(info.st_mtim.tv_nsec), inode: UInt64(info.st_ino), device: UInt64(info.st_dev))
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
