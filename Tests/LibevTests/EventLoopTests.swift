import CLibev
import Libev
import Testing

@Suite struct EventLoopTests {
    @Test func ownedLoopUsesEpollByDefault() throws {
        let loop = try EventLoop()
        #expect(loop.ownership == .owned)
        #expect(loop.backend == .epoll)
        #expect(loop.depth == 0)
    }

    @Test func libevVersionMatchesHeaders() throws {
        try EventLoop.checkLibevVersion()
        #expect(EventLoop.libevVersion.major == 4)
    }

    @Test func runReturnsAtOnceWithNothingActive() throws {
        let loop = try EventLoop()
        let before = loop.iteration
        #expect(loop.run() == false)
        #expect(loop.iteration == before + 1)
    }

    @Test func breakLoopEndsRun() throws {
        let loop = try EventLoop()
        var fired = 0
        let repeating = TimerWatcher(loop: loop, after: 0.001, repeat: 0.001) { timer in
            fired += 1
            if fired == 2 { timer.loop.breakLoop() }
        }
        repeating.start()
        #expect(loop.run() == true, "run() reports watchers still active after a break")
        #expect(fired == 2)
        #expect(repeating.isActive)
    }

    @Test func ownedLoopIsDestroyedAfterItsActiveWatchersGo() throws {
        weak var weakLoop: EventLoop?
        weak var weakTimer: TimerWatcher?
        let pair = SocketPair()
        do {
            let loop = try EventLoop()
            weakLoop = loop
            let timer = TimerWatcher(loop: loop, after: 10, repeat: 10) { _ in }
            let io = try IOWatcher(loop: loop, fileDescriptor: pair.left, events: .read) { _, _ in }
            weakTimer = timer
            timer.start()
            io.start()
            pair.write(1, to: pair.right)
            loop.run(.noWait)
            #expect(io.isActive && timer.isActive)
        }
        #expect(weakTimer == nil)
        #expect(weakLoop == nil, "the loop is freed once its last watcher is")
    }

    @Test func defaultLoopIsNeverOwned() throws {
        let loop = try EventLoop.default
        #expect(loop.ownership == .defaultLoop)
        #expect(try EventLoop.default.raw == loop.raw)
    }

    @Test func nowAdvancesWithTheLoop() throws {
        let loop = try EventLoop()
        let start = loop.now
        let timer = TimerWatcher(loop: loop, after: 0.02) { _ in }
        timer.start()
        loop.run()
        #expect(loop.now - start >= 0.02)
    }
}
