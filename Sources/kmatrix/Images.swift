import ArgumentParser
import Foundation
import KMatrixCore
import KMatrixRuntime

struct Images: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Build, list and register guest images (cached under ~/.cache/kmatrix, keyed by content).",
        subcommands: [Build.self, List.self, Add.self])

    struct Build: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Build the images of these guests (default: every buildable guest).")
        @Argument(help: "Guest names from the matrix.") var names: [String] = []
        @Option(help: "The matrix file.") var matrix: String?

        func run() async throws {
            let matrix = try loadMatrix(matrix).matrix
            let commands = SystemCommandRunner()
            let layout = try Layout.discover()
            let probe = try await layout.ensureProbe(commands: commands)
            let store = ImageStore(layout: layout, commands: commands, showBuildOutput: true)
            let guests = try selectGuests(names, in: matrix)
            var failed = 0
            for guest in guests {
                let started = ContinuousClock.now
                do {
                    switch guest.image {
                    case .host: continue
                    case .kernel(let source):
                        let image = try await store.kernelImage(source, probe: probe)
                        print("\(guest.name): \(image.kernelRelease ?? "?") rootfs \(image.rootfsBuildID?.prefix(12) ?? "?") (\(seconds(since: started)))")
                    case .cloud(let image):
                        guard image.recipe != nil else {
                            print("\(guest.name): vendor image, not built here (`kmatrix images list` says how to get it)")
                            continue
                        }
                        let base = try await store.cloudBase(image)
                        print("\(guest.name): \(base.path) (\(seconds(since: started)))")
                    }
                } catch {
                    failed += 1
                    FileHandle.standardError.write(Data("\(guest.name): \(error)\n".utf8))
                }
            }
            if failed > 0 { throw ExitCode(ExitStatus.infrastructure.rawValue) }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show which guest images are present and how to get the missing ones.")
        @Option(help: "The matrix file.") var matrix: String?

        func run() async throws {
            let matrix = try loadMatrix(matrix).matrix
            let layout = try Layout.discover()
            let store = ImageStore(layout: layout, commands: SystemCommandRunner())
            for guest in matrix.guests {
                let status: String
                switch guest.image {
                case .host: status = "this machine's kernel (\(ProcessInfo.processInfo.operatingSystemVersionString))"
                case .kernel(.debian(let suite)):
                    status = cached(layout, "kernel-\(suite)") ?? "not built yet: `kmatrix images build \(guest.name)` (downloads the \(suite) kernel)"
                case .kernel(.recipe(let name)):
                    status = cached(layout, "kernel-\(name)") ?? "not built yet: `kmatrix images build \(guest.name)` (compiles a kernel, ~10 min)"
                case .kernel(let source):
                    status = VirtualMachineLauncher.missingImageReason(guest, images: store).map { "MISSING: \($0)" }
                        ?? "kernel files \(source.files.joined(separator: ", "))"
                case .cloud(let image):
                    if image.recipe != nil {
                        let path = layout.cache.appendingPathComponent("images/\(image.recipe ?? "")/\(image.file)").path
                        status = FileManager.default.fileExists(atPath: path) ? "built: \(path)" : "not built yet: `kmatrix images build \(guest.name)`"
                    } else if store.cloudImagePresent(image) {
                        status = "present: \(store.cloudDirectory.appendingPathComponent(image.file).path)"
                    } else {
                        status = "MISSING: " + ImageStore.missingCloudImage(image, expectedAt: store.cloudDirectory.appendingPathComponent(image.file))
                    }
                }
                print("\(guest.name): \(status)")
            }
        }

        func cached(_ layout: Layout, _ directory: String) -> String? {
            let manifest = layout.cache.appendingPathComponent("images/\(directory)/manifest.json")
            guard let data = FileManager.default.contents(atPath: manifest.path),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
            return "built: kernel \(object["kernel_release"] as? String ?? "?"), \(manifest.deletingLastPathComponent().path)"
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Verify a downloaded vendor image and register it for a guest.")
        @Argument(help: "The guest name from the matrix.") var name: String
        @Argument(help: "The downloaded image file.") var file: String
        @Option(help: "The matrix file.") var matrix: String?

        func run() async throws {
            let matrix = try loadMatrix(matrix).matrix
            guard let guest = matrix.guests.first(where: { $0.name == name }) else {
                throw ValidationError("unknown guest \"\(name)\"; known: \(matrix.guests.map(\.name).joined(separator: ", "))")
            }
            guard case .cloud(let image) = guest.image else {
                throw ValidationError("\(name) is a \(guest.image.kind) guest; only cloud guests take a downloaded image")
            }
            let source = URL(fileURLWithPath: file).standardizedFileURL
            guard FileManager.default.fileExists(atPath: source.path) else { throw ValidationError("no such file: \(file)") }
            let commands = SystemCommandRunner()
            let info = try await commands.run("qemu-img", ["info", "--output=json", source.path], timeout: .seconds(60))
            guard info.succeeded else {
                throw KMatrixError(.invalidInput, "\(file) is not a disk image qemu-img can read: \(info.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            let check = try await commands.run("qemu-img", ["check", "-q", source.path], timeout: .seconds(600))
            if !check.succeeded && !check.stderr.contains("does not support checks") {
                throw KMatrixError(.invalidInput, "\(file) is corrupt or truncated: \(check.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            let digest = try await commands.checked("sha256sum", [source.path], timeout: .seconds(600)).stdoutText.split(separator: " ").first.map(String.init) ?? ""
            if let expected = image.sha256, expected != digest {
                throw KMatrixError(.invalidInput, "\(file) has sha256 \(digest), but the matrix expects \(expected) for \(name): wrong release or a damaged download")
            }
            let layout = try Layout.discover()
            let store = ImageStore(layout: layout, commands: commands)
            try FileManager.default.createDirectory(at: store.cloudDirectory, withIntermediateDirectories: true)
            let destination = store.cloudDirectory.appendingPathComponent(image.file)
            try? FileManager.default.removeItem(at: destination)
            do {
                try FileManager.default.linkItem(at: source, to: destination)
            } catch {
                try FileManager.default.copyItem(at: source, to: destination)
            }
            print("registered \(name): \(destination.path) (sha256 \(digest))")
        }
    }
}

/// `--matrix FILE`, else ./matrix.yaml when present, else the embedded default; with the name
/// results record.
func loadMatrix(_ path: String?) throws -> (matrix: Matrix, name: String) {
    let chosen = path ?? (FileManager.default.fileExists(atPath: "matrix.yaml") ? "matrix.yaml" : nil)
    guard let chosen else { return (try DefaultMatrix.load(), DefaultMatrix.fileName) }
    guard let data = FileManager.default.contents(atPath: chosen) else {
        throw KMatrixError(.invalidInput, "cannot read the matrix file \(chosen)")
    }
    return (try MatrixParser.parse(String(decoding: data, as: UTF8.self), file: chosen), chosen)
}

func selectGuests(_ names: [String], in matrix: Matrix) throws -> [GuestSpec] {
    guard !names.isEmpty else { return matrix.guests }
    return try names.map { name in
        guard let guest = matrix.guests.first(where: { $0.name == name }) else {
            throw ValidationError("unknown guest \"\(name)\"; known: \(matrix.guests.map(\.name).joined(separator: ", "))")
        }
        return guest
    }
}

func seconds(since start: ContinuousClock.Instant) -> String {
    let elapsed = ContinuousClock.now - start
    let value = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return "\((value * 10).rounded() / 10) s"
}
