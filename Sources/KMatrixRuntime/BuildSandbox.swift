import Foundation
import KMatrixCore
#if canImport(Glibc)
import Glibc
#endif

/// Where `kmatrix bisect --git` runs git and make: `images/kernel-tree/sandbox.sh`, as the
/// unprivileged user `kmatrix-build` without capabilities or network, seeing the user's tree
/// read-only and kmatrix's work folder writable (docs/architecture.md, "Bisect"). A tree's git
/// configuration (filters, `diff.external`, `core.sshCommand`…) and its Makefiles are the
/// tree's author's code; they run with rights that reach nothing of root's.
///
/// What the sandbox writes is read back as untrusted: `copyOut` takes only regular files of a
/// bounded size, never a link, into a folder root owns.
public struct BuildSandbox: Sendable {
    public static let user = "kmatrix-build"
    public static let mountRoot = "/mnt/kmatrix"
    /// The user's tree, inside the sandbox.
    public static let source = "\(mountRoot)/src"
    /// kmatrix's work folder, inside the sandbox.
    public static let work = "\(mountRoot)/work"
    /// kmatrix's recipes, inside the sandbox.
    public static let images = "\(mountRoot)/images"

    let script: URL
    /// The user's tree on this machine (its top, holding `.git`).
    public let sourceTree: URL
    /// The work folder on this machine, owned by the build user.
    public let workFolder: URL
    let imagesFolder: URL
    let commands: any CommandRunner

    /// Makes the work folder the build user's own (created 0700 if needed), or says what is
    /// missing: the user (host-setup creates it), or a work folder that is a link.
    public static func prepare(sourceTree: URL, workFolder: URL, images: URL, commands: any CommandRunner) throws -> BuildSandbox {
        guard let account = getpwnam(user) else {
            throw KMatrixError(.hostNotReady, "bisect builds kernels as the unprivileged user \(user), which does not exist here; "
                + "scripts/host-setup.sh creates it (useradd --system \(user))")
        }
        let (uid, gid) = (account.pointee.pw_uid, account.pointee.pw_gid)
        do {
            try FileManager.default.createDirectory(at: workFolder.deletingLastPathComponent(), withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o755])
            try FileManager.default.createDirectory(at: workFolder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw KMatrixError.from(error, whileDoing: "creating the bisect work folder \(workFolder.path)")
        }
        var info = stat()
        guard lstat(workFolder.path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw KMatrixError(.io, "\(workFolder.path) is not a plain directory; remove it, kmatrix recreates it")
        }
        if info.st_uid != uid || info.st_gid != gid {
            guard lchown(workFolder.path, uid, gid) == 0 else {
                throw KMatrixError(.io, "cannot give \(workFolder.path) to \(user): \(String(cString: strerror(errno)))")
            }
        }
        return BuildSandbox(script: images.appendingPathComponent("kernel-tree/sandbox.sh"), sourceTree: sourceTree, workFolder: workFolder,
                            imagesFolder: images, commands: commands)
    }

    /// Runs `executable` inside the sandbox; `errors` (a log root writes) takes its stderr.
    public func run(_ executable: String, _ arguments: [String], timeout: Duration, errors: ErrorStream? = nil) async throws -> CommandResult {
        let wrapped = [script.path, sourceTree.path, workFolder.path, imagesFolder.path, "--", executable] + arguments
        if let errors { return try await commands.run("bash", wrapped, timeout: timeout, errors: errors) }
        return try await commands.run("bash", wrapped, timeout: timeout)
    }

    /// `name` inside the sandbox's work folder, on this machine.
    public func local(_ name: String) -> URL { workFolder.appendingPathComponent(name) }

    /// Copies a file the sandbox wrote into a folder of root's: a regular file of at most
    /// `limit` bytes, opened without following links.
    public static func copyOut(_ file: URL, to destination: URL, limit: Int) throws {
        let descriptor = open(file.path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard descriptor >= 0 else { throw KMatrixError(.image, "the build left no readable \(file.lastPathComponent): \(String(cString: strerror(errno)))") }
        let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        var info = stat()
        guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_size <= limit else {
            throw KMatrixError(.image, "the build's \(file.lastPathComponent) is not a regular file of at most \(limit) bytes")
        }
        let data = try handle.readToEnd() ?? Data()
        guard data.count <= limit else { throw KMatrixError(.image, "the build's \(file.lastPathComponent) grew past \(limit) bytes") }
        try data.write(to: destination, options: .atomic)
    }
}
