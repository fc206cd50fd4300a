internal import CLibev

/// Calls back when the loop is being destroyed (`ev_cleanup`): how a guest learns that the C host of a
/// borrowed loop called `ev_loop_destroy`, and must let go of the loop.
///
/// In the callback, stop every watcher you have on the loop (their memory outlives the loop; stopping
/// one after the loop is gone would touch freed memory) and drop the ``EventLoop`` wrapper. The watcher
/// stops itself before calling back. It never keeps the loop alive (libev does not count it), whatever
/// ``Watcher/keepsLoopAlive`` says.
///
/// An owned ``EventLoop`` is destroyed only after its last watcher is gone, so a cleanup watcher on one
/// never fires: it is for loops someone else destroys.
///
/// Loop thread only; not `Sendable`.
public final class CleanupWatcher: Watcher {
    /// Called on the loop thread, during `ev_loop_destroy`, with the watcher.
    public typealias Callback = (CleanupWatcher) -> Void

    private let callback: Callback

    /// Creates a stopped watcher. Cost: one small allocation.
    public init(loop: EventLoop, callback: @escaping Callback) {
        self.callback = callback
        let memory = _WatcherMemory(ev_cleanup())
        cev_cleanup_init(memory.typed(ev_cleanup.self), watcherTrampoline)
        super.init(loop: loop, memory: memory,
                   start: { ev_cleanup_start($0, $1!.assumingMemoryBound(to: ev_cleanup.self)) },
                   stop: { ev_cleanup_stop($0, $1!.assumingMemoryBound(to: ev_cleanup.self)) })
    }

    override var libevUnrefsItself: Bool { true }

    override func fire(_ revents: Int32) {
        stop()  // while the loop is still there to stop it on
        callback(self)
    }
}
