import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import KMatrixCore
import KMatrixRuntime
import Libvirt

/// Decides KVM or TCG by running a tiny guest under KVM and checking it gets work done.
///
/// A `/dev/kvm` node, or libvirt's domain capabilities, only say KVM can be opened. On
/// this kind of host (a nested `kvm_pvm` module) KVM guests start and report "running"
/// but crawl: a stock kernel never gets past its decompressor, and filling 16 MiB in
/// long mode takes ~12 s under KVM against ~0.2 s under TCG. So the probe boots a
/// 286-byte multiboot payload (source below) that enters long mode, fills 16 MiB and
/// prints "PLK" on the serial port; KVM counts only if "K" arrives within `deadline`.
/// Working KVM does it in milliseconds; the guest failing to start (no KVM, "KVM
/// internal error"), stopping or pausing means TCG.
enum LibvirtAcceleratorProbe {
    static let deadline: Duration = .seconds(3)
    static let pollInterval: Duration = .milliseconds(50)

    /// On a remote host the payload and the console travel through `storage` (its pool).
    static func run(on connection: Connection, storage: any GuestStorage, scratch: URL, clock: WaitClock) async -> Accelerator {
        let directory = scratch.appendingPathComponent("kvm-probe-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: directory) }
        let kernel = directory.appendingPathComponent("probe.bin")
        let console = directory.appendingPathComponent("console.log")
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try Data(payload).write(to: kernel)
        } catch {
            return .tcg
        }
        let hostKernel: URL
        let channel: any ConsoleChannel
        do {
            hostKernel = try await storage.place(kernel, key: FileDigests.sha256(of: Data(payload)))
            channel = try await storage.console(name: "kvm-probe.log", local: console)
        } catch {
            return .tcg
        }
        let verdict = await boot(on: connection, name: directory.lastPathComponent, kernel: hostKernel, channel: channel, console: console, clock: clock)
        // Awaited, not left to a task: a `doctor` that exits right after would leave the console
        // volume on a remote host's pool.
        await storage.release([channel.hostPath])
        return verdict
    }

    private static func boot(on connection: Connection, name: String, kernel: URL, channel: any ConsoleChannel, console: URL, clock: WaitClock) async -> Accelerator {
        let xml = domainXML(name: name, kernel: kernel, consoleLog: channel.hostPath)
        let domain: Domain
        do {
            // autodestroy: should this process die mid-probe, libvirt removes the guest.
            domain = try await LibvirtQueue.run { try connection.createTransientDomain(xml: xml, autodestroy: true) }
        } catch {
            return .tcg
        }
        await channel.start()
        let verdict = await watch(domain: domain, console: console, clock: clock)
        await channel.close()
        _ = try? await LibvirtQueue.run { try LibvirtVirtualMachine.destroyIgnoringGone(domain) }
        return verdict
    }

    private static func watch(domain: Domain, console: URL, clock: WaitClock) async -> Accelerator {
        let verdict = try? await poll(clock: clock, within: deadline, every: pollInterval) { _ -> Accelerator? in
            if let output = try? String(contentsOf: console, encoding: .utf8), output.contains("K") { return .kvm }
            let state = await LibvirtQueue.run { try? domain.state }
            return state == .running || state == .blocked ? nil : .tcg
        }
        return (verdict ?? nil) ?? .tcg
    }

    static func domainXML(name: String, kernel: URL, consoleLog: URL) -> String {
        typealias E = LibvirtXML
        return E.document(E.element("domain", ["type": "kvm"], children: [
            E.element("name", text: name),
            E.element("memory", ["unit": "MiB"], text: "64"),
            E.element("vcpu", text: "1"),
            E.element("os", children: [E.element("type", ["arch": "x86_64", "machine": "pc"], text: "hvm"), E.element("kernel", text: kernel.path)]),
            E.element("on_poweroff", text: "destroy"),
            E.element("on_reboot", text: "destroy"),
            E.element("on_crash", text: "destroy"),
            E.element("devices", children: [
                E.element("controller", ["type": "usb", "model": "none"]),
                E.element("serial", ["type": "file"], children: [E.element("source", ["path": consoleLog.path]), E.element("target", ["port": "0"])]),
                E.element("memballoon", ["model": "none"]),
            ]),
        ]))
    }

