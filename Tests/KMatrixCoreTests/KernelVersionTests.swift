import Testing
@testable import KMatrixCore

@Suite struct KernelVersionTests {
    @Test(arguments: [
        ("3.10.0-1160.el7.x86_64", KernelVersion(3, 10, 0)),
        ("4.18.0-513.el8.x86_64", KernelVersion(4, 18, 0)),
        ("5.8.0-63-generic", KernelVersion(5, 8, 0)),
        ("4.14.336-256.557.amzn2.x86_64", KernelVersion(4, 14, 336)),
        ("6.1.0-50-cloud-amd64", KernelVersion(6, 1, 0)),
        ("6.12.118+deb13-cloud-amd64", KernelVersion(6, 12, 118)),
        ("6.18.44-fc-v595", KernelVersion(6, 18, 44)),
        ("4.6", KernelVersion(4, 6, 0)),
        ("5.10.0-kmatrix-legacy", KernelVersion(5, 10, 0)),
    ])
    func parsesRealReleaseStrings(release: String, expected: KernelVersion) {
        #expect(KernelVersion(release: release) == expected)
    }

    @Test(arguments: ["", "linux", "6", "v6.1", "-1.2"])
    func rejectsStringsWithoutMajorAndMinor(release: String) {
        #expect(KernelVersion(release: release) == nil)
    }

    @Test func ordersNumericallyNotLexically() {
        #expect(KernelVersion(4, 14) > KernelVersion(4, 6))
        #expect(KernelVersion(3, 10, 0) < KernelVersion(4, 6))
        #expect(KernelVersion(6, 1, 0) < KernelVersion(6, 12, 118))
    }

    @Test(arguments: [
        ("3.10.0-1160.el7.x86_64", true),
        ("4.5.7", true),
        ("4.6.0", false),
        ("4.14.336-256.557.amzn2.x86_64", false),
        ("4.18.0-513.el8.x86_64", false),
        ("5.8.0-63-generic", false),
        ("6.12.118+deb13-cloud-amd64", false),
    ])
    func ruleBelowTheFixRelease(release: String, matches: Bool) throws {
        let rule = try VersionRule(parsing: "kernel < 4.6")
        let version = try #require(KernelVersion(release: release))
        #expect(rule.matches(version) == matches)
    }

    @Test func conjunctionsAndOperators() throws {
        let range = try VersionRule(parsing: "kernel >= 4.6 and kernel < 5.0")
        #expect(range.matches(KernelVersion(4, 18)))
        #expect(!range.matches(KernelVersion(5, 8)))
        #expect(!range.matches(KernelVersion(3, 10)))
        #expect(try VersionRule(parsing: ">= 6.1").matches(KernelVersion(6, 1, 0)))
        #expect(try VersionRule(parsing: "kernel <= 3.10").matches(KernelVersion(3, 10, 0)))
        #expect(try !VersionRule(parsing: "kernel != 6.1.0").matches(KernelVersion(6, 1, 0)))
        #expect(try VersionRule(parsing: "kernel == 5.10").matches(KernelVersion(5, 10, 0)))
        #expect(range.description == "kernel >= 4.6 and kernel < 5.0")
    }

    @Test(arguments: ["kernel ~ 4.6", "kernel < four", "kernel < 4.6-rc1", "< ", "kernel < 4.6 and"])
    func rejectsMalformedRules(text: String) {
        #expect(throws: KMatrixError.self) { try VersionRule(parsing: text) }
    }
}
