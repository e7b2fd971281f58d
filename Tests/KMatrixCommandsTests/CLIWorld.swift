import Foundation
import Synchronization
import KMatrixCommands
import KMatrixCore
import KMatrixRuntime
import KMatrixTestSupport

/// The command line in a temporary world: its own working directory and cache, fake commands,
/// a fake (or unreachable) hypervisor, captured streams. Nothing here touches the machine.
final class CLIWorld: Sendable {
    let root: TemporaryDirectory
    let commands = FakeCommands()
    let hypervisor: FakeHypervisor?
    private let streams = Mutex<(out: String, err: String)>(("", ""))

    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// With `fakeCheckout`, the world's own checkout (a probe "binary", no recipes: every
    /// recipe is a fake command), for commands that get as far as booting.
    init(hypervisor: FakeHypervisor? = FakeHypervisor(), fakeCheckout: Bool = false) throws {
        root = try TemporaryDirectory("cli")
        self.hypervisor = hypervisor
        self.checkoutRoot = fakeCheckout ? root.url.appendingPathComponent("checkout") : Self.packageRoot
        try FileManager.default.createDirectory(at: cache, withIntermediateDirectories: true)
        if fakeCheckout {
            let probe = try root.file("checkout/probe/kmatrix-probe", "#!/bin/sh\n")
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: probe.path)
        }
    }

    let checkoutRoot: URL

    var cache: URL { root.url.appendingPathComponent("cache") }
    var stdout: String { streams.withLock { $0.out } }
    var stderr: String { streams.withLock { $0.err } }

    var context: CommandContext {
        let hypervisor = self.hypervisor
        let commands = self.commands
        return CommandContext(
            workingDirectory: root.url,
            environment: ["KMATRIX_CACHE": cache.path, "KMATRIX_ROOT": checkoutRoot.path, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"],
            home: root.url, executable: nil,
            standardOutput: { [self] text in streams.withLock { $0.out += text } },
            standardError: { [self] text in streams.withLock { $0.err += text } },
            standardErrorIsTerminal: false,
            commands: { _ in commands },
            connect: { uri, _ in
                guard let hypervisor else { throw KMatrixError(.hostNotReady, "cannot connect to libvirt at \(uri.text): no daemon") }
                return hypervisor
            },
            registry: RunRegistry(root: root.url.appendingPathComponent("registry")),
            processes: ProcessTable(proc: URL(fileURLWithPath: "/proc"), clock: .continuous),
            namespaces: root.url.appendingPathComponent("netns"),
            clock: .continuous,
            awaitBanner: nil,
            interrupts: { _ in NoInterrupts() })
    }

    /// Runs `kmatrix ARGUMENTS` and returns the exit status.
    func run(_ arguments: [String]) async -> Int32 {
        await KMatrixCLI.main(arguments, context: context)
    }

    func file(_ name: String, _ text: String) throws -> URL { try root.file(name, text) }

    /// Everything in the cache, so a test can say nothing was created there.
    var cacheListing: [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: cache.path) else { return [] }
        return enumerator.compactMap { $0 as? String }.sorted()
    }

    deinit { root.remove() }
}

struct NoInterrupts: InterruptDisarming {
    func disarm() {}
}
