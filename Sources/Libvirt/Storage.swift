import CLibvirt

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A libvirt storage pool (`virStoragePoolPtr`): where a host keeps volumes (files, for a
/// directory pool). `@unchecked Sendable` for the same reasons as `Connection`.
public final class StoragePool: @unchecked Sendable {
    private let handle: OpaquePointer
    public let name: String

    init(taking handle: OpaquePointer) {
        self.handle = handle
        self.name = virStoragePoolGetName(handle).map { String(cString: $0) } ?? ""
    }

    deinit {
        virStoragePoolFree(handle)
    }

    public var isActive: Bool {
        virStoragePoolIsActive(handle) == 1
    }

    /// Builds (creates the directory) and starts the pool; an active pool is left alone.
    public func start() throws(LibvirtError) {
        guard !isActive else { return }
        // A directory that already exists makes build fail: that is fine, starting is what counts.
        if virStoragePoolBuild(handle, 0) != 0 { _ = LibvirtError.takeLast(operation: "virStoragePoolBuild") }
        guard virStoragePoolCreate(handle, 0) == 0 else { throw LibvirtError.takeLast(operation: "virStoragePoolCreate") }
    }

    /// Re-reads the pool's directory, so files written beside libvirt (a console log) show up as volumes.
    public func refresh() throws(LibvirtError) {
        guard virStoragePoolRefresh(handle, 0) == 0 else { throw LibvirtError.takeLast(operation: "virStoragePoolRefresh") }
    }

    /// The pool's XML (`virStoragePoolGetXMLDesc`), e.g. to read its target path.
    public var xmlDescription: String {
        get throws(LibvirtError) {
            guard let xml = virStoragePoolGetXMLDesc(handle, 0) else { throw LibvirtError.takeLast(operation: "virStoragePoolGetXMLDesc") }
            defer { free(xml) }
            return String(cString: xml)
        }
    }

    /// The named volume, or nil if the pool has none by that name.
    public func volume(named name: String) throws(LibvirtError) -> StorageVolume? {
        guard let volume = virStorageVolLookupByName(handle, name) else {
            let error = LibvirtError.takeLast(operation: "virStorageVolLookupByName")
            if error.code == .noStorageVolume { return nil }
            throw error
        }
        return StorageVolume(taking: volume)
    }

    /// Creates a volume from its XML (`virStorageVolCreateXML`).
    public func createVolume(xml: String) throws(LibvirtError) -> StorageVolume {
        guard let volume = virStorageVolCreateXML(handle, xml, 0) else { throw LibvirtError.takeLast(operation: "virStorageVolCreateXML") }
        return StorageVolume(taking: volume)
    }

    /// Every volume of the pool (`virStoragePoolListAllVolumes`).
    public func volumes() throws(LibvirtError) -> [StorageVolume] {
        var list: UnsafeMutablePointer<virStorageVolPtr?>?
        let count = virStoragePoolListAllVolumes(handle, &list, 0)
        guard count >= 0 else { throw LibvirtError.takeLast(operation: "virStoragePoolListAllVolumes") }
        guard let list else { return [] }
        defer { free(list) }
        return (0..<Int(count)).compactMap { list[$0].map(StorageVolume.init(taking:)) }
    }
}

/// A volume of a storage pool (`virStorageVolPtr`).
public final class StorageVolume: @unchecked Sendable {
    private let handle: OpaquePointer
    public let name: String

    init(taking handle: OpaquePointer) {
        self.handle = handle
        self.name = virStorageVolGetName(handle).map { String(cString: $0) } ?? ""
    }

    deinit {
        virStorageVolFree(handle)
    }

    /// The volume's path on its host: what a domain's XML names.
    public var path: String {
        get throws(LibvirtError) {
            guard let path = virStorageVolGetPath(handle) else { throw LibvirtError.takeLast(operation: "virStorageVolGetPath") }
            defer { free(path) }
            return String(cString: path)
        }
    }

    /// Size in bytes as allocated by the host.
    public var capacity: UInt64 {
        get throws(LibvirtError) {
            var info = virStorageVolInfo()
            guard virStorageVolGetInfo(handle, &info) == 0 else { throw LibvirtError.takeLast(operation: "virStorageVolGetInfo") }
            return UInt64(info.capacity)
        }
    }

    public func delete() throws(LibvirtError) {
        guard virStorageVolDelete(handle, 0) == 0 else { throw LibvirtError.takeLast(operation: "virStorageVolDelete") }
    }

    /// Uploads `length` bytes read by `read` (called with a buffer; returns bytes read, 0 at the end).
    public func upload(on connection: Connection, length: UInt64, read: (UnsafeMutableRawBufferPointer) -> Int) throws(LibvirtError) {
        let stream = try connection.newStream()
        guard virStorageVolUpload(handle, stream.handle, 0, length, 0) == 0 else {
            throw LibvirtError.takeLast(operation: "virStorageVolUpload")
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = read(buffer)
            if count <= 0 { break }
            var sent = 0
            while sent < count {
                let result = virStreamSend(stream.handle, buffer.baseAddress?.advanced(by: sent).assumingMemoryBound(to: CChar.self), count - sent)
                guard result >= 0 else {
                    let error = LibvirtError.takeLast(operation: "virStreamSend")
                    virStreamAbort(stream.handle)
                    throw error
                }
                sent += Int(result)
            }
        }
        guard virStreamFinish(stream.handle) == 0 else { throw LibvirtError.takeLast(operation: "virStreamFinish") }
    }

    /// Downloads the volume's bytes from `offset` on (all of them with length 0).
    public func download(on connection: Connection, offset: UInt64 = 0, length: UInt64 = 0) throws(LibvirtError) -> [UInt8] {
        let stream = try connection.newStream()
        guard virStorageVolDownload(handle, stream.handle, offset, length, 0) == 0 else {
            throw LibvirtError.takeLast(operation: "virStorageVolDownload")
        }
        var bytes: [UInt8] = []
        var buffer = [CChar](repeating: 0, count: 1 << 16)
        while true {
            let count = buffer.withUnsafeMutableBufferPointer { virStreamRecv(stream.handle, $0.baseAddress, $0.count) }
            if count == 0 { break }
            guard count > 0 else {
                let error = LibvirtError.takeLast(operation: "virStreamRecv")
                virStreamAbort(stream.handle)
                throw error
            }
            bytes += buffer.prefix(Int(count)).map { UInt8(bitPattern: $0) }
        }
        guard virStreamFinish(stream.handle) == 0 else { throw LibvirtError.takeLast(operation: "virStreamFinish") }
        return bytes
    }
}

/// A data stream over a connection (`virStreamPtr`), freed with this object.
final class Stream {
    let handle: OpaquePointer

    init(taking handle: OpaquePointer) {
        self.handle = handle
    }

    deinit {
        virStreamFree(handle)
    }
}

extension Connection {
    func newStream() throws(LibvirtError) -> Stream {
        guard let stream = virStreamNew(rawHandle, 0) else { throw LibvirtError.takeLast(operation: "virStreamNew") }
        return Stream(taking: stream)
    }

    /// The named storage pool, or nil if there is none.
    public func storagePool(named name: String) throws(LibvirtError) -> StoragePool? {
        guard let pool = virStoragePoolLookupByName(rawHandle, name) else {
            let error = LibvirtError.takeLast(operation: "virStoragePoolLookupByName")
            if error.code == .noStoragePool { return nil }
            throw error
        }
        return StoragePool(taking: pool)
    }

    /// Defines a persistent pool from its XML (`virStoragePoolDefineXML`).
    public func defineStoragePool(xml: String) throws(LibvirtError) -> StoragePool {
        guard let pool = virStoragePoolDefineXML(rawHandle, xml, 0) else { throw LibvirtError.takeLast(operation: "virStoragePoolDefineXML") }
        return StoragePool(taking: pool)
    }

    /// Free memory of the host in bytes (`virNodeGetFreeMemory`).
    public var freeMemory: UInt64 {
        get throws(LibvirtError) {
            let free = virNodeGetFreeMemory(rawHandle)
            guard free > 0 else { throw LibvirtError.takeLast(operation: "virNodeGetFreeMemory") }
            return UInt64(free)
        }
    }

    /// The host's CPU count (`virNodeGetInfo`).
    public var hostCPUs: Int {
        get throws(LibvirtError) {
            var info = virNodeInfo()
            guard virNodeGetInfo(rawHandle, &info) == 0 else { throw LibvirtError.takeLast(operation: "virNodeGetInfo") }
            return Int(info.cpus)
        }
    }
}
