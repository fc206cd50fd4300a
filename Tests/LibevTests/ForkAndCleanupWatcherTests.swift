import CTestSupport
import Glibc
import Libev
import Testing

@Suite struct ForkAndCleanupWatcherTests {
    /// After a real fork, the child tells its loop, whose fork watcher runs before the next poll.
    @Test func theChildOfARealForkRunsItsForkWatchers() async {
        await #expect(processExitsWith: .exitCode(0)) {
            let loop = try! EventLoop()
            var forked = 0
            let watcher = ForkWatcher(loop: loop) { _ in forked += 1 }
            watcher.start()
            loop.run(.noWait)
            guard forked == 0 else { exit(20) }
            let child = fork()
            if child == 0 {
                try! loop.noteFork()
                loop.run(.noWait)
                _exit(forked == 1 ? 0 : 21)
            }
            var status: Int32 = 0
            waitpid(child, &status, 0)
            loop.run(.noWait)
            exit(status == 0 && forked == 0 ? 0 : 22)
        }
    }

    /// A borrowed loop cannot be told of a fork: its owner does that.
    @Test func aBorrowedLoopRefusesNoteFork() throws {
        let owner = try EventLoop()
        let borrowed = EventLoop(borrowing: owner.raw)
        #expect(throws: LibevError.borrowedLoop(operation: "EventLoop.noteFork()")) { try borrowed.noteFork() }
    }

    /// When the C host destroys the loop it lent, the guest's cleanup watcher runs (and has stopped
    /// itself), so the guest can let go of the loop.
    @Test func aHostDestroyingItsLoopRunsTheGuestsCleanupWatcher() throws {
        let pair = SocketPair()
        let host = try #require(cthost_create(0, 0, pair.left, 0))
        let loop = EventLoop(borrowing: cthost_loop(host))
        var cleaned = 0
        var timer: TimerWatcher? = TimerWatcher(loop: loop, after: 3_600) { _ in }
        timer?.start()
        let cleanup = CleanupWatcher(loop: loop) { _ in
            cleaned += 1
            timer?.stop()
            timer = nil
        }
        cleanup.start()
        cthost_destroy(host)
        #expect(cleaned == 1)
        #expect(!cleanup.isActive)
        #expect(timer == nil)
    }
}
