@testable import BatchedUDP
import Glibc
import Libev
import Testing
import TestSupport

/// A stream made on its loop's thread (in `make`, isolated to the actor, whose executor is the loop's),
/// with the socket it reads.
actor StreamHost {
    let executor: LoopExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    private(set) var socket: UDPSocket!
    private(set) var stream: DatagramStream!

    private init(executor: LoopExecutor) { self.executor = executor }

    static func make(executor: LoopExecutor, configuration: BatchedUDPReader.Configuration = .init(),
                     limits: DatagramStream.BufferLimits = .init(low: 2, high: 8), receiveBuffer: Int? = nil) async throws -> StreamHost {
        let host = StreamHost(executor: executor)
        try await host.open(configuration, limits, receiveBuffer)
        return host
    }

    private func open(_ configuration: BatchedUDPReader.Configuration, _ limits: DatagramStream.BufferLimits, _ receiveBuffer: Int?) throws {
        socket = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        if let receiveBuffer { try socket.setReceiveBufferSize(receiveBuffer) }
        stream = try DatagramStream(loop: executor.loop, socket: socket, configuration: configuration, bufferedBatches: limits)
    }

    var address: SocketAddress { try! socket.localAddress }
    var drops: Int { (try? socket.receiveDrops) ?? -1 }
    func closeSocket() { try? socket.close() }
}

/// Sends `count` datagrams carrying their index from a fresh socket (blocking; loopback never blocks).
func sendSequence(_ count: Int, to target: SocketAddress, size: Int = 16) throws -> SocketAddress {
    let socket = try UDPSocket(family: .ipv4)
    try socket.connect(to: target)
    for n in 0..<count {
        let bytes = sequencePayload(n, size: size)
        _ = bytes.withUnsafeBytes { send(socket.fileDescriptor, $0.baseAddress, $0.count, 0) }
    }
    return try socket.localAddress
}

@Suite struct DatagramStreamTests {
    /// Datagrams arrive in order, with their sender and the metadata asked for, in batches a task owns:
    /// a batch kept while later ones arrive still holds its own datagrams.
    @Test func batchesAreOwnedAndCarryMetadata() async throws {
        try await EventLoopThread.run { executor in
            var configuration = BatchedUDPReader.Configuration()
            configuration.batchSize = 8
            configuration.metadata = [.destination, .ecn, .receiveTime]
            let host = try await StreamHost.make(executor: executor, configuration: configuration)
            let address = await host.address, stream = await host.stream!
            let sender = try sendSequence(100, to: address)
            var received: [Int] = [], kept: DatagramStream.Batch?
            for await batch in stream {
                if kept == nil { kept = batch }
                for datagram in batch {
                    received.append(datagram.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) })
                    #expect(datagram.sender == sender && datagram.count == 16)
                    #expect(datagram.destination == address && datagram.ecn == .notECT && datagram.receiveTime != nil)
                    #expect(datagram.replyMetadata == SendMetadata(source: .loopbackIPv4(port: 0)), "answered from the address it came to")
                }
                if received.count == 100 { break }
            }
            #expect(received == Array(0..<100))
            let first = try #require(kept)
            #expect(first.map { sequence(of: $0.bytes) } == Array(0..<first.count), "a kept batch changed under its owner")
            stream.finish()
        }
    }

    /// A consumer that does not read: the stream buffers up to its high mark, then stops reading, and the
    /// kernel drops and counts what its receive buffer cannot hold. Every datagram is either delivered
    /// or counted by the kernel, and the stream never held more than `high` batches.
    @Test func aSlowConsumerLeavesTheOverflowToTheKernel() async throws {
        try await EventLoopThread.run { executor in
            var configuration = BatchedUDPReader.Configuration()
            configuration.batchSize = 8
            // A receive buffer far smaller than 2,000 datagrams need.
            let host = try await StreamHost.make(executor: executor, configuration: configuration, limits: .init(low: 1, high: 2),
                                                 receiveBuffer: 64 << 10)
            let stream = await host.stream!
            let total = 2_000
            _ = try sendSequence(total, to: await host.address)
            try await executor.sleep(for: 0.05)
            #expect(stream.shared.bufferedForTests <= 2)
            var delivered = 0
            for await batch in stream {
                delivered += batch.count
                if delivered + (await host.drops) >= total, stream.shared.bufferedForTests == 0 { break }
            }
            let drops = await host.drops
            #expect(drops > 0, "the receive buffer held all \(total): nothing exercised the overflow")
            #expect(delivered + drops == total, "delivered \(delivered), kernel drops \(drops)")
            stream.finish()
        }
    }

    /// The stream ends: on `finish()` (after what was buffered), when its socket closes, and when the
    /// iterating task is cancelled.
    @Test func theStreamEndsOnFinishCloseAndCancellation() async throws {
        try await EventLoopThread.run { executor in
            let finished = try await StreamHost.make(executor: executor)
            let finishedStream = await finished.stream!
            _ = try sendSequence(3, to: await finished.address)
            try await executor.sleep(for: 0.02)
            finishedStream.finish()
            var count = 0
            for await batch in finishedStream { count += batch.count }
            #expect(count == 3, "buffered datagrams are still delivered after finish()")

            let closed = try await StreamHost.make(executor: executor)
            let closedStream = await closed.stream!
            let reader = Task { var n = 0; for await batch in closedStream { n += batch.count }; return n }
            try await executor.sleep(for: 0.01)
            await closed.closeSocket()
            #expect(await reader.value == 0)

            let cancelled = try await StreamHost.make(executor: executor)
            let cancelledStream = await cancelled.stream!
            let waiting = Task { var n = 0; for await batch in cancelledStream { n += batch.count }; return n }
            try await executor.sleep(for: 0.01)
            waiting.cancel()
            #expect(await waiting.value == 0)
            #expect(cancelledStream.shared.isFinished)
        }
    }
}

