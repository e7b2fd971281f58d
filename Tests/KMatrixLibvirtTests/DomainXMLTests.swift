import Foundation
import Synchronization
import Testing
#if canImport(FoundationXML)
import FoundationXML
#endif
import KMatrixCore
import KMatrixRuntime
@testable import KMatrixLibvirt

/// The domain XML carries the network rule (docs/architecture.md, "Guest networking"): only a 127.0.0.1 port forward, with
/// slirp's restrict=on, and nothing libvirt would turn into a second, unrestricted NIC. Read back as XML, not as text.
struct DomainXMLTests {
    static let owner = RunOwner(boot: "5d1e2b3c-0000-4000-8000-123456789abc", pid: 4242, start: 987654)

    func spec(boot: MachineSpec.Boot, accelerator: Accelerator = .tcg, translationCacheMiB: Int? = 32) -> MachineSpec {
        MachineSpec(name: "kmatrix-run1-debian-12-6.1", runID: "run1", owner: Self.owner, boot: boot, memoryMiB: 256, vcpus: 1, sshPort: 40222,
                    consoleLog: URL(fileURLWithPath: "/tmp/out/console/debian-12-6.1.log"), accelerator: accelerator,
                    translationCacheMiB: translationCacheMiB)
    }

    let kernelBoot = MachineSpec.Boot.kernel(kernel: URL(fileURLWithPath: "/c/vmlinuz"), initrd: URL(fileURLWithPath: "/c/initramfs.gz"),
                                             cmdline: "console=ttyS0 panic=-1 kmatrix.sshkey=a&b'<x>\"")

    func parsed(_ spec: MachineSpec) throws -> XMLElement {
        try #require(LibvirtXML.parse(LibvirtDomainXML.make(for: spec)))
    }

    func values(_ root: XMLElement, _ path: String) throws -> [String] {
        try root.nodes(forXPath: path).compactMap(\.stringValue)
    }

    /// Children by qualified name (libxml2's XPath needs registered prefixes for `qemu:`).
    func children(_ element: XMLElement, _ name: String) -> [XMLElement] {
        (element.children ?? []).compactMap { $0 as? XMLElement }.filter { $0.name == name }
    }

