import Foundation
import Testing
import KMatrixCore

/// Every end-to-end suite nests in this one, so they run one after another: they share the
/// host's libvirt, namespaces and two cores, and each checks that nothing kmatrix made is left.
/// They need root (libvirt's system daemon, namespaces); without it they are skipped, saying so.
@Suite(.serialized, .enabled(if: Harness.isRoot, "end-to-end tests need root (libvirt's system daemon, network namespaces)"))
struct EndToEnd {}

/// Runs the real `kmatrix` binary, as a user would. The binary is the one `swift build
/// --build-tests` just built: this target depends on the executable, so it is never stale.
enum Harness {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var isRoot: Bool { geteuid() == 0 }

    static var binary: URL {
        if let path = ProcessInfo.processInfo.environment["KMATRIX_BIN"] { return URL(fileURLWithPath: path) }
        return packageRoot.appendingPathComponent(".build/debug/kmatrix")
    }

    /// Debian's headless browser, if installed.
    static let chromium: String? = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Set by scripts/test: real-VM tests need libvirtd, images and minutes of TCG time.
    static var virtualMachinesEnabled: Bool { isRoot && ProcessInfo.processInfo.environment["KMATRIX_E2E_VMS"] == "1" }

    /// The suite's image cache, shared by every test that only uses images (built on first use,
    /// reused after): `KMATRIX_CACHE`, else ~/.cache/kmatrix, passed to every run explicitly.
    /// A test that changes what a cache holds (registers or plants images) uses `privateCache()`.
    static let sharedCache: URL = ProcessInfo.processInfo.environment["KMATRIX_CACHE"].map { URL(fileURLWithPath: $0) }
        ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/kmatrix")

    /// A cache of the test's own, removed by the caller.
    static func privateCache(_ name: String) throws -> URL {
        try scratchDirectory("cache-\(name)")
    }

    struct Outcome {
        var status: Int32
        var stdout: String
        var stderr: String
        var output: URL
        var killedBySignal = false
        /// The run's results.json; when there is none, the failure says how the run ended.
        func results() throws -> RunResult {
            let file = output.appendingPathComponent("results.json")
            guard FileManager.default.fileExists(atPath: file.path) else {
                throw MissingResults(description: "no \(file.path): kmatrix \(killedBySignal ? "was killed by signal" : "exited") \(status)\n--- stdout\n\(stdout.suffix(4000))\n--- stderr\n\(stderr.suffix(4000))")
            }
            return try RunResult.decode(Data(contentsOf: file))
        }
    }

    struct MissingResults: Error, CustomStringConvertible {
        var description: String
    }

    /// Runs kmatrix in a mount namespace of its own where libvirt's sockets are gone: libvirtd
    /// is "not running" for it, and for nothing else on the machine.
    static let withoutLibvirt = ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                                 #"mount -t tmpfs kmatrix-no-libvirt /run/libvirt && exec "$0" "$@""#]

    static func run(_ arguments: [String], output: URL? = nil, cache: URL = sharedCache, environment extra: [String: String] = [:],
                    interruptWhen: ((URL) -> Bool)? = nil, signal: Int32 = SIGINT, whileRunning: ((URL) -> Bool)? = nil,
                    limit: TimeInterval = 1800, wrappedIn wrapper: [String] = []) throws -> Outcome {
        let out = output ?? FileManager.default.temporaryDirectory.appendingPathComponent("kmatrix-e2e-\(UUID().uuidString.prefix(8))")
        let process = Process()
        let kmatrixArguments = arguments + (arguments.first == "run" && !arguments.contains("--out") ? ["--out", out.path] : [])
        if let launcher = wrapper.first {
            process.executableURL = URL(fileURLWithPath: launcher)
            process.arguments = Array(wrapper.dropFirst()) + [binary.path] + kmatrixArguments
        } else {
            process.executableURL = binary
            process.arguments = kmatrixArguments
        }
        process.currentDirectoryURL = packageRoot
        var environment = ProcessInfo.processInfo.environment
        environment["KMATRIX_CACHE"] = cache.path
        environment.merge(extra) { $1 }
        process.environment = environment
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        // Foundation's waitUntilExit polls its run loop and keeps a core busy for as long as the
        // child runs; a semaphore the termination handler signals costs nothing.
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        try process.run()
        // A run that hangs fails its test with what it printed instead of holding CI until its
        // own limit: SIGTERM lets kmatrix tear down, SIGKILL follows if it does not.
        let deadline = Deadline()
        let pid = process.processIdentifier
        DispatchQueue.global().asyncAfter(deadline: .now() + limit) {
            guard process.isRunning else { return }
            deadline.passed()
            kill(pid, SIGTERM)
            DispatchQueue.global().asyncAfter(deadline: .now() + 60) { if process.isRunning { kill(pid, SIGKILL) } }
        }
        // Drain both pipes concurrently so a chatty run never blocks on a full pipe.
        let collected = Collected()
        let group = DispatchGroup()
        for (pipe, isError) in [(stdout, false), (stderr, true)] {
            group.enter()
            DispatchQueue.global().async {
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                collected.set(data, isError: isError)
                group.leave()
            }
        }
        if let interruptWhen {
            while process.isRunning && !interruptWhen(out) { Thread.sleep(forTimeInterval: 0.1) }
            if process.isRunning { kill(process.processIdentifier, signal) }
        }
        // An action on the world while the run goes on (a host that dies), until it says it is done.
        if let whileRunning {
            while process.isRunning && !whileRunning(out) { Thread.sleep(forTimeInterval: 0.2) }
        }
        // Past the limit and the kill, something other than kmatrix holds its pipes or Foundation's
        // exit-watch socket (a daemon it left): that is a failure to report, not to wait out.
        let hardLimit = DispatchTime.now() + limit + 120
        if exited.wait(timeout: hardLimit) == .timedOut || group.wait(timeout: hardLimit) == .timedOut {
            Issue.record("kmatrix \(arguments.joined(separator: " ")) never closed its output: something it started outlives it")
        }
        let stderrText = collected.text(isError: true)
        if deadline.hasPassed { Issue.record("kmatrix \(arguments.joined(separator: " ")) ran past \(Int(limit)) s and was stopped:\n\(stderrText.suffix(4000))") }
        return Outcome(status: process.terminationStatus, stdout: collected.text(isError: false), stderr: stderrText, output: out,
                       killedBySignal: process.terminationReason == .uncaughtSignal)
    }

