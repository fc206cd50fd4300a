internal import CLibev

/// Calls back at the end of every loop iteration, right after the loop has polled for events (`ev_check`).
///
/// Loop thread only; not `Sendable`.
public final class CheckWatcher: Watcher {
    /// Called on the loop thread with the watcher.
    public typealias Callback = (CheckWatcher) -> Void

    private let callback: Callback

    /// Creates a stopped watcher. Cost: one small allocation.
    public init(loop: EventLoop, callback: @escaping Callback) {
        self.callback = callback
        let memory = _WatcherMemory(ev_check())
        cev_check_init(memory.typed(ev_check.self), watcherTrampoline)
        super.init(loop: loop, memory: memory,
                   start: { ev_check_start($0, $1!.assumingMemoryBound(to: ev_check.self)) },
                   stop: { ev_check_stop($0, $1!.assumingMemoryBound(to: ev_check.self)) })
    }

    override func fire(_ revents: Int32) {
        callback(self)
    }
}
