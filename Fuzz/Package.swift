// swift-tools-version:6.2
// libFuzzer targets for every parser of untrusted text or bytes in BatchedUDP, kept out of the library's
// package. They are built with `-sanitize=fuzzer,address -parse-as-library` (see `make fuzz`), and reach
// internals through `@testable import`, which debug builds allow.
import PackageDescription

let package = Package(
    name: "Fuzz",
    dependencies: [.package(name: "swift-libev-udp", path: "../")],
    targets: [
        // Starts libFuzzer's driver from each executable's main.
        .target(name: "FuzzDriver"),
        // SocketAddress(parsing:) on arbitrary text, and SocketAddress(_:length:) on arbitrary sockaddr bytes.
        .executableTarget(
            name: "FuzzSocketAddress",
            dependencies: ["FuzzDriver", .product(name: "BatchedUDP", package: "swift-libev-udp")]),
        // A received message as the kernel could fill it: control messages (PKTINFO, TOS, TCLASS, timestamps,
        // UDP_GRO), length and flags, then the split of a merged (GRO) receive back into datagrams.
        .executableTarget(
            name: "FuzzReceivedMessage",
            dependencies: ["FuzzDriver", .product(name: "BatchedUDP", package: "swift-libev-udp")]),
    ]
)
