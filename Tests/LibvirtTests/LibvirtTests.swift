import Foundation
import Libvirt
import Testing

/// These run libvirt's real C API against its in-process `test:///default` driver: no
/// daemon, no QEMU. The driver's state is shared by every connection in the process and
/// tests run in parallel, so each test uses its own domain names.
@Suite struct LibvirtTests {
    static let uri = "test:///default"
    static let metadataNamespace = "https://kmatrix.dev/xmlns/test/1"

    static func domainXML(name: String, runID: String = "run-1") -> String {
        """
        <domain type='test'>
          <name>\(name)</name>
          <memory unit='MiB'>64</memory>
          <vcpu>1</vcpu>
          <os><type arch='x86_64'>hvm</type></os>
          <metadata><km:run xmlns:km='\(metadataNamespace)' id='\(runID)'/></metadata>
        </domain>
        """
    }

    @Test func opensAndReportsVersions() throws {
        let connection = try Connection.open(uri: Self.uri)
        #expect(connection.uri == Self.uri)
        // The test driver reports a fixed hypervisor version of 2 and type "TEST".
        #expect(try connection.hypervisorVersion == "0.0.2")
        #expect(try connection.hypervisorType == "TEST")
        #expect(try connection.libvirtVersion == Self.installedLibvirtVersion())
    }

    @Test func createsFindsListsAndDestroysTransientDomain() throws {
        let connection = try Connection(uri: Self.uri)
        let name = "kmatrix-lifecycle"
        let domain = try connection.createTransientDomain(xml: Self.domainXML(name: name, runID: "abc"))
        #expect(domain.name == name)
        #expect(try domain.state == .running)

        let found = try connection.domain(named: name)
        #expect(found.name == name)
        #expect(try found.xmlDescription.contains("<name>\(name)</name>"))

        let names = try connection.listAllDomains().map(\.name)
        #expect(names.contains(name))
        // The driver's built-in domain is always there.
        #expect(names.contains("test"))

        let metadata = try #require(try found.metadataElement(uri: Self.metadataNamespace))
        // libvirt returns the element without its namespace declaration.
        #expect(metadata == "<run id=\"abc\"/>")
        #expect(try found.metadataElement(uri: "https://kmatrix.dev/xmlns/other/1") == nil)

        try domain.destroy()
        // Transient: gone once destroyed, through any handle.
        let lookup = Result { try connection.domain(named: name) }
        #expect(throws: LibvirtError.self) { try lookup.get() }
        #expect(try !connection.listAllDomains().map(\.name).contains(name))
        let stale = #expect(throws: LibvirtError.self) { try found.state }
        #expect(stale?.code == .noDomain)
    }

    @Test func autodestroyFlagReachesTheDriver() throws {
        // The test driver implements no autodestroy; its refusal proves the flag is passed.
        // The QEMU driver's behaviour is covered by KMatrixRuntimeTests' real-VM test.
        let connection = try Connection(uri: Self.uri)
        let error = #expect(throws: LibvirtError.self) {
            try connection.createTransientDomain(xml: Self.domainXML(name: "kmatrix-autodestroy"), autodestroy: true)
        }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("unsupported flags (0x2)") == true)
    }

    @Test func unknownURIThrowsLibvirtError() {
        let error = #expect(throws: LibvirtError.self) { try Connection(uri: "nosuchdriver:///nothing") }
        #expect(error?.operation == "virConnectOpen")
        #expect(error?.code == .noConnect)
        #expect(error?.message.contains("nosuchdriver:///nothing") == true)
    }

    @Test func malformedXMLThrowsXMLError() throws {
        let connection = try Connection(uri: Self.uri)
        let error = #expect(throws: LibvirtError.self) {
            try connection.createTransientDomain(xml: "<domain type='test'><name>broken</name>")
        }
        #expect(error?.operation == "virDomainCreateXML")
        #expect(error?.code == .xmlDetail)
        #expect(error?.message.contains("Premature end of data in tag domain") == true)
    }

    @Test func invalidDomainDefinitionIsRejected() throws {
        let connection = try Connection(uri: Self.uri)
        // Well-formed XML, but a domain without memory is not a valid definition.
        let error = #expect(throws: LibvirtError.self) {
            try connection.createTransientDomain(xml: "<domain type='test'><name>no-memory</name><os><type>hvm</type></os></domain>")
        }
        #expect(error?.operation == "virDomainCreateXML")
        #expect(error?.code == .xmlError)
        #expect(error?.message.contains("Memory size must be specified") == true)
    }

    @Test func unknownDomainThrowsNoDomain() throws {
        let connection = try Connection(uri: Self.uri)
        let error = #expect(throws: LibvirtError.self) { try connection.domain(named: "kmatrix-does-not-exist") }
        #expect(error?.code == .noDomain)
        #expect(error?.message == "Domain not found")
        #expect(error?.description.contains("virDomainLookupByName failed") == true)
    }

    @Test func errorIsResetAfterBeingTaken() throws {
        let connection = try Connection(uri: Self.uri)
        #expect(throws: LibvirtError.self) { try connection.domain(named: "kmatrix-missing") }
        // A successful call afterwards must not see the previous error.
        #expect(try connection.domain(named: "test").name == "test")
    }

    @Test func domainsCanBeUsedFromManyTasks() async throws {
        let connection = try Connection(uri: Self.uri)
        let names = try await withThrowingTaskGroup(of: String.self) { group in
            for index in 0..<8 {
                group.addTask {
                    let name = "kmatrix-parallel-\(index)"
                    let domain = try connection.createTransientDomain(xml: Self.domainXML(name: name))
                    defer { try? domain.destroy() }
                    return try connection.domain(named: name).name
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(names) == Set((0..<8).map { "kmatrix-parallel-\($0)" }))
    }

    /// The libvirt this test links against, as its pkg-config file says.
    static func installedLibvirtVersion() throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["pkg-config", "--modversion", "libvirt"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Storage pools and volumes on libvirt's in-process test driver (its "default-pool").
@Suite struct StorageTests {
    @Test func volumesAreCreatedFoundAndDeleted() throws {
        let connection = try Connection(uri: "test:///default")
        let pool = try #require(try connection.storagePool(named: "default-pool"))
        #expect(pool.isActive)
        #expect(try connection.storagePool(named: "no-such-pool") == nil)
        let name = "kmatrix-test-\(UInt32.random(in: 0..<UInt32.max)).img"
        #expect(try pool.volume(named: name) == nil)
        let volume = try pool.createVolume(xml: "<volume><name>\(name)</name><capacity unit='KiB'>64</capacity></volume>")
        #expect(volume.name == name)
        #expect(try volume.path.hasSuffix("/\(name)"))
        #expect(try pool.volume(named: name)?.name == name)
        #expect(try pool.volumes().contains { $0.name == name })
        try volume.delete()
        #expect(try pool.volume(named: name) == nil)
    }

    @Test func hostFactsAreRead() throws {
        let connection = try Connection(uri: "test:///default")
        #expect(try connection.hostCPUs > 0)
    }
}
