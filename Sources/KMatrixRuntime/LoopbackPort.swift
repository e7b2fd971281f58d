import Foundation
import KMatrixCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A free TCP port on 127.0.0.1 for a guest's SSH forward. The kernel picks it; a process-wide
/// set keeps two guests of one run from being handed the same number.
enum LoopbackPort {
    private static let handedOut = Mutex<Set<Int>>([])

    static func reserve() throws -> Int {
        for _ in 0..<20 {
            let port = try ask()
            let fresh = handedOut.withLock { $0.insert(port).inserted }
            if fresh { return port }
        }
        throw KMatrixError(.boot, "could not find a free port on 127.0.0.1")
    }

    static func release(_ port: Int) {
        _ = handedOut.withLock { $0.remove(port) }
    }

    private static func ask() throws -> Int {
        let socketDescriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socketDescriptor >= 0 else { throw KMatrixError(.boot, "socket() failed: \(String(cString: strerror(errno)))") }
        defer { close(socketDescriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(socketDescriptor, socketAddress, length) == 0 && getsockname(socketDescriptor, socketAddress, &length) == 0
            }
        }
        guard bound else { throw KMatrixError(.boot, "cannot bind a port on 127.0.0.1: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
