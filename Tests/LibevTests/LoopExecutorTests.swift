import CTestSupport
import Dispatch
import Foundation
import Glibc
import Libev
import Testing

/// An actor whose methods run on a libev loop.
actor LoopActor {
    let executor: LoopExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    var log: [Int] = []
    var threads = Set<UInt>()

    init(executor: LoopExecutor) { self.executor = executor }

    func record(_ value: Int) {
        log.append(value)
        threads.insert(UInt(pthread_self()))
    }

    func bump() { log.append(log.count) }
}

/// The thread the loop runs on, read inside one of its own callbacks.
func loopThread(of executor: LoopExecutor) async -> UInt {
    await withCheckedContinuation { continuation in
        executor.execute { continuation.resume(returning: UInt(pthread_self())) }
    }
}

@Suite struct LoopExecutorTests {
    /// Many tasks on other threads call an actor pinned to the loop: every call runs on the loop thread,
    /// and each task's calls arrive in the order it made them.
    @Test func actorMethodsRunOnTheLoopThreadInOrder() async throws {
        try await EventLoopThread.run { executor in
            let actor = LoopActor(executor: executor)
            let tasks = 8, calls = 200
            await withTaskGroup(of: Void.self) { group in
                for task in 0..<tasks {
                    group.addTask {
                        for call in 0..<calls { await actor.record(task * 1_000 + call) }
                    }
                }
            }
            let log = await actor.log
            #expect(log.count == tasks * calls)
            for task in 0..<tasks {
                let mine = log.filter { $0 / 1_000 == task }
                #expect(mine == (0..<calls).map { task * 1_000 + $0 }, "task \(task)'s calls out of order")
            }
            let loop = await loopThread(of: executor)
            #expect(await actor.threads == [loop])
        }
    }

    /// `execute` from many threads at once: every closure runs once, on the loop thread, and each thread's
    /// closures in the order it submitted them (one FIFO).
    @Test func closuresFromManyThreadsRunOnceInFIFOOrder() async throws {
        try await EventLoopThread.run { executor in
            let seen = Locked<[Int]>([])
            let loop = await loopThread(of: executor)
            let wrongThread = Locked(0)
            DispatchQueue.concurrentPerform(iterations: 4) { producer in
                for n in 0..<500 {
                    executor.execute {
                        if UInt(pthread_self()) != loop { wrongThread.withLock { $0 += 1 } }
                        seen.withLock { $0.append(producer * 10_000 + n) }
                    }
                }
            }
            await withCheckedContinuation { continuation in executor.execute { continuation.resume() } }
            let all = seen.withLock { $0 }
            #expect(all.count == 2_000)
            for producer in 0..<4 {
                #expect(all.filter { $0 / 10_000 == producer } == (0..<500).map { producer * 10_000 + $0 })
            }
            #expect(wrongThread.withLock { $0 } == 0)
        }
    }

    /// Inside a plain libev callback on the loop, `assumeIsolated` reaches an actor pinned to that loop
    /// (the executor's isolation check answers from the loop thread).
    @Test func assumeIsolatedWorksInAPlainLibevCallback() async throws {
        try await EventLoopThread.run { executor in
            let actor = LoopActor(executor: executor)
            let held = Locked<[Held]>([])
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                executor.execute {
                    let timer = TimerWatcher(loop: executor.loop, after: 0.001) { _ in
                        actor.assumeIsolated { $0.bump() }
                        continuation.resume()
                    }
                    timer.start()
                    held.withLock { $0.append(Held(timer)) }
                }
            }
            #expect(await actor.log == [0])
            #expect(executor.isIsolatingCurrentContext() == false, "the test's own thread is not the loop's")
        }
    }

    /// Nonisolated async code that prefers the loop's executor runs on the loop thread.
    @Test func taskExecutorPreferenceRunsOnTheLoop() async throws {
        try await EventLoopThread.run { executor in
            let loop = await loopThread(of: executor)
            let thread = await withTaskExecutorPreference(executor.taskExecutor) { await currentThread() }
            #expect(thread == loop)
            let other = await Task(executorPreference: executor.taskExecutor) { await currentThread() }.value
            #expect(other == loop)
        }
    }

    /// On a loop borrowed from a C host, the host's own `ev_run` runs the jobs.
    @Test func jobsRunOnABorrowedLoopDrivenByItsCHost() throws {
        let pair = SocketPair()
        let host = try #require(cthost_create(0, 0, pair.left, 1))
        defer { cthost_destroy(host) }
        let loop = EventLoop(borrowing: cthost_loop(host))
        let executor = LoopExecutor(loop: loop)
        #expect(loop.ownership == .borrowed)
        let ran = Locked<[Int]>([])
        let done = DispatchSemaphore(value: 0)
        let right = pair.right
        DispatchQueue.global().async {
            for n in 0..<100 { executor.execute { ran.withLock { $0.append(n) } } }
            // The last closure lets the host's io watcher finish, so its ev_run returns.
            executor.execute { var byte: UInt8 = 1; _ = write(right, &byte, 1) }
            done.signal()
        }
        done.wait()
        let guardTimer = failsafe(loop, seconds: 30)
        // The executor does not keep a borrowed loop alive on its own, but the C io watcher does until
        // the last job has written its byte.
        #expect(cthost_run(host) == 0)
        guardTimer.stop()
        #expect(ran.withLock { $0 } == Array(0..<100))
        executor.shutdown()
        loop.run(.noWait)
    }

    /// Shutting down lets every job already queued run; the thread then ends.
    @Test func shutdownRunsWhatWasQueued() throws {
        let thread = try EventLoopThread()
        let count = Locked(0)
        for _ in 0..<10_000 { thread.executor.execute { count.withLock { $0 += 1 } } }
        thread.shutdown()
        #expect(count.withLock { $0 } == 10_000)
        #expect(thread.executor.isShutDown)
    }

    /// A job enqueued after shutdown can never run: the process stops, saying so, instead of hanging.
    @Test func workAfterShutdownStopsTheProcessWithAMessage() async {
        await #expect(processExitsWith: .failure) {
            let thread = try! EventLoopThread()
            thread.shutdown()
            thread.executor.execute {}
        }
    }

    /// `sleep` resumes the task after the delay, on its own executor.
    @Test func sleepResumesOnTheCallersExecutor() async throws {
        try await EventLoopThread.run { executor in
            let actor = LoopActor(executor: executor)
            try await executor.sleep(for: 0.01)
            await actor.record(1)
            #expect(await actor.log == [1])
        }
    }

    /// Cancelling a task suspended in a long sleep ends the sleep with CancellationError; a task cancelled
    /// before it sleeps does not sleep at all.
    @Test func cancellingASleepThrowsCancellationError() async throws {
        try await EventLoopThread.run { executor in
            let sleeper = Task { try await executor.sleep(for: 3_600) }
            try await executor.sleep(for: 0.01)
            sleeper.cancel()
            await #expect(throws: CancellationError.self) { try await sleeper.value }
            let early = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                try await executor.sleep(for: 3_600)
            }
            await #expect(throws: CancellationError.self) { try await early.value }
        }
    }
}

/// The calling thread, as a nonisolated async function sees it.
nonisolated func currentThread() async -> UInt { UInt(pthread_self()) }

/// A watcher handed between closures that all run on its loop thread.
private struct Held: @unchecked Sendable {
    let timer: TimerWatcher
    init(_ timer: TimerWatcher) { self.timer = timer }
}
