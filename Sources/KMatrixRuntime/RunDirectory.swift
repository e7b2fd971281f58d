import Foundation
import KMatrixCore
#if canImport(Glibc)
import Glibc
#endif

/// What a run records about the things it creates outside its folder, so that `gc` and the next
/// run can remove exactly those after a crash, and nothing else.
public protocol RunLedger: Sendable {
    func recordNamespace(_ name: String) throws
}

/// A run's own folder, `<cache>/runs/<run id>/` (0700): its SSH keys and connection sockets,
/// its guests' overlays and seeds, the ledger of namespaces it created, and a lock it holds for
/// as long as it lives. A folder whose lock nobody holds belongs to a finished or killed run
/// (docs/architecture.md, "Cleanup").
public final class RunDirectory: RunLedger {
    public let runID: String
    public let url: URL
    private let lock: Int32

    static let lockName = "lock"
    static let namespacesName = "namespaces"

    public var keysDirectory: URL { url.appendingPathComponent("ssh") }

    public func scratch(for guest: String) -> URL {
        url.appendingPathComponent("guests").appendingPathComponent(guest)
    }

    public static func runsDirectory(cache: URL) -> URL { cache.appendingPathComponent("runs") }

    /// Creates the folder and takes its lock.
    public init(cache: URL, runID: String) throws {
        guard InputRules.nameProblem(runID) == nil else { throw KMatrixError(.invalidInput, "run id \(InputRules.quoted(runID)) is not a plain name") }
        self.runID = runID
        self.url = Self.runsDirectory(cache: cache).appendingPathComponent(runID)
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw KMatrixError.from(error, whileDoing: "creating the run's folder under \(cache.path)")
        }
        let descriptor = open(url.appendingPathComponent(Self.lockName).path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw KMatrixError(.io, "cannot create \(url.path)/\(Self.lockName): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            close(descriptor)
            throw KMatrixError(.io, "run folder \(url.path) is locked by another process")
        }
        _ = ftruncate(descriptor, 0)
        let pid = "\(getpid())\n"
        _ = pid.withCString { write(descriptor, $0, strlen($0)) }
        self.lock = descriptor
    }

    deinit {
        close(lock)
    }

    public func recordNamespace(_ name: String) throws {
        let file = url.appendingPathComponent(Self.namespacesName)
        do {
            let handle = try FileHandle(forWritingTo: file.touching())
            defer { try? handle.close() }
            try handle.seekToEnd()
            try handle.write(contentsOf: Data("\(name)\n".utf8))
        } catch {
            throw KMatrixError.from(error, whileDoing: "recording namespace \(name) in \(file.path)")
        }
    }

    /// Removes the folder; the lock goes with it when this object is released.
    public func remove() {
        try? FileManager.default.removeItem(at: url)
    }
}

/// A run folder found on disk, and whether its run still lives.
public struct RunRecord: Sendable, Equatable {
    public var runID: String
    public var url: URL
    /// The pid that created it (for messages), if recorded.
    public var pid: Int32?
    public var alive: Bool
    public var namespaces: [String]

    public static func all(cache: URL) -> [RunRecord] {
        let runs = RunDirectory.runsDirectory(cache: cache)
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: runs.path)) ?? []
        return entries.sorted().compactMap { name in
            guard InputRules.nameProblem(name) == nil else { return nil }
            let url = runs.appendingPathComponent(name)
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue else { return nil }
            let lockPath = url.appendingPathComponent(RunDirectory.lockName).path
            let pid = (try? String(contentsOfFile: lockPath, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            let namespaces = ((try? String(contentsOf: url.appendingPathComponent(RunDirectory.namespacesName), encoding: .utf8)) ?? "")
                .split(separator: "\n").map(String.init).filter { InputRules.nameProblem($0) == nil }
            return RunRecord(runID: name, url: url, pid: pid, alive: isLocked(lockPath), namespaces: namespaces)
        }
    }

    /// Whether another process holds the lock: taking it for a moment says no.
    static func isLocked(_ path: String) -> Bool {
        let descriptor = open(path, O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        if flock(descriptor, LOCK_EX | LOCK_NB) == 0 {
            flock(descriptor, LOCK_UN)
            return false
        }
        return errno == EWOULDBLOCK
    }
}

extension URL {
    /// The file, created empty if it does not exist yet.
    func touching() -> URL {
        if !FileManager.default.fileExists(atPath: path) {
            _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        return self
    }
}

/// Processes that carry a run's marker in their environment (`KMATRIX_RUN=<id>`, set by
/// `SystemCommandRunner` and inherited by everything they start).
public struct ProcessTable: Sendable {
    public var proc: URL

    public init(proc: URL = URL(fileURLWithPath: "/proc")) {
        self.proc = proc
    }

    /// pid → run id, for every process that carries a marker.
    public func markedProcesses() -> [Int32: String] {
        let needle = Array("\(SystemCommandRunner.runMarkerVariable)=".utf8)
        var found: [Int32: String] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: proc.path)) ?? [] {
            guard let pid = Int32(entry), pid != getpid() else { continue }
            guard let environment = FileManager.default.contents(atPath: proc.appendingPathComponent("\(entry)/environ").path) else { continue }
            for variable in environment.split(separator: 0) where variable.starts(with: needle) {
                found[pid] = String(decoding: variable.dropFirst(needle.count), as: UTF8.self)
            }
        }
        return found
    }

    /// Ends every process of `runID`: SIGTERM, then SIGKILL for those still there after a second.
    @discardableResult
    public func terminate(runID: String) async -> Int {
        let victims = markedProcesses().filter { $0.value == runID }.map(\.key)
        for pid in victims { kill(pid, SIGTERM) }
        if !victims.isEmpty { try? await Task.sleep(for: .seconds(1)) }
        for pid in victims where kill(pid, 0) == 0 { kill(pid, SIGKILL) }
        return victims.count
    }
}
