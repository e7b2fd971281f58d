import Foundation
import KMatrixCore
import KMatrixRuntime

/// Libvirt domain XML for kmatrix guests: a pure function of `MachineSpec`.
public enum LibvirtDomainXML {
    /// Namespace of the `<kmatrix:run id=…/>` metadata element that marks our domains,
    /// so leftovers of a crashed run can be found and destroyed by run id.
    public static let metadataNamespace = "https://kmatrix.dev/xmlns/run/1"
    /// Prefix for `<qemu:commandline>`.
    public static let qemuNamespace = "http://libvirt.org/schemas/domain/qemu/1.0"
    /// id of the user-mode netdev we add by hand.
    public static let netdevID = "kmnet0"

    /// The domain XML for `spec`. Every interpolated value is XML-escaped.
    public static func make(for spec: MachineSpec) -> String {
        let type = spec.accelerator == .kvm ? "kvm" : "qemu"
        let console = XMLText.escape(spec.consoleLog.path)
        var lines: [String] = []
        lines.append("<domain type='\(type)' xmlns:qemu='\(qemuNamespace)'>")
        lines.append("  <name>\(XMLText.escape(spec.name))</name>")
        lines.append("  <metadata>")
        lines.append("    <kmatrix:run xmlns:kmatrix='\(metadataNamespace)' id='\(XMLText.escape(spec.runID))'/>")
        lines.append("  </metadata>")
        lines.append("  <memory unit='MiB'>\(spec.memoryMiB)</memory>")
        lines.append("  <vcpu placement='static'>\(spec.vcpus)</vcpu>")
        lines.append("  <os>")
        // i440fx: q35 was no faster beyond boot-to-boot noise under TCG (a distro disk to SSH
        // 31.8 s against 30.4 s, a kernel guest to its ready marker 2.1 s against 2.2 s;
        // `scripts/bench --tcg`), and i440fx is what every guest kind was validated on.
        lines.append("    <type arch='x86_64' machine='pc'>hvm</type>")
        switch spec.boot {
        case let .kernel(kernel, initrd, cmdline):
            lines.append("    <kernel>\(XMLText.escape(kernel.path))</kernel>")
            lines.append("    <initrd>\(XMLText.escape(initrd.path))</initrd>")
            lines.append("    <cmdline>\(XMLText.escape(cmdline))</cmdline>")
        case .disk:
            lines.append("    <boot dev='hd'/>")
        }
        lines.append("  </os>")
        lines.append("  <features>")
        lines.append("    <acpi/>")
        lines.append("    <apic/>")
        if spec.accelerator == .tcg, let cache = spec.translationCacheMiB {
            lines.append("    <tcg>")
            lines.append("      <tb-cache unit='MiB'>\(cache)</tb-cache>")
            lines.append("    </tcg>")
        }
        lines.append("  </features>")
        if spec.accelerator == .kvm {
            // The host CPU as is: no CPUID filtering cost, and guests see real features.
            lines.append("  <cpu mode='host-passthrough'/>")
        }
        lines.append("  <clock offset='utc'/>")
        // Any exit ends the domain (it is transient, so it disappears): a panicking or
        // rebooting guest must not loop, and `panic=-1` turns a panic into a reboot.
        lines.append("  <on_poweroff>destroy</on_poweroff>")
        lines.append("  <on_reboot>destroy</on_reboot>")
        lines.append("  <on_crash>destroy</on_crash>")
        lines.append("  <devices>")
        if case let .disk(overlay, seed) = spec.boot {
            lines.append("    <disk type='file' device='disk'>")
            lines.append("      <driver name='qemu' type='qcow2' discard='unmap'/>")
            lines.append("      <source file='\(XMLText.escape(overlay.path))'/>")
            lines.append("      <target dev='vda' bus='virtio'/>")
            lines.append("    </disk>")
            if let seed {
                // The seed on virtio-blk, not an IDE cdrom: cloud-init finds it by its cidata
                // label on any block device, and the emulated ATA probe under TCG cost the boot
                // 2-5 s to SSH (`scripts/bench --tcg`; q35's AHCI cdrom is invisible to Debian's
                // cloud kernel altogether).
                lines.append("    <disk type='file' device='disk'>")
                lines.append("      <driver name='qemu' type='raw'/>")
                lines.append("      <source file='\(XMLText.escape(seed.path))'/>")
                lines.append("      <target dev='vdb' bus='virtio'/>")
                lines.append("      <readonly/>")
                lines.append("    </disk>")
            }
        }
        lines.append("    <controller type='usb' model='none'/>")
        lines.append("    <serial type='file'>")
        lines.append("      <source path='\(console)'/>")
        lines.append("      <target port='0'/>")
        lines.append("    </serial>")
        lines.append("    <console type='file'>")
        lines.append("      <source path='\(console)'/>")
        lines.append("      <target type='serial' port='0'/>")
        lines.append("    </console>")
        lines.append("    <rng model='virtio'>")
        lines.append("      <backend model='random'>/dev/urandom</backend>")
        lines.append("    </rng>")
        lines.append("    <memballoon model='none'/>")
        lines.append("  </devices>")
        // No <interface>: libvirt 9.0 cannot express slirp's restrict=on, and without it
        // QEMU forwards the guest's DNS and outbound packets to this host's network.
        // restrict=on keeps only the SSH port forward on 127.0.0.1. romfile= disables
        // the NIC's iPXE option ROM, which only slows boot.
        lines.append("  <qemu:commandline>")
        for argument in qemuNetworkArguments(sshPort: spec.sshPort) {
            lines.append("    <qemu:arg value='\(XMLText.escape(argument))'/>")
        }
        lines.append("  </qemu:commandline>")
        lines.append("</domain>")
        return lines.joined(separator: "\n") + "\n"
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

    /// The run id in a metadata element as libvirt returns it (`<run id="abc"/>`), or nil.
    public static func runID(fromMetadata element: String) -> String? {
        // libvirt re-serialises the element itself, always with double quotes.
        guard let start = element.range(of: " id=\"") else { return nil }
        guard let end = element[start.upperBound...].firstIndex(of: "\"") else { return nil }
        return unescape(String(element[start.upperBound..<end]))
    }

    static func unescape(_ text: String) -> String {
        guard text.contains("&") else { return text }
        // &amp; last, so "&amp;lt;" becomes "&lt;" and not "<".
        return text
            .replacingOccurrences(of: "&lt;", with: "<")
            .replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&quot;", with: "\"")
            .replacingOccurrences(of: "&amp;", with: "&")
    }
}
