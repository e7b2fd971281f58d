import Foundation
import KMatrixCore
import KMatrixRuntime

/// What a user asked a run to do, as given (paths relative to the working directory).
public struct RunRequest: Sendable {
    public var matrix: String?
    public var guests: [String]
    public var scenarios: [String]
    public var kernels: [String]
    public var modules: String?
    public var shard: String?
    public var baseline: String?
    /// The matrix's consumers the `--kernel` guests run.
    public var consumers: [String]

    public init(matrix: String?, guests: [String], scenarios: [String], kernels: [String], modules: String?, shard: String?, baseline: String?,
                consumers: [String] = []) {
        self.consumers = consumers
        self.matrix = matrix
        self.guests = guests
        self.scenarios = scenarios
        self.kernels = kernels
        self.modules = modules
        self.shard = shard
        self.baseline = baseline
    }
}

/// What a run will do, decided and checked before anything boots.
public struct RunPlan: Sendable {
    public var matrix: Matrix
    public var matrixName: String
    public var guests: [GuestSpec]
    public var scenarios: [Scenario]
    /// The users' consumers the selected guests run.
    public var consumers: [ConsumerSpec]
    public var baseline: RunResult?
    public var baselineName: String?

    public static func make(_ command: RunRequest, environment: EngineEnvironment) async throws -> RunPlan {
        let loaded = try MatrixLoading.load(command.matrix, environment: environment)
        // Kernel sets become rows before anything picks rows by name or shard.
        let matrix = try await KernelSets.expand(loaded.matrix, environment: environment)
        var kernelGuests: [GuestSpec] = []
        for argument in command.kernels {
            kernelGuests.append(try KernelUnderTest.guest(for: argument, modules: command.modules, existing: matrix.guests + kernelGuests, environment: environment))
        }
        if command.modules != nil && !kernelGuests.contains(where: { if case .kernel(.bzImage) = $0.image { true } else { false } }) {
            throw KMatrixError(.invalidInput, "--modules goes with a bare kernel image given with --kernel")
        }
        if !command.consumers.isEmpty {
            guard !kernelGuests.isEmpty else { throw KMatrixError(.invalidInput, "--consumer goes with --kernel: it gives the kernels under test a consumer of the matrix") }
            let names = try Selection.pick(command.consumers, from: matrix.consumers.map(\.name), what: "consumer")
            for index in kernelGuests.indices {
                kernelGuests[index].consumers = names
                kernelGuests[index] = matrix.sizedForConsumers(kernelGuests[index])
            }
        }
        let selected = try Selection.pick(command.guests, from: matrix.guests.map(\.name), what: "guest").compactMap { name in
            matrix.guests.first { $0.name == name }
        }
        // --kernel alone validates those kernels; with --guest the named matrix guests run beside them.
        var guests = (command.guests.isEmpty ? (command.kernels.isEmpty ? matrix.guests : []) : selected) + kernelGuests
        if let text = command.shard, let (shard, count) = Shard.parse(text) {
            guests = Shard.pick(guests, shard: shard, of: count)
        }
        var withKernels = matrix
        withKernels.guests += kernelGuests
        let known = withKernels.allScenarios
        var seen = Set<String>()
        let names = (Scenario.catalogue + known).map(\.name).filter { seen.insert($0).inserted }
        let chosen = command.scenarios.isEmpty
            ? known
            : try Selection.pick(command.scenarios, from: names, what: "scenario").compactMap { name in
                known.first { $0.name == name } ?? Scenario.named(name)
            }
        // Columns no selected guest would fill are left out.
        let scenarios = chosen.filter { scenario in guests.contains { scenario.applies(to: $0) } }
        let consumers = matrix.consumers.filter { consumer in scenarios.contains { $0.consumer?.name == consumer.name } }
        try KernelInputs.check(guests)
        try ConsumerInputs.check(consumers)
        let baseline = try command.baseline.map { try ResultFiles.load($0, environment: environment) }
        if let baseline, baseline.cells.isEmpty, let name = command.baseline {
            throw KMatrixError(.invalidInput, "--baseline \(SafeText.terminal(name)) holds no cells: there is nothing to compare against")
        }
        return RunPlan(matrix: matrix, matrixName: loaded.name, guests: guests, scenarios: scenarios, consumers: consumers, baseline: baseline,
                       baselineName: command.baseline)
    }
}

/// Short, sortable, unique per run: names namespaces, domains and overlays.
public enum RunIdentifier {
    public static func make(at date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "HHmmss"
        // 32 random bits: run ids name volumes in pools that several machines share.
        let suffix = String(UInt64(UInt32.random(in: 0...UInt32.max)) | 0x1_0000_0000, radix: 16).dropFirst()
        return formatter.string(from: date) + suffix
    }
}

