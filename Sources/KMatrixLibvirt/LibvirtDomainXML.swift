import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import KMatrixCore
import KMatrixRuntime

/// Libvirt domain XML for kmatrix guests: a pure function of `MachineSpec`, built as an element
/// tree (`LibvirtXML`), so every value is escaped by the library.
public enum LibvirtDomainXML {
    /// Namespace of the `<kmatrix:run id=… boot=… pid=… start=…/>` metadata element that marks
    /// our domains with their run and its owning process, so leftovers of a dead run can be found
    /// and proven dead (docs/architecture.md, "Cleanup").
    public static let metadataNamespace = "https://kmatrix.dev/xmlns/run/1"
    /// Prefix for `<qemu:commandline>`.
    public static let qemuNamespace = "http://libvirt.org/schemas/domain/qemu/1.0"
    /// id of the user-mode netdev we add by hand.
    public static let netdevID = "kmnet0"

    /// The domain XML for `spec`.
    public static func make(for spec: MachineSpec) -> String {
        typealias E = LibvirtXML
        let console = spec.consoleLog.path
        var os: [XMLElement] = [
            // i440fx: q35 was no faster beyond boot-to-boot noise under TCG (a distro disk to SSH
            // 31.8 s against 30.4 s, a kernel guest to its ready marker 2.1 s against 2.2 s;
            // `scripts/bench --tcg`), and i440fx is what every guest kind was validated on.
            E.element("type", ["arch": "x86_64", "machine": "pc"], text: "hvm"),
        ]
        switch spec.boot {
        case let .kernel(kernel, initrd, cmdline):
            os += [E.element("kernel", text: kernel.path), E.element("initrd", text: initrd.path), E.element("cmdline", text: cmdline)]
        case .disk:
            os.append(E.element("boot", ["dev": "hd"]))
        }
        var features = [E.element("acpi"), E.element("apic")]
        if spec.accelerator == .tcg, let cache = spec.translationCacheMiB {
            features.append(E.element("tcg", children: [E.element("tb-cache", ["unit": "MiB"], text: String(cache))]))
        }
        var devices: [XMLElement] = []
        if case let .disk(overlay, seed) = spec.boot {
            devices.append(E.element("disk", ["type": "file", "device": "disk"], children: [
                E.element("driver", ["name": "qemu", "type": "qcow2", "discard": "unmap"]),
                E.element("source", ["file": overlay.path]),
                E.element("target", ["dev": "vda", "bus": "virtio"]),
            ]))
            if let seed {
                // The seed on virtio-blk, not an IDE cdrom: cloud-init finds it by its cidata
                // label on any block device, and the emulated ATA probe under TCG cost the boot
                // 2-5 s to SSH (`scripts/bench --tcg`; q35's AHCI cdrom is invisible to Debian's
                // cloud kernel altogether).
                devices.append(E.element("disk", ["type": "file", "device": "disk"], children: [
                    E.element("driver", ["name": "qemu", "type": "raw"]),
                    E.element("source", ["file": seed.path]),
                    E.element("target", ["dev": "vdb", "bus": "virtio"]),
                    E.element("readonly"),
                ]))
            }
        }
        devices += [
            E.element("controller", ["type": "usb", "model": "none"]),
            E.element("serial", ["type": "file"], children: [E.element("source", ["path": console]), E.element("target", ["port": "0"])]),
            E.element("console", ["type": "file"], children: [E.element("source", ["path": console]), E.element("target", ["type": "serial", "port": "0"])]),
            E.element("rng", ["model": "virtio"], children: [E.element("backend", ["model": "random"], text: "/dev/urandom")]),
            E.element("memballoon", ["model": "none"]),
        ]
        var domain: [XMLElement] = [
            E.element("name", text: spec.name),
            E.element("metadata", children: [E.element("kmatrix:run", [
                "xmlns:kmatrix": metadataNamespace, "id": spec.runID,
                "boot": spec.owner.boot, "pid": String(spec.owner.pid), "start": String(spec.owner.start),
            ])]),
            E.element("memory", ["unit": "MiB"], text: String(spec.memoryMiB)),
            E.element("vcpu", ["placement": "static"], text: String(spec.vcpus)),
            E.element("os", children: os),
            E.element("features", children: features),
        ]
        if spec.accelerator == .kvm {
            // The host CPU as is: no CPUID filtering cost, and guests see real features.
            domain.append(E.element("cpu", ["mode": "host-passthrough"]))
        } else if let model = spec.cpuModel {
            domain.append(E.element("cpu", ["mode": "custom", "match": "exact", "check": "none"],
                                    children: [E.element("model", ["fallback": "allow"], text: model)]))
        }
        domain += [
            E.element("clock", ["offset": "utc"]),
            // Any exit ends the domain (it is transient, so it disappears): a panicking or
            // rebooting guest must not loop, and `panic=-1` turns a panic into a reboot.
            E.element("on_poweroff", text: "destroy"),
            E.element("on_reboot", text: "destroy"),
            E.element("on_crash", text: "destroy"),
            E.element("devices", children: devices),
            // No <interface>: libvirt 9.0 cannot express slirp's restrict=on, and without it
            // QEMU forwards the guest's DNS and outbound packets to this host's network.
            // restrict=on keeps only the SSH port forward on 127.0.0.1. romfile= disables
            // the NIC's iPXE option ROM, which only slows boot.
            E.element("qemu:commandline", children: qemuNetworkArguments(sshPort: spec.sshPort).map { E.element("qemu:arg", ["value": $0]) }),
        ]
        let root = E.element("domain", ["type": spec.accelerator == .kvm ? "kvm" : "qemu", "xmlns:qemu": qemuNamespace], children: domain)
        return E.document(root)
    }

    /// PCI slot of our hand-added NIC. libvirt does not know about it and hands out slots
    /// from 2 upwards to its own devices (rng, disk), so ours sits far above them.
    public static let networkSlot = "0x1e"

    /// The QEMU arguments for the guest's only NIC.
    public static func qemuNetworkArguments(sshPort: Int) -> [String] {
        [
            "-netdev", "user,id=\(netdevID),restrict=on,hostfwd=tcp:127.0.0.1:\(sshPort)-:22",
            "-device", "virtio-net-pci,netdev=\(netdevID),romfile=,bus=pci.0,addr=\(networkSlot)",
        ]
    }

    /// The run and its owner in a metadata element as libvirt returns it
    /// (`<run xmlns="…" id="…" boot="…" pid="…" start="…"/>`); nil when it names no run. An owner
    /// whose fields do not read back as one is no owner: such a domain is never proven dead.
    public static func runMark(fromMetadata element: String) -> (runID: String, owner: RunOwner?)? {
        guard let root = LibvirtXML.parse(element), let runID = LibvirtXML.attribute(root, "id") else { return nil }
        var owner: RunOwner?
        if let boot = LibvirtXML.attribute(root, "boot"), RunOwner.bootProblem(boot) == nil,
           let pid = LibvirtXML.attribute(root, "pid").flatMap({ Int32($0) }), pid > 0,
           let start = LibvirtXML.attribute(root, "start").flatMap({ UInt64($0) }) {
            owner = RunOwner(boot: boot, pid: pid, start: start)
        }
        return (runID, owner)
    }
}
