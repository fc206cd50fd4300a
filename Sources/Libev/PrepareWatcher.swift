internal import CLibev

/// Calls back at the start of every loop iteration, just before the loop blocks for events (`ev_prepare`).
///
/// The natural place to flush work batched during the previous iteration.
///
/// Loop thread only; not `Sendable`.
public final class PrepareWatcher: Watcher {
    /// Called on the loop thread with the watcher.
    public typealias Callback = (PrepareWatcher) -> Void

    private let callback: Callback

    /// Creates a stopped watcher. Cost: one small allocation.
    public init(loop: EventLoop, callback: @escaping Callback) {
        self.callback = callback
        let memory = _WatcherMemory(ev_prepare())
        cev_prepare_init(memory.typed(ev_prepare.self), watcherTrampoline)
        super.init(loop: loop, memory: memory,
                   start: { ev_prepare_start($0, $1!.assumingMemoryBound(to: ev_prepare.self)) },
                   stop: { ev_prepare_stop($0, $1!.assumingMemoryBound(to: ev_prepare.self)) })
    }

    override func fire(_ revents: Int32) {
        callback(self)
    }
}
