internal import CLibev

/// What every watcher shares: a libev watcher struct at a stable heap address, `start()`/`stop()`,
/// `isActive`/`isPending`, priority, and whether it keeps its loop running.
///
/// Lifetime: keep a reference to a watcher for as long as it should run. Releasing the last reference stops
/// it and frees its memory; doing so inside its own callback, or releasing other watchers there, is safe.
///
/// Thread confinement: use a watcher only on its loop's thread. Watchers are not `Sendable`.
public class Watcher {
    /// The loop this watcher belongs to (held strongly: an owned loop outlives its watchers).
    public let loop: EventLoop

    /// The `ev_TYPE` struct, allocated once; libev keeps this address while the watcher is active.
    let memory: _WatcherMemory
    private let startFunction: _WatcherMemory.Operation
    private let stopFunction: _WatcherMemory.Operation
    /// True while libev counts this watcher as active but we have taken its loop reference back (ev_unref).
    private var holdsUnref = false

    init(loop: EventLoop, memory: _WatcherMemory, start: _WatcherMemory.Operation, stop: _WatcherMemory.Operation) {
        self.loop = loop
        self.memory = memory
        self.startFunction = start
        self.stopFunction = stop
        cev_set_data(memory.pointer, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        stopWatcher()
        cev_set_data(memory.pointer, nil)
    }

    /// Whether the watcher is started (`ev_is_active`). libev stops one-shot timers before their
    /// callback and io watchers whose fd it finds invalid (`.error`).
    public final var isActive: Bool { cev_is_active(memory.pointer) != 0 }

    /// Whether an event is waiting for this watcher's callback (`ev_is_pending`).
    public final var isPending: Bool { cev_is_pending(memory.pointer) != 0 }

    /// Whether an active watcher keeps `run()` from returning (`ev_ref`/`ev_unref`, kept balanced).
    ///
    /// `true` by default. Set it to `false` for helpers that must not keep a host's loop alive on their own;
    /// it can change at any time, active or not.
    public final var keepsLoopAlive: Bool = true {
        didSet {
            guard isActive, !libevUnrefsItself else { return }
            if keepsLoopAlive { takeRefBack() } else { dropRef() }
        }
    }

    /// Libev priority, `-2...2` (`ev_set_priority`); higher runs first among pending watchers.
    /// - Precondition: the watcher is neither active nor pending when it changes.
    public final var priority: Int32 {
        get { cev_priority(memory.pointer) }
        set {
            precondition(!isActive && !isPending, "Watcher.priority can only change while the watcher is stopped and not pending")
            precondition((-2...2).contains(newValue), "Watcher.priority must be in -2...2, got \(newValue)")
            cev_set_priority(memory.pointer, newValue)
        }
    }

    /// Starts the watcher (`ev_TYPE_start`); does nothing if it is active. Cost: O(1) or O(log n) for timers, no syscall.
    public final func start() {
        loop.assertOnLoopThread("\(type(of: self)).start()")
        guard !isActive else { return }
        willStart()
        startFunction(loop.raw, memory.pointer)
        if !keepsLoopAlive && !libevUnrefsItself { dropRef() }
        didStart()
    }

    /// Stops the watcher and clears a pending event (`ev_TYPE_stop`); safe to call at any time on the
    /// loop thread (debug builds check it while the loop runs).
    public final func stop() {
        loop.assertOnLoopThread("\(type(of: self)).stop()")
        stopWatcher()
    }

    private func stopWatcher() {
        takeRefBack()
        stopFunction(loop.raw, memory.pointer)
    }

    private func dropRef() {
        guard !holdsUnref else { return }
        ev_unref(loop.raw)
        holdsUnref = true
    }

    private func takeRefBack() {
        guard holdsUnref else { return }
        ev_ref(loop.raw)
        holdsUnref = false
    }

    /// Called by the trampoline. libev may have stopped the watcher itself (one-shot timer, io error):
    /// its ev_stop dropped the loop count once more, so give back the reference we had taken.
    final func dispatch(_ revents: Int32) {
        if holdsUnref && !isActive { takeRefBack() }
        fire(revents)
    }

    /// Runs the subclass's Swift callback.
    /// Called by `start()` after libev started the watcher (subclasses: what needs it running).
    func didStart() {}

    func fire(_ revents: Int32) {}

    /// Lets a subclass reset its libev struct just before `ev_TYPE_start`.
    func willStart() {}

    /// Whether libev itself keeps this watcher from holding the loop (`ev_cleanup`): then
    /// ``keepsLoopAlive`` changes nothing.
    var libevUnrefsItself: Bool { false }
}

/// The single C entry point for every watcher: recovers the Swift object from the watcher's `data` field
/// and keeps it alive while its callback runs (the callback may drop the last reference to it).
let watcherTrampoline: cev_callback = { _, pointer, revents in
    guard let pointer, let data = cev_data(pointer) else { return }
    let watcher = Unmanaged<Watcher>.fromOpaque(data).takeUnretainedValue()
    watcher.loop.noteLoopThread()
    withExtendedLifetime(watcher) { watcher.dispatch(revents) }
}

/// Owns the heap memory of one libev watcher struct. Separate from the watcher object so an
/// ``AsyncWatcher/Sender`` on another thread can keep the `ev_async` memory valid after the watcher is gone.
final class _WatcherMemory: @unchecked Sendable {
    typealias Operation = @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Void

    let pointer: UnsafeMutableRawPointer

    /// Allocates and initialises one `Raw` (an imported libev struct, zeroed by its `init()`).
    init<Raw>(_ initial: Raw) {
        pointer = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<Raw>.size, alignment: MemoryLayout<Raw>.alignment)
        pointer.initializeMemory(as: Raw.self, repeating: initial, count: 1)
    }

    deinit { pointer.deallocate() }

    func typed<Raw>(_: Raw.Type) -> UnsafeMutablePointer<Raw> { pointer.assumingMemoryBound(to: Raw.self) }
}
