import Libev
import Testing

@Suite struct PeriodicWatcherTests {
    /// With an offset and no interval it fires once, at that wall-clock time, and stops.
    @Test func anAbsoluteTimeFiresOnce() {
        let loop = try! EventLoop()
        var fired = 0
        let at = loop.now + 0.005
        let periodic = PeriodicWatcher(loop: loop, offset: at) { _ in fired += 1 }
        periodic.start()
        #expect(periodic.nextFiring == at)
        let guardTimer = failsafe(loop)
        loop.run()
        guardTimer.stop()
        #expect(fired == 1)
        #expect(!periodic.isActive)
    }

    /// With an interval it fires at offset + n × interval: every firing is on the grid.
    @Test func anIntervalFiresOnItsGrid() {
        let loop = try! EventLoop()
        var firings: [Double] = []
        let periodic = PeriodicWatcher(loop: loop, offset: 0.0025, interval: 0.01) { watcher in
            firings.append(watcher.nextFiring)
            if firings.count == 3 { watcher.stop() }
        }
        periodic.start()
        let guardTimer = failsafe(loop)
        loop.run()
        guardTimer.stop()
        #expect(firings.count == 3)
        for next in firings {
            let phase = (next - 0.0025).truncatingRemainder(dividingBy: 0.01)
            #expect(min(phase, 0.01 - phase) < 1e-6, "\(next) is not offset + n × interval")
        }
        #expect(periodic.offset == 0.0025 && periodic.interval == 0.01)
    }

    /// A reschedule closure decides every next time: it is asked when the watcher starts and after each
    /// firing, and the watcher fires at the times it returns.
    @Test func aRescheduleClosureDecidesEachTime() {
        let loop = try! EventLoop()
        var asked: [Double] = [], fired = 0
        let periodic = PeriodicWatcher(loop: loop, reschedule: { _, now in
            asked.append(now)
            return now + 0.002
        }) { watcher in
            fired += 1
            if fired == 3 { watcher.stop() }
        }
        periodic.start()
        #expect(asked.count == 1, "asked once on start")
        let guardTimer = failsafe(loop)
        loop.run()
        guardTimer.stop()
        #expect(fired == 3)
        #expect(asked.count >= 3)
        #expect(asked == asked.sorted())
    }
}
