@testable import BatchedUDP
import Libev
import Testing
import TestSupport

/// GSO against a real path MTU: two network namespaces joined by a veth pair. Root only (see `Privileges`).
@Suite("Needs root: GSO over a veth pair with a small MTU", .needsRoot)
struct SegmentationRootTests {
    /// The real kernel: a 1,280-byte MTU between two namespaces and 1,400-byte datagrams. The kernel
    /// refuses their super-datagram (EMSGSIZE) but fragments them one by one, so they all arrive; smaller
    /// runs afterwards still go out segmented.
    @Test func segmentsOverThePathMTUAreSentOneByOne() throws {
        let (senderSide, receiverSide) = try NetworkNamespace.linkedPair(rate: nil, mtu: 1280)
        let receiver = try receiverSide.inside { try Receiver(try SocketAddress(parsing: "10.99.0.2:4000")) }
        let (loop, watcher) = try senderSide.inside {
            let socket = try UDPSocket(family: .ipv4)
            try socket.connect(to: receiver.address)
            let loop = try EventLoop()
            return (loop, try BatchedUDPWatcher(loop: loop, socket: socket))
        }
        var failures: [SendFailure] = []
        watcher.onError = { _, failure in failures.append(failure) }
        var expected: [[UInt8]] = []
        for i in 0..<40 {
            let bytes = WatcherSegmentationTests().payload(i, size: i < 20 ? 1400 : 1000)
            expected.append(bytes)
            try watcher.enqueue(bytes)
        }
        loop.run()
        #expect(failures.isEmpty, "\(failures)")
        #expect(receiver.receive(40) == expected)
        let counters = watcher.counters
        #expect(counters.segmentationFallbacks == 1, "\(counters)")
        #expect(counters.gsoSends == 1 && watcher.isSegmenting, "the 1,000-byte run still went out as one super-datagram: \(counters)")
        expectAccounted(watcher)
    }
}
