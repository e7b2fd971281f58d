import Foundation

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
    /// The same run given twice (two paths to one file, or copies of it) counts once; two
    /// different files claiming one run id are refused, since one of them is not what it says.
    public static func distinctRuns(_ runs: [RunResult]) throws -> [RunResult] {
        var seen: [String: RunResult] = [:]
        var distinct: [RunResult] = []
        for run in runs {
            if let earlier = seen[run.run.id] {
                guard earlier == run else {
                    throw KMatrixError(.invalidInput, "two files claim run \(InputRules.quoted(run.run.id)) but differ; merge each run once")
                }
                continue
            }
            seen[run.run.id] = run
            distinct.append(run)
        }
        return distinct
    }

    public static func merge(_ given: [RunResult]) throws -> RunResult {
        let runs = try distinctRuns(given)
        guard let first = runs.first else {
            throw KMatrixError(.invalidInput, "nothing to merge: give at least one results.json")
        }
        for run in runs {
            if run.schema > RunResult.currentSchema {
                throw KMatrixError(.invalidInput, "run \(run.run.id) (host \(run.run.host)) was written by a newer kmatrix (schema \(run.schema)); "
                    + "this kmatrix reads schema ≤ \(RunResult.currentSchema)")
            }
            if run.schema < 1 {
                throw KMatrixError(.invalidInput, "run \(run.run.id) (host \(run.run.host)) says schema \(run.schema), which no kmatrix writes; "
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

        let sources = runs.flatMap { $0.run.sources(schema: $0.schema) }
        let firstID = sources.first?.id ?? first.run.id
        // The scalar fields are the first source's; every source's own values are in `sources`
        // (`RunMetadata.distinct` lists them), never folded into one string.
        var metadata = first.run
        metadata.id = sources.count > 1 ? "merged-\(firstID)+\(sources.count - 1)" : "merged-\(firstID)"
        metadata.started = runs.map(\.run.started).min() ?? first.run.started
        metadata.durationS = runs.map(\.run.durationS).max() ?? first.run.durationS
        metadata.sources = sources
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
        cell.finding = "runs disagree: " + voting.map { vote in
            "\(vote.cell.outcome.rawValue) on run \(vote.run.id) (host \(vote.run.distinct(\.host).joined(separator: ", ")))"
        }.joined(separator: ", ")
        // The disagreement is the finding; a failure kept from one run would describe only that run.
        cell.failure = nil
        cell.outcome = .flaky
        return cell
    }

    /// Every run's scenarios, catalogue ones in catalogue order, unknown ones after in first-seen
    /// order (a newer matrix may carry a scenario this kmatrix does not know).
    static func scenarios(_ runs: [RunResult]) -> [String] {
        var seen: Set<String> = []
        var order: [String] = []
        for run in runs {
            for name in run.scenarios where seen.insert(name).inserted { order.append(name) }
            for cell in run.cells where seen.insert(cell.scenario).inserted { order.append(cell.scenario) }
        }
        return Scenario.catalogue.map(\.name).filter(seen.contains) + order.filter { Scenario.named($0) == nil }
    }
}
