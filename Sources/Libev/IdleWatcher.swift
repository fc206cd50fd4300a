internal import CLibev

/// Calls back on every iteration in which no other watcher of the same or higher priority is pending (`ev_idle`).
///
/// While active, the loop polls without blocking: keep it active only while there is idle work to do.
///
/// Loop thread only; not `Sendable`.
public final class IdleWatcher: Watcher {
    /// Called on the loop thread with the watcher.
    public typealias Callback = (IdleWatcher) -> Void

    private let callback: Callback

    /// Creates a stopped watcher. Cost: one small allocation.
    public init(loop: EventLoop, callback: @escaping Callback) {
        self.callback = callback
        let memory = _WatcherMemory(ev_idle())
        cev_idle_init(memory.typed(ev_idle.self), watcherTrampoline)
        super.init(loop: loop, memory: memory,
                   start: { ev_idle_start($0, $1!.assumingMemoryBound(to: ev_idle.self)) },
                   stop: { ev_idle_stop($0, $1!.assumingMemoryBound(to: ev_idle.self)) })
    }

    override func fire(_ revents: Int32) {
        callback(self)
    }
}
