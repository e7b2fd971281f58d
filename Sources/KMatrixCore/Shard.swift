/// Splits a matrix's guests over machines (`--shard K/N`). Every machine computes the same split
/// from the same matrix, with no coordination: the split depends only on the guests' names and
/// image kinds.
public enum Shard {
    /// Expected wall time of one guest, in rough seconds under TCG (README, "Benchmarks"): a
    /// distribution's own boot to cloud-init's end takes ~90 s plus ~10 s of scenarios; an
    /// initramfs kernel is SSH-ready in 4–6 s plus its scenarios, ~10 s; the host guest only runs
    /// the scenarios, ~1 s. So a cloud guest weighs ten kernel guests, and the host almost nothing.
    /// `ImageSpec.bootCost` keeps the order; these keep the proportions.
    public static func weight(_ image: ImageSpec) -> Int {
        switch image.bootCost {
        case ...0: 1
        case 1: 10
        default: 100
        }
    }

    /// The guests of shard `shard` (1-based) of `count`, in the matrix's order. Longest
    /// processing time first: guests by weight (heaviest first, then by name), each to the
    /// least-loaded shard, ties to the lowest-numbered one. Every guest lands in exactly one
    /// shard; an impossible shard (0, or above `count`) gets none — `parse` refuses those.
    public static func pick(_ guests: [GuestSpec], shard: Int, of count: Int) -> [GuestSpec] {
        guard count >= 1, (1...count).contains(shard) else { return [] }
        return assign(guests, count: count).enumerated().filter { $0.element == shard - 1 }.map { guests[$0.offset] }
    }

    /// The shard index (0-based) of every guest, aligned with `guests`.
    static func assign(_ guests: [GuestSpec], count: Int) -> [Int] {
        let order = guests.indices.sorted { lhs, rhs in
            let left = (weight(guests[lhs].image), guests[lhs].name)
            let right = (weight(guests[rhs].image), guests[rhs].name)
            if left.0 != right.0 { return left.0 > right.0 }
            if left.1 != right.1 { return left.1 < right.1 }
            return lhs < rhs
        }
        var loads = Array(repeating: 0, count: count)
        var shards = Array(repeating: 0, count: guests.count)
        for index in order {
            // Linear over the shards: N is a handful of machines, not worth a heap.
            var lightest = 0
            for candidate in loads.indices where loads[candidate] < loads[lightest] { lightest = candidate }
            shards[index] = lightest
            loads[lightest] += weight(guests[index].image)
        }
        return shards
    }

    /// "K/N" with 1 ≤ K ≤ N, digits only; nil for anything else.
    public static func parse(_ text: String) -> (shard: Int, of: Int)? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0.count <= 6 && $0.allSatisfy { $0.isASCII && $0.isNumber } }),
              let shard = Int(parts[0]), let count = Int(parts[1]), count >= 1, (1...count).contains(shard) else { return nil }
        return (shard, count)
    }
}
