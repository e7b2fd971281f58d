import Foundation

/// Remembers the KVM-or-TCG verdict for one boot of this host, so a run does not spend the
/// probe's seconds again (`kmatrix doctor` always probes afresh). The key holds the boot id,
/// the URI and the QEMU version: a reboot, a remote host or a new QEMU asks again.
public struct AcceleratorCache: Sendable {
    let file: URL

    public init(file: URL) {
        self.file = file
    }

    public static func key(uri: String, qemu: String) -> String? {
        // A remote libvirt runs on another machine, whose boot this host cannot see.
        guard uri.starts(with: "qemu:///") || uri.starts(with: "test:///"),
              let bootID = try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8) else { return nil }
        return "\(bootID.trimmingCharacters(in: .whitespacesAndNewlines)) \(uri) \(qemu)"
    }

    public func verdict(key: String?, probe: () async -> Accelerator) async -> Accelerator {
        guard let key else { return await probe() }
        if let text = try? String(contentsOf: file, encoding: .utf8) {
            let lines = text.split(separator: "\n").map(String.init)
            if lines.count == 2, lines[0] == key, let cached = Accelerator(rawValue: lines[1]) { return cached }
        }
        let fresh = await probe()
        try? FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? Data("\(key)\n\(fresh.rawValue)\n".utf8).write(to: file, options: .atomic)
        return fresh
    }
}
