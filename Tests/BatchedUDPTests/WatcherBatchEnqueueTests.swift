@testable import BatchedUDP
import Glibc
import Libev
import Testing
import TestSupport

/// The batch enqueue forms and the lean single-datagram forms, through the real kernel: what one call
/// queues arrives once, in order; a call that cannot queue everything (ring, byte budget, a body that
/// throws or closes the socket, a datagram too large) queues nothing or exactly what it returns; slots
/// that carried an address or metadata carry none once they are reused.
struct WatcherBatchEnqueueTests {
    func configuration(capacity: Int, byteCapacity: Int? = nil, segmentation: BatchedUDPWatcher.Configuration.Segmentation = .automatic)
        -> BatchedUDPWatcher.Configuration {
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.capacity = capacity
        configuration.byteCapacity = byteCapacity
        configuration.segmentation = segmentation
        return configuration
    }

    /// Drains of at most two messages (one call; a loop iteration runs the drain and then the write
    /// watcher's): the ring keeps what is queued beyond them, so later batches start mid-ring and wrap
    /// around its end (an emptied ring starts over at slot 0).
    func slowDrains(_ configuration: BatchedUDPWatcher.Configuration) -> BatchedUDPWatcher.Configuration {
        var configuration = configuration
        configuration.batchSize = 2
        configuration.maxCallsPerDrain = 1
        return configuration
    }

    /// Whether `count` datagrams queued now run past the ring's end.
    func wraps(_ watcher: BatchedUDPWatcher, _ count: Int) -> Bool {
        watcher.ring.tail + min(count, watcher.ring.capacity - watcher.ring.count) > watcher.ring.capacity
    }

    /// Writes `sequence` into `slot` as `sequencePayload` does, and returns `size`.
    func write(_ sequence: Int, size: Int, into slot: UnsafeMutableRawBufferPointer) -> Int {
        let bytes = sequencePayload(sequence, size: size)
        slot.copyBytes(from: bytes)
        return size
    }

    /// Batches in place that wrap around the ring, with and without GSO, sizes varying inside a batch:
    /// every datagram arrives once, in order, with the sequence numbers the calls returned.
    @Test(arguments: [BatchedUDPWatcher.Configuration.Segmentation.automatic, .off])
    func batchesArriveInOrderAcrossTheRingsEnd(segmentation: BatchedUDPWatcher.Configuration.Segmentation) throws {
        let loop = try EventLoop()
        let (watcher, receiver) = try connectedPair(slowDrains(configuration(capacity: 16, segmentation: segmentation)), loop: loop)
        let sizes = [64, 64, 64, 30, 64, 8, 64, 64, 1_200, 1_200, 9]
        var next = 0, wrapped = 0
        for round in 0..<12 {
            // As many as fit, up to 5, 7, ... 15: the ring's end falls inside batches.
            let count = min(5 + (round % 6) * 2, watcher.ring.capacity - watcher.ring.count)
            if wraps(watcher, count) { wrapped += 1 }
            let queued = try watcher.enqueue(count: count) { index, slot in
                write(next + index, size: sizes[(next + index) % sizes.count], into: slot)
            }
            #expect(queued == next..<next + count)
            next += count
            loop.run(.once)
        }
        runUntilDrained(watcher)
        #expect(wrapped > 0)
        let arrived = receiver.receive(next)
        #expect(arrived.map(sequence(of:)) == Array(0..<next))
        #expect(arrived.map(\.count) == (0..<next).map { sizes[$0 % sizes.count] })
        #expect(watcher.counters.sent == next && watcher.counters.enqueued == next)
        expectAccounted(watcher)
    }

