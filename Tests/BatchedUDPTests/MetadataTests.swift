@testable import BatchedUDP
import CUDPShims
import Foundation
import Glibc
import Libev
import Testing
import TestSupport

/// Per-datagram metadata, both ways, on real sockets: a server on a wildcard address answers each client
/// from the address that client contacted; ECN sent is ECN received; runs with different metadata are
/// never merged; a truncated control buffer is reported.
@Suite(.serialized) struct MetadataTests {
    /// A wildcard server: a reader asking for `metadata` and a watcher on one socket; replies with
    /// `enqueue(_:replyingTo:)` (or, `plain`, to the sender alone, as before this existed).
    final class Server {
        let socket: UDPSocket
        let reader: BatchedUDPReader
        let watcher: BatchedUDPWatcher

        struct ReceivedCopy {
            var bytes: [UInt8]
            var sender: SocketAddress?
            var destination: SocketAddress?
            var interfaceIndex: UInt32?
            var ecn: ECN?
            var receiveTime: Duration?
        }

        init(loop: EventLoop, bind: SocketAddress, ipv6Only: Bool = false, metadata: BatchedUDPReader.Metadata, plain: Bool = false,
             configure: (inout BatchedUDPReader.Configuration) -> Void = { _ in }) throws {
            socket = try UDPSocket(family: bind.family)
            if bind.family == .ipv6 { try socket.setIPv6Only(ipv6Only) }
            try socket.bind(to: bind)
            let watcher = try BatchedUDPWatcher(loop: loop, socket: socket)
            self.watcher = watcher
            var configuration = BatchedUDPReader.Configuration()
            configuration.metadata = metadata
            configure(&configuration)
            var seen: [ReceivedCopy] = []
            reader = try BatchedUDPReader(loop: loop, socket: socket, configuration: configuration) { _, batch in
                for datagram in batch {
                    seen.append(ReceivedCopy(bytes: Array(datagram.payload), sender: datagram.sender, destination: datagram.destination,
                                             interfaceIndex: datagram.interfaceIndex, ecn: datagram.ecn, receiveTime: datagram.receiveTime))
                    if plain {
                        _ = try? watcher.enqueue(datagram.payload, to: datagram.sender)
                    } else {
                        _ = try? watcher.enqueue(datagram.payload, replyingTo: datagram)
                    }
                }
            }
            reader.start()
            self.seenBox = { seen }
        }

        private var seenBox: () -> [ReceivedCopy] = { [] }
        var received: [ReceivedCopy] { seenBox() }
        var port: UInt16 { (try? socket.localAddress.port) ?? 0 }
    }

    /// Runs the loop for a moment (replies go out, clients' datagrams come in).
    func settle(_ loop: EventLoop, _ seconds: Double = 0.05) {
        let pause = TimerWatcher(loop: loop, after: seconds) { timer in timer.loop.breakLoop() }
        pause.start()
        loop.run()
        pause.stop()
    }

    /// Clients connected to each of `hosts` (the server's port): each sends one datagram; returns what
    /// each got back (a connected client only accepts datagrams from the address it connected to).
    func roundTrip(_ loop: EventLoop, to hosts: [String], port: UInt16, family: SocketAddress.Family) throws -> [[[UInt8]]] {
        let clients = try hosts.map { host -> Receiver in
            let address = family == .ipv4 ? try SocketAddress(ipv4: host, port: port) : try SocketAddress(ipv6: host, port: port)
            let client = try Receiver(family == .ipv4 ? .loopbackIPv4(port: 0) : .loopbackIPv6(port: 0))
            try client.socket.connect(to: address)
            return client
        }
        for (index, client) in clients.enumerated() {
            let bytes: [UInt8] = [UInt8(index), 0xEC, 0x40]
            #expect(bytes.withUnsafeBytes { send(client.socket.fileDescriptor, $0.baseAddress, 3, 0) } == 3)
        }
        settle(loop)
        return clients.map { $0.receive(1, timeout: 0.3) }
    }

    /// The reproduction: `--listen 0.0.0.0:P`, clients connected to 127.0.0.2 and 127.0.0.3. Each
    /// gets its answer, from the address it contacted; the reader says which address that was. Answered
    /// without the metadata (as before), the clients of 127.0.0.2 and .3 get nothing.
    @Test func wildcardIPv4ServerAnswersFromTheContactedAddress() throws {
        let loop = try EventLoop()
        let server = try Server(loop: loop, bind: SocketAddress(ipv4: 0, 0, 0, 0, port: 0), metadata: [.destination])
        let hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        let replies = try roundTrip(loop, to: hosts, port: server.port, family: .ipv4)
        #expect(replies == hosts.indices.map { [[UInt8($0), 0xEC, 0x40]] })
        #expect(server.received.map { $0.destination?.description } == hosts.map { "\($0):\(server.port)" })
        #expect(server.received.allSatisfy { ($0.interfaceIndex ?? 0) > 0 }, "lo's index")

        let plain = try Server(loop: loop, bind: SocketAddress(ipv4: 0, 0, 0, 0, port: 0), metadata: [], plain: true)
        let lost = try roundTrip(loop, to: hosts, port: plain.port, family: .ipv4)
        #expect(lost.map(\.count) == [1, 0, 0], "without the source address the kernel answers from 127.0.0.1")
    }