    /// An action on the world taken once, as soon as `guest`'s console shows the rootfs ready
    /// marker: pass `check` as `run(whileRunning:)`.
    final class OnceReady {
        let guest: String
        let action: () -> Void
        private(set) var done = false

        init(guest: String, _ action: @escaping () -> Void) {
            self.guest = guest
            self.action = action
        }

        func check(_ out: URL) -> Bool {
            guard !done else { return true }
            let console = (try? String(contentsOf: out.appendingPathComponent("console/\(guest).log"), encoding: .utf8)) ?? ""
            guard console.contains("KMATRIX-READY") else { return false }
            action()
            done = true
            return true
        }
    }

    final class Deadline: @unchecked Sendable {
        // Guarded by `lock`: set by a GCD timer, read by the test.
        private let lock = NSLock()
        private var flag = false
        func passed() { lock.lock(); flag = true; lock.unlock() }
        var hasPassed: Bool { lock.lock(); defer { lock.unlock() }; return flag }
    }

    final class Collected: @unchecked Sendable {
        // Guarded by `lock`; written once per pipe from a GCD worker.
        private let lock = NSLock()
        private var out = Data()
        private var err = Data()
        func set(_ data: Data, isError: Bool) { lock.lock(); if isError { err = data } else { out = data }; lock.unlock() }
        func text(isError: Bool) -> String { lock.lock(); defer { lock.unlock() }; return String(decoding: isError ? err : out, as: UTF8.self) }
    }

    static func shell(_ command: String) -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        guard (try? process.run()) != nil else { return "" }
        let collected = Collected()
        let read = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            collected.set(pipe.fileHandleForReading.readDataToEndOfFile(), isError: false)
            read.signal()
        }
        // No helper command may hold a test forever: a stuck virsh, or a daemon it started that
        // kept the pipe or Foundation's exit-watch socket open.
        let limit = DispatchTime.now() + 300
        if read.wait(timeout: limit) == .timedOut || exited.wait(timeout: limit) == .timedOut {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            Issue.record("`\(command)` did not finish within 300 s")
        }
        return collected.text(isError: false)
    }

    /// Everything a run may leave: domains, namespaces, run folders (keys, overlays), and
    /// processes carrying a run's marker.
    static func kmatrixLeftovers(cache: URL = sharedCache) -> [String] {
        var leftovers: [String] = []
        leftovers += shell("virsh -c qemu:///system list --all --name 2>/dev/null").split(separator: "\n").map(String.init).filter { $0.hasPrefix("kmatrix-") }
        leftovers += shell("ip netns list").split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }.filter { $0.hasPrefix("kmatrix-") }
        let runs = cache.appendingPathComponent("runs").path
        leftovers += ((try? FileManager.default.contentsOfDirectory(atPath: runs)) ?? []).map { "run folder \($0)" }
        leftovers += markedProcesses().map { "process \($0)" }
        return leftovers
    }

    /// Processes whose environment carries KMATRIX_RUN (children of kmatrix runs). The unit
    /// tests that run beside these in the same process start marked processes of their own (a
    /// dead run's orphan, another run's victim): those are this process's children, never a
    /// kmatrix run's leftovers, and are not counted.
    static func markedProcesses() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry -> String? in
            guard Int32(entry) != nil, let environment = FileManager.default.contents(atPath: "/proc/\(entry)/environ") else { return nil }
            let status = (try? String(contentsOfFile: "/proc/\(entry)/status", encoding: .utf8)) ?? ""
            let parent = status.split(separator: "\n").first { $0.hasPrefix("PPid:") }.flatMap { Int32($0.dropFirst(5).trimmingCharacters(in: .whitespaces)) }
            guard parent != getpid() else { return nil }
            guard environment.split(separator: 0).contains(where: { $0.starts(with: Array("KMATRIX_RUN=".utf8)) }) else { return nil }
            let command = (try? String(contentsOfFile: "/proc/\(entry)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            return "\(entry) \(command)"
        }
    }

    static func scratchDirectory(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kmatrix-e2e-\(name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// The Debian kernel packages kmatrix cached for its default guests, by suite (building
    /// those images first, which is a no-op when they exist).
    static func cachedKernelDebs() throws -> [String: URL] {
        let build = try run(["images", "build", "debian-11-5.10", "debian-12-6.1", "debian-13-6.12"])
        guard build.status == 0 else { throw HarnessError("kmatrix images build failed: \(build.stderr)") }
        let debs = sharedCache.appendingPathComponent("debs")
        var found: [String: URL] = [:]
        for entry in try FileManager.default.contentsOfDirectory(atPath: debs.path) where entry.hasSuffix(".meta") {
            let meta = try String(contentsOf: debs.appendingPathComponent(entry), encoding: .utf8)
            guard meta.contains("package=linux-image-"), let suite = meta.split(separator: "\n").first(where: { $0.hasPrefix("suite=") }) else { continue }
            found[String(suite.dropFirst("suite=".count))] = debs.appendingPathComponent(entry.replacingOccurrences(of: ".meta", with: ".deb"))
        }
        return found
    }

    struct HarnessError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
