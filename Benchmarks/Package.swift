// swift-tools-version:6.1
// The benchmark suite, kept out of the library's package (as SwiftNIO does) so that nobody who depends on
// BatchedUDP builds ordo-one/benchmark or SwiftNIO. `make bench` at the top level builds and runs it all.
import PackageDescription

let package = Package(
    name: "Benchmarks",
    dependencies: [
        .package(name: "swift-libev-udp", path: "../"),
        // Naming the trait drops the RuntimeInterposer default, whose dependency cannot be resolved offline.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
    ],
    targets: [
        // In-process figures: send and receive throughput, mallocs per datagram, echo round trips.
        .executableTarget(
            name: "UDPBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "BatchedUDP", package: "swift-libev-udp"),
                .product(name: "Libev", package: "swift-libev-udp"),
            ],
            path: "Benchmarks/UDPBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
        // The workloads Scripts/instructions.sh counts instructions of (callgrind), against CReferences/.
        .executableTarget(
            name: "instruction-counts",
            dependencies: [
                .product(name: "BatchedUDP", package: "swift-libev-udp"),
                .product(name: "Libev", package: "swift-libev-udp"),
            ],
            path: "InstructionCounts"),
        // The SwiftNIO peer for Scripts/bench.sh: a DatagramChannel sender and a UDP echo server.
        .executableTarget(
            name: "nio-peer",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "NIOPeer"),
    ]
)
