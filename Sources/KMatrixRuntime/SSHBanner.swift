import Foundation
import KMatrixCore
#if canImport(Glibc)
import Glibc
#endif

/// Whether an SSH server answers on a 127.0.0.1 port: it sends its banner ("SSH-2.0-…")
/// first. QEMU's port forward accepts the TCP connection long before the guest's sshd is up,
/// so only the banner says the guest is there; checking it costs milliseconds, where an `ssh`
/// attempt against a guest that is not up stalls for seconds.
public enum SSHBanner {
    /// True once the banner arrives within `timeout`.
    static func answers(port: Int, timeout: Duration = .milliseconds(400)) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 || errno == EINPROGRESS else { return false }
        let deadline = ContinuousClock.now + timeout
        var received: [UInt8] = []
        while ContinuousClock.now < deadline {
            let remaining = Int32(max(1, (deadline - ContinuousClock.now).seconds * 1000))
            var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, remaining) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 16)
            let count = read(descriptor, &buffer, buffer.count)
            if count <= 0 { return false }
            received += buffer.prefix(count)
            if received.count >= 4 { return received.starts(with: Array("SSH-".utf8)) }
        }
        return false
    }

    /// Waits until the banner arrives, looking every 150 ms, or `limit` passes on `clock`.
    public static func wait(port: Int, within limit: Duration, clock: WaitClock) async -> Bool {
        let answered = try? await poll(clock: clock, within: limit, every: .milliseconds(150)) { _ -> Bool? in
            // The look itself blocks on poll(2) for up to 400 ms: off the cooperative pool.
            await Task.detached(operation: { answers(port: port) }).value ? true : nil
        }
        return answered == true
    }
}
