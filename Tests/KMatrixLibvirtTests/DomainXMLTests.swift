import Foundation
import Synchronization
import Testing
import KMatrixRuntime
@testable import KMatrixLibvirt

/// The domain XML carries the network rule (docs/architecture.md, "Guest networking"): only a 127.0.0.1 port forward, with
/// slirp's restrict=on, and nothing libvirt would turn into a second, unrestricted NIC.
struct DomainXMLTests {
    func spec(boot: MachineSpec.Boot, accelerator: Accelerator = .tcg, translationCacheMiB: Int? = 32) -> MachineSpec {
        MachineSpec(name: "kmatrix-run1-debian-12-6.1", runID: "run1", boot: boot, memoryMiB: 256, vcpus: 1, sshPort: 40222,
                    consoleLog: URL(fileURLWithPath: "/tmp/out/console/debian-12-6.1.log"), accelerator: accelerator,
                    translationCacheMiB: translationCacheMiB)
    }

    let kernelBoot = MachineSpec.Boot.kernel(kernel: URL(fileURLWithPath: "/c/vmlinuz"), initrd: URL(fileURLWithPath: "/c/initramfs.gz"),
                                             cmdline: "console=ttyS0 panic=-1 kmatrix.sshkey=a&b")

    @Test func networkIsRestrictedSlirpForwardedOnLoopbackOnly() {
        let xml = LibvirtDomainXML.make(for: spec(boot: kernelBoot))
        #expect(xml.contains("<qemu:arg value='user,id=kmnet0,restrict=on,hostfwd=tcp:127.0.0.1:40222-:22'/>"))
        #expect(xml.contains("<qemu:arg value='virtio-net-pci,netdev=kmnet0,romfile=,bus=pci.0,addr=0x1e'/>"))
        #expect(!xml.contains("<interface"))
        #expect(xml.components(separatedBy: "hostfwd=").count == 2)
    }

    @Test func tcgGuestsGetQemuTypeAndASmallTranslationCache() {
        let tcg = LibvirtDomainXML.make(for: spec(boot: kernelBoot))
        #expect(tcg.hasPrefix("<domain type='qemu'"))
        #expect(tcg.contains("<tb-cache unit='MiB'>32</tb-cache>"))
        let kvm = LibvirtDomainXML.make(for: spec(boot: kernelBoot, accelerator: .kvm))
        #expect(kvm.hasPrefix("<domain type='kvm'"))
        #expect(!kvm.contains("tb-cache"))
        #expect(kvm.contains("host-passthrough"))
        let defaultCache = LibvirtDomainXML.make(for: spec(boot: kernelBoot, translationCacheMiB: nil))
        #expect(!defaultCache.contains("tb-cache"))
    }

    @Test func kernelBootEscapesTheCommandLineAndLogsTheConsoleToOneFile() {
        let xml = LibvirtDomainXML.make(for: spec(boot: kernelBoot))
        #expect(xml.contains("<cmdline>console=ttyS0 panic=-1 kmatrix.sshkey=a&amp;b</cmdline>"))
        #expect(xml.components(separatedBy: "<source path='/tmp/out/console/debian-12-6.1.log'/>").count == 3)
        #expect(xml.contains("<memballoon model='none'/>"))
        #expect(xml.contains("<controller type='usb' model='none'/>"))
        #expect(xml.contains("<kmatrix:run xmlns:kmatrix='\(LibvirtDomainXML.metadataNamespace)' id='run1'/>"))
    }

    @Test func diskBootUsesTheOverlayAndTheSeedNeverTheBase() {
        let boot = MachineSpec.Boot.disk(overlay: URL(fileURLWithPath: "/c/runs/r/overlay.qcow2"), seed: URL(fileURLWithPath: "/c/runs/r/seed.iso"))
        let xml = LibvirtDomainXML.make(for: spec(boot: boot))
        #expect(xml.contains("<source file='/c/runs/r/overlay.qcow2'/>"))
        #expect(xml.contains("<source file='/c/runs/r/overlay.qcow2'/>\n      <target dev='vda' bus='virtio'/>"))
        // The seed is a read-only virtio disk after the system disk (scripts/bench --tcg: faster than IDE).
        #expect(xml.contains("<source file='/c/runs/r/seed.iso'/>\n      <target dev='vdb' bus='virtio'/>\n      <readonly/>"))
        #expect(!xml.contains("bus='ide'"))
        #expect(!xml.contains("<kernel>"))
    }

    @Test func runIDIsReadBackFromLibvirtsMetadata() {
        #expect(LibvirtDomainXML.runID(fromMetadata: #"<run xmlns="https://kmatrix.dev/xmlns/run/1" id="2214a&amp;b"/>"#) == "2214a&b")
        #expect(LibvirtDomainXML.runID(fromMetadata: "<run/>") == nil)
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
