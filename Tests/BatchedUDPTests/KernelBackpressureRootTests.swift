@testable import BatchedUDP
import CTestSupport
import CUDPShims
import TestSupport
import Foundation
import Glibc
import Libev
import Testing

/// Cases the kernel produces for real. Loopback itself never pushes back (it releases a datagram's send
/// buffer charge as soon as it is queued to the receiver), so these run in a private network namespace
/// whose `lo` has a rate-limiting qdisc or a small MTU. Root only (see `Privileges`).
@Suite("Needs root: short counts, EAGAIN and MTU in a namespace", .serialized, .needsRoot)
struct KernelBackpressureRootTests {
    /// 100,000 datagrams through a small SO_SNDBUF into a 20 Mbit/s qdisc with a short queue: the kernel answers with short
    /// counts and EAGAIN, and every datagram still arrives exactly once, in order.
    @Test func realShortCountsAndEAGAINLoseNothing() throws {
        let namespace = try NetworkNamespace(rate: "20mbit")
        let total = 100_000
        let (loop, watcher, receiver) = try namespace.inside {
            let receiver = try Receiver(receiveBuffer: 256 << 20)
            let socket = try UDPSocket(family: .ipv4)
            try socket.setSendBufferSize(4096)
            try socket.connect(to: receiver.address)
            let loop = try EventLoop()
            var oneByOne = BatchedUDPWatcher.Configuration()
            oneByOne.segmentation = .off  // the seam below counts one datagram per message
            return (loop, try BatchedUDPWatcher(loop: loop, socket: socket, configuration: oneByOne), receiver)
        }
        let reader = BackgroundReader(receiver, expecting: total)
        var next = 0
        func refill(_ watcher: BatchedUDPWatcher) {
            while next < total && watcher.isWritable {
                do { try watcher.enqueue(sequencePayload(next, size: 64)) } catch { break }
                next += 1
            }
        }
        watcher.onWritabilityChanged = { watcher, writable in if writable { refill(watcher) } }
        watcher.onError = { _, failure in Issue.record("unexpected failure: \(failure)") }
        // What the watcher hands the kernel must be contiguous and in order, call after call.
        var offeredInOrder = true
        var kernelTook = 0
        watcher.sendSeam = { fd, messages, count in
            let head = messages.pointee.msg_hdr.msg_iov.pointee
            if Int(UInt64(littleEndian: head.iov_base!.loadUnaligned(as: UInt64.self))) != kernelTook { offeredInOrder = false }
            let result = Syscall.sendmmsgOnce(fd, messages, count)
            if case let .done(n) = result { kernelTook += n }
            return result
        }
        // Loopback can reorder datagrams whose transmission runs on different CPUs' softirqs; keep the
        // sending side on one CPU so the receiver's order reflects the watcher's.
        #expect(ctest_pin_to_cpu(0) == 0)
        refill(watcher)
        loop.run()
        _ = ctest_unpin()
        let received = reader.finish()
        #expect(offeredInOrder, "the watcher offered a datagram out of order or twice")
        let counters = watcher.counters
        #expect(counters.sent == total && counters.failed == 0)
        #expect(counters.eagain > 0, "the kernel pushed back with EAGAIN: \(counters)")
        #expect(counters.shortCounts > 0, "the kernel returned short counts: \(counters)")
        let check = SequenceCheck(received, expected: total)
        #expect(check.missing == 0 && check.duplicates == 0, "\(check)")
        #expect(check.outOfOrder == 0, "\(check)")
        expectAccounted(watcher)
    }

    /// An oversized datagram (over the path MTU with don't-fragment set) in the middle of a batch: the
    /// kernel sends the two before it, the retry fails it alone with EMSGSIZE, and the two after it go out.
    @Test func oversizedDatagramMidBatchFailsAlone() throws {
        let namespace = try NetworkNamespace(mtu: 1500)
        let (loop, watcher, receiver) = try namespace.inside {
            let receiver = try Receiver()
            let socket = try UDPSocket(family: .ipv4)
            try socket.setOption(Int32(IPPROTO_IP), IP_MTU_DISCOVER, IP_PMTUDISC_DO, "IP_MTU_DISCOVER")
            try socket.connect(to: receiver.address)
            let loop = try EventLoop()
            return (loop, try BatchedUDPWatcher(loop: loop, socket: socket), receiver)
        }
        var failures: [SendFailure] = []
        watcher.onError = { _, failure in failures.append(failure) }
        for i in 0..<5 { try watcher.enqueue(sequencePayload(i, size: i == 2 ? 2000 : 100)) }
        loop.run()
        #expect(failures.map(\.sequence) == [2])
        #expect(failures.first?.errno == .EMSGSIZE)
        #expect(failures.first?.length == 2000)
        #expect(receiver.receive(4).map(sequence(of:)) == [0, 1, 3, 4])
        #expect(watcher.counters.shortCounts == 1)
        expectAccounted(watcher)
    }
}

/// Loss, duplication and order of received sequence numbers, summarised (never the whole list).
struct SequenceCheck: CustomStringConvertible {
    var missing = 0, duplicates = 0, outOfOrder = 0, firstOutOfOrder: Int?

    init(_ received: [Int], expected: Int) {
        var seen = [Bool](repeating: false, count: expected)
        var highest = -1
        for (index, sequence) in received.enumerated() {
            guard sequence >= 0 && sequence < expected, !seen[sequence] else { duplicates += 1; continue }
            seen[sequence] = true
            if sequence < highest {
                outOfOrder += 1
                if firstOutOfOrder == nil { firstOutOfOrder = index }
            }
            highest = max(highest, sequence)
        }
        missing = seen.lazy.filter { !$0 }.count
    }

    var description: String {
        "missing \(missing), duplicates \(duplicates), out of order \(outOfOrder) (first at position \(firstOutOfOrder.map(String.init) ?? "-"))"
    }
}

/// Reads sequence numbers on its own thread while the loop sends.
final class BackgroundReader: @unchecked Sendable {
    private let receiver: Receiver
    private let result = Locked<[Int]>([])
    private let done = DispatchSemaphore(value: 0)

    init(_ receiver: Receiver, expecting count: Int) {
        self.receiver = receiver
        Thread.detachNewThread { [self] in
            let datagrams = self.receiver.receive(count, timeout: 5)
            self.result.withLock { $0 = datagrams.map(sequence(of:)) }
            self.done.signal()
        }
    }

    func finish() -> [Int] {
        done.wait()
        return result.withLock { $0 }
    }
}
