internal import CLibev

/// Calls back at points on the wall clock (`ev_periodic`): once at an absolute time, every `interval`
/// seconds aligned to `offset` (say, at the top of every hour, whatever the clock does in between), or
/// whenever a reschedule closure says. Unlike ``TimerWatcher``, it follows changes of the system time.
///
/// Loop thread only; not `Sendable`.
public final class PeriodicWatcher: Watcher {
    /// Called on the loop thread with the watcher that fired.
    public typealias Callback = (PeriodicWatcher) -> Void
    /// Given the watcher and the current time, returns the next time to fire (at least `now`).
    ///
    /// libev calls it while it reorders its timers: it must not start or stop watchers, nor call into
    /// libev in any other way; only compute and return. Return a time in the past and libev may spin.
    public typealias Reschedule = (PeriodicWatcher, Double) -> Double

    private let callback: Callback
    private let reschedule: Reschedule?
    private var raw: UnsafeMutablePointer<ev_periodic> { memory.typed(ev_periodic.self) }

    /// Fires every `interval` seconds at wall-clock times `offset + n × interval` (interval > 0), or once at
    /// the wall-clock time `offset` (interval 0).
    ///
    /// - Parameters:
    ///   - loop: the loop that runs it.
    ///   - offset: with an interval, the phase within it, `0..<interval` (0 and 3,600 fires at every full
    ///     hour, UTC); without one, the absolute time to fire at, in seconds since the epoch.
    ///   - interval: seconds between firings; 0 for one firing.
    ///   - callback: called on the loop thread each time it fires.
    /// - Precondition: both are finite, the interval not negative.
    /// - Cost: one small allocation; starting it is O(log n) in the loop's timers, no syscall.
    public init(loop: EventLoop, offset: Double, interval: Double = 0, callback: @escaping Callback) {
        precondition(offset.isFinite && interval.isFinite && interval >= 0,
                     "PeriodicWatcher needs a finite offset and a finite interval >= 0, got \(offset) and \(interval)")
        self.callback = callback
        reschedule = nil
        let memory = _WatcherMemory(ev_periodic())
        cev_periodic_init(memory.typed(ev_periodic.self), watcherTrampoline, offset, interval, nil)
        super.init(loop: loop, memory: memory,
                   start: { ev_periodic_start($0, $1!.assumingMemoryBound(to: ev_periodic.self)) },
                   stop: { ev_periodic_stop($0, $1!.assumingMemoryBound(to: ev_periodic.self)) })
    }

    /// Fires at the times `reschedule` returns: libev asks it for the first time when the watcher
    /// starts, and for the next one each time it fires (and when the clock jumps).
    /// - Cost: as the interval form, plus one call of `reschedule` per firing.
    public init(loop: EventLoop, reschedule: @escaping Reschedule, callback: @escaping Callback) {
        self.callback = callback
        self.reschedule = reschedule
        let memory = _WatcherMemory(ev_periodic())
        cev_periodic_init(memory.typed(ev_periodic.self), watcherTrampoline, 0, 0, periodicReschedule)
        super.init(loop: loop, memory: memory,
                   start: { ev_periodic_start($0, $1!.assumingMemoryBound(to: ev_periodic.self)) },
                   stop: { ev_periodic_stop($0, $1!.assumingMemoryBound(to: ev_periodic.self)) })
    }

    /// The next time it fires, in seconds since the epoch (`ev_periodic_at`); meaningful while active.
    public var nextFiring: Double { cev_periodic_at(raw) }

    /// The offset (phase, or absolute time) and interval it was made with.
    public var offset: Double { cev_periodic_offset(raw) }
    public var interval: Double { cev_periodic_interval(raw) }

    /// Recomputes the next firing from the offset and interval, or from the reschedule closure, and
    /// restarts the watcher (`ev_periodic_again`): after the closure's idea of the schedule changed.
    public func again() {
        loop.assertOnLoopThread("PeriodicWatcher.again()")
        ev_periodic_again(loop.raw, raw)
    }

    override func fire(_ revents: Int32) {
        callback(self)
    }

    fileprivate func nextTime(after now: Double) -> Double {
        reschedule.map { $0(self, now) } ?? now
    }
}

/// libev's reschedule callback for every `PeriodicWatcher` made with a closure: finds the Swift object.
private let periodicReschedule: cev_reschedule = { pointer, now in
    guard let pointer, let data = cev_data(pointer),
          let watcher = Unmanaged<Watcher>.fromOpaque(data).takeUnretainedValue() as? PeriodicWatcher else { return now }
    return watcher.nextTime(after: now)
}
