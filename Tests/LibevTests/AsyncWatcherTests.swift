import Libev
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct AsyncWatcherTests {
    /// Four threads each hand over 2,000 work items and send after each one. Sends merge, so the callback
    /// drains everything queued; if a wake-up were lost the loop would block and the failsafe would fire.
    @Test func sendsFromManyThreadsLoseNoWakeUp() throws {
        let loop = try EventLoop()
        let queued = Atomic<Int>(0)
        let threads = 4
        let perThread = 2_000
        let total = threads * perThread
        var handled = 0
        var callbacks = 0
        let watcher = AsyncWatcher(loop: loop) { watcher in
            callbacks += 1
            handled += queued.exchange(0, ordering: .acquiringAndReleasing)
            if handled == total { watcher.stop() }
        }
        watcher.start()
        let sender = watcher.sender
        let guardTimer = failsafe(loop, seconds: 20)
        let workers = (0..<threads).map { _ in
            Thread {
                for _ in 0..<perThread {
                    queued.add(1, ordering: .releasing)
                    sender.send()
                }
            }
        }
        loop.run()
        workers.forEach { $0.join() }
        #expect(handled == total)
        #expect(callbacks >= 1 && callbacks <= total)
        _ = guardTimer
    }

    @Test func sendOnTheLoopThreadRunsTheCallbackOnce() throws {
        let loop = try EventLoop()
        var calls = 0
        let watcher = AsyncWatcher(loop: loop) { watcher in
            calls += 1
            watcher.stop()
        }
        watcher.start()
        watcher.send()
        watcher.send()
        #expect(watcher.isSendPending)
        loop.run()
        #expect(calls == 1, "sends before the callback runs merge")
    }

    @Test func senderOutlivingItsWatcherIsHarmless() throws {
        let loop = try EventLoop()
        var sender: AsyncWatcher.Sender?
        do {
            let watcher = AsyncWatcher(loop: loop) { _ in Issue.record("a released watcher must not run") }
            watcher.start()
            sender = watcher.sender
        }
        sender?.send()
        loop.run(.noWait)
    }
}

/// A joinable pthread running a closure.
final class Thread: @unchecked Sendable {
    private var handle = pthread_t()
    private let body: @Sendable () -> Void

    init(_ body: @escaping @Sendable () -> Void) {
        self.body = body
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&handle, nil, { context in
            let thread = Unmanaged<Thread>.fromOpaque(context!).takeRetainedValue()
            thread.body()
            return nil
        }, context)
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    func join() { pthread_join(handle, nil) }
}
