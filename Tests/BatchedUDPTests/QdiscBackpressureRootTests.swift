@testable import BatchedUDP
import CTestSupport
import TestSupport
import Foundation
import Glibc
import Libev
import Testing

/// The kernel pushing back for real: two network namespaces joined by a veth pair, a rate-limiting tbf
/// qdisc on the sender's end, and a watcher blasting through it. Root only (see `Privileges`); with CI=true and no root
/// the namespace setup fails and says so.
@Suite("Needs root: a tbf qdisc on a veth pair", .serialized, .needsRoot)
struct QdiscBackpressureRootTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var receivesErrors: Bool
        var sendBuffer: Int
        /// Every `deadEvery`-th datagram goes to a port nobody listens on, so ICMP errors come back.
        var deadEvery: Int? = nil
        var segmentation = BatchedUDPWatcher.Configuration.Segmentation.off
        /// The qdisc's queue, in bytes.
        var queueLimit = "20kb"
        var testDescription: String {
            "IP_RECVERR \(receivesErrors ? "on" : "off"), SO_SNDBUF \(sendBuffer)" + (deadEvery.map { ", every \($0)th to a dead port" } ?? "")
                + (segmentation == .automatic ? ", GSO, queue \(queueLimit)" : "")
        }
    }

    static let total = 4_000

    /// - IP_RECVERR off, small send buffer: the socket fills before the qdisc does, so the kernel answers
    ///   with EAGAIN and short counts. (With a send buffer larger than the qdisc's queue and IP_RECVERR off,
    ///   Linux drops the overflow silently; nobody can report those, see UDPSocket.setReceivesErrors.)
    /// - IP_RECVERR on, small send buffer, ICMP errors coming back: entries wait in the error queue, so
    ///   epoll reports EPOLLERR; the watcher must read them instead of spinning on EV_WRITE.
    /// - IP_RECVERR on, large send buffer: the qdisc overflows and the kernel returns ENOBUFS; the
    ///   watcher retries and backs off on its timer.
    /// - GSO on, small send buffer, a queue that holds a whole super-datagram: EAGAIN again, with 64
    ///   datagrams a send. (tbf splits a super-datagram larger than its burst and enqueues the segments one
    ///   by one; those that overflow a queue smaller than the super-datagram are dropped without an error,
    ///   even with IP_RECVERR. The other cases therefore send one datagram per message.)
    @Test(arguments: [
        Case(receivesErrors: false, sendBuffer: 4096),
        Case(receivesErrors: true, sendBuffer: 4096, deadEvery: 100),
        Case(receivesErrors: true, sendBuffer: 1 << 20),
        Case(receivesErrors: true, sendBuffer: 4096, segmentation: .automatic, queueLimit: "256kb"),
    ])
    func everyDatagramIsReceivedOrReportedWithoutSpinning(_ setup: Case) throws {
        let (senderSide, receiverSide) = try NetworkNamespace.linkedPair(rate: "16mbit", limit: setup.queueLimit)
        let receiver = try receiverSide.inside { try Receiver(try SocketAddress(parsing: "10.99.0.2:4000"), receiveBuffer: 64 << 20) }
        let deadPort = try SocketAddress(parsing: "10.99.0.2:9")
        let (loop, watcher) = try senderSide.inside {
            let socket = try UDPSocket(family: .ipv4)
            try socket.setSendBufferSize(setup.sendBuffer)
            try socket.setReceivesErrors(setup.receivesErrors)
            #expect(try socket.receivesErrors == setup.receivesErrors)
            let loop = try EventLoop()
            var configuration = BatchedUDPWatcher.Configuration()
            configuration.segmentation = setup.segmentation
            return (loop, try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration))
        }
        let total = Self.total
        let isDead = { (index: Int) in setup.deadEvery.map { index % $0 == $0 - 1 } ?? false }
        let reader = BackgroundReader(receiver, expecting: total - (setup.deadEvery.map { total / $0 } ?? 0))
        var failed: [Int: Errno] = [:]
        watcher.onError = { _, failure in failed[failure.sequence] = failure.errno }
        var problems: [SocketProblem] = []
        watcher.onSocketProblem = { _, problem in problems.append(problem) }
        var next = 0
        func refill(_ watcher: BatchedUDPWatcher) {
            while next < total && watcher.isWritable {
                let destination = isDead(next) ? deadPort : receiver.address
                guard (try? watcher.enqueue(sequencePayload(next, size: 1000), to: destination)) == next else { break }
                next += 1
            }
        }
        watcher.onWritabilityChanged = { watcher, writable in if writable { refill(watcher) } }
        // The qdisc passes 4,000 × 1,042 bytes in about two seconds; a watcher that stalls trips this guard instead of hanging the suite.
        var stalled = false
        let guardTimer = TimerWatcher(loop: loop, after: 60) { _ in stalled = true; loop.breakLoop(.all) }
        guardTimer.keepsLoopAlive = false
        guardTimer.start()

        let started = (wall: Date(), cpu: threadCPUSeconds())
        refill(watcher)
        loop.run()
        let wall = Date().timeIntervalSince(started.wall), cpu = threadCPUSeconds() - started.cpu
        let received = Set(reader.finish())

        let counters = watcher.counters
        #expect(!stalled, "the watcher stalled with \(counters.queued) queued: \(counters)")
        #expect(next == total && counters.queued == 0)
        expectAccounted(watcher)
        var unaccounted = 0, both = 0
        for index in 0..<total where !isDead(index) {
            switch (received.contains(index), failed[index] != nil) {
            case (false, false): unaccounted += 1
            case (true, true): both += 1
            default: break
            }
        }
        #expect(unaccounted == 0, "\(unaccounted) datagrams neither received nor reported; \(counters)")
        #expect(both == 0, "\(both) datagrams reported failed yet received")
        // A spinning watcher burns the thread while the qdisc drains and makes a call per spin.
        #expect(cpu < 0.5 * wall, "the sending thread used \(cpu) s of CPU in \(wall) s: spinning? \(counters)")
        #expect(counters.sendmmsgCalls <= 2 * total, "\(counters.sendmmsgCalls) sendmmsg calls for \(total) datagrams: spinning? \(counters)")
        if setup.receivesErrors && setup.sendBuffer > 4096 {
            #expect(counters.noBuffers > 0 && counters.backoffs > 0, "the qdisc overflowed into ENOBUFS: \(counters)")
            #expect(failed.isEmpty, "ENOBUFS is retried, never reported: \(failed.values)")
        } else {
            #expect(counters.eagain > 0 && counters.shortCounts > 0, "the full send buffer pushed back: \(counters)")
        }
        if setup.segmentation == .automatic {
            #expect(counters.gsoSends > 0 && watcher.isSegmenting, "super-datagrams went out: \(counters)")
        }
        #expect(failed.isEmpty, "\(failed.count) datagrams failed: \(Set(failed.values))")
        if setup.deadEvery != nil {
            // ICMP port unreachable comes back (rate limited by the receiver's kernel): each sets a pending
            // error that the next send meets, whatever it carries, and queues an entry in the error queue.
            // Neither is charged to a datagram; both are reported as the socket's.
            #expect(counters.deliveryErrors > 0 && counters.pendingErrors > 0, "error queue entries and pending errors reported: \(counters)")
            #expect(problems.allSatisfy { [.pendingError(.ECONNREFUSED), .deliveryError(.ECONNREFUSED, destination: deadPort)].contains($0) }, "\(Set(problems.map(\.description)))")
            #expect(problems.count == counters.pendingErrors + counters.deliveryErrors)
        }
    }
}

/// CPU time the calling thread has used, in seconds.
func threadCPUSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}
