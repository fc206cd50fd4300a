import Glibc
import Libev
import Testing

@Suite(.serialized) struct SignalWatcherTests {
    @Test func raisedSignalRunsTheCallbackOnTheLoop() throws {
        let loop = try EventLoop()
        var received: [Int32] = []
        let watcher = try SignalWatcher(loop: loop, signal: SIGUSR1) { watcher in
            received.append(watcher.signal)
            watcher.stop()
        }
        watcher.start()
        // raise() targets the calling thread, and the test runner's threads block signals: this only
        // arrives because starting the watcher unblocked SIGUSR1 in this thread.
        let raiser = TimerWatcher(loop: loop, after: 0.001) { _ in raise(SIGUSR1) }
        raiser.start()
        let guardTimer = failsafe(loop)
        loop.run()
        #expect(received == [SIGUSR1])
        _ = guardTimer
    }

    /// A signal already pending when the watcher is made (blocked, then raised: a stop request that came
    /// while a daemon was starting) reaches the callback once the watcher starts, not the default action.
    /// SignalWatcher used to unblock it on creation, before libev's handler was installed, and the
    /// process ended (SIGUSR2's default); so this runs in a child process.
    @Test func aPendingSignalReachesTheCallbackNotTheDefaultAction() async {
        await #expect(processExitsWith: .exitCode(0)) {
            var mask = sigset_t()
            sigemptyset(&mask)
            sigaddset(&mask, SIGUSR2)
            pthread_sigmask(SIG_BLOCK, &mask, nil)
            raise(SIGUSR2)
            let loop = try EventLoop()
            var received = false
            let watcher = try SignalWatcher(loop: loop, signal: SIGUSR2) { watcher in
                received = true
                watcher.stop()
            }
            let giveUp = TimerWatcher(loop: loop, after: 5) { _ in exit(2) }
            giveUp.keepsLoopAlive = false
            giveUp.start()
            watcher.start()
            loop.run()
            exit(received ? 0 : 1)
        }
    }

    /// On a loop that reads signals through a signalfd, the signal must stay blocked (libev blocks it and
    /// installs no handler): starting the watcher leaves the mask alone, and a raised signal reaches the
    /// callback. Unblocking it there gave it the default action (the process ended); a child process runs it.
    @Test func aSignalFDLoopKeepsTheSignalBlockedAndGetsIt() async {
        await #expect(processExitsWith: .exitCode(0)) {
            let loop = try EventLoop(flags: .signalFD)
            var received = false
            let watcher = try SignalWatcher(loop: loop, signal: SIGUSR2) { watcher in
                received = true
                watcher.stop()
            }
            let giveUp = TimerWatcher(loop: loop, after: 5) { _ in exit(2) }
            giveUp.keepsLoopAlive = false
            giveUp.start()
            watcher.start()
            raise(SIGUSR2)
            loop.run()
            exit(received ? 0 : 1)
        }
    }

    @Test func oneSignalCannotBeBoundToTwoLoops() throws {
        let first = try EventLoop()
        let second = try EventLoop()
        let watcher = try SignalWatcher(loop: first, signal: SIGUSR2) { _ in }
        let sameLoop = try SignalWatcher(loop: first, signal: SIGUSR2) { _ in }
        #expect(throws: LibevError.signalBoundToAnotherLoop(signal: SIGUSR2)) {
            _ = try SignalWatcher(loop: second, signal: SIGUSR2) { _ in }
        }
        withExtendedLifetime((watcher, sameLoop)) {}
    }

    @Test func bindingIsReleasedWhenTheLastWatcherGoes() throws {
        let first = try EventLoop()
        let second = try EventLoop()
        do {
            let watcher = try SignalWatcher(loop: first, signal: SIGUSR2) { _ in }
            watcher.start()
        }
        let moved = try SignalWatcher(loop: second, signal: SIGUSR2) { _ in }
        moved.start()
        moved.stop()
    }

    @Test func invalidSignalNumberIsRefused() throws {
        let loop = try EventLoop()
        #expect(throws: LibevError.invalidSignal(0)) { _ = try SignalWatcher(loop: loop, signal: 0) { _ in } }
        #expect(throws: LibevError.invalidSignal(65)) { _ = try SignalWatcher(loop: loop, signal: 65) { _ in } }
    }
}
