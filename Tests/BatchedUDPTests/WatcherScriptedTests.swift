@testable import BatchedUDP
import Libev
import Testing
import TestSupport

/// Sequences loopback will not produce on demand, through the sendmmsg seam. Real sends still happen
/// (the seam calls the kernel for `.kernel` and `.sendOnly`), so the receiver checks order and loss.
/// Segmentation is off: these are about sendmmsg's contract, one datagram per message
/// (WatcherSegmentationTests covers GSO).
@Suite struct WatcherScriptedTests {
    func setUp(_ steps: [ScriptedSendmmsg.Step], configure: (inout BatchedUDPWatcher.Configuration) -> Void = { _ in })
        throws -> (EventLoop, BatchedUDPWatcher, Receiver, ScriptedSendmmsg, Reports)
    {
        let loop = try EventLoop()
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.segmentation = .off
        configure(&configuration)
        let (watcher, receiver) = try connectedPair(configuration, loop: loop)
        let script = ScriptedSendmmsg(steps)
        script.install(on: watcher)
        let reports = Reports()
        watcher.onError = { _, failure in reports.failures.append(failure) }
        return (loop, watcher, receiver, script, reports)
    }

    final class Reports { var failures: [SendFailure] = [] }

    /// A short count keeps the unsent tail queued, in order; the next call starts at the first unsent one.
    @Test func shortCountKeepsTheTailInOrder() throws {
        let (loop, watcher, receiver, script, reports) = try setUp([.sendOnly(3), .fail(.EAGAIN)])
        for i in 0..<10 { try watcher.enqueue(sequencePayload(i)) }
        watcher.flush()
        #expect(watcher.counters.sent == 3 && watcher.counters.queued == 7)
        #expect(watcher.counters.shortCounts == 1 && watcher.counters.eagain == 1)
        #expect(watcher.isWaitingForWritable, "EAGAIN arms EV_WRITE")
        expectAccounted(watcher)
        loop.run()
        #expect(script.calls.map(\.first) == [0, 3, 3])
        #expect(script.calls.map(\.offered) == [10, 7, 7])
        #expect(!watcher.isWaitingForWritable, "EV_WRITE stopped once the ring is empty")
        #expect(receiver.receive(10).map(sequence(of:)) == Array(0..<10))
        #expect(reports.failures.isEmpty)
        expectAccounted(watcher)
    }

    @Test func eintrIsRetriedWhereTheCallIsMade() throws {
        let (loop, watcher, receiver, script, _) = try setUp([.fail(.EINTR), .fail(.EINTR)])
        for i in 0..<4 { try watcher.enqueue(sequencePayload(i)) }
        loop.run()
        #expect(script.calls.count == 3)
        #expect(watcher.counters.sendmmsgCalls == 1)
        #expect(receiver.receive(4).count == 4)
        expectAccounted(watcher)
    }

    /// man sendmmsg BUGS: the error on message 2 is lost behind a count of 2; the retry gets it as -1 on
    /// its first message, which alone is failed.
    @Test func errorAfterAPartialSendIsChargedToTheHead() throws {
        let (loop, watcher, receiver, _, reports) = try setUp([.sendOnly(2), .fail(.EIO)])
        for i in 0..<5 { try watcher.enqueue(sequencePayload(i)) }
        loop.run()
        #expect(reports.failures.map(\.sequence) == [2])
        #expect(reports.failures.first?.errno == .EIO)
        #expect(reports.failures.first?.length == 16)
        #expect(receiver.receive(4).map(sequence(of:)) == [0, 1, 3, 4])
        #expect(watcher.counters.failedByErrno == [.EIO: 1])
        expectAccounted(watcher)
    }

    /// ENOBUFS is retried a few times, then backed off on a timer: never left on EV_WRITE, never spun on.
    @Test func noBufferBurstBacksOffOnATimer() throws {
        let (loop, watcher, receiver, script, reports) = try setUp([.fail(.ENOBUFS), .fail(.ENOBUFS), .fail(.ENOBUFS)]) {
            $0.noBufferRetries = 2
            $0.noBufferBackoff = 0.01
        }
        for i in 0..<6 { try watcher.enqueue(sequencePayload(i)) }
        watcher.flush()
        #expect(watcher.counters.noBuffers == 3)
        #expect(watcher.isBackingOff)
        #expect(!watcher.isWaitingForWritable && !watcher.isDrainScheduled)
        watcher.flush()
        #expect(script.calls.count == 3, "flush during a back-off waits for the timer")
        expectAccounted(watcher)
        loop.run()
        #expect(script.calls.count == 4)
        #expect(watcher.counters.backoffs == 1)
        #expect(receiver.receive(6).map(sequence(of:)) == Array(0..<6))
        #expect(reports.failures.isEmpty)
        expectAccounted(watcher)
    }

    /// EBADF, ENOTSOCK, EFAULT mean the descriptor is unusable: report everything and close.
    @Test(arguments: [Errno.EBADF, .ENOTSOCK, .EFAULT])
    func fatalErrnoReportsEverythingAndCloses(error: Errno) throws {
        let (loop, watcher, receiver, _, reports) = try setUp([.sendOnly(1), .fail(error)])
        for i in 0..<5 { try watcher.enqueue(sequencePayload(i)) }
        loop.run()
        #expect(watcher.state == .closed)
        #expect(reports.failures.map(\.sequence) == [1, 2, 3, 4])
        #expect(reports.failures.allSatisfy { $0.errno == error })
        #expect(receiver.receive(1).map(sequence(of:)) == [0])
        #expect(throws: BatchedUDPError.closed) { try watcher.enqueue([1]) }
        expectAccounted(watcher)
    }

