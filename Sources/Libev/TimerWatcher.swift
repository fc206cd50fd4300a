internal import CLibev

/// Calls back after a delay, then optionally every `repeat` seconds (`ev_timer`), on the loop's monotonic clock.
///
/// A one-shot timer (repeat 0) is stopped by libev before its callback runs. Every `start()` waits the
/// full `after` delay again: libev itself would keep what was left when the timer last stopped or
/// expired (nothing, for an expired one) and fire a restarted one-shot timer at once.
/// Loop thread only; not `Sendable`.
public final class TimerWatcher: Watcher {
    /// Called on the loop thread with the watcher that fired.
    public typealias Callback = (TimerWatcher) -> Void

    private let callback: Callback
    /// The delay each `start()` waits.
    private var delay: Double
    /// Set by `again()`: the next start waits the repeat interval instead.
    private var nextDelay: Double?
    private var raw: UnsafeMutablePointer<ev_timer> { memory.typed(ev_timer.self) }

    /// Creates a stopped timer.
    /// - Parameters:
    ///   - loop: the loop that runs it.
    ///   - after: seconds from `start()` (measured from the loop's cached ``EventLoop/now``) to the first call.
    ///   - repeat: seconds between later calls; 0 for a one-shot timer.
    ///   - callback: called on the loop thread each time the timer fires.
    /// - Precondition: both values are finite and not negative.
    public init(loop: EventLoop, after: Double, repeat: Double = 0, callback: @escaping Callback) {
        TimerWatcher.check(after: after, repeat: `repeat`)
        self.callback = callback
        delay = after
        let memory = _WatcherMemory(ev_timer())
        cev_timer_init(memory.typed(ev_timer.self), watcherTrampoline, after, `repeat`)
        super.init(loop: loop, memory: memory,
                   start: { ev_timer_start($0, $1!.assumingMemoryBound(to: ev_timer.self)) },
                   stop: { ev_timer_stop($0, $1!.assumingMemoryBound(to: ev_timer.self)) })
    }

    /// Sets the delay and repeat of a stopped timer (`ev_timer_set`).
    /// - Throws: ``LibevError/watcherActive(operation:)`` if the timer is active.
    /// - Precondition: both values are finite and not negative.
    public func set(after: Double, repeat: Double = 0) throws(LibevError) {
        guard !isActive else { throw .watcherActive(operation: "TimerWatcher.set(after:repeat:)") }
        TimerWatcher.check(after: after, repeat: `repeat`)
        delay = after
        cev_timer_set(raw, after, `repeat`)
    }

    /// The repeat interval used by the next expiry and by `again()`; may change at any time.
    public var repeatInterval: Double {
        get { cev_timer_repeat(raw) }
        set {
            TimerWatcher.check(after: 0, repeat: newValue)
            cev_timer_set_repeat(raw, newValue)
        }
    }

    /// Restarts a repeating timer `repeatInterval` from now, or stops it if the interval is 0 (`ev_timer_again`).
    /// The cheap way to implement an inactivity timeout. Keeps the ``Watcher/keepsLoopAlive`` setting.
    public func again() {
        if isActive { stop() }
        guard repeatInterval > 0 else { return }
        nextDelay = repeatInterval
        start()
    }

    /// Seconds until the timer next fires (`ev_timer_remaining`); meaningful while active.
    public var remaining: Double { ev_timer_remaining(loop.raw, raw) }

    override func fire(_ revents: Int32) {
        callback(self)
    }

    override func willStart() {
        cev_timer_set(raw, nextDelay ?? delay, repeatInterval)
        nextDelay = nil
    }

    private static func check(after: Double, repeat: Double) {
        precondition(after.isFinite && after >= 0, "TimerWatcher needs a finite delay >= 0, got \(after)")
        precondition(`repeat`.isFinite && `repeat` >= 0, "TimerWatcher needs a finite repeat >= 0, got \(`repeat`)")
    }
}
