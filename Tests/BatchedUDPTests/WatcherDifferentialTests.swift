@testable import BatchedUDP
import Foundation
import Glibc
import Libev
import Testing
import TestSupport

/// The differential check: random traffic through a real watcher to real loopback receivers, judged by
/// what the kernel really delivered rather than by a model of it. Sizes from 0 to the slot size in every
/// position, runs of equal sizes long and short, slots that lie end to end and rings that wrap, several
/// destinations (among them port 0, which the kernel refuses, and a dead port whose ICMP errors come back
/// as pending errors), per-datagram metadata (source addresses among the host's, ECN codepoints), GSO on
/// and off, IPv4 and dual-stack sockets, IP_RECVERR on and off, a reader
/// sharing the socket or not, flushes, loop runs and closes at random points.
///
/// The oracle, per watcher: each live receiver got exactly the datagrams it was sent that were not
/// reported failed, byte for byte, in order, each from the source address it was sent from; datagrams to live receivers and to the dead port fail
/// only when a close cancels them; datagrams to port 0 always fail with EINVAL; the counters agree; and
/// segmentation is still on (loopback never refuses it). At least 100,000 datagrams a run.
///
/// `BATCHED_UDP_DIFF_SEED=<n>` replays a seed, `=random` picks one; the seed is printed on failure.
@Suite(.serialized) struct WatcherDifferentialTests {
    enum Target: Equatable {
        case live(Int)
        case portZero
        case dead
    }

    struct Datagram {
        let sequence: Int
        let target: Target
        let bytes: [UInt8]
        /// The source address it was sent from (its metadata's, or the kernel's choice on loopback).
        let sourceHost: String
        var failure: Errno?
    }

    /// What a receiver got: the bytes and the sender's address.
    struct Arrival: Equatable {
        let bytes: [UInt8]
        let sourceHost: String
    }