    /// After a drain nothing of the watcher's is active, so idle iterations never reach sendmmsg.
    @Test func idleIterationsMakeNoCalls() throws {
        let (loop, watcher, receiver, script, _) = try setUp([.fail(.EAGAIN)])
        for i in 0..<3 { try watcher.enqueue(sequencePayload(i)) }
        loop.run()
        let calls = script.calls.count
        #expect(calls == 2)
        let ticker = TimerWatcher(loop: loop, after: 0, repeat: 0.001) { _ in }
        ticker.start()
        let startIteration = loop.iteration
        while loop.iteration - startIteration < 50 { loop.run(.once) }
        ticker.stop()
        #expect(script.calls.count == calls)
        #expect(!watcher.isWaitingForWritable && !watcher.isDrainScheduled && !watcher.isBackingOff)
        #expect(receiver.receive(3).count == 3)
    }

    /// A spent per-drain budget yields to the loop through EV_WRITE (fires after the next poll without
    /// blocking); a prepare watcher started inside the prepare phase would leave the loop blocked.
    @Test func spentBudgetYieldsWithoutStalling() throws {
        let (loop, watcher, receiver, script, _) = try setUp([]) {
            $0.batchSize = 2
            $0.maxCallsPerDrain = 1
            $0.highWaterMark = .init(messages: 2, bytes: 1 << 20)
            $0.lowWaterMark = .init(messages: 0, bytes: 0)
        }
        var refills = 0
        watcher.onWritabilityChanged = { watcher, writable in
            // Enqueued from inside the prepare-phase drain's reports, with its budget already spent.
            if writable && refills < 3 {
                refills += 1
                for i in 0..<2 { _ = try? watcher.enqueue(sequencePayload(2 * refills + i)) }
            }
        }
        let guardTimer = TimerWatcher(loop: loop, after: 5) { timer in
            Issue.record("the loop stalled with \(watcher.counters.queued) queued")
            timer.loop.breakLoop()
        }
        guardTimer.keepsLoopAlive = false
        guardTimer.start()
        for i in 0..<2 { try watcher.enqueue(sequencePayload(i)) }
        loop.run()
        #expect(receiver.receive(8).map(sequence(of:)) == Array(0..<8))
        #expect(script.calls.allSatisfy { $0.offered <= 2 })
        #expect(refills == 3)
        #expect(!watcher.isWaitingForWritable && !watcher.isDrainScheduled)
        expectAccounted(watcher)
    }

    @Test func closeReportsEveryQueuedDatagramOnce() throws {
        let (_, watcher, receiver, _, reports) = try setUp([.sendOnly(2), .fail(.EAGAIN)])
        for i in 0..<6 { try watcher.enqueue(sequencePayload(i)) }
        watcher.flush()
        watcher.close()
        watcher.close()
        #expect(reports.failures.map(\.sequence) == [2, 3, 4, 5])
        #expect(receiver.receive(2).map(sequence(of:)) == [0, 1])
        #expect(reports.failures.allSatisfy { $0.errno == .ECANCELED })
        #expect(!watcher.isWaitingForWritable && !watcher.isDrainScheduled)
        expectAccounted(watcher)
    }

    @Test func closeFlushingSendsThenCompletes() throws {
        let (loop, watcher, receiver, _, reports) = try setUp([.fail(.EAGAIN), .fail(.EAGAIN), .sendOnly(1), .fail(.EAGAIN)])
        for i in 0..<5 { try watcher.enqueue(sequencePayload(i)) }
        var completed = 0
        watcher.close(flushingWithin: 5) { _ in completed += 1 }
        #expect(watcher.state == .closing)
        #expect(throws: BatchedUDPError.closed) { try watcher.enqueue([9]) }
        loop.run()
        #expect(completed == 1)
        #expect(watcher.state == .closed)
        #expect(reports.failures.isEmpty)
        #expect(receiver.receive(5).map(sequence(of:)) == Array(0..<5))
        expectAccounted(watcher)
    }

    @Test func closeFlushingGivesUpAtTheDeadline() throws {
        let (loop, watcher, receiver, _, reports) = try setUp(Array(repeating: .fail(.EAGAIN), count: 100_000))
        for i in 0..<3 { try watcher.enqueue(sequencePayload(i)) }
        var completed = false
        watcher.close(flushingWithin: 0.02) { _ in completed = true }
        loop.run()
        #expect(completed)
        #expect(reports.failures.map(\.sequence) == [0, 1, 2])
        #expect(reports.failures.allSatisfy { $0.errno == .ETIMEDOUT })
        #expect(receiver.pending().isEmpty)
        expectAccounted(watcher)
    }

    /// Reports run after the send loop: a report that enqueues, and one that closes, leave a consistent ring.
    @Test func reportsMayEnqueueAndClose() throws {
        let (loop, watcher, receiver, _, reports) = try setUp([.fail(.EPERM), .fail(.EPERM), .fail(.EAGAIN)])
        for i in 0..<3 { try watcher.enqueue(sequencePayload(i)) }
        watcher.onError = { watcher, failure in
            reports.failures.append(failure)
            if failure.sequence == 0 { #expect((try? watcher.enqueue(sequencePayload(3))) == 3) }
            if failure.sequence == 1 { watcher.close() }
        }
        loop.run()
        #expect(reports.failures.map(\.sequence) == [0, 1, 2, 3])
        #expect(reports.failures.map(\.errno) == [.EPERM, .EPERM, .ECANCELED, .ECANCELED])
        #expect(watcher.state == .closed)
        #expect(receiver.pending().isEmpty)
        expectAccounted(watcher)
    }
}
