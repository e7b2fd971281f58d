import Foundation
import KMatrixCore

/// What Debian's signed indices list for a kernel set's suites and flavour, through
/// images/kernel-set/resolve.sh (a private apt; nothing downloaded but the lists). Every line it
/// prints is checked as foreign input (`ArchiveKernel.parse`).
public struct KernelIndex: Sendable {
    let checkout: Checkout
    let cache: CacheLayout
    let commands: any CommandRunner

    public init(checkout: Checkout, cache: CacheLayout, commands: any CommandRunner) {
        self.checkout = checkout
        self.cache = cache
        self.commands = commands
    }

    public func kernels(suites: [String], flavour: KernelSet.Flavour) async throws -> [ArchiveKernel] {
        let script = checkout.images.appendingPathComponent("kernel-set/resolve.sh").path
        let arguments = ["--cache", cache.root.path, "--flavour", flavour.rawValue] + suites.flatMap { ["--suite", $0] }
        let result = try await commands.run("bash", [script] + arguments, timeout: .seconds(600))
        let tail = result.stderr.split(whereSeparator: \.isNewline).suffix(3).joined(separator: " / ")
        switch result.status {
        case 0: break
        case 4: throw KMatrixError(.image, "Debian's archive cannot be reached and no package lists of \(suites.joined(separator: ", ")) are cached (\(tail))")
        default: throw KMatrixError(.image, "listing the kernels of \(suites.joined(separator: ", ")) failed (exit \(result.status)): \(tail)")
        }
        var kernels: [ArchiveKernel] = []
        for line in result.stdoutText.split(whereSeparator: \.isNewline) {
            guard let kernel = ArchiveKernel.parse(line: String(line), flavour: flavour) else {
                throw KMatrixError(.image, "the kernel index printed a line kmatrix does not accept: \(InputRules.quoted(String(line), limit: 120))")
            }
            kernels.append(kernel)
        }
        return kernels
    }
}
