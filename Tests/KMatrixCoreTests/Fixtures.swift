import Foundation
import Testing
@testable import KMatrixCore

enum Fixture {
    static func url(_ path: String) throws -> URL {
        try #require(Bundle.module.url(forResource: "Fixtures/\(path)", withExtension: nil), "missing fixture \(path)")
    }

    static func probe(_ name: String) throws -> ProbeResult {
        try ProbeResult.decode(Data(contentsOf: url("probe/\(name).json")))
    }

    /// Compares with a golden file under Tests/KMatrixCoreTests/Fixtures/golden; with
    /// KMATRIX_UPDATE_GOLDEN=1 rewrites it in the source tree instead.
    static func expectGolden(_ text: String, _ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/golden/\(name)")
        if ProcessInfo.processInfo.environment["KMATRIX_UPDATE_GOLDEN"] == "1" {
            try FileManager.default.createDirectory(at: source.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(text.utf8).write(to: source)
            return
        }
        let golden = try String(contentsOf: url("golden/\(name)"), encoding: .utf8)
        #expect(text == golden, "output differs from golden/\(name); rerun with KMATRIX_UPDATE_GOLDEN=1 if the change is intended", sourceLocation: sourceLocation)
    }
}
