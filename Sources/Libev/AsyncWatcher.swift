internal import CLibev

/// Wakes a loop from any thread and calls back on the loop thread (`ev_async`).
///
/// This is the package's only thread-safe door: ``send()`` and ``Sender/send()`` may be called from any
/// thread, everything else on the loop thread. Sends that arrive before the callback runs merge into one
/// callback, so keep your own (locked) queue of work and drain all of it in the callback. Start the watcher
/// on the loop thread before other threads send.
public final class AsyncWatcher: Watcher {
    /// Called on the loop thread after one or more sends.
    public typealias Callback = (AsyncWatcher) -> Void

    private let callback: Callback

    /// Creates a stopped watcher. Cost: one small allocation; libev opens its wake-up eventfd on first start.
    public init(loop: EventLoop, callback: @escaping Callback) {
        self.callback = callback
        let memory = _WatcherMemory(ev_async())
        cev_async_init(memory.typed(ev_async.self), watcherTrampoline)
        super.init(loop: loop, memory: memory,
                   start: { ev_async_start($0, $1!.assumingMemoryBound(to: ev_async.self)) },
                   stop: { ev_async_stop($0, $1!.assumingMemoryBound(to: ev_async.self)) })
    }

    /// Wakes the loop and schedules the callback (`ev_async_send`). Thread-safe; costs at most one `write`
    /// to an eventfd, none if a send is already pending.
    public func send() { sender.send() }

    /// Whether a send has not been handled yet (`ev_async_pending`).
    public var isSendPending: Bool { cev_async_pending(memory.typed(ev_async.self)) != 0 }

    /// A `Sendable` handle for other threads. It keeps the watcher memory and the loop alive, so a send after
    /// the watcher is gone is harmless (it wakes the loop and nothing runs).
    public var sender: Sender { Sender(memory: memory, loop: _LoopReference(loop)) }

    /// Sends to an ``AsyncWatcher`` from any thread.
    public struct Sender: Sendable {
        let memory: _WatcherMemory
        let loop: _LoopReference

        /// Wakes the loop and schedules the watcher's callback (`ev_async_send`). Thread-safe.
        public func send() {
            ev_async_send(loop.loop.raw, memory.typed(ev_async.self))
        }
    }

    override func fire(_ revents: Int32) {
        callback(self)
    }
}

/// Keeps an `EventLoop` alive from another thread. Only its `raw` pointer is read there, which never changes.
final class _LoopReference: @unchecked Sendable {
    let loop: EventLoop
    init(_ loop: EventLoop) { self.loop = loop }
}
