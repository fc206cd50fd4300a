// swift-tools-version:6.2
// A package that uses swift-libev-udp as a user's package would: by path (a URL works the same way), with
// nothing but libev-dev installed. `make test-consumer` builds and runs it.
import PackageDescription

let package = Package(
    name: "consumer",
    dependencies: [
        .package(name: "swift-libev-udp", path: "../.."),
    ],
    targets: [
        .executableTarget(
            name: "consumer",
            dependencies: [
                .product(name: "BatchedUDP", package: "swift-libev-udp"),
                .product(name: "Libev", package: "swift-libev-udp"),
            ]),
    ]
)