    @Test func networkIsRestrictedSlirpForwardedOnLoopbackOnly() throws {
        let root = try parsed(spec(boot: kernelBoot))
        let arguments = children(root, "qemu:commandline").flatMap { children($0, "qemu:arg") }.compactMap { $0.attribute(forName: "value")?.stringValue }
        #expect(arguments == [
            "-netdev", "user,id=kmnet0,restrict=on,hostfwd=tcp:127.0.0.1:40222-:22",
            "-device", "virtio-net-pci,netdev=kmnet0,romfile=,bus=pci.0,addr=0x1e",
        ])
        #expect(try root.nodes(forXPath: "devices/interface").isEmpty)
        #expect(LibvirtDomainXML.make(for: spec(boot: kernelBoot)).components(separatedBy: "hostfwd=").count == 2)
    }

    @Test func tcgGuestsGetQemuTypeAndASmallTranslationCache() throws {
        let tcg = try parsed(spec(boot: kernelBoot))
        #expect(tcg.attribute(forName: "type")?.stringValue == "qemu")
        #expect(try values(tcg, "features/tcg/tb-cache") == ["32"])
        let kvm = try parsed(spec(boot: kernelBoot, accelerator: .kvm))
        #expect(kvm.attribute(forName: "type")?.stringValue == "kvm")
        #expect(try values(kvm, "features/tcg").isEmpty)
        #expect(try values(kvm, "cpu/@mode") == ["host-passthrough"])
        #expect(try values(try parsed(spec(boot: kernelBoot, translationCacheMiB: nil)), "features/tcg").isEmpty)
    }

    @Test func valuesComeBackAsTheyWereAndTheConsoleLogsToOneFile() throws {
        let root = try parsed(spec(boot: kernelBoot))
        #expect(try values(root, "os/cmdline") == ["console=ttyS0 panic=-1 kmatrix.sshkey=a&b'<x>\""])
        #expect(try values(root, "devices/serial/source/@path") == ["/tmp/out/console/debian-12-6.1.log"])
        #expect(try values(root, "devices/console/source/@path") == ["/tmp/out/console/debian-12-6.1.log"])
        #expect(try values(root, "devices/memballoon/@model") == ["none"])
        #expect(try values(root, "devices/controller/@model") == ["none"])
    }

    @Test func theRunAndItsOwnerAreInTheMetadataAndReadBack() throws {
        let root = try parsed(spec(boot: kernelBoot))
        let run = try #require(children(root, "metadata").first.flatMap { children($0, "kmatrix:run").first })
        let mark = try #require(LibvirtDomainXML.runMark(fromMetadata: run.xmlString))
        #expect(mark.runID == "run1")
        #expect(mark.owner == Self.owner)
        // As libvirt hands it back: its own serialisation, the namespace as default.
        let libvirt = #"<run xmlns="https://kmatrix.dev/xmlns/run/1" id="2214a&amp;b" boot="5d1e2b3c-0000-4000-8000-123456789abc" pid="7" start="9"/>"#
        #expect(LibvirtDomainXML.runMark(fromMetadata: libvirt)?.runID == "2214a&b")
        #expect(LibvirtDomainXML.runMark(fromMetadata: libvirt)?.owner == RunOwner(boot: Self.owner.boot, pid: 7, start: 9))
        // An older kmatrix's mark, or one whose owner does not read back, has no owner: never proven dead.
        #expect(LibvirtDomainXML.runMark(fromMetadata: #"<run id="old"/>"#)?.owner == nil)
        #expect(LibvirtDomainXML.runMark(fromMetadata: #"<run id="x" boot="../../etc" pid="1" start="1"/>"#)?.owner == nil)
        #expect(LibvirtDomainXML.runMark(fromMetadata: "<run/>") == nil)
        #expect(LibvirtDomainXML.runMark(fromMetadata: "not xml") == nil)
    }

    @Test func diskBootUsesTheOverlayAndTheSeedNeverTheBase() throws {
        let boot = MachineSpec.Boot.disk(overlay: URL(fileURLWithPath: "/c/runs/r/overlay.qcow2"), seed: URL(fileURLWithPath: "/c/runs/r/seed.iso"))
        let root = try parsed(spec(boot: boot))
        #expect(try values(root, "devices/disk/source/@file") == ["/c/runs/r/overlay.qcow2", "/c/runs/r/seed.iso"])
        #expect(try values(root, "devices/disk/target/@dev") == ["vda", "vdb"])
        #expect(try values(root, "devices/disk/target/@bus") == ["virtio", "virtio"])
        // The seed is a read-only virtio disk after the system disk (scripts/bench --tcg: faster than IDE).
        #expect(try root.nodes(forXPath: "devices/disk[2]/readonly").count == 1)
        #expect(try root.nodes(forXPath: "os/kernel").isEmpty)
    }
}

struct AcceleratorCacheTests {
    @Test func probesOncePerKeyAndAgainForANewOne() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kmatrix-accel-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: directory) }
        let cache = AcceleratorCache(file: directory.appendingPathComponent("accelerator"))
        let probes = Mutex(0)
        let probe: () async -> Accelerator = { probes.withLock { $0 += 1 }; return .tcg }
        #expect(await cache.verdict(key: "boot-a qemu:///system 7.2", probe: probe) == .tcg)
        #expect(await cache.verdict(key: "boot-a qemu:///system 7.2", probe: probe) == .tcg)
        #expect(probes.withLock { $0 } == 1)
        #expect(await cache.verdict(key: "boot-b qemu:///system 7.2", probe: { .kvm }) == .kvm)
        #expect(await cache.verdict(key: nil, probe: probe) == .tcg)
        #expect(probes.withLock { $0 } == 2)
        #expect(AcceleratorCache.key(uri: "qemu+ssh://lab/system", qemu: "7.2") == nil)
        #expect(AcceleratorCache.key(uri: "qemu:///system", qemu: "7.2")?.hasSuffix(" qemu:///system 7.2") == true)
    }
}
