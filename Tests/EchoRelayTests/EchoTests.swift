import BatchedUDP
import Glibc
import Libev
import Testing
import TestSupport

/// Deterministic payload for datagram `sequence`: its number, then bytes derived from it.
func payload(_ sequence: Int) -> [UInt8] {
    let size = 16 + (sequence &* 7919) % 1400
    var bytes = sequencePayload(sequence, size: size)
    for i in 8..<size { bytes[i] = UInt8(truncatingIfNeeded: sequence &+ i &* 31) }
    return bytes
}

@Suite struct EchoTests {
    /// 100,000 datagrams of mixed sizes through `echo-relay echo`, paced by a window of outstanding
    /// datagrams so the socket buffers are never overrun: every one comes back byte-identical.
    @Test(.needsLargeReceiveBuffers) func hundredThousandMixedSizesComeBackIdentical() throws {
        let relay = try RunningRelay(["echo", "--listen", "127.0.0.1:0"])
        let loop = try EventLoop()
        let socket = try UDPSocket(family: .ipv4)
        try socket.setTestReceiveBuffer(16 << 20)
        try socket.connect(to: relay.addresses[0])
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.capacity = 2048
        let sender = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration)
        let total = 100_000, window = 1000
        var next = 0, matched = 0, mismatched = 0
        var seen = [Bool](repeating: false, count: total)
        func refill() {
            while next < total && next - matched < window && sender.isWritable {
                try! sender.enqueue(payload(next))
                next += 1
            }
        }
        var readerConfiguration = BatchedUDPReader.Configuration()
        readerConfiguration.batchSize = 256
        let reader = try BatchedUDPReader(loop: loop, socket: socket, configuration: readerConfiguration) { reader, batch in
            for datagram in batch {
                let bytes = Array(datagram.payload)
                let number = sequence(of: bytes)
                if number < total && !seen[number] && bytes == payload(number) {
                    seen[number] = true
                    matched += 1
                } else {
                    mismatched += 1
                }
            }
            if matched == total { reader.stop() } else { refill() }
        }
        reader.start()
        let guardTimer = TimerWatcher(loop: loop, after: 120) { timer in
            Issue.record("timed out with \(matched) of \(total) echoed")
            reader.stop()
            timer.loop.breakLoop()
        }
        guardTimer.keepsLoopAlive = false
        guardTimer.start()
        refill()
        loop.run()
        #expect(matched == total)
        #expect(mismatched == 0)
        #expect(sender.counters.failed == 0)
        #expect(relay.stop() == 0)
        #expect(relay.log.contains("final totals: received \(total) datagrams"))
    }

    /// --threads 2: two loops on two threads, each with its own SO_REUSEPORT socket on one port; the
    /// kernel spreads 40 clients over both, every client gets its replies, and the totals add up.
    @Test func threadsShareOnePortAndEachServesItsClients() throws {
        let relay = try RunningRelay(["echo", "--listen", "127.0.0.1:0", "--threads", "2", "--stats-interval", "0.2"], listeners: 2)
        #expect(relay.addresses.count == 2 && relay.addresses[0] == relay.addresses[1], "\(relay.addresses)")
        let clients = try (0..<40).map { _ in
            let client = try Receiver()
            try client.socket.connect(to: relay.addresses[0])
            return client
        }
        for (id, client) in clients.enumerated() {
            for round in 0..<10 {
                let bytes: [UInt8] = [UInt8(id), UInt8(round)]
                #expect(bytes.withUnsafeBytes { Glibc.send(client.socket.fileDescriptor, $0.baseAddress, $0.count, 0) } == 2)
            }
        }
        for (id, client) in clients.enumerated() {
            #expect(client.receive(10, timeout: 3) == (0..<10).map { [UInt8(id), UInt8($0)] }, "client \(id)")
        }
        try relay.waitForLog(timeout: 5) { log in
            (0..<2).allSatisfy { worker in
                log.split(separator: "\n").last { $0.contains("worker=\(worker) ") && $0.contains("stats:") }?.contains("(total 0 datagrams") == false
            }
        }
        #expect(relay.stop() == 0)
        #expect(relay.log.contains("final totals: received 400 datagrams (800 bytes), sent 400 "), "\(relay.log.suffix(600))")
    }

    /// GSO and GRO end to end through the real binaries: udp-blast sends super-datagrams and reads replies
    /// with GRO, a closed window of 256, against echo-relay reading with GRO. Every reply comes back once.
    @Test func gsoAndGroEndToEnd() throws {
        let relay = try RunningRelay(["echo", "--listen", "127.0.0.1:0", "--gro"])
        let (status, output) = try RunningRelay.runOutput(
            ["--to", relay.addresses[0].description, "--count", "20000", "--size", "100", "--expect-replies",
             "--window", "256", "--gro", "--json"], executable: "udp-blast")
        #expect(status == 0, "\(output)")
        for field in ["\"segmentation\": \"on\"", "\"received\": 20000", "\"lost\": 0", "\"duplicates\": 0", "\"foreign\": 0"] {
            #expect(output.contains(field), "\(field) in \(output)")
        }
        #expect(!output.contains("\"gso_sends\": 0,"), "\(output)")
        #expect(relay.stop() == 0)
        #expect(relay.log.contains("final totals: received 20000 datagrams (2000000 bytes), sent 20000 "), "\(relay.log.suffix(400))")
    }
}
