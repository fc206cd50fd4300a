@testable import BatchedUDP
import Glibc
import Libev
import Testing
import TestSupport

@Suite struct ReaderTests {
    /// Collects copies of what a reader delivers.
    final class Inbox {
        var datagrams: [(sender: SocketAddress?, bytes: [UInt8])] = []
        var batches: [Int] = []
        var problems: [ReceiveProblem] = []
    }

    func reader(on socket: UDPSocket, loop: EventLoop, _ configure: (inout BatchedUDPReader.Configuration) -> Void = { _ in })
        throws -> (BatchedUDPReader, Inbox)
    {
        var configuration = BatchedUDPReader.Configuration()
        configure(&configuration)
        let inbox = Inbox()
        let reader = try BatchedUDPReader(loop: loop, socket: socket, configuration: configuration) { _, batch in
            inbox.batches.append(batch.count)
            for datagram in batch { inbox.datagrams.append((datagram.sender, Array(datagram.payload))) }
        }
        reader.onProblem = { _, problem in inbox.problems.append(problem) }
        return (reader, inbox)
    }

    /// Runs the loop until `done()` or the failsafe.
    func run(_ loop: EventLoop, until done: () -> Bool, sourceLocation: SourceLocation = #_sourceLocation) {
        let guardTimer = TimerWatcher(loop: loop, after: 5) { timer in
            Issue.record("timed out", sourceLocation: sourceLocation)
            timer.loop.breakLoop()
        }
        guardTimer.keepsLoopAlive = false
        guardTimer.start()
        while !done() && guardTimer.isActive { loop.run(.once) }
    }

