@testable import BatchedUDP
import Foundation
import Glibc
import Libev
import Testing
import TestSupport

/// Who owns what, and what a misuse does: a closed socket, a host loop that must be able to finish,
/// a configuration too large to allocate, an `enqueue(writingWith:)` body that re-enters, a call from
/// the wrong thread (the last two stop the process with a message, so they run as exit tests).
@Suite struct WatcherOwnershipTests {
    /// Closing the UDPSocket closes its watcher first: the queued datagrams are reported with ECANCELED
    /// and none goes out through a new socket that reuses the descriptor number.
    @Test func closingTheSocketClosesItsWatcher() throws {
        let loop = try EventLoop()
        let first = try Receiver(), second = try Receiver()
        let socket = try UDPSocket(family: .ipv4)
        try socket.connect(to: first.address)
        let watcher = try BatchedUDPWatcher(loop: loop, socket: socket)
        var failures: [SendFailure] = []
        watcher.onError = { _, failure in failures.append(failure) }
        for i in 0..<5 { try watcher.enqueue(sequencePayload(i)) }
        try socket.close()
        #expect(watcher.state == .closed)
        #expect(failures.map(\.sequence) == Array(0..<5) && failures.allSatisfy { $0.errno == .ECANCELED })
        // The kernel hands out the lowest free number: usually the one just closed (other tests run in
        // parallel, so the test does not depend on it).
        let reuser = try UDPSocket(family: .ipv4)
        try reuser.connect(to: second.address)
        #expect(throws: BatchedUDPError.closed) { try watcher.enqueue([1]) }
        loop.run(.noWait)
        #expect(watcher.counters.sendmmsgCalls == 0 && !watcher.isDrainScheduled && !watcher.isWaitingForWritable)
        #expect(first.pending().isEmpty && second.pending().isEmpty)
        expectAccounted(watcher)
    }

