import Foundation

public struct MergeError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// Runs from several machines or shards as one result. A cell is one guest × kernel × scenario:
/// runs that agree keep the first cell as it is; runs that disagree make it `flaky`, with every
/// run's outcome, run id and host in the reason.
///
/// Rules beyond the key:
/// - a skipped cell is no vote: a shard that lacked an image does not contradict one that had it
///   (as an interrupted repetition is no vote in `Repetition`); errors are votes;
/// - a cell without a kernel (it never booted) belongs to its row's first observed kernel;
/// - one row name seen with several kernels becomes one row per kernel: the first keeps the
///   name, the others are named "row (kernel)", so no two cells share a row and scenario.
public enum Merge {
    public static func merge(_ runs: [RunResult]) throws(MergeError) -> RunResult {
        guard let first = runs.first else {
            throw MergeError("nothing to merge: give at least one results.json")
        }
        for run in runs {
            if run.schema > RunResult.currentSchema {
                throw MergeError("run \(run.run.id) (host \(run.run.host)) was written by a newer kmatrix (schema \(run.schema)); "
                    + "this kmatrix reads schema ≤ \(RunResult.currentSchema)")
            }
            if run.schema < 1 {
                throw MergeError("run \(run.run.id) (host \(run.run.host)) says schema \(run.schema), which no kmatrix writes; "
                    + "this kmatrix reads schema 1 to \(RunResult.currentSchema)")
            }
        }

        // Rows in first-seen order, and each row name's kernels in first-seen order.
        var guestOrder: [String] = []
        var kernelsByGuest: [String: [String]] = [:]
        for run in runs {
            for guest in run.guests + run.cells.map(\.guest) where kernelsByGuest[guest] == nil {
                guestOrder.append(guest)
                kernelsByGuest[guest] = []
            }
            for cell in run.cells {
                if let kernel = cell.kernel, kernelsByGuest[cell.guest]?.contains(kernel) == false {
                    kernelsByGuest[cell.guest, default: []].append(kernel)
                }
            }
        }
        func rowName(guest: String, kernel: String?) -> String {
            let kernels = kernelsByGuest[guest] ?? []
            guard let kernel, kernels.count > 1, kernel != kernels.first else { return guest }
            return "\(guest) (\(kernel))"
        }
        let rows = guestOrder.flatMap { guest in
            let kernels = kernelsByGuest[guest] ?? []
            return kernels.count > 1 ? kernels.map { rowName(guest: guest, kernel: $0) } : [guest]
        }

        struct Vote {
            var cell: CellResult
            var run: RunMetadata
        }
        var votes: [String: [String: [Vote]]] = [:]
        for run in runs {
            for var cell in run.cells {
                let kernel = cell.kernel ?? kernelsByGuest[cell.guest]?.first
                cell.guest = rowName(guest: cell.guest, kernel: kernel)
                votes[cell.guest, default: [:]][cell.scenario, default: []].append(Vote(cell: cell, run: run.run))
            }
        }

        let scenarios = Self.scenarios(runs)
        var cells: [CellResult] = []
        for row in rows {
            for scenario in scenarios {
                guard let candidates = votes[row]?[scenario], let chosen = resolve(candidates.map { ($0.cell, $0.run) }) else { continue }
                cells.append(chosen)
            }
        }

        let sources = runs.flatMap { run in
            run.run.sources ?? [RunSource(id: run.run.id, host: run.run.host, accelerator: run.run.accelerator, qemu: run.run.qemu,
                                          libvirt: run.run.libvirt, started: run.run.started, durationS: run.run.durationS, schema: run.schema)]
        }
        let firstID = sources.first?.id ?? first.run.id
        let metadata = RunMetadata(
            id: sources.count > 1 ? "merged-\(firstID)+\(sources.count - 1)" : "merged-\(firstID)",
            started: runs.map(\.run.started).min() ?? first.run.started,
            durationS: runs.map(\.run.durationS).max() ?? first.run.durationS,
            host: combined(sources.map(\.host)) ?? first.run.host,
            hostKernel: combined(runs.map(\.run.hostKernel)) ?? first.run.hostKernel,
            libvirt: combined(runs.compactMap(\.run.libvirt)), qemu: combined(runs.compactMap(\.run.qemu)),
            accelerator: combined(runs.compactMap(\.run.accelerator)),
            matrix: combined(runs.map(\.run.matrix)) ?? first.run.matrix,
            kmatrixVersion: combined(runs.map(\.run.kmatrixVersion)) ?? first.run.kmatrixVersion,
            sources: sources)
        return RunResult(run: metadata, guests: rows, scenarios: scenarios, cells: cells)
    }

    /// The cell that stands for several runs' cells of one key, in run order.
    static func resolve(_ candidates: [(cell: CellResult, run: RunMetadata)]) -> CellResult? {
        let voting = candidates.filter { $0.cell.outcome != .skipped }
        guard let first = voting.first else { return candidates.first?.cell }
        guard voting.contains(where: { $0.cell.outcome != first.cell.outcome }) else { return first.cell }
        var cell = first.cell
        var tally: [String: Int] = [:]
        for vote in voting { tally[vote.cell.outcome.rawValue, default: 0] += 1 }
        cell.runs = RunAgreement(total: voting.count, agreeing: tally[first.cell.outcome.rawValue] ?? 0, outcomes: tally)
        cell.reason = "runs disagree: " + voting.map { "\($0.cell.outcome.rawValue) on run \($0.run.id) (host \($0.run.host))" }.joined(separator: ", ")
        // The disagreement is the finding; a failure kept from one run would describe only that run.
        cell.failure = nil
        cell.outcome = .flaky
        return cell
    }

    /// Every run's scenarios, catalogue ones in catalogue order, unknown ones after in first-seen
    /// order (a newer matrix may carry a scenario this kmatrix does not know).
    static func scenarios(_ runs: [RunResult]) -> [String] {
        var seen: [String] = []
        for name in runs.flatMap({ $0.scenarios + $0.cells.map(\.scenario) }) where !seen.contains(name) { seen.append(name) }
        return Scenario.catalogue.map(\.name).filter(seen.contains) + seen.filter { Scenario.named($0) == nil }
    }

    static let several = "several: "

    /// One value when the runs agree, "several: a, b" when they do not; a value that is already
    /// a "several" list (a merged run merged again) is opened up rather than nested.
    static func combined(_ values: [String]) -> String? {
        var distinct: [String] = []
        for value in values {
            let parts = value.hasPrefix(several) ? value.dropFirst(several.count).components(separatedBy: ", ") : [value]
            for part in parts where !distinct.contains(part) { distinct.append(part) }
        }
        switch distinct.count {
        case 0: return nil
        case 1: return distinct[0]
        default: return several + distinct.joined(separator: ", ")
        }
    }
}
