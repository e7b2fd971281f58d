import Testing
@testable import KMatrixCore

@Suite struct ShardTests {
    /// Ten guests: the host, six initramfs kernels, three distribution images, not in cost order.
    static let guests: [GuestSpec] = [
        GuestSpec(name: "host", image: .host),
        GuestSpec(name: "debian-11-5.10", image: .kernel(.debian(suite: "bullseye"))),
        GuestSpec(name: "rhel-8", image: .cloud(CloudImage(file: "rhel-8.qcow2", user: "cloud-user"))),
        GuestSpec(name: "debian-12-6.1", image: .kernel(.debian(suite: "bookworm"))),
        GuestSpec(name: "debian-13-6.12", image: .kernel(.debian(suite: "trixie"))),
        GuestSpec(name: "ubuntu-20.04", image: .cloud(CloudImage(file: "focal.img", user: "ubuntu"))),
        GuestSpec(name: "legacy-6.1-failopen-reverted", image: .kernel(.recipe("legacy-failopen"))),
        GuestSpec(name: "amazon-linux-2", image: .cloud(CloudImage(file: "al2.qcow2", user: "ec2-user"))),
        GuestSpec(name: "candidate", image: .kernel(.bzImage(path: "/tmp/bzImage", modules: nil))),
        GuestSpec(name: "mainline", image: .kernel(.recipe("mainline"))),
    ]

    @Test func tenGuestsSplitThreeWays() {
        let shards = (1...3).map { Shard.pick(Self.guests, shard: $0, of: 3).map(\.name) }
        // By hand: clouds (by name) to shards 1, 2, 3; kernels by name round the shards; the host
        // last, to the lowest-numbered of the three equal shards.
        #expect(shards == [
            ["host", "debian-13-6.12", "amazon-linux-2", "candidate"],
            ["debian-11-5.10", "rhel-8", "legacy-6.1-failopen-reverted"],
            ["debian-12-6.1", "ubuntu-20.04", "mainline"],
        ])
        // Every guest exactly once.
        #expect(shards.flatMap { $0 }.sorted() == Self.guests.map(\.name).sorted())
        // Within a shard, the matrix's order.
        let position = Dictionary(uniqueKeysWithValues: Self.guests.enumerated().map { ($0.element.name, $0.offset) })
        #expect(shards.allSatisfy { shard in shard.map { position[$0] ?? -1 } == shard.map { position[$0] ?? -1 }.sorted() })
        // Each shard gets one distribution boot, and the loads differ by less than one.
        let loads = (1...3).map { Shard.pick(Self.guests, shard: $0, of: 3).reduce(0) { $0 + Shard.weight($1.image) } }
        #expect(loads == [121, 120, 120])
        let cloud = Shard.weight(.cloud(CloudImage(file: "x", user: "u")))
        #expect((loads.max() ?? 0) - (loads.min() ?? 0) <= cloud)
    }

    @Test func theSplitIsTheSameWhateverTheInputOrder() {
        let forward = (1...3).map { Set(Shard.pick(Self.guests, shard: $0, of: 3).map(\.name)) }
        let backward = (1...3).map { Set(Shard.pick(Self.guests.reversed(), shard: $0, of: 3).map(\.name)) }
        #expect(forward == backward)
        #expect((1...3).map { Shard.pick(Self.guests, shard: $0, of: 3) } == (1...3).map { Shard.pick(Self.guests, shard: $0, of: 3) })
    }

    @Test func weightsFollowTheBootCost() {
        #expect(Shard.weight(.host) == 1)
        #expect(Shard.weight(.kernel(.debian(suite: "trixie"))) == 10)
        #expect(Shard.weight(.cloud(CloudImage(file: "x", user: "u"))) == 100)
    }

    @Test func oneShardHoldsEverythingAndImpossibleShardsHoldNothing() {
        #expect(Shard.pick(Self.guests, shard: 1, of: 1) == Self.guests)
        #expect(Shard.pick(Self.guests, shard: 0, of: 3).isEmpty)
        #expect(Shard.pick(Self.guests, shard: 4, of: 3).isEmpty)
        #expect(Shard.pick(Self.guests, shard: 1, of: 0).isEmpty)
        // More shards than guests: some are empty, none loses a guest.
        let many = (1...12).map { Shard.pick(Self.guests, shard: $0, of: 12) }
        #expect(many.map(\.count).reduce(0, +) == 10)
        #expect(many.filter(\.isEmpty).count == 2)
    }

    @Test(arguments: [("1/3", 1, 3), ("3/3", 3, 3), ("1/1", 1, 1), ("07/10", 7, 10)])
    func parsesShards(text: String, shard: Int, count: Int) throws {
        let parsed = try #require(Shard.parse(text))
        #expect(parsed.shard == shard)
        #expect(parsed.of == count)
    }

    @Test(arguments: ["0/3", "4/3", "1/0", "1", "1/3/4", "/3", "1/", "-1/3", "+1/3", " 1/3", "1/3 ", "a/b", "1/9999999", "١/٣"])
    func refusesWhatIsNoShard(text: String) {
        #expect(Shard.parse(text) == nil)
    }
}
