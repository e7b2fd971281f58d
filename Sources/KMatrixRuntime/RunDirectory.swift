import Foundation
import KMatrixCore
#if canImport(Glibc)
import Glibc
#endif

/// What a run records about the things it creates outside its folders, so that `gc` and the
/// next run — of any cache — can remove exactly those after a crash, and nothing else.
public protocol RunLedger: Sendable {
    func recordNamespace(_ name: String) throws
    func recordHost(_ uri: HostURI) throws
}

/// A run's own folder in its cache, `<cache>/runs/<run id>/` (0700): its SSH keys and
/// connection sockets, its guests' overlays and seeds, and a lock it holds for as long as it
/// lives. Everything another run needs to know about it is in the machine-wide `RunRegistry`
/// (docs/architecture.md, "Cleanup").
public final class RunDirectory: Sendable {
    public let runID: String
    public let url: URL
    private let lock: Int32

    static let lockName = "lock"

    public var keysDirectory: URL { url.appendingPathComponent("ssh") }

    public func scratch(for guest: String) -> URL {
        url.appendingPathComponent("guests").appendingPathComponent(guest)
    }

    public static func runsDirectory(cache: URL) -> URL { cache.appendingPathComponent("runs") }

    /// Creates the folder and takes its lock. A `runs` folder that is a link or not this user's
    /// is refused: everything under it is removed once its run is dead.
    public init(cache: URL, runID: String) throws {
        guard InputRules.nameProblem(runID) == nil else { throw KMatrixError(.invalidInput, "run id \(InputRules.quoted(runID)) is not a plain name") }
        self.runID = runID
        let runs = Self.runsDirectory(cache: cache)
        self.url = runs.appendingPathComponent(runID)
        do {
            try FileManager.default.createDirectory(at: runs, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw KMatrixError.from(error, whileDoing: "creating \(runs.path)")
        }
        if let problem = OwnedFolder.problem(runs) { throw KMatrixError(.io, "\(runs.path) \(problem); remove it, kmatrix recreates it") }
        do {
            self.lock = try OwnedFolder.createLocked(url, lockName: Self.lockName)
        } catch {
            throw KMatrixError.from(error, whileDoing: "creating the run's folder under \(cache.path)")
        }
    }

    deinit {
        close(lock)
    }

    /// Removes the folder; the lock goes with it when this object is released.
    public func remove() {
        OwnedFolder.removeWhole(url)
    }

    /// Run folders of this cache whose run is dead (their lock is free): real folders owned by
    /// this user, never what a link points at.
    static func deadFolders(cache: URL, keeping: String?) -> [URL] {
        let runs = runsDirectory(cache: cache)
        guard OwnedFolder.problem(runs) == nil else { return [] }
        return OwnedFolder.subfolders(of: runs).filter { folder in
            folder.lastPathComponent != keeping && InputRules.nameProblem(folder.lastPathComponent) == nil
                && OwnedFolder.isDead(folder, lockName: lockName) == true
        }
    }
}

/// Every run on this machine, whatever its cache (docs/architecture.md, "Cleanup"): one folder
/// per run with a lock the run holds while it lives, who owns it, which cache it uses, and the
/// ledger of what it created outside its folders (network namespaces, remote hosts it used). It
/// lives outside any cache — `/var/lib/kmatrix/runs` for root, `~/.local/state/kmatrix/runs`
/// for others — because liveness must be decided from something every kmatrix here sees.
public struct RunRegistry: Sendable {
    public let root: URL

    public init(root: URL) {
        self.root = root
    }

    /// Why the registry folder cannot be trusted (a link, another user's), or nil.
    public func problem() -> String? { OwnedFolder.problem(root) }

    /// The registry of this machine for this user.
    public static func machineWide(home: URL) -> RunRegistry {
        if geteuid() == 0 { return RunRegistry(root: URL(fileURLWithPath: "/var/lib/kmatrix/runs")) }
        return RunRegistry(root: home.appendingPathComponent(".local/state/kmatrix/runs"))
    }

    /// Registers a run and takes its lock; the run is alive for as long as the result lives.
    public func register(runID: String, owner: RunOwner, cache: URL) throws -> RunRegistration {
        try RunRegistration(registry: self, runID: runID, owner: owner, cache: cache)
    }

