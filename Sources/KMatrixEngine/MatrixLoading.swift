import Foundation
import KMatrixCore
import KMatrixRuntime

/// `--matrix FILE`, else ./matrix.yaml when present, else the embedded default; with the name
/// results record. Paths inside the file (kernel packages, modules) are relative to the file.
public struct LoadedMatrix: Sendable {
    public var matrix: Matrix
    public var name: String
}

public enum MatrixLoading {
    public static func load(_ path: String?, environment: EngineEnvironment) throws -> LoadedMatrix {
        let implicit = environment.workingDirectory.appendingPathComponent("matrix.yaml")
        let chosen: URL? = path.map(environment.path) ?? (FileManager.default.fileExists(atPath: implicit.path) ? implicit : nil)
        guard let chosen else { return LoadedMatrix(matrix: try DefaultMatrix.load(), name: DefaultMatrix.fileName) }
        let shown = path ?? "matrix.yaml"
        let identity = try FileIdentity.regularFile(chosen, what: "the matrix file")
        guard identity.size <= Int64(YAMLGuard.maximumBytes) else {
            throw KMatrixError(.invalidInput, "\(shown) is \(identity.size) bytes; a matrix file may be at most \(YAMLGuard.maximumBytes) bytes")
        }
        let data: Data
        do {
            data = try Data(contentsOf: chosen)
        } catch {
            throw KMatrixError(.invalidInput, "cannot read the matrix file \(shown): \(KMatrixError.from(error).message)", cause: error)
        }
        var matrix = try MatrixParser.parse(String(decoding: data, as: UTF8.self), file: shown)
        let base = chosen.deletingLastPathComponent()
        for index in matrix.guests.indices {
            if case .kernel(let source) = matrix.guests[index].image {
                matrix.guests[index].image = .kernel(source.resolvingPaths { FilePaths.resolve($0, against: base).path })
            }
        }
        try matrix.resolveConsumerFiles(inside: base, matrixName: shown)
        return LoadedMatrix(matrix: matrix, name: shown)
    }
}

extension KernelSource {
    /// The same source with every file path rewritten.
    func resolvingPaths(_ resolve: (String) -> String) -> KernelSource {
        switch self {
        case .debian, .recipe, .archive: self
        case .packages(let format, let paths): .packages(format, paths: paths.map(resolve))
        case .bzImage(let path, let modules): .bzImage(path: resolve(path), modules: modules.map(resolve))
        }
    }
}

extension Matrix {
    /// A consumer's files live beside the matrix that declares them: each `from` (relative, no
    /// `..`: the parser saw to that) becomes an absolute path whose real location, links
    /// followed, is still inside the matrix file's folder. A matrix someone else wrote cannot
    /// make kmatrix copy /etc/shadow into a guest.
    mutating func resolveConsumerFiles(inside base: URL, matrixName: String) throws {
        let folder = base.standardizedFileURL.resolvingSymlinksInPath().path
        for index in consumers.indices {
            for file in consumers[index].files.indices {
                let given = consumers[index].files[file].from
                let resolved = FilePaths.resolve(given, against: base)
                let real = resolved.resolvingSymlinksInPath().path
                guard real.hasPrefix(folder + "/") else {
                    throw KMatrixError(.invalidInput, "\(matrixName): file \(InputRules.quoted(given)) of consumer \(consumers[index].name) leads out of the matrix file's folder "
                        + "(to \(InputRules.quoted(real))); put the consumer's files beside the matrix")
                }
                consumers[index].files[file].from = real
            }
        }
    }
}

/// The users' consumers' own files, checked before anything builds or boots: each must be a
/// readable regular file (never a device or a folder).
public enum ConsumerInputs {
    public static func check(_ consumers: [ConsumerSpec]) throws {
        for consumer in consumers {
            for file in consumer.files {
                _ = try FileIdentity.regularFile(URL(fileURLWithPath: file.from), what: "file \(file.to) of consumer \(consumer.name)")
                guard access(file.from, R_OK) == 0 else {
                    throw KMatrixError(.invalidInput, "cannot read \(file.from) (file \(file.to) of consumer \(consumer.name)): \(String(cString: strerror(errno)))")
                }
            }
        }
    }
}

/// Picking guests and scenarios by name.
public enum Selection {
    /// The names asked for, in the order the matrix lists them; an unknown one is an error that
    /// suggests the closest known names and lists a bounded number of the rest.
    public static func pick(_ requested: [String], from known: [String], what: String) throws -> [String] {
        for name in requested where !known.contains(name) {
            throw KMatrixError(.invalidInput, unknown(name, known: known, what: what))
        }
        return known.filter(requested.contains)
    }

    public static func unknown(_ name: String, known: [String], what: String) -> String {
        var text = "unknown \(what) \(InputRules.quoted(name))"
        let close = known.map { ($0, distance($0.lowercased(), name.lowercased())) }.filter { $0.1 <= max(2, name.count / 3) }
            .sorted { $0.1 < $1.1 }.prefix(3).map(\.0)
        if !close.isEmpty { text += "; did you mean \(close.joined(separator: ", "))?" }
        let shown = known.prefix(12)
        text += "; known: \(shown.joined(separator: ", "))"
        if known.count > shown.count { text += " and \(known.count - shown.count) more (`kmatrix matrix` prints them all)" }
        return text
    }

    /// Levenshtein distance, for suggestions.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}

/// Checks the files a run will boot, before anything boots: each must exist, be a readable
/// regular file (never a device such as /dev/zero) and be what its role says — a Debian or RPM
/// package, or a bzImage — and a modules directory must be a directory.
public enum KernelInputs {
    public static func check(_ guests: [GuestSpec]) throws {
        for guest in guests {
            guard case .kernel(let source) = guest.image else { continue }
            switch source {
            case .debian, .recipe, .archive: continue
            case .packages(let format, let paths):
                for path in paths { try checkFile(path, guest: guest.name, expected: format == .deb ? .deb : .rpm) }
            case .bzImage(let path, let modules):
                try checkFile(path, guest: guest.name, expected: .bzImage)
                if let modules { try checkDirectory(modules, guest: guest.name) }
            }
        }
    }

    static func checkFile(_ path: String, guest: String, expected: KernelFileFormat) throws {
        let url = URL(fileURLWithPath: path)
        _ = try FileIdentity.regularFile(url, what: "kernel file of \(guest)")
        let header: Data
        do {
            let handle = try FileHandle(forReadingFrom: url)
            defer { try? handle.close() }
            header = try handle.read(upToCount: KernelFileFormat.headerLength) ?? Data()
        } catch {
            throw KMatrixError(.invalidInput, "cannot read kernel file \(path): \(KMatrixError.from(error).message)", cause: error)
        }
        let found = KernelFileFormat.identify(header: header)
        guard found == expected else {
            throw KMatrixError(.invalidInput, "kernel file \(path) of \(guest) is \(found?.description ?? "none of a .deb, an .rpm or a bzImage"), not \(expected.description)")
        }
    }

    static func checkDirectory(_ path: String, guest: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw KMatrixError(.invalidInput, "modules directory \(path) of \(guest) does not exist")
        }
        guard isDirectory.boolValue else { throw KMatrixError(.invalidInput, "modules \(path) of \(guest) is not a directory") }
        guard access(path, R_OK | X_OK) == 0 else {
            throw KMatrixError(.invalidInput, "cannot read modules directory \(path): \(String(cString: strerror(errno)))")
        }
    }
}