    /// Reads what a receiver holds now (loopback delivers during the send call, so nothing is in flight).
    static func drain(_ receiver: Receiver, into arrivals: inout [Arrival]) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(receiver.socket.fileDescriptor, &buffer, buffer.count, Int32(MSG_DONTWAIT), $0, &length)
                }
            }
            guard n >= 0 else { return }
            let sender = withUnsafeBytes(of: &storage) { SocketAddress($0.baseAddress!, length: length) }
            let host = sender.map { $0.ipv4Unmapped?.host ?? $0.host } ?? "?"
            arrivals.append(Arrival(bytes: Array(buffer[0..<n]), sourceHost: host))
        }
    }

    /// The seed named by environment variable `variable` (a number replays it, `random` picks one), or
    /// `fallback`.
    static func seed(_ variable: String, default fallback: UInt64) -> UInt64 {
        let value = ProcessInfo.processInfo.environment[variable]
        return value == "random" ? UInt64.random(in: 0...UInt64.max) : value.flatMap { UInt64($0) } ?? fallback
    }

    @Test(.needsLargeReceiveBuffers) func randomTrafficArrivesExactlyAsCounted() throws {
        let seed = Self.seed("BATCHED_UDP_DIFF_SEED", default: 0xD1FF_2026_1122)
        var rng = SplitMix64(seed: seed)
        func random(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        func chance(_ percent: Int) -> Bool { random(100) < percent }

        let loop = try EventLoop()
        let v4 = try (0..<3).map { _ in try Receiver() }
        let v6 = try Receiver(.loopbackIPv6(port: 0))
        let placeholder = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        let deadPort = try placeholder.localAddress
        try placeholder.close()

        var total = 0, epochs = 0, superDatagrams = 0, pendingErrors = 0, closes = 0, empties = 0
        var problem: String?
        func fail(_ text: String) { if problem == nil { problem = "seed \(seed), watcher \(epochs): \(text)" } }

        while total < 100_000 && problem == nil {
            epochs += 1
            let dualStack = chance(30)
            let live = dualStack ? v4 + [v6] : v4
            let socket = try UDPSocket(family: dualStack ? .ipv6 : .ipv4)
            let receivesErrors = chance(50)
            try socket.setReceivesErrors(receivesErrors)
            var configuration = BatchedUDPWatcher.Configuration()
            configuration.capacity = 16 + random(500)
            configuration.maxDatagramSize = [64, 300, 1000, 1472, 2048][random(5)]
            configuration.batchSize = 1 + random(min(configuration.capacity, 1024))
            configuration.maxCallsPerDrain = 1 + random(8)
            configuration.segmentation = chance(75) ? .automatic : .off
            let watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration)
            var reader: BatchedUDPReader?
            if receivesErrors && chance(50) {
                reader = try BatchedUDPReader(loop: loop, socket: socket, configuration: { var c = BatchedUDPReader.Configuration(); c.keepsLoopAlive = false; return c }()) { _, _ in }
                reader?.start()
            }
            var datagrams: [Datagram] = []
            watcher.onError = { _, failure in
                let index = failure.sequence
                guard index < datagrams.count, datagrams[index].failure == nil else { return fail("datagram #\(index) reported twice or never enqueued") }
                datagrams[index].failure = failure.errno
                if failure.length != datagrams[index].bytes.count { fail("datagram #\(index) reported with length \(failure.length)") }
            }
            var received = Array(repeating: [Arrival](), count: live.count)

            let rounds = 1 + random(30)
            for _ in 0..<rounds where watcher.state == .open {
                var remaining = 1 + random(600)
                while remaining > 0 && watcher.state == .open {
                    // One run: a destination, a size, a length.
                    let roll = random(100)
                    let target: Target = roll < 3 ? .portZero : roll < 10 ? .dead : .live(random(live.count))
                    let address: SocketAddress
                    switch target {
                    case let .live(index): address = live[index].address
                    case .portZero: address = dualStack && chance(50) ? .loopbackIPv6(port: 0) : SocketAddress(ipv4: 127, 0, 0, 1, port: 0)
                    case .dead: address = deadPort
                    }
                    // Metadata for the run: a source address among the host's (loopback has all of
                    // 127.0.0.0/8), an ECN codepoint, both or neither; it splits runs where it changes.
                    var metadata: SendMetadata?
                    var sourceHost = "127.0.0.1"
                    if case let .live(index) = target {
                        let ipv6Target = index == v4.count
                        sourceHost = ipv6Target ? "::1" : "127.0.0.1"
                        if chance(40) {
                            var chosen = SendMetadata(ecn: chance(50) ? ECN.allCases[random(4)] : nil)
                            if chance(70) {
                                sourceHost = ipv6Target ? "::1" : ["127.0.0.1", "127.0.0.2", "127.0.0.3"][random(3)]
                                chosen.source = ipv6Target ? .loopbackIPv6(port: 0) : try SocketAddress(ipv4: sourceHost, port: 0)
                            }
                            metadata = chosen
                        }
                    }
                    let slot = configuration.maxDatagramSize
                    let size = chance(8) ? 0 : chance(20) ? slot : random(slot + 1)
                    let length = min(remaining, chance(30) ? 1 + random(80) : 1 + random(4))
                    for i in 0..<length {
                        // Mostly equal sizes; now and then a shorter or empty one in the run.
                        let thisSize = i > 0 && chance(5) ? (chance(40) ? 0 : random(size + 1)) : size
                        let sequence = total
                        var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: sequence &* 31), count: thisSize)
                        withUnsafeBytes(of: UInt64(sequence).littleEndian) { for b in 0..<min(8, thisSize) { bytes[b] = $0[b] } }
                        do {
                            let returned: Int
                            switch random(3) {
                            case 0: returned = try watcher.enqueue(bytes, to: address, metadata: metadata)
                            case 1:
                                returned = try bytes.withUnsafeBytes { raw in
                                    let cut = raw.count / 2
                                    return try watcher.enqueue(gathering: [UnsafeRawBufferPointer(rebasing: raw[..<cut]), UnsafeRawBufferPointer(rebasing: raw[cut...])],
                                                               to: address, metadata: metadata)
                                }
                            default:
                                returned = try watcher.enqueue(to: address, metadata: metadata) { buffer in
                                    buffer.copyBytes(from: bytes)
                                    return bytes.count
                                }
                            }
                            if returned != datagrams.count { fail("enqueue returned \(returned), expected \(datagrams.count)") }
                            datagrams.append(Datagram(sequence: sequence, target: target, bytes: bytes, sourceHost: sourceHost))
                            total += 1
                            if thisSize == 0 { empties += 1 }
                        } catch BatchedUDPError.queueFull {
                            watcher.flush()
                        } catch {
                            fail("enqueue threw \(error)")
                        }
                        remaining -= 1
                    }
                }
                switch random(100) {
                case 0..<30: watcher.flush()
                case 30..<60: for _ in 0..<1 + random(3) { loop.run(.noWait) }
                case 60..<63:
                    closes += 1
                    watcher.close()
                default: runUntilDrained(watcher)
                }
                for (index, receiver) in live.enumerated() { Self.drain(receiver, into: &received[index]) }
            }
            if watcher.state == .open {
                var closed = false
                watcher.close(flushingWithin: 10) { _ in closed = true }
                while !closed { loop.run(.once) }
            }
            reader?.stop()
            for (index, receiver) in live.enumerated() { Self.drain(receiver, into: &received[index]) }

            // The oracle.
            let counters = watcher.counters
            superDatagrams += counters.gsoSends
            pendingErrors += counters.pendingErrors
            let failed = datagrams.filter { $0.failure != nil }
            if counters.enqueued != datagrams.count || counters.sent + counters.failed != datagrams.count || counters.failed != failed.count {
                fail("counters \(counters) for \(datagrams.count) enqueued, \(failed.count) reported")
            }
            for (index, _) in live.enumerated() {
                let expected = datagrams.filter { $0.target == .live(index) && $0.failure == nil }.map { Arrival(bytes: $0.bytes, sourceHost: $0.sourceHost) }
                if received[index] != expected {
                    let firstDifference = zip(received[index], expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                        ?? min(received[index].count, expected.count)
                    fail("receiver \(index) got \(received[index].count) datagrams, \(expected.count) were counted sent to it; first difference at \(firstDifference)")
                }
            }
            for datagram in datagrams {
                let cancelled: Set<Errno> = [.ECANCELED, .ETIMEDOUT]
                switch (datagram.target, datagram.failure) {
                case (.portZero, let error?) where error == .EINVAL || cancelled.contains(error): break
                case (.portZero, let error): fail("datagram #\(datagram.sequence) to port 0: \(error.map(\.description) ?? "counted as sent")")
                case (_, nil): break
                case (_, let error?) where cancelled.contains(error): break
                case (let target, let error?): fail("datagram #\(datagram.sequence) to \(target) failed with \(error): it was not its error")
                }
            }
            if configuration.segmentation == .automatic && !watcher.isSegmenting {
                fail("segmentation turned off on loopback: \(counters)")
            }
        }
        #expect(problem == nil, "\(problem ?? "") (replay with BATCHED_UDP_DIFF_SEED=\(seed))")
        #expect(total >= 100_000 && superDatagrams > 100 && empties > 1_000 && closes > 0,
                "coverage: \(total) datagrams, \(superDatagrams) super-datagrams, \(empties) empty, \(closes) closes")
        #expect(pendingErrors > 0, "pending errors met: \(pendingErrors)")
    }

    /// The lean forms on a connected socket, judged the same way: datagrams copied or written in place one
    /// at a time, batches copied or written in place (mostly of one size, now and then another size, an
    /// empty buffer with or without an address), in small rings that wrap, GSO on and off, drained at
    /// random moments by sendmmsg calls some of which take only part of what they are offered. The
    /// receiver gets exactly the datagrams queued, byte for byte, in order; none fails; the byte counters
    /// agree. Batches of one size
    /// are queued as runs the GSO drain does not scan (`DatagramRing.uniformRun`): what the kernel
    /// delivers shows any run that covered a datagram of another size, and so does the debug assertion
    /// in `SegmentedBatch.build`. `BATCHED_UDP_LEAN_SEED=<n>|random`.
    @Test(.needsLargeReceiveBuffers) func randomLeanEnqueuesArriveExactlyAsQueued() throws {
        let seed = Self.seed("BATCHED_UDP_LEAN_SEED", default: 0x1EA4_2026_1205)
        var rng = SplitMix64(seed: seed)
        func random(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        func chance(_ percent: Int) -> Bool { random(100) < percent }
        func payload(_ sequence: Int, size: Int) -> [UInt8] {
            size >= 8 ? sequencePayload(sequence, size: size) : [UInt8](repeating: UInt8(truncatingIfNeeded: sequence), count: size)
        }
        var total = 0, batches = 0, superDatagrams = 0, shortCounts = 0, runsKept = 0
        var problem: String?
        for epoch in 0..<150 where problem == nil {
            let loop = try EventLoop()
            var configuration = BatchedUDPWatcher.Configuration()
            configuration.capacity = 8 + random(200)
            configuration.maxDatagramSize = [64, 300, 1472][random(3)]
            configuration.batchSize = 1 + random(64)
            configuration.maxCallsPerDrain = 1 + random(4)
            configuration.segmentation = chance(75) ? .automatic : .off
            let (watcher, receiver) = try connectedPair(configuration, loop: loop)
            let slot = configuration.maxDatagramSize
            watcher.sendSeam = { fd, messages, count in
                // Now and then a call takes only the first messages it is offered: a short count.
                guard count > 1 && chance(25) else { return Syscall.sendmmsgOnce(fd, messages, count) }
                shortCounts += 1
                return Syscall.sendmmsgOnce(fd, messages, 1 + random(count - 1))
            }
            var expected: [[UInt8]] = []
            var size = random(slot + 1)
            for _ in 0..<(50 + random(150)) where problem == nil {
                if chance(15) { size = random(slot + 1) }
                // Mostly `size`; now and then another size, or an empty datagram.
                func pick() -> Int { chance(90) ? size : chance(50) ? 0 : random(slot + 1) }
                let next = expected.count
                switch random(4) {
                case 0:
                    let bytes = payload(next, size: pick())
                    guard (try? watcher.enqueue(bytes)) != nil else { watcher.flush(); continue }
                    expected.append(bytes)
                case 1:
                    let bytes = payload(next, size: pick())
                    guard (try? watcher.enqueue { buffer in buffer.copyBytes(from: bytes); return bytes.count }) != nil else {
                        watcher.flush()
                        continue
                    }
                    expected.append(bytes)
                case 2:
                    let payloads = (0..<1 + random(60)).map { payload(next + $0, size: pick()) }
                    let withoutAddress = payloads.indices.filter { payloads[$0].isEmpty && chance(50) }
                    let queued = try WatcherBatchEnqueueTests().withBuffers(payloads) { buffers throws in
                        var buffers = buffers
                        for index in withoutAddress { buffers[index] = UnsafeRawBufferPointer(start: nil, count: 0) }
                        return try watcher.enqueue(contentsOf: buffers, partially: true)
                    }
                    if queued != next..<next + queued.count { problem = "seed \(seed), watcher \(epoch): batch returned \(queued) at \(next)" }
                    expected += payloads.prefix(queued.count)
                    batches += 1
                default:
                    let payloads = (0..<1 + random(60)).map { payload(next + $0, size: pick()) }
                    let queued = try watcher.enqueue(count: payloads.count, partially: true) { index, buffer in
                        buffer.copyBytes(from: payloads[index])
                        return payloads[index].count
                    }
                    if queued != next..<next + queued.count { problem = "seed \(seed), watcher \(epoch): batch returned \(queued) at \(next)" }
                    expected += payloads.prefix(queued.count)
                    batches += 1
                }
                if watcher.ring.uniformRun > 1 { runsKept += 1 }
                switch random(10) {
                case 0..<2: watcher.flush()
                case 2..<4: loop.run(.noWait)
                default: break
                }
            }
            runUntilDrained(watcher)
            let arrived = receiver.receive(expected.count)
            let counters = watcher.counters
            total += expected.count
            superDatagrams += counters.gsoSends
            let bytes = expected.reduce(0) { $0 + $1.count }
            if problem == nil && (arrived != expected || counters.sent != expected.count || counters.failed != 0
                                  || counters.sentBytes != bytes || counters.queuedBytes != 0) {
                let first = zip(arrived, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(arrived.count, expected.count)
                problem = "seed \(seed), watcher \(epoch) (\(configuration.capacity) slots of \(slot) B, \(configuration.segmentation)): "
                    + "\(arrived.count) arrived of \(expected.count) (\(bytes) bytes), first difference at #\(first); \(counters)"
            }
        }
        #expect(problem == nil, "\(problem ?? "") (replay with BATCHED_UDP_LEAN_SEED=\(seed))")
        #expect(total > 10_000 && batches > 3_000 && superDatagrams > 1_000 && shortCounts > 300 && runsKept > 1_000,
                "coverage: \(total) datagrams, \(batches) batches, \(superDatagrams) super-datagrams, \(shortCounts) short counts, \(runsKept) runs kept")
    }
}
