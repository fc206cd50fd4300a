import Libev
import Testing

@Suite struct EventLoopControlTests {
    /// `once` with only a timeout reports that it timed out; with a ready descriptor, that it was ready.
    @Test func onceReportsTimeoutOrReadiness() throws {
        let loop = try EventLoop()
        var outcomes: [EventLoop.OnceEvent] = []
        loop.once(timeout: 0.001) { outcomes.append($0) }
        let pair = SocketPair()
        pair.write(1, to: pair.right)
        loop.once(fileDescriptor: pair.left, events: .read, timeout: 3_600) { outcomes.append($0) }
        let guardTimer = failsafe(loop)
        loop.run()
        guardTimer.stop()
        #expect(outcomes.count == 2)
        #expect(outcomes.contains(.timedOut))
        #expect(outcomes.contains(.ready(.read)))
    }

    /// A fed event runs the watcher's callback, with the events given, though nothing happened on its
    /// descriptor; feeding the descriptor runs every io watcher waiting on it.
    @Test func fedEventsRunCallbacks() throws {
        let loop = try EventLoop()
        let pair = SocketPair()
        var received: [IOEvents] = []
        let watcher = try IOWatcher(loop: loop, fileDescriptor: pair.left, events: .read) { _, events in received.append(events) }
        watcher.start()
        loop.feedEvent(to: watcher, events: .read)
        loop.run(.noWait)
        #expect(received == [.read])
        loop.feedEvent(fileDescriptor: pair.left, events: .read)
        loop.run(.noWait)
        #expect(received == [.read, .read])
        var timerRuns = 0
        let timer = TimerWatcher(loop: loop, after: 3_600) { _ in timerRuns += 1 }
        loop.feedEvent(to: timer)
        loop.run(.noWait)
        #expect(timerRuns == 1, "a stopped watcher's callback runs when fed")
    }

    /// An owner may set collect intervals and suspend the loop's clock, and the loop still delivers its
    /// events; a guest on a borrowed loop is refused each of those, with the operation named.
    @Test func loopSettingsAreTheOwnersOnly() throws {
        let loop = try EventLoop()
        try loop.setIOCollectInterval(0.001)
        try loop.setTimeoutCollectInterval(0.001)
        try loop.suspend()
        try loop.resume()
        var fired = false
        let timer = TimerWatcher(loop: loop, after: 0.001) { _ in fired = true }
        timer.start()
        let guardTimer = failsafe(loop)
        loop.run()
        guardTimer.stop()
        #expect(fired)
        let borrowed = EventLoop(borrowing: loop.raw)
        #expect(throws: LibevError.borrowedLoop(operation: "EventLoop.setIOCollectInterval(_:)")) { try borrowed.setIOCollectInterval(0) }
        #expect(throws: LibevError.borrowedLoop(operation: "EventLoop.setTimeoutCollectInterval(_:)")) { try borrowed.setTimeoutCollectInterval(0) }
        #expect(throws: LibevError.borrowedLoop(operation: "EventLoop.suspend()")) { try borrowed.suspend() }
        #expect(throws: LibevError.borrowedLoop(operation: "EventLoop.resume()")) { try borrowed.resume() }
    }
}
