/// One hypervisor host of a run, as the scheduler sees it.
public struct HostCapacity: Sendable, Equatable {
    public var name: String
    /// Guests it boots at once.
    public var jobs: Int
    /// Memory it has free, in MiB (nil: unknown, any guest fits).
    public var freeMemoryMiB: Int?

    public init(name: String, jobs: Int, freeMemoryMiB: Int?) {
        self.name = name
        self.jobs = jobs
        self.freeMemoryMiB = freeMemoryMiB
    }
}

/// Spreads a run's guests over its hosts (docs/architecture.md, "Several hosts"): slowest boots
/// first (by `Shard.weight`), each to the host with the least expected work per job slot among
/// those with room for its memory; a guest no host has room for goes where most memory is free
/// (it then fails there with libvirt's own reason). Deterministic; matrix order within a host.
public enum HostAssignment {
    public static func assign(_ guests: [GuestSpec], to hosts: [HostCapacity], memoryMiB: (GuestSpec) -> Int) -> [[GuestSpec]] {
        guard !hosts.isEmpty else { return [] }
        var load = Array(repeating: 0, count: hosts.count)
        var chosen: [Int: Int] = [:]
        let order = guests.indices.sorted { (Shard.weight(guests[$0].image), -$0) > (Shard.weight(guests[$1].image), -$1) }
        for index in order {
            let guest = guests[index]
            let memory = memoryMiB(guest)
            let fitting = hosts.indices.filter { hosts[$0].freeMemoryMiB.map { memory <= $0 } ?? true }
            let host: Int
            if fitting.isEmpty {
                host = hosts.indices.max { (hosts[$0].freeMemoryMiB ?? 0, -$0) < (hosts[$1].freeMemoryMiB ?? 0, -$1) } ?? 0
            } else {
                // Least work per slot after adding this guest; ties to the first host.
                host = fitting.min { lhs, rhs in
                    let left = Double(load[lhs] + Shard.weight(guest.image)) / Double(max(1, hosts[lhs].jobs))
                    let right = Double(load[rhs] + Shard.weight(guest.image)) / Double(max(1, hosts[rhs].jobs))
                    return (left, lhs) < (right, rhs)
                } ?? 0
            }
            load[host] += Shard.weight(guest.image)
            chosen[index] = host
        }
        return hosts.indices.map { host in guests.indices.filter { chosen[$0] == host }.map { guests[$0] } }
    }
}
