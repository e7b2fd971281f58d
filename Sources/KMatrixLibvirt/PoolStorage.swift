import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import KMatrixCore
import KMatrixRuntime
import Libvirt
import Synchronization

/// Guest files on a remote hypervisor's host, in a directory storage pool of kmatrix's own
/// (created on demand), moved by libvirt's own volume upload and download streams: base images
/// are volumes named by content hash and uploaded only when absent; overlays are volumes backed
/// by them; a run's own volumes (overlays, seeds, consoles) carry its run id in their names, so
/// they go with the run or with `gc` (docs/architecture.md, "Several hosts").
final class PoolStorage: GuestStorage {
    static let poolName = "kmatrix"
    /// Where the pool lives on the host: inside libvirt's own folder.
    static let poolPath = "/var/lib/libvirt/kmatrix-pool"
    static let runPrefix = "kmatrix-run-"

    let hypervisor: LibvirtHypervisor
    let runID: String
    private let uploads = Mutex<[String: Task<URL, any Error>]>([:])

    init(hypervisor: LibvirtHypervisor, runID: String) {
        self.hypervisor = hypervisor
        self.runID = runID
    }

    /// The pool, defined, built and started the first time.
    func pool(_ connection: Connection) throws -> StoragePool {
        if let pool = try connection.storagePool(named: Self.poolName) {
            try pool.start()
            return pool
        }
        let xml = LibvirtXML.document(LibvirtXML.element("pool", ["type": "dir"], children: [
            LibvirtXML.element("name", text: Self.poolName),
            LibvirtXML.element("target", children: [LibvirtXML.element("path", text: Self.poolPath)]),
        ]))
        let pool = try connection.defineStoragePool(xml: xml)
        try pool.start()
        return pool
    }

    static func volumeXML(name: String, capacity: UInt64, format: String, backing: (path: String, format: String)? = nil) -> String {
        typealias E = LibvirtXML
        var children = [
            E.element("name", text: name),
            E.element("capacity", ["unit": "bytes"], text: String(capacity)),
            E.element("target", children: [E.element("format", ["type": format])]),
        ]
        if let backing {
            children.append(E.element("backingStore", children: [E.element("path", text: backing.path), E.element("format", ["type": backing.format])]))
        }
        return E.document(E.element("volume", children: children))
    }

    /// Uploads `file` as volume `name` unless a volume of that name and size is there already.
    func upload(_ file: URL, as name: String, format: String = "raw") async throws -> URL {
        let size = UInt64((try FileIdentity.regularFile(file, what: "guest file")).size)
        let task = uploads.withLock { running -> Task<URL, any Error> in
            if let task = running[name] { return task }
            let hypervisor = self.hypervisor
            let task = Task {
                try await LibvirtHypervisor.mapped("uploading \(file.lastPathComponent) to \(hypervisor.hostName)") {
                    try await hypervisor.withConnection { connection in
                        let pool = try self.pool(connection)
                        if let volume = try pool.volume(named: name), try volume.capacity == size {
                            return URL(fileURLWithPath: try volume.path)
                        }
                        try pool.volume(named: name)?.delete()
                        let volume = try pool.createVolume(xml: Self.volumeXML(name: name, capacity: size, format: format))
                        guard let handle = FileHandle(forReadingAtPath: file.path) else {
                            throw KMatrixError(.io, "cannot read \(file.path) to upload it")
                        }
                        defer { try? handle.close() }
                        try volume.upload(on: connection, length: size) { buffer in
                            guard let data = try? handle.read(upToCount: buffer.count), !data.isEmpty else { return 0 }
                            data.copyBytes(to: buffer)
                            return data.count
                        }
                        return URL(fileURLWithPath: try volume.path)
                    }
                }
            }
            running[name] = task
            return task
        }
        return try await task.value
    }

    func place(_ file: URL, key: String) async throws -> URL {
        let safeKey = String(key.filter { $0.isHexDigit || $0 == "-" }.prefix(64))
        let suffix = file.pathExtension.filter { $0.isLetter || $0.isNumber }
        return try await upload(file, as: "kmatrix-\(safeKey)\(suffix.isEmpty ? "" : ".\(suffix)")")
    }

    func placeForRun(_ file: URL, name: String) async throws -> URL {
        try await upload(file, as: "\(Self.runPrefix)\(runID)-\(name)")
    }

    func overlay(of base: URL, format: String, virtualSize: UInt64, name: String, localScratch: URL) async throws -> URL {
        let volumeName = "\(Self.runPrefix)\(runID)-\(name)"
        let hypervisor = self.hypervisor
        return try await LibvirtHypervisor.mapped("creating the overlay \(volumeName) on \(hypervisor.hostName)") {
            try await hypervisor.withConnection { connection in
                let pool = try self.pool(connection)
                try pool.volume(named: volumeName)?.delete()
                let volume = try pool.createVolume(xml: Self.volumeXML(name: volumeName, capacity: virtualSize, format: "qcow2",
                                                                       backing: (base.path, format)))
                return URL(fileURLWithPath: try volume.path)
            }
        }
    }

