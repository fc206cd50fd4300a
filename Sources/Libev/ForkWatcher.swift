internal import CLibev

/// Calls back once the loop has been told of a fork (``EventLoop/noteFork()``), at the start of its
/// next iteration, before it polls (`ev_fork`): the place to re-create what must not be shared with the
/// parent process (a random seed, a connection).
///
/// Loop thread only; not `Sendable`.
public final class ForkWatcher: Watcher {
    /// Called on the loop thread with the watcher.
    public typealias Callback = (ForkWatcher) -> Void

    private let callback: Callback

    /// Creates a stopped watcher. Cost: one small allocation.
    public init(loop: EventLoop, callback: @escaping Callback) {
        self.callback = callback
        let memory = _WatcherMemory(ev_fork())
        cev_fork_init(memory.typed(ev_fork.self), watcherTrampoline)
        super.init(loop: loop, memory: memory,
                   start: { ev_fork_start($0, $1!.assumingMemoryBound(to: ev_fork.self)) },
                   stop: { ev_fork_stop($0, $1!.assumingMemoryBound(to: ev_fork.self)) })
    }

    override func fire(_ revents: Int32) {
        callback(self)
    }
}
