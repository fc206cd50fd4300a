internal import CLibev

/// Calls back when a child process exits (or, with `trace`, stops or continues) (`ev_child`).
///
/// libev reaps children only on its default loop (``EventLoop/default``), whose SIGCHLD handler calls
/// `waitpid(-1, ...)`: any child of the process may be reaped there, so do not mix it with other ways of
/// waiting for children (Foundation's `Process`, a bare `waitpid`). Start it before the child can exit,
/// or the status is still delivered once the loop runs (the SIGCHLD stays pending).
///
/// Loop thread only; not `Sendable`.
public final class ChildWatcher: Watcher {
    /// Called on the loop thread with the watcher; ``pid`` and ``status`` say which child and what happened.
    public typealias Callback = (ChildWatcher) -> Void

    private let callback: Callback
    private var raw: UnsafeMutablePointer<ev_child> { memory.typed(ev_child.self) }

    /// Watches child `pid` (0 for any child).
    ///
    /// - Parameters:
    ///   - loop: libev's default loop; any other loop throws.
    ///   - pid: the child's process ID, or 0 for any child.
    ///   - trace: also report children that stop or continue (`WUNTRACED`/`WCONTINUED`), not only exits.
    ///   - callback: called on the loop thread each time the watched child's status changes.
    /// - Throws: ``LibevError/childWatcherNeedsDefaultLoop`` on any loop but the default one (libev would
    ///   abort the process).
    /// - Cost: one small allocation.
    public init(loop: EventLoop, pid: Int32, trace: Bool = false, callback: @escaping Callback) throws(LibevError) {
        guard cev_is_default_loop(loop.raw) != 0 else { throw .childWatcherNeedsDefaultLoop }
        self.callback = callback
        let memory = _WatcherMemory(ev_child())
        cev_child_init(memory.typed(ev_child.self), watcherTrampoline, pid, trace ? 1 : 0)
        super.init(loop: loop, memory: memory,
                   start: { ev_child_start($0, $1!.assumingMemoryBound(to: ev_child.self)) },
                   stop: { ev_child_stop($0, $1!.assumingMemoryBound(to: ev_child.self)) })
    }

    /// The process ID watched (0: any child).
    public var watchedPID: Int32 { cev_child_pid(raw) }

    /// The child whose status changed last (`rpid`).
    public var pid: Int32 { cev_child_rpid(raw) }

    /// Its raw `waitpid` status (`rstatus`); see ``exitCode`` and ``terminatingSignal``.
    public var status: Int32 { cev_child_rstatus(raw) }

    /// The exit code if the child exited, else nil (`WIFEXITED`, `WEXITSTATUS`).
    public var exitCode: Int32? { status & 0x7f == 0 ? (status >> 8) & 0xff : nil }

    /// The signal that killed the child, else nil (`WIFSIGNALED`, `WTERMSIG`).
    public var terminatingSignal: Int32? {
        let signal = status & 0x7f
        return signal != 0 && signal != 0x7f ? signal : nil
    }

    override func fire(_ revents: Int32) {
        callback(self)
    }
}
