import Foundation
import KMatrixCore
import KMatrixRuntime

/// `--kernel [NAME=]FILE[,FILE…]`: a guest for a kernel, judged by the matrix's version rules.
/// Split packages go together, comma-separated: RHEL's kernel-core + kernel-modules, Ubuntu's
/// linux-image + linux-modules. With a NAME the row keeps that name across kernel changes (so
/// runs pair by it); without one it is labelled with the kernel's observed `uname -r`.
enum KernelUnderTest {
    static let prefix = "kernel-"

    static func guest(for argument: String, modules: String?, existing: [GuestSpec], environment: EngineEnvironment) throws -> GuestSpec {
        var name: String?
        var files = Substring(argument)
        if let equals = argument.firstIndex(of: "="), !argument[..<equals].contains("/") {
            let given = String(argument[..<equals])
            if let problem = InputRules.nameProblem(given) {
                throw KMatrixError(.invalidInput, "--kernel row name \(InputRules.quoted(given)) \(problem)")
            }
            guard !existing.contains(where: { $0.name == given }) else {
                throw KMatrixError(.invalidInput, "--kernel row name \(InputRules.quoted(given)) is already a guest of this run; pick another")
            }
            name = given
            files = argument[argument.index(after: equals)...]
        }
        let paths = files.split(separator: ",").map { environment.path(String($0)).path }
        guard let first = paths.first else { throw KMatrixError(.invalidInput, "--kernel \(InputRules.quoted(argument)) names no file") }
        for path in paths {
            if let problem = InputRules.pathProblem(path) { throw KMatrixError(.invalidInput, "--kernel path \(problem)") }
        }
        let source = try source(paths, modules: modules.map { environment.path($0).path })
        if let name {
            return GuestSpec(name: name, image: .kernel(source))
        }
        // Relabelled with the observed `uname -r` once the guest boots; until then (and when it
        // never boots) the file name keeps rows apart.
        var base = prefix + String(URL(fileURLWithPath: first).deletingPathExtension().lastPathComponent.unicodeScalars
            .map { InputRules.isAlphanumeric($0) || "-._".unicodeScalars.contains($0) ? Character($0) : "-" })
        if base.count > InputRules.maximumNameLength - 4 { base = String(base.prefix(InputRules.maximumNameLength - 4)) }
        var candidate = base
        var counter = 2
        while existing.contains(where: { $0.name == candidate }) {
            candidate = "\(base)-\(counter)"
            counter += 1
        }
        return GuestSpec(name: candidate, image: .kernel(source), labelledByKernel: true)
    }

    /// What the files are, from their first bytes; `--modules` is for bare kernels.
    static func source(_ paths: [String], modules: String?) throws -> KernelSource {
        var formats: [KernelFileFormat] = []
        for path in paths {
            _ = try FileIdentity.regularFile(URL(fileURLWithPath: path), what: "--kernel file")
            let header: Data
            do {
                let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
                defer { try? handle.close() }
                header = try handle.read(upToCount: KernelFileFormat.headerLength) ?? Data()
            } catch {
                throw KMatrixError(.invalidInput, "cannot read --kernel file \(path): \(KMatrixError.from(error).message)", cause: error)
            }
            guard let format = KernelFileFormat.identify(header: header) else {
                throw KMatrixError(.invalidInput, "--kernel \(path) is none of a .deb, an .rpm or a bzImage")
            }
            formats.append(format)
        }
        switch Set(formats) {
        case [.deb]: return .packages(.deb, paths: paths)
        case [.rpm]: return .packages(.rpm, paths: paths)
        case [.bzImage] where paths.count == 1: return .bzImage(path: paths[0], modules: modules)
        default:
            throw KMatrixError(.invalidInput, "--kernel \(paths.joined(separator: ",")): give .deb files, .rpm files, or one bare kernel image, not a mix")
        }
    }
}
