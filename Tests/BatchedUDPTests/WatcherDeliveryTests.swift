@testable import BatchedUDP
import Libev
import Testing
import TestSupport

@Suite struct WatcherDeliveryTests {
    /// libuv#5245 skipped messages 20–39; every index must go out once, in order, across batches and calls
    /// (one datagram per message: segmentation off).
    @Test(.needsLargeReceiveBuffers, arguments: [(21, 20), (45, 20), (1025, 1024), (2049, 1024), (2049, 7)])
    func everyIndexIsSentOnceInOrder(count: Int, batchSize: Int) throws {
        let loop = try EventLoop()
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.capacity = 4096
        configuration.batchSize = batchSize
        configuration.maxCallsPerDrain = 1_000
        configuration.segmentation = .off
        let (watcher, receiver) = try connectedPair(configuration, loop: loop)
        for i in 0..<count { #expect(try watcher.enqueue(sequencePayload(i)) == i) }
        #expect(watcher.isDrainScheduled)
        loop.run()
        let received = receiver.receive(count)
        #expect(received.map(sequence(of:)) == Array(0..<count))
        #expect(receiver.pending().isEmpty, "nothing twice")
        let counters = watcher.counters
        #expect(counters.sent == count && counters.queued == 0)
        #expect(counters.sendmmsgCalls >= (count + batchSize - 1) / batchSize)
        expectAccounted(watcher)
    }

    /// Everything enqueued in one iteration leaves in one sendmmsg at the end of that iteration.
    @Test func oneIterationOneCall() throws {
        let loop = try EventLoop()
        let (watcher, receiver) = try connectedPair(loop: loop)
        let producer = TimerWatcher(loop: loop, after: 0) { _ in
            for i in 0..<100 { try! watcher.enqueue(sequencePayload(i)) }
        }
        producer.start()
        loop.run()
        #expect(watcher.counters.sendmmsgCalls == 1)
        #expect(receiver.receive(100).count == 100)
    }

    @Test func zeroCopyGatherAndEmptyDatagrams() throws {
        let loop = try EventLoop()
        let (watcher, receiver) = try connectedPair(loop: loop)
        try watcher.enqueue { slot in
            slot.copyBytes(from: "zero-copy".utf8)
            return 9
        }
        let one: [UInt8] = Array("one".utf8), two: [UInt8] = Array("two".utf8)
        try one.withUnsafeBytes { a in
            try two.withUnsafeBytes { b in _ = try watcher.enqueue(gathering: [a, b]) }
        }
        try watcher.enqueue([])
        #expect { try watcher.enqueue(writingWith: { _ in throw Errno.EPERM }) } throws: { $0 as? Errno == .EPERM }
        loop.run()
        let received = receiver.receive(3)
        #expect(received.map { String(decoding: $0, as: UTF8.self) } == ["zero-copy", "onetwo", ""])
        #expect(watcher.counters.enqueued == 3, "a throwing body queues nothing")
        expectAccounted(watcher)
    }

    /// Netty#5233: each slot has its own address, so one batch reaches many peers, IPv4 and IPv6.
    @Test func oneBatchManyDestinations() throws {
        let loop = try EventLoop()
        let v4 = try (0..<3).map { _ in try Receiver() }
        let v6 = try (0..<2).map { _ in try Receiver(.loopbackIPv6(port: 0)) }
        let dualStack = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv6))
        let plain = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4))
        let all = v4 + v6
        for round in 0..<10 {
            for (index, receiver) in all.enumerated() {
                try dualStack.enqueue([UInt8(index), UInt8(round), 6], to: receiver.address)
                if index < v4.count { try plain.enqueue([UInt8(index), UInt8(round), 4], to: receiver.address) }
            }
        }
        loop.run()
        #expect(dualStack.counters.sendmmsgCalls == 1 && dualStack.counters.sent == 50)
        for (index, receiver) in all.enumerated() {
            let expected = index < v4.count ? 20 : 10
            let received = receiver.receive(expected)
            #expect(received.count == expected)
            #expect(received.allSatisfy { $0[0] == UInt8(index) }, "receiver \(index) got someone else's datagram")
            #expect(receiver.pending().isEmpty)
        }
    }

    /// Queued datagrams keep their watcher alive; the owner may let go right after enqueueing.
    @Test func releasedWatcherStillSendsWhatItQueued() throws {
        let loop = try EventLoop()
        let receiver = try Receiver()
        weak var weakWatcher: BatchedUDPWatcher?
        do {
            let socket = try UDPSocket(family: .ipv4)
            try socket.connect(to: receiver.address)
            let watcher = try BatchedUDPWatcher(loop: loop, socket: socket)
            weakWatcher = watcher
            for i in 0..<10 { try watcher.enqueue(sequencePayload(i)) }
        }
        #expect(weakWatcher != nil)
        loop.run()
        #expect(receiver.receive(10).map(sequence(of:)) == Array(0..<10))
        #expect(weakWatcher == nil, "freed once its ring is empty")
    }

    /// The watcher shares a host's loop: a borrowed loop run by someone else drains it the same way.
    @Test func worksOnABorrowedLoop() throws {
        let owner = try EventLoop()
        let borrowed = EventLoop(borrowing: owner.raw)
        let (watcher, receiver) = try connectedPair(loop: borrowed)
        for i in 0..<5 { try watcher.enqueue(sequencePayload(i)) }
        owner.run()
        #expect(receiver.receive(5).count == 5)
        #expect(!watcher.isDrainScheduled && !watcher.isWaitingForWritable)
    }
}
