internal import CLibev
internal import Glibc

/// Calls back on the loop thread after a Unix signal arrives (`ev_signal`).
///
/// libev binds each signal to one loop per process; a second loop asking for the same signal is refused
/// with an error instead of libev's assertion. The binding lasts from `init` to deinit of the last
/// `SignalWatcher` for that signal on that loop. Libraries should not install signal watchers on a loop
/// they borrow; applications own their signals. Loop thread only; not `Sendable`.
///
/// Starting the watcher unblocks its signal in the calling thread (`pthread_sigmask`), once libev's
/// handler is installed: a blocked signal never arrives (libev leaves the mask alone, and a process
/// started by a runtime whose threads block signals, or by a supervisor, inherits them blocked), and a
/// signal already pending is then delivered to the handler, not to the default action. So a program can
/// block its stop signals first thing and start its watchers later: a stop request in between waits.
/// On a loop that reads signals through a signalfd (`.signalFD`), libev blocks the signal instead, and
/// it stays blocked.
///
/// Threads: libev may read signals through a signalfd, which only sees a signal while no thread has it
/// unblocked; a thread that leaves it unblocked takes it with the default action (for SIGTERM, the end of
/// the process). In a program with several threads, block the signal in every other thread, for example
/// by blocking it before starting them (`pthread_sigmask`), as `echo-relay --threads` does.
public final class SignalWatcher: Watcher {
    /// Called on the loop thread with the watcher whose signal arrived.
    public typealias Callback = (SignalWatcher) -> Void

    /// The signal number being watched.
    public let signal: Int32
    private let callback: Callback

    /// Creates a stopped watcher for `signal` (for example `SIGTERM`).
    /// - Throws: ``LibevError/invalidSignal(_:)`` outside 1...64;
    ///   ``LibevError/signalBoundToAnotherLoop(signal:)`` if a live `SignalWatcher` holds it on another loop.
    public init(loop: EventLoop, signal: Int32, callback: @escaping Callback) throws(LibevError) {
        guard (1...64).contains(signal) else { throw .invalidSignal(signal) }
        try SignalWatcher.bindings.reserve(signal: signal, loop: loop.raw)
        self.signal = signal
        self.callback = callback
        let memory = _WatcherMemory(ev_signal())
        cev_signal_init(memory.typed(ev_signal.self), watcherTrampoline, signal)
        super.init(loop: loop, memory: memory,
                   start: { ev_signal_start($0, $1!.assumingMemoryBound(to: ev_signal.self)) },
                   stop: { ev_signal_stop($0, $1!.assumingMemoryBound(to: ev_signal.self)) })
    }

    deinit {
        stop()
        SignalWatcher.bindings.release(signal: signal, loop: loop.raw)
    }

    /// Unblocks the signal now that libev's handler is in place (see the type's documentation). A loop
    /// that reads signals through a signalfd (`.signalFD`) installs no handler and needs the signal
    /// blocked (libev blocks it when the watcher starts): the mask is then left alone.
    override func didStart() {
        var action = sigaction()
        sigaction(signal, nil, &action)
        // SIG_DFL is 0 and SIG_IGN 1: anything else is a handler, libev's.
        guard UInt(bitPattern: unsafeBitCast(action.__sigaction_handler, to: Int.self)) > 1 else { return }
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, signal)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    }

    override func fire(_ revents: Int32) {
        callback(self)
    }

    static let bindings = Bindings()

    /// Which loop each signal is bound to, counted by live watchers.
    final class Bindings: Sendable {
        private let table = Locked<[Int32: (loop: UInt, watchers: Int)]>([:])

        func reserve(signal: Int32, loop: OpaquePointer) throws(LibevError) {
            let key = UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(loop)))
            let accepted = table.withLock { table -> Bool in
                if let entry = table[signal], entry.loop != key { return false }
                table[signal, default: (key, 0)].watchers += 1
                return true
            }
            guard accepted else { throw .signalBoundToAnotherLoop(signal: signal) }
        }

        func release(signal: Int32, loop: OpaquePointer) {
            table.withLock { table in
                guard var entry = table[signal] else { return }
                entry.watchers -= 1
                table[signal] = entry.watchers == 0 ? nil : entry
            }
        }
    }
}