    /// ECN sent is ECN received, on IPv4, IPv6 and IPv4 through a dual-stack sender; each codepoint
    /// splits GSO runs (four runs of 20 equal datagrams go out as four super-datagrams, not one).
    @Test(arguments: [(SocketAddress.Family.ipv4, false), (.ipv6, true), (.ipv6, false)])
    func ecnSentIsECNReceived(family: SocketAddress.Family, ipv6Only: Bool) throws {
        let loop = try EventLoop()
        let receiverBind: SocketAddress = family == .ipv4 || !ipv6Only ? .loopbackIPv4(port: 0) : .loopbackIPv6(port: 0)
        let server = try Server(loop: loop, bind: receiverBind, metadata: [.ecn, .receiveTime], plain: true)
        let socket = try UDPSocket(family: family)
        if family == .ipv6 { try socket.setIPv6Only(ipv6Only) }
        let sender = try BatchedUDPWatcher(loop: loop, socket: socket)
        let target = try server.socket.localAddress
        let codepoints: [ECN] = [.ect0, .ect1, .ce, .notECT]
        for (run, ecn) in codepoints.enumerated() {
            for i in 0..<20 { try sender.enqueue(sequencePayload(run * 20 + i, size: 100), to: target, metadata: SendMetadata(ecn: ecn)) }
        }
        runUntilDrained(sender)
        settle(loop)
        let received = server.received
        #expect(received.count == 80)
        #expect(received.map { $0.ecn } == codepoints.flatMap { Array(repeating: Optional($0), count: 20) })
        #expect(sender.counters.gsoSends == 4, "one super-datagram per codepoint: \(sender.counters)")
        let now = Date().timeIntervalSince1970
        #expect(received.allSatisfy { abs(Double($0.receiveTime?.components.seconds ?? 0) - now) < 60 }, "kernel receive times on the realtime clock")
    }

