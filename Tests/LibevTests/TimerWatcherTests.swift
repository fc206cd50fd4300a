import Libev
import Testing

@Suite struct TimerWatcherTests {
    @Test func timersFireInDeadlineOrder() throws {
        let loop = try EventLoop()
        var order: [String] = []
        let timers = [("late", 0.03), ("early", 0.01), ("middle", 0.02)].map { name, delay in
            TimerWatcher(loop: loop, after: delay) { _ in order.append(name) }
        }
        timers.forEach { $0.start() }
        loop.run()
        #expect(order == ["early", "middle", "late"])
        #expect(timers.allSatisfy { !$0.isActive }, "one-shot timers are stopped by libev")
    }

    @Test func repeatingTimerFiresTheRightNumberOfTimes() throws {
        let loop = try EventLoop()
        var fires = 0
        let timer = TimerWatcher(loop: loop, after: 0.002, repeat: 0.002) { timer in
            fires += 1
            if fires == 5 { timer.stop() }
        }
        timer.start()
        let guardTimer = failsafe(loop)
        loop.run()
        #expect(fires == 5)
        _ = guardTimer
    }

    @Test func againRestartsFromNowAndZeroRepeatStops() throws {
        let loop = try EventLoop()
        var fires = 0
        let timer = TimerWatcher(loop: loop, after: 0, repeat: 0.005) { timer in
            fires += 1
            if fires == 2 { timer.repeatInterval = 0 }
        }
        timer.again()
        #expect(timer.isActive)
        #expect(timer.remaining > 0 && timer.remaining <= 0.005 + 1e-6)
        loop.run()
        // The third expiry sees repeat 0 and libev stops the timer after it.
        #expect(fires == 3)
        #expect(!timer.isActive)
        timer.again()
        #expect(!timer.isActive, "again() with repeat 0 leaves the timer stopped")
    }

    /// libev keeps a stopped or expired timer's remaining time (none, once it has fired), so a one-shot
    /// timer restarted from its own callback would fire again at once, spinning the loop.
    @Test func restartedOneShotTimerWaitsItsFullDelayAgain() throws {
        let loop = try EventLoop()
        let delay = 0.01
        var fires = 0
        let started = loop.now
        var lastFire = started
        let timer = TimerWatcher(loop: loop, after: delay) { timer in
            fires += 1
            lastFire = loop.now
            if fires < 3 { timer.start() }
        }
        timer.start()
        let guardTimer = failsafe(loop)
        loop.run()
        #expect(fires == 3)
        #expect(lastFire - started >= 3 * delay, "three restarts of a \(delay) s timer took \(lastFire - started) s")
        _ = guardTimer
    }

    @Test func timerStoppedEarlyAndStartedAgainWaitsItsFullDelay() throws {
        let loop = try EventLoop()
        let started = loop.now
        var fired: Double?
        let timer = TimerWatcher(loop: loop, after: 0.05) { _ in fired = loop.now }
        timer.start()
        let restart = TimerWatcher(loop: loop, after: 0.03) { _ in
            timer.stop()
            timer.start()
        }
        restart.start()
        loop.run()
        let elapsed = try #require(fired) - started
        #expect(elapsed >= 0.08, "restarted at 0.03 s, a 0.05 s timer fired after \(elapsed) s")
    }

    @Test func setIsRefusedWhileActive() throws {
        let loop = try EventLoop()
        let timer = TimerWatcher(loop: loop, after: 1) { _ in }
        timer.start()
        #expect(throws: LibevError.watcherActive(operation: "TimerWatcher.set(after:repeat:)")) {
            try timer.set(after: 2)
        }
        timer.stop()
        try timer.set(after: 0, repeat: 0)
    }

    /// libev stops a one-shot timer itself before its callback; the unref taken at start must be given back
    /// then, or the loop's count goes negative and `run()` returns while a referenced timer is still due.
    @Test func expiredUnreferencedTimerKeepsTheLoopCountBalanced() throws {
        let loop = try EventLoop()
        var helperFired = false
        var mainFired = false
        let helper = TimerWatcher(loop: loop, after: 0.001) { _ in helperFired = true }
        helper.keepsLoopAlive = false
        let main = TimerWatcher(loop: loop, after: 0.05) { _ in mainFired = true }
        helper.start()
        main.start()
        loop.run()
        #expect(helperFired)
        #expect(mainFired, "run() returned before the referenced timer fired")
    }
}