    @Test func refusesBadConfigurationNamingTheField() throws {
        let loop = try EventLoop()
        #expect { _ = try self.reader(on: UDPSocket(family: .ipv4), loop: loop) { $0.batchSize = 0 } } throws: {
            "\($0)".contains("batchSize must be 1...1024 (UIO_MAXIOV), got 0")
        }
        #expect { _ = try self.reader(on: UDPSocket(family: .ipv4), loop: loop) { $0.maxDatagramSize = 70_000 } } throws: {
            "\($0)".contains("maxDatagramSize must be 1...65535, got 70000")
        }
        #expect { _ = try self.reader(on: UDPSocket(family: .ipv4), loop: loop) { $0.maxCallsPerEvent = 0 } } throws: {
            "\($0)".contains("maxCallsPerEvent must be at least 1, got 0")
        }
    }

    @Test func refusesWhatIsNotAUDPSocket() throws {
        let loop = try EventLoop()
        let tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(tcp) }
        #expect { _ = try self.reader(on: UDPSocket(adopting: tcp), loop: loop) } throws: { "\($0)".contains("stream (TCP) socket") }
        // A descriptor closed under the UDPSocket that adopted it. Its number is near the descriptor limit,
        // where the tests running alongside (which get the lowest free numbers) cannot reuse it.
        let socket = try UDPSocket(family: .ipv4)
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let high = fcntl(socket.fileDescriptor, F_DUPFD_CLOEXEC, Int32(clamping: limit.rlim_cur) - 16)
        try #require(high >= 0, "F_DUPFD: errno \(errno)")
        let adopted = try UDPSocket(adopting: high)
        close(high)
        #expect { _ = try self.reader(on: adopted, loop: loop) } throws: { "\($0)".contains("EBADF") }
    }

    @Test(.needsLargeReceiveBuffers) func mixedSizesAndSendersArriveExactly() throws {
        let loop = try EventLoop()
        let server = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        try server.setTestReceiveBuffer(8 << 20)
        let (reader, inbox) = try reader(on: server, loop: loop) { $0.batchSize = 16 }
        reader.start()
        let senders = try (0..<3).map { _ in try UDPSocket(bindingTo: .loopbackIPv4(port: 0)) }
        var sent: [(SocketAddress, [UInt8])] = []
        for i in 0..<300 {
            let sender = senders[i % 3]
            let size = (i * 37) % 1500
            let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &+ i) }
            try bytes.withUnsafeBytes { raw in
                try server.localAddress.withSockAddr { address, length in
                    #expect(sendto(sender.fileDescriptor, raw.baseAddress, raw.count, 0, address, length) == size)
                }
            }
            sent.append((try sender.localAddress, bytes))
        }
        run(loop) { inbox.datagrams.count == 300 }
        #expect(inbox.datagrams.count == 300)
        #expect(zip(inbox.datagrams, sent).allSatisfy { $0.sender == $1.0 && $0.bytes == $1.1 })
        #expect(inbox.batches.allSatisfy { $0 <= 16 })
        #expect(reader.counters.datagrams == 300 && reader.counters.bytes == sent.map(\.1.count).reduce(0, +))
        #expect(inbox.problems.isEmpty)
    }

    @Test func truncatedDatagramsAreReportedNotDelivered() throws {
        let loop = try EventLoop()
        let server = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        let (reader, inbox) = try reader(on: server, loop: loop) { $0.maxDatagramSize = 100 }
        reader.start()
        let client = try UDPSocket(family: .ipv4)
        try client.connect(to: server.localAddress)
        for size in [50, 150, 100, 80] {
            let bytes = [UInt8](repeating: UInt8(size), count: size)
            #expect(bytes.withUnsafeBytes { send(client.fileDescriptor, $0.baseAddress, $0.count, 0) } == size)
        }
        run(loop) { inbox.datagrams.count == 3 }
        #expect(inbox.datagrams.map(\.bytes.count) == [50, 100, 80])
        #expect(inbox.problems == [.truncated(sender: try client.localAddress, size: 150, limit: 100)])
        #expect(reader.counters.truncated == 1)
    }

    @Test func perCallbackBudgetHolds() throws {
        let loop = try EventLoop()
        let server = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        let (reader, inbox) = try reader(on: server, loop: loop) {
            $0.batchSize = 4
            $0.maxCallsPerEvent = 2
        }
        reader.start()
        let client = try UDPSocket(family: .ipv4)
        try client.connect(to: server.localAddress)
        for i in 0..<20 {
            var byte = UInt8(i)
            #expect(send(client.fileDescriptor, &byte, 1, 0) == 1)
        }
        loop.run(.once)
        #expect(reader.counters.recvmmsgCalls == 2)
        #expect(inbox.datagrams.count == 8, "one readiness callback reads at most 2 × 4")
        run(loop) { inbox.datagrams.count == 20 }
        #expect(inbox.datagrams.map { Int($0.bytes[0]) } == Array(0..<20))
    }

    @Test func ipv6SendersAreReported() throws {
        let loop = try EventLoop()
        let server = try UDPSocket(bindingTo: .loopbackIPv6(port: 0))
        let (reader, inbox) = try reader(on: server, loop: loop)
        reader.start()
        let client = try UDPSocket(bindingTo: .loopbackIPv6(port: 0))
        try client.connect(to: server.localAddress)
        var payload: [UInt8] = [6, 6, 6]
        #expect(send(client.fileDescriptor, &payload, 3, 0) == 3)
        run(loop) { inbox.datagrams.count == 1 }
        #expect(inbox.datagrams.first?.sender == (try client.localAddress))
        #expect(inbox.datagrams.first?.sender?.family == .ipv6)
    }

    /// An ICMP port-unreachable for an earlier send surfaces as ECONNREFUSED on a read; it is reported
    /// and reading continues, so the next datagram from the peer arrives.
    @Test func queuedICMPErrorDoesNotStopReading() throws {
        let loop = try EventLoop()
        let placeholder = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        let peerAddress = try placeholder.localAddress
        try placeholder.close()
        let socket = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        try socket.connect(to: peerAddress)
        let (reader, inbox) = try reader(on: socket, loop: loop)
        reader.start()
        var byte: UInt8 = 1
        #expect(send(socket.fileDescriptor, &byte, 1, 0) == 1)
        run(loop) { !inbox.problems.isEmpty }
        #expect(inbox.problems == [.error(.ECONNREFUSED)])
        #expect(reader.isReading)

        let peer = try UDPSocket(bindingTo: peerAddress)
        try peer.connect(to: socket.localAddress)
        byte = 2
        #expect(send(peer.fileDescriptor, &byte, 1, 0) == 1)
        run(loop) { inbox.datagrams.count == 1 }
        #expect(inbox.datagrams.first?.bytes == [2])
    }

    /// With IP_RECVERR on, an ICMP port unreachable for an unconnected socket waits in the error queue and
    /// epoll reports EPOLLERR until it is read: the reader reports it with the destination that failed,
    /// then waits quietly instead of being woken again and again.
    @Test func errorQueueEntryIsReportedWithItsDestinationAndReadingSettles() throws {
        let loop = try EventLoop()
        let placeholder = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        let deadAddress = try placeholder.localAddress
        try placeholder.close()
        let socket = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        try socket.setReceivesErrors(true)
        let (reader, inbox) = try reader(on: socket, loop: loop)
        reader.start()
        let sender = try BatchedUDPWatcher(loop: loop, socket: socket)
        try sender.enqueue([1, 2, 3], to: deadAddress)
        run(loop) { inbox.problems.contains(.deliveryError(.ECONNREFUSED, destination: deadAddress)) }
        #expect(reader.counters.deliveryErrors == 1)
        #expect(sender.counters.sent == 1)
        // Nothing else is pending now: a further 0.2 s of looping makes no more recvmmsg calls.
        let calls = reader.counters.recvmmsgCalls
        let settle = TimerWatcher(loop: loop, after: 0.2) { timer in timer.loop.breakLoop() }
        settle.start()
        loop.run()
        #expect(reader.counters.recvmmsgCalls == calls, "the reader kept waking up: \(reader.counters)")
        #expect(reader.isReading)
    }

    /// GRO: a GSO sender's super-datagrams (128 × 1,472 B in runs of 44, the most under 65,507 bytes, then
    /// two runs of 64 × 700 B ending in a 100-byte one) arrive unsplit on loopback; the reader reads the
    /// segment size and hands over the same datagrams, byte for byte, none truncated.
    @Test func groMergedReceivesAreSplitBackIntoTheSameDatagrams() throws {
        let loop = try EventLoop()
        let socket = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        try socket.setTestReceiveBuffer(16 << 20)
        let (reader, inbox) = try reader(on: socket, loop: loop) { $0.gro = true }
        reader.start()
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.capacity = 1024
        let sender = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4), configuration: configuration)
        var expected: [[UInt8]] = []
        for i in 0..<(64 * 4) {
            let size = i < 128 ? 1472 : (i % 64 == 63 ? 100 : 700)
            expected.append(sequencePayload(i, size: size))
            try sender.enqueue(expected.last!, to: socket.localAddress)
        }
        run(loop) { inbox.datagrams.count >= expected.count }
        #expect(inbox.problems.isEmpty, "\(inbox.problems)")
        #expect(inbox.datagrams.map(\.bytes) == expected)
        let senderPort = try sender.socket.localAddress.port
        #expect(inbox.datagrams.allSatisfy { $0.sender == .loopbackIPv4(port: senderPort) })
        #expect(sender.counters.gsoSends == 5)
        #expect(reader.counters.mergedReceives == 5 && reader.counters.truncated == 0, "\(reader.counters)")
        #expect(reader.counters.datagrams == expected.count)
    }

    /// With GRO the slot is 64 KiB, but the reader's datagram limit still holds, datagram by datagram.
    @Test func groStillReportsDatagramsOverTheLimit() throws {
        let loop = try EventLoop()
        let socket = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        let (reader, inbox) = try reader(on: socket, loop: loop) {
            $0.gro = true
            $0.maxDatagramSize = 1000
        }
        reader.start()
        let sender = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4))
        for i in 0..<3 { try sender.enqueue(sequencePayload(i, size: 1200), to: socket.localAddress) }
        try sender.enqueue(sequencePayload(3, size: 500), to: socket.localAddress)
        run(loop) { inbox.problems.count + inbox.datagrams.count >= 4 }
        #expect(inbox.datagrams.map { sequence(of: $0.bytes) } == [3])
        #expect(inbox.problems.count == 3)
        #expect(inbox.problems.allSatisfy { if case .truncated(_, 1200, 1000) = $0 { true } else { false } })
    }

    /// Reader and watcher on one socket (separate read and write watchers): an echo.
    @Test(.needsLargeReceiveBuffers) func readerAndWatcherShareASocket() throws {
        let loop = try EventLoop()
        let server = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        try server.setTestReceiveBuffer(8 << 20)
        var roomy = BatchedUDPWatcher.Configuration()
        roomy.capacity = 4096
        let echo = try BatchedUDPWatcher(loop: loop, socket: server, configuration: roomy)
        let reader = try BatchedUDPReader(loop: loop, socket: server) { _, batch in
            for datagram in batch { try! echo.enqueue(datagram.payload, to: datagram.sender) }
        }
        reader.start()
        let client = try Receiver(receiveBuffer: 8 << 20)
        let sender = try BatchedUDPWatcher(loop: loop, socket: client.socket, configuration: roomy)
        for i in 0..<2000 { try sender.enqueue(sequencePayload(i, size: 8 + i % 900), to: server.localAddress) }
        var echoed: [[UInt8]] = []
        let collector = try IOWatcher(loop: loop, fileDescriptor: client.socket.fileDescriptor, events: .read) { watcher, _ in
            echoed += client.pending()
            if echoed.count >= 2000 { watcher.stop() }
        }
        collector.start()
        run(loop) { echoed.count >= 2000 }
        #expect(echoed.map(sequence(of:)) == Array(0..<2000))
        #expect(zip(echoed, 0..<2000).allSatisfy { $0.count == 8 + $1 % 900 })
        #expect(echo.counters.failed == 0 && sender.counters.failed == 0)
    }
}
