internal import CLibev
internal import Glibc
internal import Synchronization

/// Loop-thread confinement, checked in debug builds (as SwiftNIO's `preconditionInEventLoop`): the
/// package's public entry points trap with a message naming the call when they run on another thread
/// while the loop is running. Release builds compile the checks away.
///
/// The loop thread is the one that last called ``EventLoop/run(_:)`` or ran a Swift watcher's callback
/// (a borrowed loop's host may run it on any thread). While the loop is not running, any thread may
/// set it up, as a host does before it hands the loop to its thread. It is tracked in every build (a
/// relaxed load and compare per callback): ``LoopExecutor`` answers isolation checks with it.
extension EventLoop {
    /// Records the calling thread as the loop's.
    @inline(__always)
    func noteLoopThread() {
        let me = UInt(pthread_self())
        if confinement.thread.load(ordering: .relaxed) != me { confinement.thread.store(me, ordering: .relaxed) }
    }

    /// Forgets the loop thread, whose thread is ending (its `pthread_t` may be reused by another).
    func forgetLoopThread() {
        confinement.thread.store(0, ordering: .relaxed)
    }

    /// Whether the calling thread is the one running the loop (or the loop's last thread while it is not
    /// running).
    var isOnLoopThread: Bool {
        let owner = confinement.thread.load(ordering: .relaxed)
        return owner != 0 && pthread_equal(pthread_self(), pthread_t(owner)) != 0
    }

    /// Debug builds: traps, naming `entry`, if the loop is running on another thread than the caller's.
    /// Release builds: nothing.
    @inline(__always)
    package func assertOnLoopThread(_ entry: @autoclosure () -> String) {
        #if DEBUG
        let owner = confinement.thread.load(ordering: .relaxed)
        guard owner != 0, ev_depth(raw) > 0 else { return }
        precondition(pthread_equal(pthread_self(), pthread_t(owner)) != 0,
                     "\(entry()) was called on a thread that is not running its event loop; watchers are confined to the loop's thread (use AsyncWatcher to hand work over)")
        #endif
    }
}

/// The loop thread seen last: for debug-build confinement checks and executor isolation checks.
final class _LoopConfinement: Sendable {
    let thread = Atomic<UInt>(0)
}
