@testable import BatchedUDP
import CUDPShims
import Glibc
import Libev
import Testing
import TestSupport

/// Automatic UDP GSO: runs of equal-size datagrams leave as super-datagrams the kernel splits again, so
/// receivers see exactly the datagrams that were queued.
@Suite(.serialized) struct WatcherSegmentationTests {
    /// What one sendmmsg call offered, message by message: datagram sizes and the UDP_SEGMENT value.
    struct Offered: Equatable, CustomStringConvertible {
        var sizes: [Int]
        var segmentSize: Int?
        var description: String { "\(sizes.count)×\(sizes.first ?? 0)" + (segmentSize.map { "/gso \($0)" } ?? "") }
    }

    /// Records each call's messages, then lets the kernel (or `answer`) take them.
    final class Recorder {
        var calls: [[Offered]] = []
        /// Answers instead of the kernel when it returns a result: given the call's number (from 1), what
        /// it offered, and the sequence number of its first datagram.
        var answer: ((Int, [Offered], Int) -> IOResult?)?
        /// Refuses single messages, as the kernel does: given a message and the sequence number of its
        /// first datagram, the errno to refuse it with. The messages before the first refused one are sent
        /// (a real short count); a refused first message fails the call.
        var refuse: ((Offered, Int) -> Errno?)?

        func install(on watcher: BatchedUDPWatcher) {
            watcher.sendSeam = { fd, messages, count in
                var offered: [Offered] = []
                for index in 0..<count {
                    let header = messages[index].msg_hdr
                    let sizes = (0..<header.msg_iovlen).map { header.msg_iov[$0].iov_len }
                    let segment = segmentSize(of: header)
                    // One iovec may cover a whole run whose payloads lie end to end: split it by the segment size.
                    let joined = header.msg_iovlen == 1 && segment != nil
                    let split = joined ? stride(from: 0, to: sizes[0], by: segment!).map { min(segment!, sizes[0] - $0) } : sizes
                    offered.append(Offered(sizes: split, segmentSize: segment))
                }
                self.calls.append(offered)
                func first(_ index: Int) -> Int {
                    let head = messages[index].msg_hdr.msg_iov[0]
                    return head.iov_len >= 8 ? Int(UInt64(littleEndian: head.iov_base!.loadUnaligned(as: UInt64.self))) : -1
                }
                if let refuse = self.refuse {
                    for index in 0..<count {
                        guard let error = refuse(offered[index], first(index)) else { continue }
                        return index == 0 ? .failed(error) : Syscall.sendmmsgOnce(fd, messages, index)
                    }
                }
                return self.answer?(self.calls.count, offered, first(0)) ?? Syscall.sendmmsgOnce(fd, messages, count)
            }
        }
    }

    func watcher(_ configure: (inout BatchedUDPWatcher.Configuration) -> Void = { _ in }) throws
        -> (EventLoop, BatchedUDPWatcher, Receiver, Recorder)
    {
        let loop = try EventLoop()
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.capacity = 4096
        configuration.maxCallsPerDrain = 1_000
        configure(&configuration)
        let (watcher, receiver) = try connectedPair(configuration, loop: loop)
        #expect(watcher.isSegmenting == (configuration.segmentation == .automatic), "this kernel supports UDP_SEGMENT (Linux 4.18+)")
        let recorder = Recorder()
        recorder.install(on: watcher)
        return (loop, watcher, receiver, recorder)
    }

    /// 3,000 datagrams in runs of mixed sizes arrive as themselves, in order, byte for byte.
    @Test(.needsLargeReceiveBuffers) func receiversSeeTheDatagramsThatWereQueued() throws {
        let (_, watcher, receiver, _) = try watcher()
        var expected: [[UInt8]] = []
        for i in 0..<3_000 {
            let size = [1200, 1200, 1200, 64, 500][(i / 40) % 5] - (i % 40 == 39 ? 7 : 0)
            let bytes = payload(i, size: size)
            expected.append(bytes)
            try watcher.enqueue(bytes)
        }
        runUntilDrained(watcher)
        #expect(receiver.receive(3_000) == expected)
        #expect(receiver.pending().isEmpty)
        let counters = watcher.counters
        #expect(counters.sent == 3_000 && counters.failed == 0)
        #expect(counters.gsoSends > 0 && counters.sendmmsgCalls < 10, "\(counters)")
        expectAccounted(watcher)
    }