    /// Multiboot (a.out kludge) flat binary, loaded and entered at 1 MiB by QEMU's
    /// `-kernel`. Built from this source with
    /// `as --32 -o p.o p.S && ld -m elf_i386 -Ttext=0x100000 -o p.elf p.o && objcopy -O binary p.elf p.bin`
    /// (GNU binutils 2.40; sha256 06196dfe453dd4bc5f01f38c0fb81f25270df75549ab6f2c41b633f6761e66ea):
    ///
    ///         .set BASE, 0x100000
    ///         .set COM1, 0x3f8
    ///         .code32
    /// header: .long 0x1BADB002, 0x00010000, -(0x1BADB002 + 0x00010000)
    ///         .long BASE, BASE, 0, 0, BASE + (entry32 - header)  # header, load, load_end, bss_end, entry
    /// entry32:
    ///         cli
    ///         mov $COM1, %dx; mov $'P', %al; out %al, %dx
    ///         # identity-map 4 GiB with 2 MiB pages: PML4 at 2 MiB, PDPT +4K, 4 PDs after
    ///         mov $0x200000, %edi; xor %eax, %eax; mov $(6 * 1024), %ecx; rep stosl
    ///         movl $0x201003, 0x200000
    ///         movl $0x202003, 0x201000; movl $0x203003, 0x201008
    ///         movl $0x204003, 0x201010; movl $0x205003, 0x201018
    ///         mov $0x202000, %edi; mov $0x83, %eax; mov $2048, %ecx
    /// 1:      movl %eax, (%edi); movl $0, 4(%edi); add $0x200000, %eax; add $8, %edi; loop 1b
    ///         mov $0x200000, %eax; mov %eax, %cr3
    ///         mov %cr4, %eax; or $0x20, %eax; mov %eax, %cr4              # PAE
    ///         mov $0xC0000080, %ecx; rdmsr; or $0x100, %eax; wrmsr          # EFER.LME
    ///         mov %cr0, %eax; or $0x80000001, %eax; mov %eax, %cr0        # PG | PE
    ///         lgdt (BASE + (gdtr - header))
    ///         ljmp $0x08, $(BASE + (entry64 - header))
    ///         .code64
    /// entry64:
    ///         mov $0x10, %ax; mov %ax, %ds; mov %ax, %es; mov %ax, %ss
    ///         mov $COM1, %dx; mov $'L', %al; out %al, %dx
    ///         mov $1, %r8                                                 # fill 16 MiB at 4 MiB
    /// 2:      mov $0x400000, %rdi; mov $(16 * 1024 * 1024 / 8), %rcx; mov %r8, %rax; rep stosq
    ///         dec %r8; jnz 2b
    ///         mov $COM1, %dx; mov $'K', %al; out %al, %dx; mov $'\n', %al; out %al, %dx
    /// 3:      hlt; jmp 3b
    ///         .p2align 3
    /// gdt:    .quad 0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF
    /// gdtr:   .word gdtr - gdt - 1; .long BASE + (gdt - header)
    static let payload: [UInt8] = [
        0x02, 0xb0, 0xad, 0x1b, 0x00, 0x00, 0x01, 0x00, 0xfe, 0x4f, 0x51, 0xe4, 0x00, 0x00, 0x10, 0x00,
        0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x10, 0x00,
        0xfa, 0x66, 0xba, 0xf8, 0x03, 0xb0, 0x50, 0xee, 0xbf, 0x00, 0x00, 0x20, 0x00, 0x31, 0xc0, 0xb9,
        0x00, 0x18, 0x00, 0x00, 0xf3, 0xab, 0xc7, 0x05, 0x00, 0x00, 0x20, 0x00, 0x03, 0x10, 0x20, 0x00,
        0xc7, 0x05, 0x00, 0x10, 0x20, 0x00, 0x03, 0x20, 0x20, 0x00, 0xc7, 0x05, 0x08, 0x10, 0x20, 0x00,
        0x03, 0x30, 0x20, 0x00, 0xc7, 0x05, 0x10, 0x10, 0x20, 0x00, 0x03, 0x40, 0x20, 0x00, 0xc7, 0x05,
        0x18, 0x10, 0x20, 0x00, 0x03, 0x50, 0x20, 0x00, 0xbf, 0x00, 0x20, 0x20, 0x00, 0xb8, 0x83, 0x00,
        0x00, 0x00, 0xb9, 0x00, 0x08, 0x00, 0x00, 0x89, 0x07, 0xc7, 0x47, 0x04, 0x00, 0x00, 0x00, 0x00,
        0x05, 0x00, 0x00, 0x20, 0x00, 0x83, 0xc7, 0x08, 0xe2, 0xed, 0xb8, 0x00, 0x00, 0x20, 0x00, 0x0f,
        0x22, 0xd8, 0x0f, 0x20, 0xe0, 0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0, 0xb9, 0x80, 0x00, 0x00, 0xc0,
        0x0f, 0x32, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x0f, 0x30, 0x0f, 0x20, 0xc0, 0x0d, 0x01, 0x00, 0x00,
        0x80, 0x0f, 0x22, 0xc0, 0x0f, 0x01, 0x15, 0x18, 0x01, 0x10, 0x00, 0xea, 0xc2, 0x00, 0x10, 0x00,
        0x08, 0x00, 0x66, 0xb8, 0x10, 0x00, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, 0x66, 0xba, 0xf8, 0x03,
        0xb0, 0x4c, 0xee, 0x49, 0xc7, 0xc0, 0x01, 0x00, 0x00, 0x00, 0x48, 0xc7, 0xc7, 0x00, 0x00, 0x40,
        0x00, 0x48, 0xc7, 0xc1, 0x00, 0x00, 0x20, 0x00, 0x4c, 0x89, 0xc0, 0xf3, 0x48, 0xab, 0x49, 0xff,
        0xc8, 0x75, 0xe7, 0x66, 0xba, 0xf8, 0x03, 0xb0, 0x4b, 0xee, 0xb0, 0x0a, 0xee, 0xf4, 0xeb, 0xfd,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xaf, 0x00,
        0xff, 0xff, 0x00, 0x00, 0x00, 0x92, 0xcf, 0x00, 0x17, 0x00, 0x00, 0x01, 0x10, 0x00,
    ]
}