    /// A writing body that closes the watcher's socket (and so the watcher): the datagram is not queued
    /// into the closed watcher (where nothing would ever send or report it); the enqueue throws `closed`.
    @Test func writingBodyThatClosesTheSocketQueuesNothing() throws {
        let loop = try EventLoop()
        let (watcher, _) = try connectedPair(loop: loop)
        #expect(throws: BatchedUDPError.closed) {
            try watcher.enqueue { slot in
                try watcher.socket.close()
                return 0
            }
        }
        #expect(watcher.counters.enqueued == 0 && watcher.state == .closed)
        expectAccounted(watcher)
    }

    /// Closing the UDPSocket stops its reader for good: nothing is read from the socket that reuses the
    /// number, and `start()` does nothing.
    @Test func closingTheSocketStopsItsReader() throws {
        let loop = try EventLoop()
        let socket = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        var delivered = 0
        let reader = try BatchedUDPReader(loop: loop, socket: socket) { _, batch in delivered += batch.count }
        reader.start()
        try socket.close()
        #expect(!reader.isReading)
        let reuser = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        let sender = try UDPSocket(family: .ipv4)
        try sender.connect(to: reuser.localAddress)
        _ = "hello".withCString { send(sender.fileDescriptor, $0, 5, 0) }
        reader.start()
        #expect(!reader.isReading)
        loop.run(.noWait)
        #expect(delivered == 0)
    }

    /// `keepsLoopAlive: false`: with datagrams stuck (the socket never writable), the host's `run()`
    /// still returns; the datagrams stay queued and `close()` reports them.
    @Test func queuedDatagramsNeedNotKeepTheHostLoopRunning() throws {
        let loop = try EventLoop()
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.keepsLoopAlive = false
        let (watcher, _) = try connectedPair(configuration, loop: loop)
        ScriptedSendmmsg(Array(repeating: .fail(.EAGAIN), count: 1_000)).install(on: watcher)
        var failures: [SendFailure] = []
        watcher.onError = { _, failure in failures.append(failure) }
        for i in 0..<3 { try watcher.enqueue(sequencePayload(i)) }
        // A host callback enqueued them, then the host's loop runs out of its own work.
        let host = TimerWatcher(loop: loop, after: 0) { _ in }
        host.start()
        loop.run()
        #expect(watcher.counters.queued == 3 && watcher.isWaitingForWritable)
        watcher.close()
        #expect(failures.map(\.errno) == [.ECANCELED, .ECANCELED, .ECANCELED])
        expectAccounted(watcher)
    }

    /// ENOBUFS for longer than `noBufferTimeout` with nothing sent: every queued datagram is reported with
    /// ENOBUFS and the loop finishes; the watcher keeps working afterwards.
    @Test func endlessNoBuffersEnds() throws {
        let loop = try EventLoop()
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.noBufferTimeout = 0.05
        configuration.noBufferBackoff = 0.005
        configuration.segmentation = .off
        let (watcher, receiver) = try connectedPair(configuration, loop: loop)
        let script = ScriptedSendmmsg(Array(repeating: .fail(.ENOBUFS), count: 100_000))
        script.install(on: watcher)
        var failures: [SendFailure] = []
        watcher.onError = { _, failure in failures.append(failure) }
        for i in 0..<4 { try watcher.enqueue(sequencePayload(i)) }
        loop.run()
        #expect(failures.map(\.sequence) == Array(0..<4) && failures.allSatisfy { $0.errno == .ENOBUFS })
        // At least one back-off: how many fit in noBufferTimeout depends on how busy the machine is.
        #expect(watcher.counters.backoffs >= 1 && !watcher.isBackingOff && watcher.state == .open)
        script.steps = []
        try watcher.enqueue(sequencePayload(4))
        loop.run()
        #expect(receiver.receive(1).map(sequence(of:)) == [4])
        expectAccounted(watcher)
    }

    /// The ENOBUFS clock restarts when the ring empties: an old back-off, followed by datagrams that
    /// failed for other reasons, does not make a much later back-off give up at once.
    @Test func noBufferClockRestartsWhenTheRingEmpties() throws {
        let loop = try EventLoop()
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.noBufferTimeout = 0.05
        configuration.noBufferBackoff = 0.005
        configuration.noBufferRetries = 0
        configuration.segmentation = .off
        let (watcher, receiver) = try connectedPair(configuration, loop: loop)
        let script = ScriptedSendmmsg([.fail(.ENOBUFS), .fail(.EPERM)])
        script.install(on: watcher)
        var failures: [SendFailure] = []
        watcher.onError = { _, failure in failures.append(failure) }
        try watcher.enqueue(sequencePayload(0))
        loop.run()  // backs off once, then the datagram fails with EPERM: the ring is empty
        let pause = TimerWatcher(loop: loop, after: 0.1) { _ in }
        pause.start()
        loop.run()  // longer than noBufferTimeout
        script.steps = [.fail(.ENOBUFS), .kernel]
        try watcher.enqueue(sequencePayload(1))
        loop.run()
        #expect(failures.map(\.errno) == [.EPERM], "\(failures)")
        #expect(receiver.receive(1).map(sequence(of:)) == [1])
        #expect(watcher.counters.backoffs == 2)
        expectAccounted(watcher)
    }

    /// Sizes whose memory would overflow (or pass 16 GiB) are refused by name, never trapped on.
    @Test(arguments: [
        (Int.max, 2048, "capacity"), (1 << 24, 65_527, "16 GiB"), (1 << 30, 0, "capacity"), (Int.max / 2, 0, "capacity"),
    ])
    func oversizedConfigurationThrows(capacity: Int, maxDatagramSize: Int, names: String) throws {
        let loop = try EventLoop()
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.capacity = capacity
        configuration.maxDatagramSize = maxDatagramSize
        #expect { _ = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4), configuration: configuration) } throws: {
            guard case let .invalidConfiguration(text)? = $0 as? BatchedUDPError else { return false }
            return text.contains(names)
        }
        configuration = .init()
        configuration.byteCapacity = -1
        #expect { _ = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4), configuration: configuration) } throws: {
            "\($0)".contains("byteCapacity must not be negative")
        }
        configuration = .init()
        configuration.noBufferTimeout = -.infinity
        #expect { _ = try BatchedUDPWatcher(loop: loop, socket: UDPSocket(family: .ipv4), configuration: configuration) } throws: {
            "\($0)".contains("noBufferTimeout")
        }
    }

    /// An `enqueue(writingWith:)` body that enqueues, flushes or closes the same watcher would commit a
    /// stale slot (or queue into a closed watcher): it stops with a precondition naming the misuse.
    @Test func enqueueFromAWritingBodyStops() async throws {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let (watcher, _) = try connectedPair(loop: try EventLoop())
            try watcher.enqueue { _ in
                try watcher.enqueue([1])
                return 0
            }
        }
        expectMisuseNamed(result)
    }

    /// The lean copying form skips the reentry check on its fast path (a body zeroes the bound it
    /// checks instead): from a batch body too, it must still stop.
    @Test func copyFromABatchBodyStops() async throws {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let (watcher, _) = try connectedPair(loop: try EventLoop())
            try watcher.enqueue(count: 2) { _, _ in
                try watcher.enqueue([1])
                return 1
            }
        }
        expectMisuseNamed(result)
    }

    @Test func flushFromAWritingBodyStops() async throws {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let (watcher, _) = try connectedPair(loop: try EventLoop())
            try watcher.enqueue { _ in
                watcher.flush()
                return 0
            }
        }
        expectMisuseNamed(result)
    }

    @Test func closeFromAWritingBodyStops() async throws {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let (watcher, _) = try connectedPair(loop: try EventLoop())
            try watcher.enqueue { _ in
                watcher.close()
                return 0
            }
        }
        expectMisuseNamed(result)
    }

    func expectMisuseNamed(_ result: ExitTest.Result?, sourceLocation: SourceLocation = #_sourceLocation) {
        let text = result.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
        #expect(text.contains("called from inside an enqueue(writingWith:) body on the same watcher"), "\(text)", sourceLocation: sourceLocation)
    }

    #if DEBUG
    /// Debug builds: an entry point called on another thread while the loop runs stops with a message
    /// naming the call.
    @Test func callFromAnotherThreadStopsInDebugBuilds() async throws {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let loop = try EventLoop()
            let (watcher, _) = try connectedPair(loop: loop)
            let running = DispatchSemaphore(value: 0)
            let ticker = TimerWatcher(loop: loop, after: 0, repeat: 0.001) { _ in running.signal() }
            ticker.start()
            nonisolated(unsafe) let unsafeLoop = loop
            Thread.detachNewThread { unsafeLoop.run() }
            running.wait()
            try watcher.enqueue([1])
        }
        let text = result.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
        #expect(text.contains("BatchedUDPWatcher.enqueue(_:) was called on a thread that is not running its event loop"), "\(text)")
    }
    #endif
}
