internal import CLibev
internal import Glibc

/// Runs Swift concurrency jobs on a libev loop's thread: a `SerialExecutor` for actors pinned to the loop,
/// and (``taskExecutor``) a `TaskExecutor` for nonisolated async code that prefers it.
///
/// Jobs from any thread go into one locked FIFO and wake the loop through one `ev_async`; the loop runs
/// them in order, on its own thread, between its other callbacks. It works on owned loops and on borrowed
/// ones alike: the host's `ev_run` runs the jobs. On a borrowed loop, call ``shutdown()`` before the host
/// destroys the loop (a `CleanupWatcher` tells you when): work enqueued after the loop is gone would wake
/// freed memory.
///
/// ```swift
/// actor Counter {
///     let executor: LoopExecutor
///     nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
///     ...
/// }
/// ```
///
/// Isolation checks: ``isIsolatingCurrentContext()`` and ``checkIsolated()`` answer from the loop's
/// thread, so `actor.assumeIsolated { }` works inside a plain libev callback of the same loop.
///
/// Lifetime: create it on the loop's thread (before the loop runs, or in one of its callbacks). It keeps
/// its loop alive, and the actors pinned to it keep it alive. ``shutdown()`` lets the jobs already
/// enqueued run, then stops it; a job enqueued after that is a programmer error and stops the process
/// with a message (a job that can never run would be a silent hang). ``EventLoopThread`` gives a loop on a
/// thread of its own, with the executor's lifetime scoped.
///
/// Cost: enqueueing takes a mutex and, when the queue was empty, one `ev_async_send` (an eventfd write
/// unless a wake-up is already pending); a job costs one array slot, reused.
public final class LoopExecutor: SerialExecutor, @unchecked Sendable {
    /// What the loop has not run yet, and whether more is accepted.
    private struct Queue {
        var work: [Work] = []
        var accepting = true
        /// `shutdown()` was called: once `work` is empty the wake-up watcher stops.
        var finishing = false
    }

    private enum Work {
        /// An actor's job: runs isolated to this executor.
        case job(UnownedJob)
        /// A task's job that prefers ``taskExecutor``: runs on it, isolated to nothing.
        case taskJob(UnownedJob)
        case closure(@Sendable () -> Void)
    }

    /// The loop the jobs run on. Use it only on that loop's thread: inside this executor's jobs, in
    /// actors pinned to it, or in the loop's own callbacks (debug builds check watcher calls).
    public let loop: EventLoop
    private let queue = Locked(Queue())
    /// Touched on the loop thread only (created, drained, stopped there).
    private let wakeUp: AsyncWatcher
    private let wake: AsyncWatcher.Sender
    /// The batch being run, swapped with the queue's so its storage is reused.
    private var running: [Work] = []
    /// Called on the loop thread once the executor has finished (see ``EventLoopThread``).
    var onFinished: (() -> Void)?
    /// The same loop as a `TaskExecutor`, for `withTaskExecutorPreference` and `Task(executorPreference:)`:
    /// nonisolated async code that prefers it runs on the loop thread, in the same FIFO as the actor jobs.
    ///
    /// A separate object because a job must be run either isolated to a serial executor or on a task
    /// executor: run as both, every hop of a task without that preference would go through the queue.
    /// Kept alive by this executor (the task executor holds it unowned); keep the `LoopExecutor`.
    public var taskExecutor: LoopTaskExecutor { storedTaskExecutor }
    /// Set once, at the end of `init`, before the executor is shared.
    private var storedTaskExecutor: LoopTaskExecutor!

    /// Creates an executor for `loop` and starts its wake-up watcher.
    ///
    /// - Parameters:
    ///   - loop: the loop whose thread runs the jobs.
    ///   - keepsLoopAlive: whether the executor alone keeps ``EventLoop/run(_:)`` from returning until
    ///     ``shutdown()``. By default it does on an owned or default loop and does not on a borrowed one
    ///     (a guest does not keep its host's loop running); a host that lets its `ev_run` return while
    ///     jobs are still to come must run it again for them.
    /// - Precondition: called on the loop's thread (or before the loop runs).
    public init(loop: EventLoop, keepsLoopAlive: Bool? = nil) {
        self.loop = loop
        var drain: (() -> Void)?
        wakeUp = AsyncWatcher(loop: loop) { _ in drain?() }
        wake = wakeUp.sender
        wakeUp.keepsLoopAlive = keepsLoopAlive ?? (loop.ownership != .borrowed)
        wakeUp.start()
        drain = { [unowned self] in self.runJobs() }
        storedTaskExecutor = LoopTaskExecutor(self)
    }

