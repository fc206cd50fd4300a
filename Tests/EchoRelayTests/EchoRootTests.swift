import BatchedUDP
import Glibc
import Testing
import TestSupport

/// The real `echo-relay` inside a private network namespace whose `lo` has a slow qdisc. Root only (see
/// `Privileges`).
@Suite("Needs root: echo-relay behind a slow qdisc", .needsRoot)
struct EchoRootTests {
    /// SIGTERM while the relay's send ring holds replies (a 1 Mbit/s qdisc on the namespace's `lo` and a
    /// small SO_SNDBUF make the kernel push back with EAGAIN): it stops reading, flushes, and every datagram it had read reaches the client
    /// before it exits 0.
    @Test func sigtermFlushesQueuedRepliesBeforeExit() throws {
        let namespace = try NetworkNamespace(rate: "1mbit", queueLatency: "2s")
        let relay = try RunningRelay(["echo", "--listen", "127.0.0.1:0", "--stats-interval", "0.05", "--drain-timeout", "30",
                                      "--sndbuf", "4096"],
                                     namespace: namespace)
        let total = 2000
        let client = try namespace.inside { try Receiver(receiveBuffer: 32 << 20) }
        try client.socket.connect(to: relay.addresses[0])
        try client.socket.setNonBlocking(false)
        for i in 0..<total {
            let bytes = sequencePayload(i, size: 64)
            #expect(bytes.withUnsafeBytes { send(client.socket.fileDescriptor, $0.baseAddress, $0.count, 0) } == 64)
        }
        try client.socket.setNonBlocking(true)
        try relay.waitForLog(timeout: 30) { $0.contains("(total \(total) datagrams") }
        #expect(relay.stop() == 0)
        let queued = relay.log.split(separator: "\n").first { $0.contains("SIGTERM: stopped reading; sending") }
            .flatMap { line in line.split(separator: " ").firstIndex(of: "sending").map { Int(line.split(separator: " ")[$0 + 1]) ?? 0 } } ?? 0
        #expect(queued > 0, "replies were queued at SIGTERM: \(relay.log.suffix(400))")
        let echoed = client.receive(total, timeout: 5).map(sequence(of:))
        // Exactly once each. Order is not asserted: two processes transmit through the qdisc from both
        // CPUs here, and loopback may reorder between them (the watcher's own order is tested pinned).
        #expect(echoed.sorted() == Array(0..<total), "\(echoed.count) echoed; relay log: \(relay.log.suffix(600))")
        #expect(relay.log.contains("final totals: received \(total) datagrams (\(total * 64) bytes), sent \(total) "))
    }
}