    /// The coalescer's bounds: 64 segments; 65,507 bytes in all; equal sizes with a shorter last one; no
    /// control message on a lone datagram; nothing over 1,472 bytes or of zero length coalesced.
    @Test func runsKeepTheKernelsLimits() throws {
        let (loop, watcher, receiver, recorder) = try watcher()
        func offered(_ sizes: [Int]) throws -> [Offered] {
            recorder.calls.removeAll()
            for (i, size) in sizes.enumerated() { try watcher.enqueue(payload(i, size: size)) }
            watcher.flush()
            _ = receiver.receive(sizes.count)
            return recorder.calls.flatMap { $0 }
        }
        func run(_ count: Int, _ size: Int, last: Int? = nil) -> Offered {
            Offered(sizes: Array(repeating: size, count: count) + (last.map { [$0] } ?? []), segmentSize: count + (last == nil ? 0 : 1) > 1 ? size : nil)
        }
        #expect(try offered(Array(repeating: 100, count: 200)) == [run(64, 100), run(64, 100), run(64, 100), run(8, 100)])
        // 44 × 1,472 = 64,768 bytes fits; a 45th would pass 65,507.
        #expect(try offered(Array(repeating: 1472, count: 50)) == [run(44, 1472), run(6, 1472)])
        #expect(try offered([300, 300, 200, 300, 300]) == [run(2, 300, last: 200), run(2, 300)])
        #expect(try offered([300, 400, 400]) == [run(1, 300), run(2, 400)])
        #expect(try offered([1473, 1473, 0, 0, 9]) == [run(1, 1473), run(1, 1473), run(1, 0), run(1, 0), run(1, 9)])
        // The kernel splits a payload by the segment size: an empty datagram in a run would vanish.
        #expect(try offered([100, 100, 0]) == [run(2, 100), run(1, 0)])
        #expect(try offered([100, 0, 100, 100]) == [run(1, 100), run(1, 0), run(2, 100)])
        #expect(try offered([0, 0, 50, 50, 0]) == [run(1, 0), run(1, 0), run(2, 50), run(1, 0)])
        #expect(try getsockopt(watcher, Int32(CUDP_SOL_UDP), Int32(CUDP_UDP_SEGMENT)) == 0, "no socket-wide segment size")
        _ = loop
    }

    /// Slots exactly the datagram size: a run's payloads lie end to end and go out through one iovec,
    /// and still arrive as the datagrams that were queued.
    @Test func contiguousRunsGoOutThroughOneIovec() throws {
        var iovecCounts: [Int] = []
        let (_, watcher, receiver, _) = try watcher { $0.maxDatagramSize = 500 }
        let recorder = watcher.sendSeam!
        watcher.sendSeam = { fd, messages, count in
            for index in 0..<count { iovecCounts.append(messages[index].msg_hdr.msg_iovlen) }
            return recorder(fd, messages, count)
        }
        var expected: [[UInt8]] = []
        for i in 0..<300 {
            expected.append(payload(i, size: i % 100 == 99 ? 123 : 500))
            try watcher.enqueue(expected.last!)
        }
        watcher.flush()
        #expect(receiver.receive(300) == expected)
        #expect(iovecCounts.allSatisfy { $0 == 1 } && watcher.counters.gsoSends > 0, "\(iovecCounts)")
    }

