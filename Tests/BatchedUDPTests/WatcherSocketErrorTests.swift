@testable import BatchedUDP
import Glibc
import Libev
import Testing
import TestSupport

/// Errors that are the socket's, not the datagram's: a pending error (an ICMP error for an earlier
/// datagram, returned by the next send whatever it carries) and the error queue (IP_RECVERR). Real
/// sockets on loopback, which answers a dead port with ICMP port unreachable at once.
@Suite(.serialized) struct WatcherSocketErrorTests {
    /// A loopback address nobody listens on.
    func deadAddress() throws -> SocketAddress {
        let placeholder = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        defer { try? placeholder.close() }
        return try placeholder.localAddress
    }

    /// Runs the loop for `seconds`, so ICMP errors come back before the next send.
    func settle(_ loop: EventLoop, _ seconds: Double = 0.02) {
        let pause = TimerWatcher(loop: loop, after: seconds) { _ in }
        pause.start()
        loop.run()
    }

    /// A connected socket whose peer port has no listener: the ICMP error's ECONNREFUSED comes back from
    /// the next send. It is reported as the socket's, the datagram that met it is sent again (so counted
    /// sent: the kernel took it), nothing is failed; once a listener appears the watcher keeps working.
    @Test func pendingErrorIsTheSocketsNotTheHeads() throws {
        let loop = try EventLoop()
        let address = try deadAddress()
        let socket = try UDPSocket(family: .ipv4)
        try socket.connect(to: address)
        let watcher = try BatchedUDPWatcher(loop: loop, socket: socket)
        var failures: [SendFailure] = []
        var problems: [SocketProblem] = []
        watcher.onError = { _, failure in failures.append(failure) }
        watcher.onSocketProblem = { _, problem in problems.append(problem) }
        for i in 0..<4 {
            try watcher.enqueue(sequencePayload(i))
            loop.run()
            settle(loop)
        }
        #expect(failures.isEmpty, "\(failures)")
        #expect(problems.count >= 3 && problems.allSatisfy { $0 == .pendingError(.ECONNREFUSED) }, "\(problems)")
        let counters = watcher.counters
        #expect(counters.sent == 4 && counters.pendingErrors == problems.count, "\(counters)")
        #expect(watcher.state == .open)

        let listener = try Receiver(address)
        try watcher.enqueue(sequencePayload(100))
        loop.run()
        #expect(listener.receive(1).map(sequence(of:)) == [100])
        expectAccounted(watcher)
    }

