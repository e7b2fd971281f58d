import Foundation
import KMatrixCore
import KMatrixRuntime

/// `--kernel PATH`: a guest for a kernel file, judged by the matrix's version rules.
enum KernelUnderTest {
    static let prefix = "kernel-"

    static func guest(for path: String, modules: String?, existing: [GuestSpec]) throws -> GuestSpec {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw KMatrixError(.invalidInput, "--kernel \(path): no such file")
        }
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
        return GuestSpec(name: name, image: .kernel(.file(path: url.path, modules: modules)), labelledByKernel: true)
    }
}
