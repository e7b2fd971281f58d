import ArgumentParser
import Foundation
import KMatrixCore
import KMatrixEngine
import KMatrixRuntime

/// `kmatrix images build|list|add`: the image catalog from the command line.
struct ImagesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "images",
        abstract: "Build, list and register guest images (cached under ~/.cache/kmatrix, keyed by content).",
        subcommands: [Build.self, List.self, Add.self])

    struct Build: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Build the images of these guests (default: every buildable guest).")
        @Argument(help: "Guest names from the matrix.") var names: [String] = []
        @Option(help: "The matrix file.") var matrix: String?

        func run() async throws {
            let context = CommandContext.current
            let matrix = try MatrixLoading.load(matrix, environment: context.engine).matrix
            let guests = try Selection.pick(names, from: matrix.guests.map(\.name), what: "guest")
            let chosen = names.isEmpty ? matrix.guests : matrix.guests.filter { guests.contains($0.name) }
            try KernelInputs.check(chosen)
            let commands = context.commands(nil)
            let checkout = try context.checkout()
            let probe = try await checkout.ensureProbe(commands: commands)
            let catalog = ImageCatalog(checkout: checkout, cache: context.cache, commands: commands, showBuildOutput: true)
            var failed = 0
            for guest in chosen {
                let started = context.clock.now
                do {
                    guard let built = try await catalog.build(guest, probe: probe) else { continue }
                    context.print("\(guest.name): \(built) (\((context.clock.now - started).formattedSeconds))\n")
                } catch {
                    failed += 1
                    context.printError("\(guest.name): \(KMatrixError.from(error).message)\n")
                }
            }
            if failed > 0 { throw KMatrixExit(.infrastructure, "\(failed) image(s) could not be built") }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show which guest images are present and how to get the missing ones.")
        @Option(help: "The matrix file.") var matrix: String?

        func run() async throws {
            let context = CommandContext.current
            let matrix = try MatrixLoading.load(matrix, environment: context.engine).matrix
            let catalog = ImageCatalog(checkout: try context.checkout(), cache: context.cache, commands: context.commands(nil))
            for guest in matrix.guests {
                context.print("\(guest.name): \(catalog.status(of: guest))\n")
            }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Verify a downloaded vendor image and register it for a guest.")
        @Argument(help: "The guest name from the matrix.") var name: String
        @Argument(help: "The downloaded image file.") var file: String
        @Option(help: "The matrix file.") var matrix: String?

        func run() async throws {
            let context = CommandContext.current
            let matrix = try MatrixLoading.load(matrix, environment: context.engine).matrix
            _ = try Selection.pick([name], from: matrix.guests.map(\.name), what: "guest")
            guard let guest = matrix.guests.first(where: { $0.name == name }) else { return }
            guard case .cloud(let image) = guest.image, image.recipe == nil else {
                throw KMatrixError(.invalidInput, "\(name) is a \(guest.image.kind) guest built here; only vendor cloud guests take a downloaded image")
            }
            let catalog = ImageCatalog(checkout: try context.checkout(), cache: context.cache, commands: context.commands(nil))
            let disk = try await catalog.register(image, from: context.path(file))
            context.print("registered \(name): \(disk.url.path) (\(disk.format), sha256 \(disk.sha256 ?? "?"))\n")
        }
    }
}
