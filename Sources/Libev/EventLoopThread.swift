internal import Glibc

/// An owned libev loop running on a thread of its own, with a ``LoopExecutor`` for Swift concurrency.
///
/// ```swift
/// let result = try await EventLoopThread.run { executor in
///     let server = EchoServer(executor: executor)   // an actor pinned to the loop
///     return try await server.serve()
/// }
/// ```
///
/// ``run(backend:isolation:_:)`` scopes it: the loop starts before `body` and shuts down after it, once the jobs
/// already queued have run. Without the scope, ``init(backend:)`` starts it and ``shutdown()`` (or
/// ``shutdownGracefully()``, from a task) ends it. A job enqueued after shutdown stops the process with
/// a message rather than never running.
///
/// Threads: everything here may be called from any thread except the loop's own (shutting down from the
/// loop thread would wait for itself).
public final class EventLoopThread: Sendable {
    /// Runs jobs, and actors pinned to it, on the loop.
    public let executor: LoopExecutor
    private let state: _LoopThreadState

    /// Starts a thread that creates a loop with `backend`, an executor for it, and runs the loop until
    /// ``shutdown()``. Returns once the executor accepts jobs.
    /// - Throws: ``LibevError/loopCreationFailed(backend:flags:)`` (or `versionMismatch`) from the loop's creation.
    /// - Cost: one thread (default stack), one loop, one eventfd.
    public init(backend: EventLoop.Backend = .epoll) throws(LibevError) {
        let state = _LoopThreadState(backend: backend)
        let context = Unmanaged.passRetained(state).toOpaque()
        let rc = pthread_create(&state.thread, nil, { context in
            Unmanaged<_LoopThreadState>.fromOpaque(context!).takeRetainedValue().main()
            return nil
        }, context)
        precondition(rc == 0, "EventLoopThread: pthread_create failed with \(rc)")
        state.waitUntilStarted()
        switch state.started! {
        case .success(let executor):
            self.executor = executor
            self.state = state
        case .failure(let error):
            pthread_join(state.thread, nil)
            throw error
        }
    }

    /// Runs `body` with the executor of a new loop thread, then shuts the thread down (the jobs queued
    /// by then still run) and waits for it without blocking a thread.
    /// - Throws: what `body` throws, or what ``init(backend:)`` throws.
    public static func run<Result>(backend: EventLoop.Backend = .epoll,
                                   isolation: isolated (any Actor)? = #isolation,
                                   _ body: (LoopExecutor) async throws -> sending Result) async throws -> sending Result {
        let thread = try EventLoopThread(backend: backend)
        do {
            let result = try await body(thread.executor)
            await thread.shutdownGracefully()
            return result
        } catch {
            await thread.shutdownGracefully()
            throw error
        }
    }

    /// Shuts the executor down (jobs already queued still run) and suspends until the loop thread has
    /// finished, without blocking a thread. Any task; not from the loop thread itself.
    public func shutdownGracefully() async {
        precondition(pthread_equal(pthread_self(), state.thread) == 0,
                     "EventLoopThread.shutdownGracefully() was called on its own loop thread, which would wait for itself")
        executor.shutdown()
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            state.whenFinished { continuation.resume() }
        }
        state.join()
    }

    /// Shuts the executor down (jobs already queued still run) and blocks until the loop thread has
    /// finished. Not from the loop thread (it would wait for itself), nor from a task (use
    /// ``shutdownGracefully()`` there).
    public func shutdown() {
        precondition(pthread_equal(pthread_self(), state.thread) == 0,
                     "EventLoopThread.shutdown() was called on its own loop thread, which would wait for itself")
        executor.shutdown()
        let finished = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)
        sem_init(finished, 0, 0)
        defer { sem_destroy(finished); finished.deallocate() }
        let post = _SemaphorePost(finished)
        state.whenFinished { post.post() }
        _LoopThreadState.wait(finished)
        state.join()
    }
}

/// Posts a semaphore from the loop thread's end-of-loop callback.
private struct _SemaphorePost: @unchecked Sendable {
    let semaphore: UnsafeMutablePointer<sem_t>
    init(_ semaphore: UnsafeMutablePointer<sem_t>) { self.semaphore = semaphore }
    func post() { sem_post(semaphore) }
}

/// The loop thread's side: its start-up hand-off, its end, and its join.
private final class _LoopThreadState: @unchecked Sendable {
    let backend: EventLoop.Backend
    /// Written once by `pthread_create`, before anyone reads it.
    var thread = pthread_t()
    /// Posted once `started` is set.
    private let ready = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)
    var started: Result<LoopExecutor, LibevError>?
    private let end = Locked<(finished: Bool, joined: Bool, waiters: [@Sendable () -> Void])>((false, false, []))

    init(backend: EventLoop.Backend) {
        self.backend = backend
        sem_init(ready, 0, 0)
    }

    deinit {
        sem_destroy(ready)
        ready.deallocate()
    }

    /// Waits for the thread to report its start (retrying after a signal interrupts the wait).
    func waitUntilStarted() { _LoopThreadState.wait(ready) }

    static func wait(_ semaphore: UnsafeMutablePointer<sem_t>) {
        while sem_wait(semaphore) != 0 && errno == EINTR {}
    }

    /// The thread: creates the loop and its executor, hands the executor over, runs the loop until the
    /// executor has finished (breaking it then, whatever watchers are still active), then says so.
    func main() {
        do {
            let loop = try EventLoop(backend: backend)
            let executor = LoopExecutor(loop: loop)
            var executorFinished = false
            executor.onFinished = {
                executorFinished = true
                loop.breakLoop(.all)
            }
            started = .success(executor)
            sem_post(ready)
            loop.run()
            // Someone else broke the loop: refuse new work, run what is queued, then stop.
            if !executorFinished {
                executor.shutdown()
                loop.run()
            }
            // This thread ends: it is no longer the loop's (a later thread may get the same pthread_t).
            loop.forgetLoopThread()
        } catch {
            started = .failure(error)
            sem_post(ready)
            return
        }
        let waiters = end.withLock { end in
            end.finished = true
            defer { end.waiters = [] }
            return end.waiters
        }
        for waiter in waiters { waiter() }
    }

    /// Calls `body` once the loop has finished: at once if it has.
    func whenFinished(_ body: @escaping @Sendable () -> Void) {
        let now = end.withLock { end -> Bool in
            if end.finished { return true }
            end.waiters.append(body)
            return false
        }
        if now { body() }
    }

    /// Joins the thread, once.
    func join() {
        let first = end.withLock { end -> Bool in
            defer { end.joined = true }
            return !end.joined
        }
        if first { pthread_join(thread, nil) }
    }
}
