import Foundation
import KMatrixCore
import KMatrixRuntime

/// Kernel sets (`kernels:`) expanded to one row per kernel release, from Debian's indices
/// (docs/architecture.md, "Kernel sets").
public enum KernelSets {
    public static func expand(_ matrix: Matrix, environment: EngineEnvironment) async throws -> Matrix {
        guard !matrix.kernelSets.isEmpty else { return matrix }
        let index = KernelIndex(checkout: try environment.checkout(), cache: environment.cache, commands: environment.commands(nil))
        var listed: [KernelSet.Flavour: [ArchiveKernel]] = [:]
        for flavour in KernelSet.Flavour.allCases {
            var suites: [String] = []
            for set in matrix.kernelSets where set.flavour == flavour {
                for suite in set.suites where !suites.contains(suite) { suites.append(suite) }
            }
            guard !suites.isEmpty else { continue }
            listed[flavour] = try await index.kernels(suites: suites, flavour: flavour)
        }
        let expanded = matrix.expanding(listed)
        let rows = expanded.guests.count - matrix.guests.count
        let unavailable = expanded.guests.dropFirst(matrix.guests.count).filter {
            if case .kernel(.archive(let kernel)) = $0.image { kernel.unavailable != nil } else { false }
        }.count
        environment.say("kernel sets: \(rows) kernels\(unavailable > 0 ? " (\(unavailable) the archive lists without every package they need)" : "")")
        return expanded
    }
}
