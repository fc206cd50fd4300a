@testable import BatchedUDP
import CUDPShims
import Glibc
import Libev
import Testing
import TestSupport

/// A connected sender socket and its watcher, plus a receiver, on loopback.
func connectedPair(_ configuration: BatchedUDPWatcher.Configuration = .init(), loop: EventLoop) throws -> (BatchedUDPWatcher, Receiver) {
    let receiver = try Receiver()
    let socket = try UDPSocket(family: .ipv4)
    try socket.connect(to: receiver.address)
    return (try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration), receiver)
}

/// Runs the loop until the watcher's ring is empty (or `seconds` pass, which records a failure).
func runUntilDrained(_ watcher: BatchedUDPWatcher, seconds: Double = 10, sourceLocation: SourceLocation = #_sourceLocation) {
    let loop = watcher.loop
    let guardTimer = TimerWatcher(loop: loop, after: seconds) { timer in
        Issue.record("still \(watcher.counters.queued) queued after \(seconds) s", sourceLocation: sourceLocation)
        timer.loop.breakLoop()
    }
    guardTimer.keepsLoopAlive = false
    guardTimer.start()
    while watcher.counters.queued > 0 && guardTimer.isActive { loop.run(.once) }
    guardTimer.stop()
}

/// The package's promise, checked after every step: every datagram is sent, failed or still queued.
func expectAccounted(_ watcher: BatchedUDPWatcher, sourceLocation: SourceLocation = #_sourceLocation) {
    let c = watcher.counters
    #expect(c.enqueued == c.sent + c.failed + c.queued, "\(c)", sourceLocation: sourceLocation)
    #expect(c.failed == c.failedByErrno.values.reduce(0, +), sourceLocation: sourceLocation)
    #expect(watcher.isWaitingForWritable == false || c.queued > 0, "EV_WRITE armed with nothing queued", sourceLocation: sourceLocation)
}


/// The UDP_SEGMENT size a message asks for, nil when it carries no such control message.
func segmentSize(of header: msghdr) -> Int? {
    var copy = header
    var control = cudp_cmsg_firsthdr(&copy)
    while let current = control {
        if current.pointee.cmsg_level == Int32(CUDP_SOL_UDP) && current.pointee.cmsg_type == Int32(CUDP_UDP_SEGMENT) {
            return Int(UnsafeRawPointer(cudp_cmsg_data(current)).loadUnaligned(as: UInt16.self))
        }
        control = cudp_cmsg_nxthdr(&copy, current)
    }
    return nil
}
