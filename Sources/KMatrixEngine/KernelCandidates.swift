import Foundation
import KMatrixCore
import KMatrixRuntime

/// One kernel of a packaged bisect: its files (split packages together) and its release, read
/// from the package metadata or the bzImage's setup header — never from the file names.
struct KernelCandidate: Sendable {
    var release: String
    var source: KernelSource
    var files: [String]
}

enum KernelCandidates {
    /// `--kernel A[,B]`… as given, or every .deb/.rpm/bzImage of `--kernels DIR`, grouped by
    /// release (Ubuntu's linux-image + linux-modules, RHEL's kernel-core + kernel-modules), in
    /// release order.
    static func collect(kernels: [String], directory: String?, modules: String?, environment: EngineEnvironment, commands: any CommandRunner) async throws -> [KernelCandidate] {
        var groups: [[String]] = []
        for argument in kernels {
            groups.append(argument.split(separator: ",").map { environment.path(String($0)).path })
        }
        if let directory {
            let folder = environment.path(directory)
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw KMatrixError(.invalidInput, "--kernels \(directory) is not a directory")
            }
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
            var byRelease: [String: [String]] = [:]
            for entry in entries.sorted() where !entry.starts(with: ".") {
                let path = folder.appendingPathComponent(entry).path
                guard (try? FileIdentity.regularFile(URL(fileURLWithPath: path), what: "file")) != nil,
                      let format = try? format(of: path) else { continue }
                let release = try await release(of: path, format: format, commands: commands)
                byRelease["\(format.rawValue) \(release)", default: []].append(path)
            }
            groups += byRelease.keys.sorted().compactMap { byRelease[$0] }
        }
        var candidates: [KernelCandidate] = []
        for files in groups {
            let source = try KernelUnderTest.source(files, modules: modules)
            guard let first = files.first else { continue }
            let release = try await release(of: first, format: try format(of: first), commands: commands)
            candidates.append(KernelCandidate(release: release, source: source, files: files))
        }
        return candidates.sorted { ReleaseOrder.precedes($0.release, $1.release) }
    }

    static func format(of path: String) throws -> KernelFileFormat {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        guard let format = KernelFileFormat.identify(header: try handle.read(upToCount: KernelFileFormat.headerLength) ?? Data()) else {
            throw KMatrixError(.invalidInput, "\(path) is none of a .deb, an .rpm or a bzImage")
        }
        return format
    }

    /// The kernel release a file carries.
    static func release(of path: String, format: KernelFileFormat, commands: any CommandRunner) async throws -> String {
        switch format {
        case .deb:
            let fields = try await commands.run("dpkg-deb", ["--field", path, "Package", "Version"], timeout: .seconds(60))
            guard fields.succeeded else { throw KMatrixError(.invalidInput, "\(path) is not a readable Debian package: \(fields.stderr.trimmingCharacters(in: .whitespacesAndNewlines))") }
            let values = Dictionary(fields.stdoutText.split(separator: "\n").compactMap { line -> (String, String)? in
                let parts = line.split(separator: ":", maxSplits: 1)
                return parts.count == 2 ? (String(parts[0]), parts[1].trimmingCharacters(in: .whitespaces)) : nil
            }, uniquingKeysWith: { first, _ in first })
            let package = values["Package"] ?? ""
            for prefix in ["linux-image-unsigned-", "linux-image-", "linux-modules-extra-", "linux-modules-"] where package.starts(with: prefix) {
                let release = String(package.dropFirst(prefix.count))
                if InputRules.releaseProblem(release) == nil { return release }
            }
            throw KMatrixError(.invalidInput, "\(path) is the package \(InputRules.quoted(package)), not a kernel (linux-image-<release> or linux-modules-<release>)")
        case .rpm:
            let query = try await commands.run("rpm", ["-qp", "--nosignature", "--nodigest", "--queryformat", "%{VERSION}-%{RELEASE}.%{ARCH}", path], timeout: .seconds(60))
            let release = query.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
            guard query.succeeded, InputRules.releaseProblem(release) == nil else {
                throw KMatrixError(.invalidInput, "\(path) is not a readable kernel RPM: \(query.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            return release
        case .bzImage:
            let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
            defer { try? handle.close() }
            guard let release = KernelFileFormat.bzImageRelease(try handle.read(upToCount: 1 << 16) ?? Data()) else {
                throw KMatrixError(.invalidInput, "\(path) is a bzImage whose setup header names no kernel release")
            }
            return release
        }
    }
}