    func console(name: String, local: URL) async throws -> any ConsoleChannel {
        let volumeName = "\(Self.runPrefix)\(runID)-\(name)"
        let hypervisor = self.hypervisor
        let path = try await LibvirtHypervisor.mapped("creating the console log \(volumeName) on \(hypervisor.hostName)") {
            try await hypervisor.withConnection { connection in
                let pool = try self.pool(connection)
                try pool.volume(named: volumeName)?.delete()
                return try pool.createVolume(xml: Self.volumeXML(name: volumeName, capacity: 0, format: "raw")).path
            }
        }
        return RemoteConsole(hostPath: URL(fileURLWithPath: path), volume: volumeName, local: local, storage: self)
    }

    func release(_ paths: [URL]) async {
        let names = Set(paths.map(\.lastPathComponent))
        _ = try? await hypervisor.withConnection { connection in
            let pool = try self.pool(connection)
            for volume in try pool.volumes() where names.contains(volume.name) { try? volume.delete() }
        }
    }

    /// Downloads a volume's bytes from `offset` on (the console grows while the guest runs).
    func download(_ volume: String, from offset: UInt64) async throws -> [UInt8] {
        try await hypervisor.withConnection { connection in
            let pool = try self.pool(connection)
            try pool.refresh()
            guard let handle = try pool.volume(named: volume) else { return [] }
            let size = try handle.capacity
            guard size > offset else { return [] }
            return try handle.download(on: connection, offset: offset, length: size - offset)
        }
    }

    /// A dead run's volumes (overlays, seeds, consoles): everything named for a run that is not alive.
    /// Run volumes of these runs only: the pool is shared by every machine that uses the host,
    /// and a volume's name says which run it is of, not whose; only a run this machine's
    /// registry knows as dead is this machine's to clean (docs/architecture.md, "Cleanup").
    static func collect(on connection: Connection, ofRuns dead: Set<String>) -> [String] {
        guard let pool = try? connection.storagePool(named: poolName), pool.isActive, let volumes = try? pool.volumes() else { return [] }
        var removed: [String] = []
        for volume in volumes where volume.name.starts(with: runPrefix) {
            let runID = volume.name.dropFirst(runPrefix.count).prefix { $0 != "-" }
            guard dead.contains(String(runID)) else { continue }
            if (try? volume.delete()) != nil { removed.append(volume.name) }
        }
        return removed
    }
}

/// A console log on a remote host, mirrored once a second into the local file the launcher reads
/// (panic and marker detection, the console tail in cells work as for a local guest).
final class RemoteConsole: ConsoleChannel {
    let hostPath: URL
    let volume: String
    let local: URL
    let storage: PoolStorage
    private let mirror = Mutex<Task<Void, Never>?>(nil)
    private let copied = Mutex<UInt64>(0)
    /// Consecutive failed fetches and the last error: a host that stops answering for this many
    /// polls (about ten seconds) has lost the guest's console.
    private let failures = Mutex<(count: Int, last: String)>((0, ""))
    static let failuresBeforeLost = 12

    init(hostPath: URL, volume: String, local: URL, storage: PoolStorage) {
        self.hostPath = hostPath
        self.volume = volume
        self.local = local
        self.storage = storage
    }

    func pull() async {
        let offset = copied.withLock { $0 }
        let bytes: [UInt8]
        do {
            bytes = try await storage.download(volume, from: offset)
            failures.withLock { $0.count = 0 }
        } catch {
            failures.withLock { $0 = ($0.count + 1, "\(error)") }
            return
        }
        guard !bytes.isEmpty else { return }
        if !FileManager.default.fileExists(atPath: local.path) { _ = FileManager.default.createFile(atPath: local.path, contents: nil) }
        guard let handle = try? FileHandle(forWritingTo: local) else { return }
        defer { try? handle.close() }
        _ = try? handle.seekToEnd()
        try? handle.write(contentsOf: Data(bytes))
        copied.withLock { $0 += UInt64(bytes.count) }
    }

    func start() async {
        mirror.withLock { task in
            guard task == nil else { return }
            task = Task { [weak self] in
                guard let clock = self?.storage.hypervisor.clock else { return }
                while !Task.isCancelled {
                    await self?.pull()
                    try? await clock.sleep(for: .milliseconds(700))
                }
            }
        }
    }

    func failure() -> KMatrixError? {
        let (count, last) = failures.withLock { $0 }
        guard count >= Self.failuresBeforeLost else { return nil }
        return KMatrixError(.hypervisor, "lost the guest's console on \(storage.hypervisor.hostName): \(last)")
    }

    func close() async {
        let task = mirror.withLock { task -> Task<Void, Never>? in
            defer { task = nil }
            return task
        }
        task?.cancel()
        await task?.value
        await pull()
    }
}