    /// Every record in the registry: real folders owned by this user with a run id for a name.
    public func records() -> [RegistryRecord] {
        guard OwnedFolder.problem(root) == nil else { return [] }
        return OwnedFolder.subfolders(of: root).compactMap { folder in
            let runID = folder.lastPathComponent
            guard InputRules.nameProblem(runID) == nil, OwnedFolder.isDead(folder, lockName: RunRegistration.lockName) != nil else { return nil }
            return RegistryRecord(runID: runID, url: folder)
        }
    }
}

/// One run in the registry, read back. Only what a run of kmatrix's own wrote is believed: a
/// namespace must carry the run's prefix, a host must be a URI kmatrix accepts.
public struct RegistryRecord: Sendable {
    public var runID: String
    public var url: URL
    public var alive: Bool
    public var owner: RunOwner?
    /// The cache the run used (its run folder, keys and overlays are there).
    public var cache: URL?
    public var namespaces: [String]
    public var hosts: [HostURI]

    init(runID: String, url: URL) {
        self.runID = runID
        self.url = url
        self.alive = OwnedFolder.isDead(url, lockName: RunRegistration.lockName) == false
        let facts = (FileManager.default.contents(atPath: url.appendingPathComponent(RunRegistration.factsName).path))
            .flatMap { try? JSONDecoder().decode(RunRegistration.Facts.self, from: $0) }
        self.owner = facts?.owner
        self.cache = facts.map { URL(fileURLWithPath: $0.cache) }
        func lines(_ name: String) -> [String] {
            ((try? String(contentsOf: url.appendingPathComponent(name), encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }
        let prefix = RunRegistration.namespacePrefix(runID)
        self.namespaces = lines(RunRegistration.namespacesName).filter { name in
            name.hasPrefix(prefix) && InputRules.nameProblem(String(name.dropFirst(prefix.count))) == nil
        }
        self.hosts = lines(RunRegistration.hostsName).compactMap { try? HostURI.parse($0).get() }
    }

    /// Remote hosts the run used, whose run volumes only a `gc` that reaches them can remove.
    public var remoteHosts: [HostURI] { hosts.filter { !$0.isLocal } }
}

/// A live run's entry in the registry: its lock, who owns it, and its ledger.
public final class RunRegistration: RunLedger {
    public let runID: String
    public let url: URL
    private let lock: Int32

    static let lockName = "lock"
    static let factsName = "run.json"
    static let namespacesName = "namespaces"
    static let hostsName = "hosts"

    /// Every namespace a run creates starts with this, so a ledger cannot name anything else.
    public static func namespacePrefix(_ runID: String) -> String { "kmatrix-\(runID)-" }

    struct Facts: Codable {
        var runID: String
        var owner: RunOwner
        var cache: String
    }

    init(registry: RunRegistry, runID: String, owner: RunOwner, cache: URL) throws {
        guard InputRules.nameProblem(runID) == nil else { throw KMatrixError(.invalidInput, "run id \(InputRules.quoted(runID)) is not a plain name") }
        self.runID = runID
        self.url = registry.root.appendingPathComponent(runID)
        do {
            try FileManager.default.createDirectory(at: registry.root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw KMatrixError.from(error, whileDoing: "creating the run registry \(registry.root.path)")
        }
        if let problem = OwnedFolder.problem(registry.root) {
            throw KMatrixError(.hostNotReady, "the run registry \(registry.root.path) \(problem); remove it, kmatrix recreates it")
        }
        let facts = Facts(runID: runID, owner: owner, cache: cache.standardizedFileURL.path)
        do {
            self.lock = try OwnedFolder.createLocked(url, lockName: Self.lockName) { folder in
                try JSONEncoder().encode(facts).write(to: folder.appendingPathComponent(Self.factsName), options: .atomic)
            }
        } catch {
            throw KMatrixError(.io, "cannot register run \(runID) in \(registry.root.path): \(KMatrixError.from(error).message)", cause: error)
        }
    }

    deinit {
        close(lock)
    }

    public func recordNamespace(_ name: String) throws {
        guard name.hasPrefix(Self.namespacePrefix(runID)) else {
            throw KMatrixError(.invalidInput, "namespace \(InputRules.quoted(name)) does not carry run \(runID)'s prefix")
        }
        try append(name, to: Self.namespacesName)
    }

    public func recordHost(_ uri: HostURI) throws {
        guard !uri.isLocal else { return }
        try append(uri.text, to: Self.hostsName)
    }

    private func append(_ line: String, to name: String) throws {
        let file = url.appendingPathComponent(name)
        do {
            let handle = try FileHandle(forWritingTo: file.touching())
            defer { try? handle.close() }
            try handle.seekToEnd()
            try handle.write(contentsOf: Data("\(line)\n".utf8))
        } catch {
            throw KMatrixError.from(error, whileDoing: "recording \(line) in \(file.path)")
        }
    }

    /// Ends the registration: the run is over and left nothing.
    public func remove() {
        OwnedFolder.removeWhole(url)
    }
}

/// A ledger that keeps nothing (unit tests).
public struct UnrecordedRun: RunLedger {
    public init() {}
    public func recordNamespace(_ name: String) throws {}
    public func recordHost(_ uri: HostURI) throws {}
}

/// Folders kmatrix removes things from, checked first: a real directory (never a link, which
/// would point the removal elsewhere) owned by the user kmatrix runs as.
enum OwnedFolder {
    static func problem(_ url: URL) -> String? {
        var info = stat()
        guard lstat(url.path, &info) == 0 else { return "cannot be read: \(String(cString: strerror(errno)))" }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { return "is not a plain directory (a symbolic link or a file)" }
        guard info.st_uid == geteuid() else { return "belongs to uid \(info.st_uid), not to uid \(geteuid()) that kmatrix runs as" }
        return nil
    }

    /// The real subfolders of `url` owned by this user.
    static func subfolders(of url: URL) -> [URL] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        return names.sorted().map { url.appendingPathComponent($0) }.filter { problem($0) == nil }
    }

    /// Prefix of a folder being born: never a run id (those start with a letter or digit), so
    /// neither `records()` nor `deadFolders` ever sees one.
    static let birthPrefix = ".birth-"

    /// Creates the folder `url` already locked: made under a hidden name, locked, filled by
    /// `prepare`, then renamed into place. A folder created under its own name and locked a
    /// moment later would look dead to a `gc` that looks in between (the soak's third cache
    /// caught one); a rename publishes it whole. The lock moves with the folder (it is on the
    /// open file). Returns the lock's descriptor.
    static func createLocked(_ url: URL, lockName: String, prepare: (URL) throws -> Void = { _ in }) throws -> Int32 {
        let birth = url.deletingLastPathComponent().appendingPathComponent(birthPrefix + url.lastPathComponent)
        try FileManager.default.createDirectory(at: birth, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        var descriptor: Int32 = -1
        do {
            descriptor = try takeLock(birth.appendingPathComponent(lockName))
            try prepare(birth)
            // A non-empty folder of that name (a run id met twice) makes the rename fail.
            guard rename(birth.path, url.path) == 0 else {
                throw KMatrixError(.io, "\(url.path) exists already (\(String(cString: strerror(errno))))")
            }
            return descriptor
        } catch {
            if descriptor >= 0 { close(descriptor) }
            try? FileManager.default.removeItem(at: birth)
            throw error
        }
    }

    /// Prefix of a folder being removed: renamed out of sight first, so that no sweep meets it
    /// half deleted (its lock file gone, the folder still there) and takes it for a dead run's.
    static let removalPrefix = ".gone-"

    /// Removes a run's folder as one step for every other kmatrix: renamed to a hidden name
    /// (its lock, still held, moves with it), then deleted.
    @discardableResult
    static func removeWhole(_ url: URL) -> Bool {
        let hidden = url.deletingLastPathComponent().appendingPathComponent("\(removalPrefix)\(url.lastPathComponent)-\(getpid())")
        // Whoever renames it away removes it: another sweep that listed it too finds it gone.
        guard rename(url.path, hidden.path) == 0 else { return false }
        try? FileManager.default.removeItem(at: hidden)
        return true
    }

    /// Hidden folders a kmatrix killed while creating or removing one left in `parent`:
    /// unlocked, and changed longer ago than any birth or removal takes (a birth lasts
    /// microseconds between its mkdir and its lock, a removal between its rename and its end).
    static func abandonedHiddenFolders(in parent: URL, lockName: String, now: Date = Date()) -> [URL] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: parent.path)) ?? []
        return names.filter { $0.hasPrefix(birthPrefix) || $0.hasPrefix(removalPrefix) }.map { parent.appendingPathComponent($0) }.filter { folder in
            // Age first: testing the lock takes it for a moment, which would fail a birth's own
            // non-blocking lock. The inode's change time moves with the rename that hid it.
            var info = stat()
            guard lstat(folder.path, &info) == 0 else { return false }
            let changed = Date(timeIntervalSince1970: TimeInterval(info.st_ctim.tv_sec))
            return now.timeIntervalSince(changed) > 600 && problem(folder) == nil && !isLocked(folder.appendingPathComponent(lockName))
        }
    }

    /// Takes an exclusive lock on `path` (created if needed), or says who holds it.
    static func takeLock(_ lockFile: URL) throws -> Int32 {
        let descriptor = open(lockFile.path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard descriptor >= 0 else {
            throw KMatrixError(.io, "cannot create \(lockFile.path): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            close(descriptor)
            throw KMatrixError(.io, "\(lockFile.path) is locked by another process")
        }
        return descriptor
    }

    /// Whether the run that owns `folder` is dead: true when its lock is free; false while
    /// someone holds it; nil when the lock file is missing in a folder changed in the last ten
    /// minutes — a folder being removed (its lock file goes first) or renamed away since it was
    /// listed, which is no run's to judge. Births are atomic (`createLocked`), so a published
    /// folder without a lock that is older than that is a dead run's.
    static func isDead(_ folder: URL, lockName: String, now: Date = Date()) -> Bool? {
        let lockFile = folder.appendingPathComponent(lockName)
        if FileManager.default.fileExists(atPath: lockFile.path) || isSymbolicLink(lockFile) { return !isLocked(lockFile) }
        var info = stat()
        guard lstat(folder.path, &info) == 0 else { return nil }
        return now.timeIntervalSince(Date(timeIntervalSince1970: TimeInterval(info.st_ctim.tv_sec))) > 600 ? true : nil
    }

    private static func isSymbolicLink(_ url: URL) -> Bool {
        var info = stat()
        return lstat(url.path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFLNK
    }

    /// Whether another process holds the lock: taking it for a moment says no.
    static func isLocked(_ lockFile: URL) -> Bool {
        let descriptor = open(lockFile.path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
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

/// Processes, read from /proc: which carry a run's marker (`KMATRIX_RUN=<id>`, set by
/// `SystemCommandRunner` and inherited by everything they start), who they belong to, and
/// whether a run's owner still lives.
public struct ProcessTable: Sendable {
    public var proc: URL
    let clock: WaitClock

    public init(proc: URL, clock: WaitClock) {
        self.proc = proc
        self.clock = clock
    }

    /// This process as a run's owner.
    public func currentOwner() throws -> RunOwner {
        let pid = getpid()
        guard let boot = bootID(), let start = startTime(of: pid) else {
            throw KMatrixError(.hostNotReady, "cannot read this process's boot id and start time from \(proc.path)")
        }
        return RunOwner(boot: boot, pid: pid, start: start)
    }

    /// The kernel's id of this boot.
    public func bootID() -> String? {
        let text = (try? String(contentsOf: proc.appendingPathComponent("sys/kernel/random/boot_id"), encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return text.flatMap { RunOwner.bootProblem($0) == nil ? $0 : nil }
    }

    /// When `pid` started, in clock ticks since boot (field 22 of /proc/<pid>/stat, counted after
    /// the command name, which may itself hold spaces and parentheses).
    func startTime(of pid: Int32) -> UInt64? {
        guard let text = try? String(contentsOf: proc.appendingPathComponent("\(pid)/stat"), encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After ")": state is field 3, so starttime (field 22) is the 20th.
        guard fields.count >= 20 else { return nil }
        return UInt64(fields[19])
    }

    /// Whether `owner` is a process of this boot that still runs. An owner of another boot — this
    /// machine before a reboot, or another machine — is not known to be dead: nil.
    public func isAlive(_ owner: RunOwner) -> Bool? {
        guard let boot = bootID(), boot == owner.boot else { return nil }
        return startTime(of: owner.pid) == owner.start
    }

    /// pid → run id, for every process of this user that carries a marker.
    public func markedProcesses() -> [Int32: String] {
        let needle = Array("\(SystemCommandRunner.runMarkerVariable)=".utf8)
        var found: [Int32: String] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: proc.path)) ?? [] {
            guard let pid = Int32(entry), pid != getpid() else { continue }
            var info = stat()
            // /proc/<pid> belongs to the process's user: another user's processes are never ours.
            guard stat(proc.appendingPathComponent(entry).path, &info) == 0, info.st_uid == geteuid() else { continue }
            guard let environment = FileManager.default.contents(atPath: proc.appendingPathComponent("\(entry)/environ").path) else { continue }
            for variable in environment.split(separator: 0) where variable.starts(with: needle) {
                found[pid] = String(decoding: variable.dropFirst(needle.count), as: UTF8.self)
            }
        }
        return found
    }

    /// Ends every process of `runID`: SIGTERM, then SIGKILL for those still there after a second.
    /// Returns how many there were and how many are still there (a process stuck in the kernel).
    @discardableResult
    public func terminate(runID: String) async -> (found: Int, remaining: Int) {
        let victims = markedProcesses().filter { $0.value == runID }.map(\.key)
        for pid in victims { kill(pid, SIGTERM) }
        if !victims.isEmpty { try? await clock.sleep(for: .seconds(1)) }
        for pid in victims where kill(pid, 0) == 0 { kill(pid, SIGKILL) }
        if !victims.isEmpty { try? await clock.sleep(for: .milliseconds(200)) }
        let remaining = markedProcesses().filter { $0.value == runID }.count
        return (victims.count, remaining)
    }
}
