import Foundation
import KMatrixCore
import KMatrixRuntime

/// `--kernel PATH[,PATH…]`: a guest for a kernel, judged by the matrix's version rules. Split
/// packages go together, comma-separated: RHEL's kernel-core + kernel-modules, Ubuntu's
/// linux-image + linux-modules.
enum KernelUnderTest {
    static let prefix = "kernel-"

    static func guest(for argument: String, modules: String?, existing: [GuestSpec]) throws -> GuestSpec {
        let paths = argument.split(separator: ",").map { URL(fileURLWithPath: String($0)).standardizedFileURL.path }
        guard let first = paths.first else { throw KMatrixError(.invalidInput, "--kernel needs a file") }
        for path in paths where !FileManager.default.fileExists(atPath: path) {
            throw KMatrixError(.invalidInput, "--kernel \(path): no such file")
        }
        let url = URL(fileURLWithPath: first)
        // The row is relabelled with the observed `uname -r` once the guest boots; until then
        // (and when it never boots) the file name keeps rows apart.
        var base = prefix + url.deletingPathExtension().lastPathComponent
            .map { $0.isLetter || $0.isNumber || "-._".contains($0) ? $0 : "-" }.reduce("") { $0 + String($1) }
        if base.count > 60 { base = String(base.prefix(60)) }
        var name = base
        var counter = 2
        while existing.contains(where: { $0.name == name }) {
            name = "\(base)-\(counter)"
            counter += 1
        }
        return GuestSpec(name: name, image: .kernel(try source(paths, modules: modules)), labelledByKernel: true)
    }

    /// The file names say what they are; --modules is for bare kernels (packages in the same run
    /// carry their own).
    static func source(_ paths: [String], modules: String?) throws -> KernelSource {
        let formats = Set(paths.map { PackageFormat(rawValue: URL(fileURLWithPath: $0).pathExtension) })
        if formats.count == 1, let format = formats.first, let format {
            return .packages(format, paths: paths)
        }
        guard paths.count == 1, formats == [nil] else {
            throw KMatrixError(.invalidInput, "--kernel \(paths.joined(separator: ",")): give .deb files, .rpm files, or one bare kernel image, not a mix")
        }
        return .bzImage(path: paths[0], modules: modules)
    }
}