    /// The reproduction: with IP_RECVERR on, an unconnected socket's ICMP error for a datagram to
    /// a dead port stays pending; 64 equal datagrams to a live receiver (one super-datagram) then meet it.
    /// All 64 arrive (one by one, after the refusal) and none is failed; the error is reported once as the
    /// socket's, and its error-queue
    /// entry is left for whoever reads the queue (here nobody: no write wakeup found the socket full).
    @Test(arguments: [BatchedUDPWatcher.Configuration.Segmentation.automatic, .off])
    func pendingErrorDoesNotFailAnotherDestinationsRun(segmentation: BatchedUDPWatcher.Configuration.Segmentation) throws {
        let loop = try EventLoop()
        let receiver = try Receiver()
        let dead = try deadAddress()
        let socket = try UDPSocket(family: .ipv4)
        try socket.setReceivesErrors(true)
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.segmentation = segmentation
        let watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration)
        var failures: [SendFailure] = []
        var problems: [SocketProblem] = []
        watcher.onError = { _, failure in failures.append(failure) }
        watcher.onSocketProblem = { _, problem in problems.append(problem) }
        try watcher.enqueue(sequencePayload(0), to: dead)
        loop.run()
        settle(loop)
        for i in 1...64 { try watcher.enqueue(sequencePayload(i, size: 100), to: receiver.address) }
        runUntilDrained(watcher)
        #expect(failures.isEmpty, "\(failures)")
        #expect(receiver.receive(64).map(sequence(of:)) == Array(1...64))
        #expect(problems == [.pendingError(.ECONNREFUSED)])
        let counters = watcher.counters
        #expect(counters.sent == 65 && counters.pendingErrors == 1 && counters.deliveryErrors == 0, "\(counters)")
        #expect(watcher.isSegmenting == (segmentation == .automatic))
        if segmentation == .automatic {
            // The refused run went out one by one; the next run to the same receiver is segmented again.
            #expect(counters.segmentationFallbacks == 1 && counters.gsoSends == 0, "\(counters)")
            for i in 65...128 { try watcher.enqueue(sequencePayload(i, size: 100), to: receiver.address) }
            runUntilDrained(watcher)
            #expect(receiver.receive(64).map(sequence(of:)) == Array(65...128))
            #expect(watcher.counters.gsoSends == 1, "\(watcher.counters)")
        }
        expectAccounted(watcher)
    }

    /// A real per-datagram error keeps failing when the datagram is offered again: a datagram over the
    /// socket's own limit (65,508 bytes on IPv4 cannot be sent; the kernel says EMSGSIZE) fails alone,
    /// charged once, and the datagrams around it arrive.
    @Test func ownErrorIsChargedAfterTheSecondTry() throws {
        let loop = try EventLoop()
        let receiver = try Receiver(.loopbackIPv6(port: 0))
        let socket = try UDPSocket(family: .ipv6)
        try socket.connect(to: receiver.address)
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.maxDatagramSize = 65_527
        configuration.capacity = 8
        let watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration)
        // IPv6 over loopback: 65,527 bytes fits the UDP length field, yet with the jumbo-less IPv6 header and
        // a 64 KiB loopback MTU it needs fragments; IPV6_DONTFRAG makes the kernel refuse it with EMSGSIZE.
        try socket.setOption(Int32(IPPROTO_IPV6), IPV6_DONTFRAG, 1, "IPV6_DONTFRAG")
        var failures: [SendFailure] = []
        var problems: [SocketProblem] = []
        watcher.onError = { _, failure in failures.append(failure) }
        watcher.onSocketProblem = { _, problem in problems.append(problem) }
        var script: [Int] = []
        watcher.sendSeam = { fd, messages, count in
            script.append(count)
            return Syscall.sendmmsgOnce(fd, messages, count)
        }
        try watcher.enqueue(sequencePayload(0))
        try watcher.enqueue(sequencePayload(1, size: 65_527))
        try watcher.enqueue(sequencePayload(2))
        loop.run()
        #expect(failures.map(\.sequence) == [1] && failures.first?.errno == .EMSGSIZE, "\(failures)")
        #expect(problems.isEmpty)
        #expect(script == [3, 2, 2, 1], "short count, refused, refused again (charged), the rest: \(script)")
        #expect(receiver.receive(2).map(sequence(of:)) == [0, 2])
        expectAccounted(watcher)
    }

    /// Error-queue entries are reported by exactly one owner. Without a reader, a write wakeup that finds
    /// the socket full with entries waiting reads them and reports each with its destination; with a
    /// reading reader on the same socket, the reader reports them and the watcher leaves them alone.
    @Test(arguments: [false, true])
    func errorQueueHasOneOwner(withReader: Bool) throws {
        let loop = try EventLoop()
        let receiver = try Receiver()
        let dead = try deadAddress()
        let socket = try UDPSocket(family: .ipv4)
        try socket.setReceivesErrors(true)
        let watcher = try BatchedUDPWatcher(loop: loop, socket: socket)
        var watcherProblems: [SocketProblem] = []
        watcher.onSocketProblem = { _, problem in watcherProblems.append(problem) }
        var readerProblems: [ReceiveProblem] = []
        let reader = try BatchedUDPReader(loop: loop, socket: socket) { _, _ in }
        reader.onProblem = { _, problem in readerProblems.append(problem) }
        try watcher.enqueue(sequencePayload(0), to: dead)
        loop.run()
        settle(loop)
        // Clear the pending error (as a send or read would), leaving the queued entry.
        #expect(try socket.option(SOL_SOCKET, SO_ERROR, "SO_ERROR") == Int(ECONNREFUSED))
        if withReader { reader.start() }
        // The send buffer is "full" twice: the wakeup after the second EAGAIN found nothing to do.
        let script = ScriptedSendmmsg([.fail(.EAGAIN), .fail(.EAGAIN)])
        script.install(on: watcher)
        try watcher.enqueue(sequencePayload(1), to: receiver.address)
        let stop = TimerWatcher(loop: loop, after: 0.05) { _ in reader.stop() }
        stop.start()
        loop.run()
        #expect(receiver.receive(1).map(sequence(of:)) == [1])
        let entry = ReceiveProblem.deliveryError(.ECONNREFUSED, destination: dead)
        if withReader {
            #expect(readerProblems == [entry] && reader.counters.deliveryErrors == 1, "\(readerProblems)")
            #expect(watcherProblems.isEmpty && watcher.counters.deliveryErrors == 0, "\(watcherProblems)")
        } else {
            #expect(watcherProblems == [.deliveryError(.ECONNREFUSED, destination: dead)], "\(watcherProblems)")
            #expect(watcher.counters.deliveryErrors == 1 && readerProblems.isEmpty)
        }
        expectAccounted(watcher)
    }
}
