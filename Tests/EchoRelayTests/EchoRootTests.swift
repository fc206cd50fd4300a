import BatchedUDP
import Foundation
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

    /// Backpressure instead of a syscall per drop: echo-relay echo sends its replies through a 10 Mbit/s
    /// tbf on a veth pair, with a 256-slot ring, reads of 8 and a 64 KiB receive buffer; a client in the
    /// other namespace sends 20,000 datagrams at once. The ring reaches its high-water mark, the echo stops
    /// reading, and the kernel drops what its receive buffer cannot hold. Every datagram is accounted for
    /// (received + kernel_drops == 20,000) and none was dropped at a full ring (queue_full=0): before,
    /// each datagram that met a full ring cost a sendmmsg (EAGAIN) and was dropped uncounted by the kernel.
    @Test func aFullRingStopsReadingAndTheKernelCountsTheDrops() throws {
        let (echoSide, clientSide) = try NetworkNamespace.linkedPair(rate: "16mbit")
        let echo = try RunningRelay(["echo", "--listen", "10.99.0.1:0", "--ring", "64", "--read-batch", "8",
                                     "--rcvbuf", "65536", "--sndbuf", "4096", "--stats-interval", "0.1", "--drain-timeout", "10"],
                                    namespace: echoSide)
        let total = 5_000
        let client = try clientSide.inside { try Receiver(try SocketAddress(parsing: "10.99.0.2:0"), receiveBuffer: 32 << 20) }
        try client.socket.connect(to: echo.addresses[0])
        try client.socket.setNonBlocking(false)
        for i in 0..<total {
            let bytes = sequencePayload(i, size: 1000)
            #expect(bytes.withUnsafeBytes { send(client.socket.fileDescriptor, $0.baseAddress, $0.count, 0) } == 1000)
        }
        // Settled: what was read has been echoed, and the counts stopped moving.
        try echo.waitForLog(timeout: 30) { _ in
            guard let line = echo.latestStats(), line.contains("queued 0") else { return false }
            return RootCounters(line).map { $0.received + $0.kernelDrops == total } ?? false
        }
        #expect(echo.stop() == 0)
        let totals = try #require(echo.log.split(separator: "\n").last { $0.contains("final totals:") }.map(String.init))
        let counters = try #require(RootCounters(totals), "\(totals)")
        #expect(counters.received + counters.kernelDrops == total, "\(totals)")
        #expect(counters.kernelDrops > 0, "the ring's high-water mark was reached and the kernel dropped: \(totals)")
        #expect(counters.queueFull == 0, "\(totals)")
    }

    /// One busy session cannot starve the others: the relay's replies to clients leave through a
    /// 16 Mbit/s tbf; a flooding client's session fills the listener's send ring (its replies are then
    /// left to the kernel, which drops and counts them), while a light client, sending one datagram every
    /// 20 ms during the flood, gets every reply.
    @Test func aFloodingSessionDoesNotStarveALightOne() throws {
        let (relaySide, clientSide) = try NetworkNamespace.linkedPair(rate: "16mbit")
        let upstream = try RunningRelay(["echo", "--listen", "127.0.0.1:0"], namespace: relaySide)
        let relay = try RunningRelay(["relay", "--listen", "10.99.0.1:0", "--upstream", upstream.addresses[0].description,
                                      "--allow", "10.99.0.0/24", "--ring", "64", "--session-read-batch", "8",
                                      "--sndbuf", "4096", "--stats-interval", "0.1", "--drain-timeout", "10"],
                                     namespace: relaySide)
        let (flooder, light) = try clientSide.inside {
            (try Receiver(try SocketAddress(parsing: "10.99.0.2:0"), receiveBuffer: 32 << 20),
             try Receiver(try SocketAddress(parsing: "10.99.0.2:0"), receiveBuffer: 32 << 20))
        }
        for client in [flooder, light] { try client.socket.connect(to: relay.addresses[0]) }
        let flood = 1_500, lightCount = 20
        for i in 0..<flood {
            let bytes = sequencePayload(i, size: 1000)
            _ = bytes.withUnsafeBytes { send(flooder.socket.fileDescriptor, $0.baseAddress, $0.count, 0) }
            if i % (flood / lightCount) == 0 {
                let small = sequencePayload(i / (flood / lightCount), size: 32)
                _ = small.withUnsafeBytes { send(light.socket.fileDescriptor, $0.baseAddress, $0.count, 0) }
                usleep(1_000)
            }
        }
        let lightReplies = light.receive(lightCount, timeout: 5).map(sequence(of:))
        #expect(lightReplies.sorted() == Array(0..<lightCount), "the light client got \(lightReplies.count) of \(lightCount); relay log: \(relay.log.suffix(600))")
        #expect(relay.stop() == 0)
        let totals = try #require(relay.log.split(separator: "\n").last { $0.contains("final totals:") }.map(String.init))
        let counters = try #require(RootCounters(totals), "\(totals)")
        #expect(counters.kernelDrops > 0 && counters.queueFull == 0, "the flood was left to the kernel: \(totals)")
        _ = upstream.stop()
    }

    /// received, kernel_drops and queue_full from a stats or final-totals line.
    struct RootCounters {
        let received: Int, kernelDrops: Int, queueFull: Int

        init?(_ line: String) {
            func number(after label: String) -> Int? {
                guard let range = line.range(of: label) else { return nil }
                return Int(line[range.upperBound...].prefix { $0.isNumber })
            }
            let received = number(after: "(total ") ?? number(after: "received ")
            guard let received, let drops = number(after: "kernel_drops="), let full = number(after: "queue_full=") else { return nil }
            self.received = received
            kernelDrops = drops
            queueFull = full
        }
    }
}