    /// A run with a source address per datagram: datagrams with equal metadata coalesce (a super-datagram
    /// carries PKTINFO and UDP_SEGMENT together), different ones split, and each arrives from its source.
    @Test func sourceAddressesSplitRunsAndArriveFromTheirSource() throws {
        let loop = try EventLoop()
        let receiver = try Receiver()
        let sender = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4))
        let sources = try ["127.0.0.2", "127.0.0.3", "127.0.0.2"].map { try SocketAddress(ipv4: $0, port: 0) }
        for (run, source) in sources.enumerated() {
            for i in 0..<30 { try sender.enqueue(sequencePayload(run * 30 + i, size: 200), to: receiver.address, metadata: SendMetadata(source: source)) }
        }
        runUntilDrained(sender)
        let received = receiver.receiveWithSenders(90)
        #expect(received.map { sequence(of: $0.bytes) } == Array(0..<90))
        #expect(received.map(\.sender.host) == sources.flatMap { Array(repeating: $0.host, count: 30) })
        #expect(sender.counters.gsoSends == 3, "\(sender.counters)")
    }

    /// The source's family must be the destination's; the error names both and nothing is queued.
    @Test func mismatchedSourceFamilyIsRefused() throws {
        let loop = try EventLoop()
        let sender = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv6))
        let v4 = SocketAddress.loopbackIPv4(port: 9)
        #expect(throws: BatchedUDPError.sourceFamilyMismatch(source: .loopbackIPv6(port: 0), destination: v4)) {
            try sender.enqueue([1], to: v4, metadata: SendMetadata(source: .loopbackIPv6(port: 0)))
        }
        #expect(sender.counters.enqueued == 0)
        // An IPv4-mapped source for an IPv4 destination is the IPv4 address.
        try sender.enqueue([1], to: v4, metadata: SendMetadata(source: SocketAddress.loopbackIPv4(port: 0).ipv4Mapped))
        #expect(sender.counters.enqueued == 1)
        sender.close()  // a watcher holding datagrams keeps itself alive
    }

    /// A failure report carries the datagram's metadata.
    @Test func failureReportsCarryTheMetadata() throws {
        let loop = try EventLoop()
        let sender = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4))
        var failures: [SendFailure] = []
        sender.onError = { _, failure in failures.append(failure) }
        let metadata = SendMetadata(source: try SocketAddress(ipv4: "127.0.0.5", port: 0), interfaceIndex: 1, ecn: .ect0)
        try sender.enqueue([1, 2, 3], to: SocketAddress(ipv4: 127, 0, 0, 1, port: 0), metadata: metadata)
        runUntilDrained(sender)
        #expect(failures.map(\.errno) == [.EINVAL])
        #expect(failures.first?.metadata == metadata)
        #expect(failures.first?.description.contains("from 127.0.0.5, interface 1, ECN ECT(0)") == true, "\(failures)")
    }

    /// A kernel or driver that refuses the ECN control message (EIO; the seam plays it): the datagram
    /// goes out without it, ECN is dropped for the queued and later datagrams, counted; nothing is lost.
    @Test func refusedECNFallsBackToSendingWithout() throws {
        let loop = try EventLoop()
        let server = try Server(loop: loop, bind: .loopbackIPv4(port: 0), metadata: [.ecn], plain: true)
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.segmentation = .off
        let sender = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4), configuration: configuration)
        // Refuses every message that carries IP_TOS, as such a device would: the first one fails the
        // call, a later one ends the count before it.
        sender.sendSeam = { fd, messages, count in
            for index in 0..<count {
                var header = messages[index].msg_hdr
                var control = cudp_cmsg_firsthdr(&header)
                while let current = control {
                    if current.pointee.cmsg_level == Int32(IPPROTO_IP) && current.pointee.cmsg_type == IP_TOS {
                        return index == 0 ? .failed(.EIO) : Syscall.sendmmsgOnce(fd, messages, index)
                    }
                    control = cudp_cmsg_nxthdr(&header, current)
                }
            }
            return Syscall.sendmmsgOnce(fd, messages, count)
        }
        var failures: [SendFailure] = []
        sender.onError = { _, failure in failures.append(failure) }
        let target = try server.socket.localAddress
        for i in 0..<10 { try sender.enqueue(sequencePayload(i), to: target, metadata: SendMetadata(ecn: .ect0)) }
        runUntilDrained(sender)
        try sender.enqueue(sequencePayload(10), to: target, metadata: SendMetadata(ecn: .ect0))
        runUntilDrained(sender)
        settle(loop)
        #expect(failures.isEmpty, "\(failures)")
        #expect(server.received.map { sequence(of: $0.bytes) } == Array(0...10))
        #expect(server.received.allSatisfy { $0.ecn == .notECT })
        #expect(sender.counters.ecnFallbacks == 1 && !sender.isSendingECN, "\(sender.counters)")
    }

    /// A control buffer too small for what the kernel has to say (MSG_CTRUNC) is reported; without GRO
    /// the datagram is still delivered, with GRO it is dropped (its segment size may be what was lost).
    @Test(arguments: [false, true])
    func truncatedControlBufferIsReported(gro: Bool) throws {
        let loop = try EventLoop()
        let socket = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        var configuration = BatchedUDPReader.Configuration()
        configuration.metadata = [.destination, .ecn, .receiveTime]
        configuration.gro = gro
        configuration.controlSpaceForTests = cudp_cmsg_space(4)
        let (reader, delivered, problems) = try readOneDatagram(loop, socket, configuration)
        #expect(problems.count == 1 && reader.counters.controlTruncated == 1, "\(problems)")
        guard case let .controlTruncated(_, size, dropped)? = problems.first else { return }
        #expect(size == 10 && dropped == gro)
        #expect(delivered.count == (gro ? 0 : 1))
    }

    /// A reader on `socket`, one 10-byte datagram sent to it, the loop settled: what was delivered and
    /// what was reported.
    func readOneDatagram(_ loop: EventLoop, _ socket: UDPSocket, _ configuration: BatchedUDPReader.Configuration = .init()) throws
        -> (BatchedUDPReader, [[UInt8]], [ReceiveProblem]) {
        var delivered: [[UInt8]] = []
        var problems: [ReceiveProblem] = []
        let reader = try BatchedUDPReader(loop: loop, socket: socket, configuration: configuration) { _, batch in
            delivered += batch.map { Array($0.payload) }
        }
        reader.onProblem = { _, problem in problems.append(problem) }
        reader.start()
        let client = try UDPSocket(family: .ipv4)
        try client.connect(to: socket.localAddress)
        _ = [UInt8](repeating: 7, count: 10).withUnsafeBytes { send(client.fileDescriptor, $0.baseAddress, 10, 0) }
        settle(loop)
        return (reader, delivered, problems)
    }

    /// A reader that asked for nothing has no control buffer, yet the kernel may have control messages
    /// for it (something else turned SO_TIMESTAMP on): MSG_CTRUNC, reported, the datagram delivered.
    @Test func controlMessagesNobodyAskedForAreReported() throws {
        let loop = try EventLoop()
        let socket = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        try socket.setOption(SOL_SOCKET, SO_TIMESTAMP, 1, "SO_TIMESTAMP")
        let (reader, delivered, problems) = try readOneDatagram(loop, socket)
        #expect(problems.count == 1 && reader.counters.controlTruncated == 1, "\(problems)")
        #expect(delivered == [[UInt8](repeating: 7, count: 10)])
    }
}

extension SocketAddress {
    /// The wildcard address of this family with this port.
    var withAnyAddress: SocketAddress {
        family == .ipv4 ? SocketAddress(ipv4: 0, 0, 0, 0, port: port) : try! SocketAddress(ipv6: "::", port: port)
    }
}
