// swift-tools-version: 6.2
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "kmatrix",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "kmatrix", targets: ["kmatrix"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.5.0"),
        // SHA-256 of kernels and multi-GB images in process, streamed and cancellable
        // (about a minute more on a cold 2-core build).
        .package(url: "https://github.com/apple/swift-crypto", from: "4.0.0"),
        // report.html and the history page: typed HTML whose values are escaped by construction.
        .package(url: "https://github.com/JohnSundell/Plot", from: "0.14.0"),
        // Tests only: clocks that advance when told (TestClock) or at once (ImmediateClock), so no
        // test of a wait depends on wall time.
        .package(url: "https://github.com/pointfreeco/swift-clocks", from: "1.0.0"),
    ],
    targets: [
        // Pure model: matrix, input rules, version rules, scenarios, classification, failures, results, reports, history, merge, shards. No I/O.
        .target(name: "KMatrixCore", dependencies: [
            .product(name: "Yams", package: "Yams"), .product(name: "Plot", package: "Plot"),
        ], swiftSettings: strict),
        // The libvirt C API as a Clang module (libvirt-dev).
        .systemLibrary(name: "CLibvirt", pkgConfig: "libvirt", providers: [.apt(["libvirt-dev"]), .yum(["libvirt-devel"])]),
        // Swift wrapper over libvirt: the only importer of CLibvirt; owns handle lifetimes and error mapping.
        .target(name: "Libvirt", dependencies: ["CLibvirt"], swiftSettings: strict),
        // Side effects behind protocols: commands, SSH, image catalog, host guest, VM launcher, orchestration, results, cleanup.
        .target(name: "KMatrixRuntime", dependencies: [
            "KMatrixCore",
            .product(name: "Subprocess", package: "swift-subprocess"),
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Yams", package: "Yams"),
        ], swiftSettings: strict),
        // The libvirt backend of the runtime's Hypervisor protocol: domains, domain XML, accelerator probe.
        .target(name: "KMatrixLibvirt", dependencies: ["KMatrixCore", "KMatrixRuntime", "Libvirt"], swiftSettings: strict),
        // What a run and a bisect do, outside any command line: plan, run engine, host wiring, bisect search and steps.
        .target(name: "KMatrixEngine", dependencies: [
            "KMatrixCore", "KMatrixRuntime", .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        // The command line (one file per command) over an injected context: parse, call the engine, print.
        .target(name: "KMatrixCommands", dependencies: [
            "KMatrixCore", "KMatrixRuntime", "KMatrixLibvirt", "KMatrixEngine",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        // The executable: hands arguments and the process's context to KMatrixCommands.
        .executableTarget(name: "kmatrix", dependencies: ["KMatrixCommands"], swiftSettings: strict),
        // Fakes shared by the test targets: a scripted command runner, a hypervisor that starts nothing.
        .target(name: "KMatrixTestSupport", dependencies: [
            "KMatrixCore", "KMatrixRuntime", .product(name: "Clocks", package: "swift-clocks"), .product(name: "Logging", package: "swift-log"),
        ], path: "Tests/KMatrixTestSupport", swiftSettings: strict),
        .testTarget(name: "KMatrixCoreTests", dependencies: ["KMatrixCore", "KMatrixTestSupport"], resources: [.copy("Fixtures")], swiftSettings: strict),
        .testTarget(name: "LibvirtTests", dependencies: ["Libvirt"], swiftSettings: strict),
        .testTarget(name: "KMatrixRuntimeTests", dependencies: [
            "KMatrixRuntime", "KMatrixCore", "KMatrixTestSupport", .product(name: "Yams", package: "Yams"),
        ], swiftSettings: strict),
        .testTarget(name: "KMatrixLibvirtTests", dependencies: ["KMatrixLibvirt", "KMatrixRuntime", "KMatrixCore"], swiftSettings: strict),
        .testTarget(name: "KMatrixCommandsTests", dependencies: [
            "KMatrixCommands", "KMatrixEngine", "KMatrixRuntime", "KMatrixCore", "KMatrixTestSupport",
        ], swiftSettings: strict),
        // Depends on the executable so `swift build --build-tests` always builds the binary it runs.
        // Fixtures holds scripts the tests run from the checkout, not bundle resources.
        .testTarget(name: "EndToEndTests", dependencies: ["KMatrixCore", "kmatrix"], exclude: ["Fixtures"], swiftSettings: strict),
    ]
)