    /// All or nothing: a batch larger than the free slots throws before its body runs and queues
    /// nothing (counted as rejected); `partially` queues what fits and says so.
    @Test func aBatchTheRingCannotHoldQueuesNothingOrWhatFits() throws {
        let loop = try EventLoop()
        let (watcher, receiver) = try connectedPair(configuration(capacity: 8), loop: loop)
        try watcher.enqueue(count: 5) { index, slot in write(index, size: 32, into: slot) }
        var calls = 0
        #expect(throws: BatchedUDPError.queueFull(capacity: 8, byteCapacity: 8 * 2048)) {
            try watcher.enqueue(count: 5) { index, slot in
                calls += 1
                return write(5 + index, size: 32, into: slot)
            }
        }
        #expect(calls == 0 && watcher.counters.queued == 5 && watcher.counters.rejected == 5)
        let queued = try watcher.enqueue(count: 5, partially: true) { index, slot in write(5 + index, size: 32, into: slot) }
        #expect(queued == 5..<8)
        #expect(try watcher.enqueue(count: 2, partially: true) { _, _ in 1 } == 8..<8, "a full ring takes none")
        runUntilDrained(watcher)
        #expect(receiver.receive(8).map(sequence(of:)) == Array(0..<8))
        expectAccounted(watcher)
    }

    /// The byte budget: all or nothing throws after the bodies ran and queues nothing; `partially`
    /// stops before the datagram that does not fit (its body ran; it is not queued).
    @Test func theByteBudgetEndsABatch() throws {
        let loop = try EventLoop()
        let (watcher, receiver) = try connectedPair(configuration(capacity: 16, byteCapacity: 250), loop: loop)
        #expect(throws: BatchedUDPError.self) {
            try watcher.enqueue(count: 3) { index, slot in write(index, size: 100, into: slot) }
        }
        #expect(watcher.counters.queued == 0 && watcher.counters.enqueued == 0)
        var calls = 0
        let queued = try watcher.enqueue(count: 3, partially: true) { index, slot in
            calls += 1
            return write(index, size: 100, into: slot)
        }
        #expect(queued == 0..<2 && calls == 3 && watcher.counters.queuedBytes == 200)
        runUntilDrained(watcher)
        #expect(receiver.receive(2).map(sequence(of:)) == [0, 1])
        expectAccounted(watcher)

        // A body that closes the socket before the budget would stop the batch: the call reports the
        // close, not a full queue, and counts no rejection.
        let rejected = watcher.counters.rejected
        #expect(throws: BatchedUDPError.closed) {
            try watcher.enqueue(count: 3) { index, slot in
                if index == 1 { try watcher.socket.close() }
                return write(2 + index, size: 100, into: slot)
            }
        }
        #expect(watcher.counters.rejected == rejected && watcher.counters.enqueued == 2)
    }

    struct Stop: Error {}

    /// A body that throws, one that returns a length over the peer's limit, and one that closes the
    /// watcher's socket: the call throws and queues nothing; sequence numbers go on from where they were.
    @Test func aBatchThatFailsHalfwayQueuesNothing() throws {
        let loop = try EventLoop()
        var settings = configuration(capacity: 32)
        settings.maxDatagramSize = 65_527
        let receiver = try Receiver()
        let socket = try UDPSocket(family: .ipv6)
        try socket.setIPv6Only(false)
        try socket.connect(to: receiver.address.ipv4Mapped)  // IPv4 on the wire: 65,507 bytes at most
        let watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: settings)
        #expect(throws: Stop.self) {
            try watcher.enqueue(count: 4) { index, slot in
                if index == 2 { throw Stop() }
                return write(index, size: 10, into: slot)
            }
        }
        #expect(throws: BatchedUDPError.messageTooLarge(size: 65_520, limit: 65_507)) {
            try watcher.enqueue(count: 2) { index, slot in index == 0 ? write(0, size: 10, into: slot) : 65_520 }
        }
        #expect(throws: BatchedUDPError.messageTooLarge(size: 65_520, limit: 65_507)) {
            try watcher.enqueue { _ in 65_520 }
        }
        #expect(watcher.counters.queued == 0 && watcher.counters.enqueued == 0)
        #expect(try watcher.enqueue(count: 3) { index, slot in write(index, size: 10, into: slot) } == 0..<3)
        runUntilDrained(watcher)
        #expect(receiver.receive(3).map(sequence(of:)) == [0, 1, 2])

        #expect(throws: BatchedUDPError.closed) {
            try watcher.enqueue(count: 3) { index, slot in
                if index == 1 { try socket.close() }
                return write(3 + index, size: 10, into: slot)
            }
        }
        #expect(watcher.state == .closed && watcher.counters.enqueued == 3)
        expectAccounted(watcher)
    }

    /// The copying batch forms: to the connected peer, and to a destination with metadata on an
    /// unconnected socket; a buffer too large is found before anything is queued.
    @Test func copyingBatchesArriveAndRefuseWhatIsTooLarge() throws {
        let loop = try EventLoop()
        let (watcher, receiver) = try connectedPair(configuration(capacity: 64), loop: loop)
        let payloads = (0..<10).map { sequencePayload($0, size: 20 + $0) }
        try withBuffers(payloads) { buffers throws in
            #expect(try watcher.enqueue(contentsOf: buffers) == 0..<10)
        }
        let tooLarge = [UInt8](repeating: 0, count: 3_000)
        try withBuffers([sequencePayload(10), tooLarge]) { buffers throws in
            #expect(throws: BatchedUDPError.messageTooLarge(size: 3_000, limit: 2_048)) { try watcher.enqueue(contentsOf: buffers) }
        }
        runUntilDrained(watcher)
        #expect(receiver.receive(10) == payloads)

        let unconnected = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4))
        let ecnReceiver = try MetadataTests.Server(loop: loop, bind: .loopbackIPv4(port: 0), metadata: [.ecn], plain: true)
        let target = SocketAddress.loopbackIPv4(port: ecnReceiver.port)
        try withBuffers(payloads) { buffers throws in
            #expect(throws: BatchedUDPError.destinationRequired) { try unconnected.enqueue(contentsOf: buffers) }
            #expect(try unconnected.enqueue(contentsOf: buffers, to: target, metadata: SendMetadata(ecn: .ect1)) == 0..<10)
        }
        runUntilDrained(unconnected)
        MetadataTests().settle(loop)
        #expect(ecnReceiver.received.map(\.bytes) == payloads)
        #expect(ecnReceiver.received.allSatisfy { $0.ecn == .ect1 })
        expectAccounted(unconnected)
    }

    /// The lean copying batch walks the free slots in stretches that end at the ring's end and checks
    /// each size as it copies: batches wrapping the ring arrive in order; a datagram too large is
    /// reported before room (behind a full ring, or after the byte budget stopped a partial batch) and
    /// nothing of its call is queued; a partial batch stops at the budget.
    @Test func copyingBatchesWrapTheRingAndReportSizeBeforeRoom() throws {
        let loop = try EventLoop()
        let (watcher, receiver) = try connectedPair(slowDrains(configuration(capacity: 8, byteCapacity: 750, segmentation: .off)), loop: loop)
        var next = 0, wrapped = 0
        for round in 0..<10 {
            let count = min([5, 6, 7, 3, 8][round % 5], watcher.ring.capacity - watcher.ring.count)
            if wraps(watcher, count) { wrapped += 1 }
            let payloads = (next..<next + count).map { sequencePayload($0, size: 16 + $0 % 50) }
            try withBuffers(payloads) { buffers throws in
                #expect(try watcher.enqueue(contentsOf: buffers) == next..<next + count)
            }
            next += count
            loop.run(.once)
        }
        runUntilDrained(watcher)
        #expect(wrapped > 0)
        #expect(receiver.receive(next).map(sequence(of:)) == Array(0..<next))

        let tooLarge = [UInt8](repeating: 0, count: 3_000)
        // More datagrams than free slots, the one too large past the room: its size is what is reported.
        try withBuffers((0..<9).map { sequencePayload(100 + $0) } + [tooLarge]) { buffers throws in
            #expect(throws: BatchedUDPError.messageTooLarge(size: 3_000, limit: 2_048)) { try watcher.enqueue(contentsOf: buffers) }
            #expect(throws: BatchedUDPError.messageTooLarge(size: 3_000, limit: 2_048)) {
                try watcher.enqueue(contentsOf: buffers, partially: true)
            }
        }
        // The byte budget (750) stops a partial batch after seven 100-byte datagrams; one too large after
        // them is still reported, and then nothing is queued.
        let hundreds = (0..<9).map { sequencePayload(200 + $0, size: 100) }
        try withBuffers(hundreds + [tooLarge]) { buffers throws in
            #expect(throws: BatchedUDPError.messageTooLarge(size: 3_000, limit: 2_048)) {
                try watcher.enqueue(contentsOf: buffers, partially: true)
            }
        }
        #expect(watcher.counters.queued == 0 && watcher.counters.enqueued == next)
        try withBuffers(hundreds) { buffers throws in
            #expect(throws: BatchedUDPError.queueFull(capacity: 8, byteCapacity: 750)) { try watcher.enqueue(contentsOf: buffers) }
            #expect(try watcher.enqueue(contentsOf: buffers, partially: true) == next..<next + 7)
        }
        #expect(watcher.counters.queuedBytes == 700)
        runUntilDrained(watcher)
        #expect(receiver.receive(7) == Array(hundreds.prefix(7)))
        expectAccounted(watcher)
    }

    /// The copying batch copies datagrams of the first one's size in a loop of their own (one per size
    /// class: under 16 bytes, 16 to 32, 33 to 64, more) and hands the rest of the call to the general
    /// loop at the first of another size, an empty buffer with or without an address among them. Every
    /// byte arrives, in order, with GSO and without.
    @Test(arguments: [BatchedUDPWatcher.Configuration.Segmentation.automatic, .off])
    func copyingBatchesOfOneSizeStopAtTheFirstOfAnother(segmentation: BatchedUDPWatcher.Configuration.Segmentation) throws {
        let loop = try EventLoop()
        let (watcher, receiver) = try connectedPair(configuration(capacity: 64, segmentation: segmentation), loop: loop)
        let batches: [[Int]] = [
            [64, 64, 64, 65, 64, 64], [20, 20, 20, 21, 19, 20], [33, 33, 32, 33], [9, 9, 9, 9, 10],
            [1200, 1200, 1199, 1200], [40, 40, 0, 40, 40], [40, 40, -1, 40], [16, 16, 64, 64, 2048, 16],
        ]
        var expected: [[UInt8]] = []
        for sizes in batches {
            // -1: an empty buffer that has an address.
            let payloads = sizes.indices.map { sequencePayload(expected.count + $0, size: max(sizes[$0], 0)) }
            let storage = payloads.map { payload -> UnsafeMutableRawBufferPointer in
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(payload.count, 1), alignment: 1)
                buffer.copyBytes(from: payload)
                return UnsafeMutableRawBufferPointer(rebasing: buffer[0..<payload.count])
            }
            defer { storage.forEach { $0.deallocate() } }
            var buffers = storage.map { UnsafeRawBufferPointer($0) }
            if let empty = sizes.firstIndex(of: 0) {
                buffers[empty] = UnsafeRawBufferPointer(start: nil, count: 0)
                #expect(buffers[empty].baseAddress == nil)
            }
            #expect(buffers.allSatisfy { $0.count == 0 || $0.baseAddress != nil })
            #expect(try watcher.enqueue(contentsOf: buffers) == expected.count..<expected.count + sizes.count)
            #expect(watcher.counters.queuedBytes == payloads.map(\.count).reduce(0, +))
            expected += payloads
            runUntilDrained(watcher)
        }
        #expect(receiver.receive(expected.count) == expected)
        #expect(watcher.counters.sentBytes == expected.map(\.count).reduce(0, +))
        expectAccounted(watcher)
    }

    /// A slot that carried metadata (an ECN message) and later carries a plain datagram to the connected
    /// peer sends it plain: the ring clears what leaves it. Four slots, reused twice over.
    @Test func reusedSlotsCarryNoOldMetadata() throws {
        let loop = try EventLoop()
        let server = try MetadataTests.Server(loop: loop, bind: .loopbackIPv4(port: 0), metadata: [.ecn], plain: true)
        let socket = try UDPSocket(family: .ipv4)
        try socket.connect(to: .loopbackIPv4(port: server.port))
        let watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration(capacity: 4))
        for i in 0..<3 { try watcher.enqueue(sequencePayload(i), metadata: SendMetadata(ecn: .ce)) }
        runUntilDrained(watcher)
        for i in 3..<11 {
            try watcher.enqueue(sequencePayload(i))
            if i % 3 == 0 { runUntilDrained(watcher) }
        }
        try watcher.enqueue(count: 3) { index, slot in write(11 + index, size: 16, into: slot) }
        runUntilDrained(watcher)
        MetadataTests().settle(loop)
        #expect(server.received.map { sequence(of: $0.bytes) } == Array(0..<14))
        #expect(server.received.map(\.ecn) == Array(repeating: ECN.ce, count: 3) + Array(repeating: ECN.notECT, count: 11))
        expectAccounted(watcher)
    }

    @discardableResult
    func withBuffers<R>(_ payloads: [[UInt8]], _ body: ([UnsafeRawBufferPointer]) throws -> R) rethrows -> R {
        let storage = payloads.map { payload -> UnsafeMutableRawBufferPointer in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: payload.count, alignment: 1)
            buffer.copyBytes(from: payload)
            return buffer
        }
        defer { storage.forEach { $0.deallocate() } }
        return try body(storage.map { UnsafeRawBufferPointer($0) })
    }
}
