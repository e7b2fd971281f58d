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
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.5.0"),
    ],
    targets: [
        // Pure model: matrix, version rules, scenarios, classification, reports. No I/O.
        .target(name: "KMatrixCore", dependencies: [.product(name: "Yams", package: "Yams")], swiftSettings: strict),
        // The libvirt C API as a Clang module (libvirt-dev).
        .systemLibrary(name: "CLibvirt", pkgConfig: "libvirt", providers: [.apt(["libvirt-dev"]), .yum(["libvirt-devel"])]),
        // Swift wrapper over libvirt: the only importer of CLibvirt; owns handle lifetimes and error mapping.
        .target(name: "Libvirt", dependencies: ["CLibvirt"], swiftSettings: strict),
        // Side effects behind protocols: hypervisor, remote shell, images, host guest, orchestration.
        .target(name: "KMatrixRuntime", dependencies: [
            "KMatrixCore", "Libvirt",
            .product(name: "Subprocess", package: "swift-subprocess"),
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        // The command-line front end: parse arguments, wire adapters, set up logging.
        .executableTarget(name: "kmatrix", dependencies: [
            "KMatrixCore", "KMatrixRuntime",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        .testTarget(name: "KMatrixCoreTests", dependencies: ["KMatrixCore"], resources: [.copy("Fixtures")], swiftSettings: strict),
        .testTarget(name: "LibvirtTests", dependencies: ["Libvirt"], swiftSettings: strict),
        .testTarget(name: "KMatrixRuntimeTests", dependencies: ["KMatrixRuntime", "KMatrixCore"], swiftSettings: strict),
        // Fixtures holds scripts the tests run from the checkout, not bundle resources.
        .testTarget(name: "EndToEndTests", dependencies: ["KMatrixCore"], exclude: ["Fixtures"], swiftSettings: strict),
    ]
)
