// swift-tools-version:6.2
import PackageDescription

/// Shared by every Swift target: a pointer to a temporary (`&self.field` handed to C) is an error, not a warning.
let swiftSettings: [SwiftSetting] = [
    .treatWarning("TemporaryPointers", as: .error),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "swift-libev-udp",
    products: [
        .library(name: "Libev", targets: ["Libev"]),
        .library(name: "BatchedUDP", targets: ["BatchedUDP"]),
    ],
    dependencies: [
        // The examples only; the two libraries depend on libev and the toolchain alone.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // `make docs` only: builds the DocC catalogs (Sources/*/*.docc). A plugin, never linked.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        .systemLibrary(name: "CLibev", providers: [.apt(["libev-dev"])]),
        .target(name: "CUDPShims", cSettings: [.define("_GNU_SOURCE")]),
        .target(name: "Libev", dependencies: ["CLibev"], swiftSettings: swiftSettings),
        .target(name: "BatchedUDP", dependencies: ["Libev", "CUDPShims"], swiftSettings: swiftSettings),

        .executableTarget(
            name: "echo-relay",
            dependencies: [
                "BatchedUDP", "Libev",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Examples/EchoRelay",
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "async-echo",
            dependencies: [
                "BatchedUDP", "Libev",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/AsyncEcho",
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "udp-blast",
            dependencies: [
                "BatchedUDP", "Libev",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/UDPBlast",
            swiftSettings: swiftSettings),

        // Stands in for C code that owns a libev loop, plus the Linux calls tests need (setns).
        .target(
            name: "CTestSupport",
            path: "Tests/CTestSupport",
            cSettings: [.define("_GNU_SOURCE")],
            linkerSettings: [.linkedLibrary("ev")]),
        // Helpers shared by the test targets: receivers, private network namespaces.
        .target(
            name: "TestSupport",
            dependencies: ["BatchedUDP", "CTestSupport"],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings),
        .testTarget(
            name: "LibevTests",
            dependencies: ["Libev", "CLibev", "CTestSupport"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "BatchedUDPTests",
            dependencies: ["BatchedUDP", "Libev", "CUDPShims", "CTestSupport", "TestSupport"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "EchoRelayTests",
            dependencies: ["BatchedUDP", "Libev", "TestSupport", "echo-relay", "udp-blast", "async-echo"],
            swiftSettings: swiftSettings),
    ]
)