    // MARK: Executor

    /// Queues `job` to run on the loop thread, after every job queued before it. Any thread.
    /// - Precondition: ``shutdown()`` has not been called (stops the process with a message otherwise).
    public func enqueue(_ job: consuming ExecutorJob) {
        submit(.job(UnownedJob(job)))
    }

    /// ``LoopTaskExecutor``'s jobs.
    func enqueueTaskJob(_ job: UnownedJob) {
        submit(.taskJob(job))
    }

    /// Runs `work` on the loop thread, in FIFO order with the jobs. Any thread; never runs `work` inline,
    /// even when called on the loop thread. Cost: one closure allocation.
    /// - Precondition: ``shutdown()`` has not been called.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        submit(.closure(work))
    }

    private func submit(_ work: Work) {
        let wasEmpty = queue.withLock { queue in
            guard queue.accepting else {
                fatalError("LoopExecutor: work enqueued after shutdown() can never run; finish every task on this executor before shutting it down")
            }
            queue.work.append(work)
            return queue.work.count == 1
        }
        if wasEmpty { wake.send() }
    }

    /// The loop's side: runs what was queued up to now; what those jobs enqueue runs on the next wake-up,
    /// so a chain of jobs cannot starve the loop's other watchers.
    private func runJobs() {
        let finished = queue.withLock { queue -> Bool in
            swap(&queue.work, &running)
            return queue.finishing && running.isEmpty
        }
        let serial = asUnownedSerialExecutor(), task = taskExecutor.asUnownedTaskExecutor()
        for work in running {
            switch work {
            case .job(let job): job.runSynchronously(on: serial)
            case .taskJob(let job): job.runSynchronously(on: task)
            case .closure(let body): body()
            }
        }
        running.removeAll(keepingCapacity: true)
        if finished {
            wakeUp.stop()
            onFinished?()
            onFinished = nil
        } else if queue.withLock({ $0.finishing }) {
            wake.send()  // come back to see the queue empty and finish
        }
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Whether the caller runs on the loop's thread, so in this executor's isolation (SE-0471).
    public func isIsolatingCurrentContext() -> Bool? {
        loop.isOnLoopThread
    }

    /// Stops the process, with a message, unless the caller runs on the loop's thread (SE-0424): what
    /// `assumeIsolated` calls when the runtime cannot tell on its own (inside a plain libev callback).
    public func checkIsolated() {
        precondition(loop.isOnLoopThread, "LoopExecutor.checkIsolated(): not on the loop's thread")
    }

    // MARK: Shutdown

    /// Refuses new work: the jobs and closures already queued still run, in order, then the wake-up watcher
    /// stops (so an owned loop with nothing else to do returns from `run()`). Any thread; calling it
    /// again does nothing.
    public func shutdown() {
        let first = queue.withLock { queue -> Bool in
            defer { queue.accepting = false; queue.finishing = true }
            return queue.accepting
        }
        if first { wake.send() }
    }

    /// Whether ``shutdown()`` has been called.
    public var isShutDown: Bool { queue.withLock { !$0.accepting } }
}

/// A ``LoopExecutor``'s loop as a `TaskExecutor` (``LoopExecutor/taskExecutor``): its jobs join the same
/// FIFO and run on the loop thread. Any thread may enqueue.
public final class LoopTaskExecutor: TaskExecutor {
    /// The executor whose queue and loop it shares, and which keeps it alive.
    public unowned let serialExecutor: LoopExecutor

    init(_ serialExecutor: LoopExecutor) { self.serialExecutor = serialExecutor }

    /// Queues `job` after everything queued before it on the loop. Any thread.
    /// - Precondition: the serial executor has not been shut down.
    public func enqueue(_ job: consuming ExecutorJob) {
        serialExecutor.enqueueTaskJob(UnownedJob(job))
    }
}
