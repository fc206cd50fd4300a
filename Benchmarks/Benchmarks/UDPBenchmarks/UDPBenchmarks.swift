// In-process benchmarks (ordo-one/benchmark): what one loop iteration of the library costs, with the
// malloc counter on. `make bench` runs them and reads "Malloc (total)" per datagram from their output.
//
// Every benchmark sends to (or reads from) loopback sockets it owns; setup (sockets, watchers, warm-up)
// happens before startMeasurement, so the figures are steady state.
import Benchmark
import BatchedUDP
import Libev

/// A loopback socket that receives and never reads (its queue is dropped by the kernel when full).
func blackHole() throws -> (UDPSocket, SocketAddress) {
    let sink = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
    return (sink, try sink.localAddress)
}

/// Queues `count` datagrams of `size` bytes (each to `destination`, with `metadata`) and runs the loop
/// until they are all sent.
func send(_ watcher: BatchedUDPWatcher, count: Int, size: Int, to destination: SocketAddress? = nil, metadata: SendMetadata? = nil) {
    var next = 0
    while next < count {
        while next < count {
            let sequence = next
            guard (try? watcher.enqueue(to: destination, metadata: metadata) { slot in
                slot.storeBytes(of: UInt64(sequence).littleEndian, as: UInt64.self)
                return size
            }) != nil else { break }
            next += 1
        }
        watcher.loop.run(.once)
    }
    while watcher.counters.queued > 0 { watcher.loop.run(.once) }
}

let datagramsPerIteration = 10_000

let benchmarks: @Sendable () -> Void = {
    let metrics: [BenchmarkMetric] = [.wallClock, .throughput, .mallocCountTotal, .syscalls]
    // Sends, with and without GSO; the sourced ones carry a source address per datagram (IP_PKTINFO in
    // every slot's control area), what a server answering from each request's destination pays.
    let sends = [(64, false, false), (64, true, false), (1200, false, false), (1200, true, false), (64, false, true), (64, true, true)]
    for (size, segmentation, sourced) in sends {
        let name = "send \(size) B, GSO \(segmentation ? "on" : "off"), " + (sourced ? "source address per datagram, " : "") + "\(datagramsPerIteration) datagrams"
        Benchmark(name, configuration: .init(metrics: metrics, timeUnits: .microseconds, scalingFactor: .one, maxDuration: .seconds(3))) { benchmark in
            let loop = try EventLoop()
            let (sink, address) = try blackHole()
            let socket = try UDPSocket(family: .ipv4)
            try socket.connect(to: address)
            var configuration = BatchedUDPWatcher.Configuration()
            configuration.capacity = 4096
            configuration.maxDatagramSize = size
            configuration.segmentation = segmentation ? .automatic : .off
            let watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration)
            let metadata = sourced ? SendMetadata(source: .loopbackIPv4(port: 0)) : nil
            send(watcher, count: datagramsPerIteration, size: size, metadata: metadata)  // warm-up
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                send(watcher, count: datagramsPerIteration, size: size, metadata: metadata)
            }
            benchmark.stopMeasurement()
            Benchmark.blackHole(watcher.counters.sent)
            withExtendedLifetime(sink) {}
        }
    }

    // The same sends as a server on a wildcard address makes them: an unbound-to-one-address socket that
    // names each datagram's destination, with and without the source address to answer from. Both route
    // every datagram in the kernel; on a connected socket (above) the route is cached unless a datagram
    // names its source, so that pair measures the kernel's route lookup more than the library.
    for segmentation in [false, true] {
        for sourced in [false, true] {
            let name = "send 64 B, GSO \(segmentation ? "on" : "off"), wildcard socket, destination " + (sourced ? "and source address " : "") + "per datagram, \(datagramsPerIteration) datagrams"
            Benchmark(name, configuration: .init(metrics: metrics, timeUnits: .microseconds, scalingFactor: .one, maxDuration: .seconds(3))) { benchmark in
                let loop = try EventLoop()
                let (sink, address) = try blackHole()
                let socket = try UDPSocket(bindingTo: SocketAddress(ipv4: 0, 0, 0, 0, port: 0))
                var configuration = BatchedUDPWatcher.Configuration()
                configuration.capacity = 4096
                configuration.maxDatagramSize = 64
                configuration.segmentation = segmentation ? .automatic : .off
                let watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration)
                let metadata = sourced ? SendMetadata(source: .loopbackIPv4(port: 0)) : nil
                send(watcher, count: datagramsPerIteration, size: 64, to: address, metadata: metadata)  // warm-up
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    send(watcher, count: datagramsPerIteration, size: 64, to: address, metadata: metadata)
                }
                benchmark.stopMeasurement()
                Benchmark.blackHole(watcher.counters.sent)
                withExtendedLifetime(sink) {}
            }
        }
    }

    Benchmark("receive 64 B, \(datagramsPerIteration) datagrams", configuration: .init(metrics: metrics, timeUnits: .microseconds, scalingFactor: .one, maxDuration: .seconds(3))) { benchmark in
        let loop = try EventLoop()
        let socket = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        try socket.setReceiveBufferSize(64 << 20, force: true)
        var received = 0
        let reader = try BatchedUDPReader(loop: loop, socket: socket) { _, batch in received += batch.count }
        let sender = try UDPSocket(family: .ipv4)
        try sender.connect(to: socket.localAddress)
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.capacity = datagramsPerIteration
        configuration.maxDatagramSize = 64
        configuration.segmentation = .off
        let watcher = try BatchedUDPWatcher(loop: loop, socket: sender, configuration: configuration)
        func round() {
            // Fill the receive queue first (the reader is stopped), then read it all.
            reader.stop()
            send(watcher, count: datagramsPerIteration, size: 64)
            let target = received + datagramsPerIteration
            reader.start()
            while received < target { loop.run(.once) }
        }
        round()  // warm-up
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { round() }
        benchmark.stopMeasurement()
        Benchmark.blackHole(received)
    }

    // Echo round trips; the wildcard variant binds 0.0.0.0, asks the reader for each datagram's
    // destination and answers from it (enqueue(_:replyingTo:)), as a multi-homed server must.
    for wildcard in [false, true] {
    let name = "echo round trips 64 B, window 256, " + (wildcard ? "wildcard listener with metadata, " : "") + "\(datagramsPerIteration) datagrams"
    Benchmark(name, configuration: .init(metrics: metrics, timeUnits: .microseconds, scalingFactor: .one, maxDuration: .seconds(3))) { benchmark in
        let loop = try EventLoop()
        let server = try UDPSocket(bindingTo: wildcard ? SocketAddress(ipv4: 0, 0, 0, 0, port: 0) : .loopbackIPv4(port: 0))
        try server.setReceiveBufferSize(8 << 20, force: true)
        var serverConfiguration = BatchedUDPWatcher.Configuration()
        serverConfiguration.maxDatagramSize = 64
        let replies = try BatchedUDPWatcher(loop: loop, socket: server, configuration: serverConfiguration)
        var readerConfiguration = BatchedUDPReader.Configuration()
        readerConfiguration.metadata = wildcard ? [.destination] : []
        let echo = try BatchedUDPReader(loop: loop, socket: server, configuration: readerConfiguration) { _, batch in
            if wildcard {
                for datagram in batch { _ = try? replies.enqueue(datagram.payload, replyingTo: datagram) }
            } else {
                for datagram in batch { _ = try? replies.enqueue(datagram.payload, to: datagram.sender) }
            }
        }
        echo.start()
        let client = try EchoClient(loop: loop, server: .loopbackIPv4(port: server.localAddress.port))
        client.round()  // warm-up
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { client.round() }
        benchmark.stopMeasurement()
        Benchmark.blackHole(client.answered)
    }
    }

    // The same round trips through an echo server written with the async APIs (an actor on a loop
    // thread of its own, a DatagramStream and BatchedUDPWatcher.send), the client unchanged on this thread.
    Benchmark("async echo round trips 64 B, window 256, \(datagramsPerIteration) datagrams",
              configuration: .init(metrics: metrics, timeUnits: .microseconds, scalingFactor: .one, maxDuration: .seconds(3))) { benchmark in
        let thread = try EventLoopThread()
        let server = try await AsyncEchoServer.make(executor: thread.executor)
        await server.startServing()
        let loop = try EventLoop()
        let client = try EchoClient(loop: loop, server: await server.address)
        client.round()  // warm-up: the stream's buffer pool fills
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { client.round() }
        benchmark.stopMeasurement()
        Benchmark.blackHole(client.answered)
        client.stop()
        await server.stop()
        await thread.shutdownGracefully()
    }
}

