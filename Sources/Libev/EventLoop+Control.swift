internal import CLibev

/// One-shot callbacks, fed events, and the loop-wide settings of libev an owner may change.
extension EventLoop {
    /// What woke an ``once(fileDescriptor:events:timeout:_:)`` callback.
    public enum OnceEvent: Sendable, Equatable {
        /// The descriptor became ready for these events.
        case ready(IOEvents)
        /// The timeout passed first.
        case timedOut
    }

    /// Calls `callback` once, when `fileDescriptor` is ready for `events` or after `timeout` seconds,
    /// whichever comes first (`ev_once`); libev manages the watchers itself.
    ///
    /// - Parameters:
    ///   - fileDescriptor: the descriptor to wait for, or nil for a pure timeout.
    ///   - events: `.read`, `.write` or both (ignored without a descriptor).
    ///   - timeout: seconds to wait at most, or nil for no timeout (then a descriptor is needed).
    ///   - callback: called once, on the loop thread, with what happened.
    /// - Precondition: a descriptor or a timeout is given; the timeout is finite and not negative.
    /// - Cost: one allocation for the closure and libev's own for its two watchers. If the loop is
    ///   destroyed before the callback runs, the closure is never released (as with libev's own `arg`).
    public func once(fileDescriptor: Int32? = nil, events: IOEvents = .read, timeout: Double?,
                     _ callback: @escaping (OnceEvent) -> Void) {
        assertOnLoopThread("EventLoop.once")
        precondition(fileDescriptor != nil || timeout != nil, "EventLoop.once needs a file descriptor, a timeout, or both")
        if let timeout { precondition(timeout.isFinite && timeout >= 0, "EventLoop.once needs a finite timeout >= 0, got \(timeout)") }
        let box = Unmanaged.passRetained(_OnceCallback(callback)).toOpaque()
        ev_once(raw, fileDescriptor ?? -1, fileDescriptor == nil ? 0 : IOEvents.valid(events), timeout ?? -1, { revents, box in
            let callback = Unmanaged<_OnceCallback>.fromOpaque(box!).takeRetainedValue()
            callback.body(revents & Int32(EV_TIMER) != 0 ? .timedOut : .ready(IOEvents(rawValue: revents)))
        }, box)
    }

    /// Makes `watcher`'s callback run in this iteration as if its event had happened (`ev_feed_event`),
    /// whether or not it is active. For an ``IOWatcher``, `events` is what its callback receives.
    /// - Precondition: `watcher` belongs to this loop.
    public func feedEvent(to watcher: Watcher, events: IOEvents = []) {
        assertOnLoopThread("EventLoop.feedEvent(to:events:)")
        precondition(watcher.loop.raw == raw, "EventLoop.feedEvent(to:events:) was given a watcher of another loop")
        ev_feed_event(raw, watcher.memory.pointer, events.rawValue)
    }

    /// Makes every io watcher of `fileDescriptor` that waits for any of `events` run as if it were ready
    /// (`ev_feed_fd_event`): for descriptors whose readiness libev cannot see (data already buffered in user space).
    public func feedEvent(fileDescriptor: Int32, events: IOEvents) {
        assertOnLoopThread("EventLoop.feedEvent(fileDescriptor:events:)")
        ev_feed_fd_event(raw, fileDescriptor, events.rawValue)
    }

    /// Lets the loop wait up to `seconds` after a first io event for more to arrive, so fewer, larger
    /// batches are handled per iteration (`ev_set_io_collect_interval`); 0 (the default) waits for none.
    /// Latency for throughput: 0.0001–0.01 s is typical.
    /// - Throws: ``LibevError/borrowedLoop(operation:)`` on a borrowed loop (the host's setting).
    /// - Precondition: finite, not negative.
    public func setIOCollectInterval(_ seconds: Double) throws(LibevError) {
        try checkOwned("EventLoop.setIOCollectInterval(_:)")
        assertOnLoopThread("EventLoop.setIOCollectInterval(_:)")
        precondition(seconds.isFinite && seconds >= 0, "an io collect interval must be finite and >= 0, got \(seconds)")
        ev_set_io_collect_interval(raw, seconds)
    }

    /// Lets timers that are due within `seconds` of each other fire in the same iteration, for fewer
    /// wake-ups (`ev_set_timeout_collect_interval`); 0 (the default) fires each when due.
    /// - Throws: ``LibevError/borrowedLoop(operation:)`` on a borrowed loop.
    /// - Precondition: finite, not negative.
    public func setTimeoutCollectInterval(_ seconds: Double) throws(LibevError) {
        try checkOwned("EventLoop.setTimeoutCollectInterval(_:)")
        assertOnLoopThread("EventLoop.setTimeoutCollectInterval(_:)")
        precondition(seconds.isFinite && seconds >= 0, "a timeout collect interval must be finite and >= 0, got \(seconds)")
        ev_set_timeout_collect_interval(raw, seconds)
    }

    /// Suspends the loop's clock while the process is (about to be) stopped for a while (`ev_suspend`):
    /// time spent suspended does not count towards ``TimerWatcher`` delays. Pair with ``resume()``.
    /// - Throws: ``LibevError/borrowedLoop(operation:)`` on a borrowed loop.
    public func suspend() throws(LibevError) {
        try checkOwned("EventLoop.suspend()")
        assertOnLoopThread("EventLoop.suspend()")
        ev_suspend(raw)
    }

    /// Resumes the loop's clock after ``suspend()`` (`ev_resume`): timers are shifted by the time suspended.
    /// - Throws: ``LibevError/borrowedLoop(operation:)`` on a borrowed loop.
    public func resume() throws(LibevError) {
        try checkOwned("EventLoop.resume()")
        assertOnLoopThread("EventLoop.resume()")
        ev_resume(raw)
    }

    /// Tells the loop that the process forked, to be called in the child before the loop runs again
    /// (`ev_loop_fork`): libev re-creates its kernel state (the epoll set) at the next iteration and runs
    /// the ``ForkWatcher``s first.
    /// - Throws: ``LibevError/borrowedLoop(operation:)`` on a borrowed loop (its owner handles forks).
    public func noteFork() throws(LibevError) {
        try checkOwned("EventLoop.noteFork()")
        assertOnLoopThread("EventLoop.noteFork()")
        ev_loop_fork(raw)
    }

    private func checkOwned(_ operation: String) throws(LibevError) {
        guard ownership != .borrowed else { throw .borrowedLoop(operation: operation) }
    }
}

/// The closure of one `ev_once`, retained until it runs.
private final class _OnceCallback {
    let body: (EventLoop.OnceEvent) -> Void
    init(_ body: @escaping (EventLoop.OnceEvent) -> Void) { self.body = body }
}
