import CLibev
import CTestSupport
import Libev
import Testing

/// A C "library" owns the loop and drives it with raw `ev_run`; Swift only borrows it.
@Suite struct BorrowedLoopTests {
    @Test func swiftAndCWatchersShareACOwnedLoop() throws {
        let pair = SocketPair()
        let swiftPair = SocketPair()
        let host = try #require(cthost_create(3, 0.002, pair.left, 2))
        defer { cthost_destroy(host) }
        let loop = EventLoop(borrowing: cthost_loop(host))
        #expect(loop.ownership == .borrowed)

        var swiftReads = 0
        let reader = try IOWatcher(loop: loop, fileDescriptor: swiftPair.left, events: .read) { watcher, _ in
            swiftReads += swiftPair.drain(watcher.fileDescriptor)
            if swiftReads == 1 { watcher.stop() }
        }
        reader.start()
        // A Swift timer feeds the C io watcher twice and the Swift one once.
        var feeds = 0
        let feeder = TimerWatcher(loop: loop, after: 0.001, repeat: 0.001) { timer in
            feeds += 1
            pair.write(UInt8(feeds), to: pair.right)
            if feeds == 1 { swiftPair.write(9, to: swiftPair.right) }
            if feeds == 2 { timer.stop() }
        }
        feeder.start()
        // A helper that must not keep the host's loop running.
        var prepares = 0
        let helper = PrepareWatcher(loop: loop) { _ in prepares += 1 }
        helper.keepsLoopAlive = false
        helper.start()

        let guardTimer = failsafe(loop, seconds: 30)
        #expect(cthost_run(host) == 0, "ev_run returned on its own: nothing referenced is left")
        guardTimer.stop()
        #expect(cthost_timer_fired(host) == 3)
        #expect(cthost_reads_done(host) == 2)
        #expect(swiftReads == 1)
        #expect(prepares > 0)
        #expect(helper.isActive, "the unreferenced helper is still active, yet did not keep ev_run alive")
    }

    /// What made the test above hang on a loaded machine: libev ran the Swift timer's second write before
    /// the C io callback read the first, so both bytes came in one read and the host, counting reads,
    /// waited forever. The host counts bytes now; here both arrive before the loop runs.
    @Test func cHostCountsBytesNotReads() throws {
        let pair = SocketPair()
        let host = try #require(cthost_create(0, 0, pair.left, 2))
        defer { cthost_destroy(host) }
        let loop = EventLoop(borrowing: cthost_loop(host))
        pair.write(1, to: pair.right)
        pair.write(2, to: pair.right)
        let guardTimer = failsafe(loop, seconds: 5)
        #expect(cthost_run(host) == 0)
        guardTimer.stop()
        #expect(cthost_reads_done(host) == 2)
    }

    @Test func unreferencedSwiftTimerAloneLetsEvRunReturn() throws {
        let host = try #require(cthost_create(0, 0, -1, 0))
        defer { cthost_destroy(host) }
        let loop = EventLoop(borrowing: cthost_loop(host))
        var fires = 0
        let timer = TimerWatcher(loop: loop, after: 0.001, repeat: 0.001) { timer in
            fires += 1
            // Referenced until its third fire, then it stops holding the host's loop.
            if fires == 3 { timer.keepsLoopAlive = false }
        }
        timer.start()
        let guardTimer = failsafe(loop, seconds: 30)
        #expect(cthost_run(host) == 0)
        guardTimer.stop()
        #expect(fires == 3)
        #expect(timer.isActive)
        timer.stop()
    }

    @Test func borrowedWrapperNeverDestroysTheLoop() throws {
        let host = try #require(cthost_create(2, 0.001, -1, 0))
        defer { cthost_destroy(host) }
        do {
            let loop = EventLoop(borrowing: cthost_loop(host))
            let timer = TimerWatcher(loop: loop, after: 0.001) { _ in }
            timer.start()
        }
        // The wrapper and its watcher are gone; the C host's loop still runs its own timer.
        #expect(cthost_run(host) == 0)
        #expect(cthost_timer_fired(host) == 2)
    }
}