/// The echo benchmarks' client: keeps 256 datagrams awaiting their echo, on its own loop run by `round`.
final class EchoClient {
    let loop: EventLoop
    private let requests: BatchedUDPWatcher
    private var answers: BatchedUDPReader!
    private(set) var answered = 0
    private var sent = 0, target = 0

    init(loop: EventLoop, server: SocketAddress) throws {
        self.loop = loop
        let socket = try UDPSocket(family: .ipv4)
        try socket.setReceiveBufferSize(8 << 20, force: true)
        try socket.connect(to: server)
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.maxDatagramSize = 64
        requests = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration)
        answers = try BatchedUDPReader(loop: loop, socket: socket) { [unowned self] _, batch in
            self.answered += batch.count
            self.refill()
        }
        answers.start()
    }

    private func refill() {
        while sent < target && sent - answered < 256 {
            let sequence = sent
            guard (try? requests.enqueue { slot in
                slot.storeBytes(of: UInt64(sequence).littleEndian, as: UInt64.self)
                return 64
            }) != nil else { return }
            sent += 1
        }
    }

    /// Sends the next `datagramsPerIteration` datagrams and runs the loop until all are echoed.
    func round() {
        target += datagramsPerIteration
        refill()
        while answered < target { loop.run(.once) }
    }

    func stop() { answers.stop() }
}

/// A minimal async echo server: one socket, a stream of what arrives, each datagram sent back.
actor AsyncEchoServer {
    let executor: LoopExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    private var socket: UDPSocket!
    private var watcher: BatchedUDPWatcher!
    private var stream: DatagramStream!

    private init(executor: LoopExecutor) { self.executor = executor }

    static func make(executor: LoopExecutor) async throws -> AsyncEchoServer {
        let server = AsyncEchoServer(executor: executor)
        try await server.open()
        return server
    }

    private func open() throws {
        socket = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        try socket.setReceiveBufferSize(8 << 20, force: true)
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.maxDatagramSize = 64
        watcher = try BatchedUDPWatcher(loop: executor.loop, socket: socket, configuration: configuration)
        stream = try DatagramStream(loop: executor.loop, socket: socket)
    }

    var address: SocketAddress { try! socket.localAddress }

    func serve() async {
        for await batch in stream {
            for datagram in batch { _ = try? await watcher.send(datagram, to: datagram.sender) }
        }
        watcher.close()
        watcher = nil
        stream = nil
        socket = nil
    }

    private var serving: Task<Void, Never>?

    /// Starts serving in a task that prefers the loop: its jobs never need the global pool, whose threads
    /// the benchmark runner and the client below both block.
    func startServing() { serving = Task(executorPreference: executor.taskExecutor) { await self.serve() } }

    func stop() async {
        stream.finish()
        await serving?.value
    }
}
