@testable import BatchedUDP
import Glibc
import Libev
import Testing
import TestSupport

@Suite struct WatcherInputTests {
    @Test func refusesWhatIsNotAUDPSocket() throws {
        let loop = try EventLoop()
        let tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(tcp) }
        #expect { _ = try BatchedUDPWatcher(loop: loop, fileDescriptor: tcp) } throws: {
            "\($0)".contains("stream (TCP) socket")
        }
        #expect { _ = try BatchedUDPWatcher(loop: loop, fileDescriptor: 60_000) } throws: {
            "\($0)".contains("EBADF")
        }
        let closed = try UDPSocket(family: .ipv4)
        try closed.close()
        #expect { _ = try BatchedUDPWatcher(loop: loop, socket: closed) } throws: { "\($0)".contains("EBADF") }
    }

    @Test func setsNonBlockingOnABlockingSocket() throws {
        let loop = try EventLoop()
        let socket = try UDPSocket(family: .ipv4)
        try socket.setNonBlocking(false)
        _ = try BatchedUDPWatcher(loop: loop, socket: socket)
        #expect(try socket.isNonBlocking)
    }

    @Test func refusesBadConfigurationNamingTheField() throws {
        let loop = try EventLoop()
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.batchSize = 2000
        #expect { _ = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4), configuration: configuration) } throws: {
            "\($0)".contains("batchSize must be 1...1024")
        }
        configuration = .init()
        configuration.lowWaterMark = .init(messages: 2000, bytes: 0)
        #expect { _ = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4), configuration: configuration) } throws: {
            "\($0)".contains("lowWaterMark")
        }
    }

    @Test func refusesBadDatagramsAndKeepsNothing() throws {
        let loop = try EventLoop()
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.maxDatagramSize = 100
        let v4 = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4), configuration: configuration)
        let target = SocketAddress.loopbackIPv4(port: 9)
        #expect(throws: BatchedUDPError.messageTooLarge(size: 101, limit: 100)) {
            try v4.enqueue([UInt8](repeating: 0, count: 101), to: target)
        }
        #expect(throws: BatchedUDPError.destinationRequired) { try v4.enqueue([1]) }
        #expect(throws: BatchedUDPError.addressFamilyMismatch(destination: .loopbackIPv6(port: 9), socket: .ipv4)) {
            try v4.enqueue([1], to: .loopbackIPv6(port: 9))
        }
        let v6only = try UDPSocket(family: .ipv6)
        try v6only.setIPv6Only(true)
        let v6 = try BatchedUDPWatcher(loop: loop, socket: v6only)
        #expect(throws: BatchedUDPError.addressFamilyMismatch(destination: target, socket: .ipv6)) {
            try v6.enqueue([1], to: target)
        }
        let big = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4), configuration: {
            var c = BatchedUDPWatcher.Configuration()
            c.capacity = 2
            c.maxDatagramSize = 65_527
            return c
        }())
        #expect(throws: BatchedUDPError.messageTooLarge(size: 65_508, limit: 65_507)) {
            try big.enqueue([UInt8](repeating: 0, count: 65_508), to: target)
        }
        v4.close()
        #expect(throws: BatchedUDPError.closed) { try v4.enqueue([1], to: target) }
        for watcher in [v4, v6, big] {
            #expect(watcher.counters.enqueued == 0)
            expectAccounted(watcher)
        }
    }

    /// A full ring refuses with queueFull, keeps what it has, and reports writability at the marks.
    @Test func fullRingRefusesAndReportsWritability() throws {
        let loop = try EventLoop()
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.capacity = 8
        configuration.highWaterMark = .init(messages: 6, bytes: 1 << 20)
        configuration.lowWaterMark = .init(messages: 2, bytes: 1 << 20)
        let (watcher, receiver) = try connectedPair(configuration, loop: loop)
        var changes: [(Bool, Int)] = []
        watcher.onWritabilityChanged = { watcher, writable in changes.append((writable, watcher.counters.queued)) }
        for i in 0..<8 { try watcher.enqueue(sequencePayload(i)) }
        #expect(changes.map(\.0) == [false] && changes.first?.1 == 6, "unwritable on reaching the high mark")
        #expect(!watcher.isWritable)
        #expect(throws: BatchedUDPError.queueFull(capacity: 8, byteCapacity: 8 * 2048)) { try watcher.enqueue(sequencePayload(8)) }
        #expect(watcher.counters.rejected == 1)
        loop.run()
        #expect(changes.map(\.0) == [false, true])
        #expect(watcher.isWritable)
        #expect(receiver.receive(8).map(sequence(of:)) == Array(0..<8))
        #expect(watcher.counters.peakQueued == 8)
        expectAccounted(watcher)
    }

    @Test func byteCapacityIsAQueueLimitToo() throws {
        let loop = try EventLoop()
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.byteCapacity = 100
        let (watcher, _) = try connectedPair(configuration, loop: loop)
        try watcher.enqueue([UInt8](repeating: 1, count: 60))
        #expect(throws: BatchedUDPError.queueFull(capacity: 1024, byteCapacity: 100)) {
            try watcher.enqueue([UInt8](repeating: 1, count: 41))
        }
        try watcher.enqueue([UInt8](repeating: 1, count: 40))
        #expect(watcher.counters.queuedBytes == 100)
        watcher.close()
        expectAccounted(watcher)
    }
}