    /// A batch of one size (copied or written in place) is queued as a run no drain scans
    /// (`DatagramRing.uniformRun`). The run ends where the queue holds anything else: a datagram of
    /// another size queued after it, a batch of its size behind that one, a batch of another size, the
    /// rest of a batch whose sizes change (copied or written in place).
    /// It shrinks with what leaves, also when sendmmsg takes fewer messages than offered. Receivers see
    /// exactly the datagrams queued, and GSO carried the runs.
    @Test(.needsLargeReceiveBuffers) func batchesOfOneSizeLeaveAsTheRunsTheyAre() throws {
        let (_, watcher, receiver, recorder) = try watcher()
        let recorded = watcher.sendSeam!
        var shortCalls = 0
        watcher.sendSeam = { fd, messages, count in
            // The first calls of each drain take their first message only: short counts inside the run.
            guard count > 1 && shortCalls < 2 else { return recorded(fd, messages, count) }
            shortCalls += 1
            return recorded(fd, messages, 1)
        }
        var expected: [[UInt8]] = []
        func batch(_ sizes: [Int]) throws { try enqueueCopies(sizes, on: watcher, after: &expected) }
        func batch(_ count: Int, size: Int) throws { try batch(Array(repeating: size, count: count)) }
        func drain(_ runs: [[Int]]) {
            recorder.calls.removeAll()
            shortCalls = 0
            watcher.flush()
            #expect(recorder.calls.flatMap { $0 }.map(\.sizes) == runs)
        }
        let run64 = Array(repeating: 64, count: 64)
        // 150 × 64 B (runs of 64, 64, 22), a single of 100 B after them, five more of 64 B behind it.
        try batch(150, size: 64)
        #expect(watcher.ring.uniformRun == 150)
        expected.append(payload(expected.count, size: 100))
        try watcher.enqueue(expected.last!)
        try batch(5, size: 64)
        #expect(watcher.ring.uniformRun == 150)
        // Two calls take one run each, and the rest goes in one call (a run may end with a shorter datagram).
        drain([run64, run64, Array(repeating: 64, count: 22), [100, 64], Array(repeating: 64, count: 4)])
        #expect(watcher.ring.uniformRun == 0)
        // A batch of another size behind a run; a batch whose sizes change part way.
        try batch(10, size: 64)
        try batch(10, size: 100)
        #expect(watcher.ring.uniformRun == 10)
        drain([Array(repeating: 64, count: 10), Array(repeating: 100, count: 10)])
        try batch([64, 64, 64, 100, 64, 64])
        #expect(watcher.ring.uniformRun == 3)
        drain([[64, 64, 64], [100, 64], [64]])
        // Batches written in place: one of one size is a run; one whose sizes change is not, and does not
        // extend the run before it.
        func inPlace(_ sizes: [Int]) throws {
            let first = expected.count
            #expect(try watcher.enqueue(count: sizes.count) { index, slot in
                slot.copyBytes(from: payload(first + index, size: sizes[index]))
                return sizes[index]
            } == first..<first + sizes.count)
            expected += sizes.indices.map { payload(first + $0, size: sizes[$0]) }
        }
        try inPlace([64, 64, 64, 64, 64])
        #expect(watcher.ring.uniformRun == 5)
        try inPlace([64, 100, 64])
        #expect(watcher.ring.uniformRun == 6)
        drain([[64, 64, 64, 64, 64, 64], [100, 64]])
        try inPlace([100, 64, 64])
        #expect(watcher.ring.uniformRun == 1)
        drain([[100, 64], [64]])
        #expect(receiver.receive(expected.count) == expected)
        #expect(watcher.counters.gsoSends >= 11)
        expectAccounted(watcher)
    }

    /// A copying batch that wraps around the ring's end, its size changing before the end: the run it
    /// adds to ends at the change, though the datagrams after the wrap have the run's size again.
    @Test func aCopyingBatchAcrossTheRingsEndEndsItsRunAtTheFirstOtherSize() throws {
        let (_, watcher, receiver, recorder) = try watcher { $0.capacity = 200; $0.maxCallsPerDrain = 1 }
        let recorded = watcher.sendSeam!
        watcher.sendSeam = { fd, messages, _ in recorded(fd, messages, 1) }  // one message per call
        var expected: [[UInt8]] = []
        func batch(_ sizes: [Int]) throws { try enqueueCopies(sizes, on: watcher, after: &expected) }
        try batch(Array(repeating: 64, count: 190))
        watcher.flush()  // one call, one run of 64: the head moves to slot 64
        #expect(watcher.ring.uniformRun == 126 && watcher.ring.tail == 190)
        try batch(Array(repeating: 64, count: 5) + [100] + Array(repeating: 64, count: 10))
        #expect(watcher.ring.tail == 6, "the batch wrapped")
        #expect(watcher.ring.uniformRun == 131)
        recorder.calls.removeAll()
        runUntilDrained(watcher)
        // Runs end at the ring's end too: 64, 64, then 64 × 3 | 100, 64 | 64 × 3 ‖ 64 × 6.
        #expect(recorder.calls.flatMap { $0 }.map(\.sizes) == [Array(repeating: 64, count: 64), Array(repeating: 64, count: 64),
                                                               [64, 64, 64], [100, 64], [64, 64, 64], Array(repeating: 64, count: 6)])
        #expect(receiver.receive(expected.count) == expected)
        expectAccounted(watcher)
    }

    /// Destinations split runs: one batch to three peers keeps each datagram's own address.
    @Test func runsNeverCrossDestinations() throws {
        let loop = try EventLoop()
        let peers = try (0..<3).map { _ in try Receiver() }
        let watcher = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4))
        let recorder = Recorder()
        recorder.install(on: watcher)
        for i in 0..<30 { try watcher.enqueue(payload(i, size: 100), to: peers[(i / 5) % 3].address) }
        runUntilDrained(watcher)
        #expect(recorder.calls.flatMap { $0 }.map(\.sizes.count) == Array(repeating: 5, count: 6))
        for (index, peer) in peers.enumerated() {
            let expected = (0..<30).filter { ($0 / 5) % 3 == index }
            #expect(peer.receive(10).map(sequence(of:)) == expected)
        }
    }

    /// Empty datagrams after a run of equal ones (the reproduction: 100, 100, 0 counted three sent, two
    /// arrived) reach the receiver, in order, through the real kernel.
    @Test func emptyDatagramsAfterARunArrive() throws {
        let (_, watcher, receiver, _) = try watcher()
        let sizes = [100, 100, 0, 100, 0, 300, 300, 300, 0, 0, 7, 7, 0]
        for (i, size) in sizes.enumerated() { try watcher.enqueue(payload(i, size: size)) }
        runUntilDrained(watcher)
        #expect(receiver.receive(sizes.count).map(\.count) == sizes)
        #expect(receiver.pending().isEmpty)
        #expect(watcher.counters.sent == sizes.count && watcher.counters.gsoSends > 0, "\(watcher.counters)")
    }

    /// EIO or EINVAL on a super-datagram (a route or device that cannot segment; this kernel falls back to
    /// a software checksum, so the seam plays it): the same datagrams go out one by one in the same drain,
    /// none reported; that destination gets no super-datagrams for a while, and the socket keeps
    /// segmenting for others.
    @Test(arguments: [Errno.EIO, .EINVAL])
    func refusedSegmentationFallsBackToOneByOne(error: Errno) throws {
        let (_, watcher, receiver, recorder) = try watcher()
        var refused = false
        recorder.answer = { _, _, _ in
            defer { refused = true }
            return refused ? nil : .failed(error)
        }
        var failures: [SendFailure] = []
        watcher.onError = { _, failure in failures.append(failure) }
        for i in 0..<20 { try watcher.enqueue(payload(i, size: 200)) }
        watcher.flush()
        #expect(failures.isEmpty)
        #expect(watcher.isSegmenting, "one refusal is about one path, not the socket")
        #expect(recorder.calls.map { $0.map(\.sizes.count) } == [[20], Array(repeating: 1, count: 20)])
        #expect(receiver.receive(20).map(sequence(of:)) == Array(0..<20))
        var counters = watcher.counters
        #expect(counters.segmentationFallbacks == 1 && counters.sent == 20 && counters.gsoSends == 0)
        #expect(counters.segmentationDisabled == 0)
        // The refused destination: one datagram per message until its limit expires.
        recorder.calls.removeAll()
        for i in 20..<30 { try watcher.enqueue(payload(i, size: 200)) }
        watcher.flush()
        #expect(recorder.calls.flatMap { $0 }.map(\.sizes.count) == Array(repeating: 1, count: 10))
        #expect(receiver.receive(10).map(sequence(of:)) == Array(20..<30))
        counters = watcher.counters
        #expect(counters.segmentationFallbacks == 1 && counters.failed == 0)
        expectAccounted(watcher)
    }

    /// The same refusal on three destinations in a row, each accepting the datagrams one by one: the
    /// device cannot segment, and segmentation goes off for the socket (counted); nothing is lost.
    @Test func repeatedRefusalsTurnSegmentationOff() throws {
        let loop = try EventLoop()
        let peers = try (0..<4).map { _ in try Receiver() }
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.maxCallsPerDrain = 1_000
        let watcher = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4), configuration: configuration)
        let recorder = Recorder()
        recorder.install(on: watcher)
        recorder.refuse = { offered, _ in offered.sizes.count > 1 ? .EIO : nil }
        var failures: [SendFailure] = []
        watcher.onError = { _, failure in failures.append(failure) }
        for (index, peer) in peers.enumerated() {
            for i in 0..<10 { try watcher.enqueue(payload(index * 10 + i, size: 200), to: peer.address) }
            watcher.flush()
            #expect(peer.receive(10).map(sequence(of:)) == Array(index * 10..<index * 10 + 10))
            #expect(watcher.isSegmenting == (index < 2), "after \(index + 1) refusals")
        }
        let counters = watcher.counters
        #expect(counters.segmentationFallbacks == 3 && counters.segmentationDisabled == 1, "\(counters)")
        #expect(failures.isEmpty && counters.sent == 40)
        expectAccounted(watcher)
    }

    /// The reproduction: two equal datagrams to port 0 (EINVAL before GSO is considered, as for a
    /// reply to a spoofed source port), then 64 equal datagrams to a good receiver. The 2 fail with
    /// EINVAL, the 64 arrive as one super-datagram, and segmentation stays on.
    @Test func oneBadDestinationLeavesSegmentationOn() throws {
        let loop = try EventLoop()
        let receiver = try Receiver()
        let watcher = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4))
        var failures: [SendFailure] = []
        watcher.onError = { _, failure in failures.append(failure) }
        let portZero = SocketAddress(ipv4: 127, 0, 0, 1, port: 0)
        for i in 0..<2 { try watcher.enqueue(payload(i, size: 100), to: portZero) }
        for i in 2..<66 { try watcher.enqueue(payload(i, size: 100), to: receiver.address) }
        runUntilDrained(watcher)
        #expect(failures.map(\.sequence) == [0, 1] && failures.allSatisfy { $0.errno == .EINVAL }, "\(failures)")
        #expect(receiver.receive(64).map(sequence(of:)) == Array(2..<66))
        #expect(watcher.isSegmenting)
        let counters = watcher.counters
        #expect(counters.gsoSends == 1 && counters.segmentationDisabled == 0, "\(counters)")
        expectAccounted(watcher)
    }

    /// A per-datagram error on a super-datagram: the run is sent again one by one, and each datagram that
    /// the kernel refuses alone is reported once, with its own errno; the others arrive.
    @Test func failedSuperDatagramReportsOnlyTheRefusedDatagrams() throws {
        let (_, watcher, receiver, recorder) = try watcher()
        // The kernel refuses the super-datagram of 0...4, and then datagrams 1 and 3 alone.
        recorder.refuse = { offered, first in offered.sizes.count > 1 && first == 0 || first == 1 || first == 3 ? .EPERM : nil }
        var failures: [SendFailure] = []
        watcher.onError = { _, failure in failures.append(failure) }
        for i in 0..<5 { try watcher.enqueue(payload(i, size: 100)) }
        for i in 5..<8 { try watcher.enqueue(payload(i, size: 300)) }
        watcher.flush()
        #expect(failures.map(\.sequence) == [1, 3], "\(failures)")
        #expect(failures.allSatisfy { $0.errno == .EPERM && $0.length == 100 }, "\(failures)")
        #expect(receiver.receive(8).map(sequence(of:)) == [0, 2, 4, 5, 6, 7])
        #expect(watcher.isSegmenting, "a per-datagram error does not turn segmentation off")
        #expect(watcher.counters.segmentationFallbacks == 1)
        expectAccounted(watcher)
    }

    @Test func offSendsOneDatagramPerMessage() throws {
        let (_, watcher, receiver, recorder) = try watcher { $0.segmentation = .off }
        for i in 0..<100 { try watcher.enqueue(payload(i, size: 100)) }
        watcher.flush()
        #expect(receiver.receive(100).count == 100)
        #expect(recorder.calls.flatMap { $0 } == Array(repeating: Offered(sizes: [100], segmentSize: nil), count: 100))
        #expect(watcher.counters.gsoSends == 0)
    }

    /// A segment size someone left set socket-wide would split every send: registration clears it.
    @Test func socketWideSegmentSizeIsCleared() throws {
        let loop = try EventLoop()
        let receiver = try Receiver()
        let socket = try UDPSocket(family: .ipv4)
        try socket.connect(to: receiver.address)
        try socket.setOption(Int32(CUDP_SOL_UDP), Int32(CUDP_UDP_SEGMENT), 100, "UDP_SEGMENT")
        let watcher = try BatchedUDPWatcher(loop: loop, socket: socket)
        #expect(try socket.option(Int32(CUDP_SOL_UDP), Int32(CUDP_UDP_SEGMENT), "UDP_SEGMENT") == 0)
        try watcher.enqueue(payload(0, size: 1000))
        watcher.flush()
        #expect(receiver.receive(2).map(\.count) == [1000], "one datagram, not ten segments")
    }

    func getsockopt(_ watcher: BatchedUDPWatcher, _ level: Int32, _ name: Int32) throws -> Int {
        try watcher.socket.option(level, name, "option")
    }

    /// Queues copies of datagrams of `sizes` with one `enqueue(contentsOf:)`, numbered on from
    /// `expected`, which they are appended to.
    func enqueueCopies(_ sizes: [Int], on watcher: BatchedUDPWatcher, after expected: inout [[UInt8]]) throws {
        let first = expected.count
        let payloads = sizes.indices.map { payload(first + $0, size: sizes[$0]) }
        try WatcherBatchEnqueueTests().withBuffers(payloads) { buffers throws in
            #expect(try watcher.enqueue(contentsOf: buffers) == first..<first + sizes.count)
        }
        expected += payloads
    }

    func payload(_ sequence: Int, size: Int) -> [UInt8] {
        size >= 8 ? sequencePayload(sequence, size: size) : [UInt8](repeating: UInt8(truncatingIfNeeded: sequence), count: size)
    }
}
