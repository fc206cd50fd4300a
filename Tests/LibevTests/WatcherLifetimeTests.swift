import Libev
import Testing

@Suite struct WatcherLifetimeTests {
    @Test func watcherReleasedInsideItsOwnCallback() throws {
        let loop = try EventLoop()
        var holder: TimerWatcher?
        weak var weakTimer: TimerWatcher?
        var fires = 0
        holder = TimerWatcher(loop: loop, after: 0.001, repeat: 0.001) { timer in
            fires += 1
            holder = nil
            // Still usable until the callback returns.
            #expect(timer.isActive)
        }
        weakTimer = holder
        holder?.start()
        loop.run()
        #expect(fires == 1)
        #expect(weakTimer == nil, "released after its callback returned, and stopped, so run() returned")
    }

    @Test func callbackStopsAndReleasesAnotherPendingWatcher() throws {
        let loop = try EventLoop()
        var victim: TimerWatcher?
        var victimFired = false
        // Same deadline: both are pending in the same iteration, the killer runs first (higher priority).
        let killer = TimerWatcher(loop: loop, after: 0.002) { _ in
            #expect(victim?.isPending == true)
            victim = nil
        }
        killer.priority = 1
        victim = TimerWatcher(loop: loop, after: 0.002) { _ in victimFired = true }
        victim?.start()
        killer.start()
        loop.run()
        #expect(!victimFired)
    }

    @Test func checkAndIdleWatchersRunAroundThePoll() throws {
        let loop = try EventLoop()
        var events: [String] = []
        let prepare = PrepareWatcher(loop: loop) { _ in events.append("prepare") }
        let check = CheckWatcher(loop: loop) { _ in events.append("check") }
        let idle = IdleWatcher(loop: loop) { idle in
            events.append("idle")
            idle.stop()
        }
        [prepare, check].forEach { $0.keepsLoopAlive = false }
        prepare.start()
        check.start()
        idle.start()
        loop.run()
        // libev queues idle and check watchers after the poll; both run after the prepare that precedes it.
        #expect(events.first == "prepare")
        #expect(Set(events.dropFirst().prefix(2)) == ["idle", "check"])
        #expect(!idle.isActive)
    }
}
