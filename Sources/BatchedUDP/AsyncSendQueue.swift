internal import Libev

/// The tasks waiting in ``BatchedUDPWatcher/send(_:to:metadata:)`` for the watcher to drain below its
/// low-water mark, in arrival order. The loop thread adds and resumes waiters; a cancellation handler, on
/// any thread, may take one out: hence the lock. Once a sender has had to wait, the queue exists and
/// every `send` takes the lock twice (an uncontended pthread mutex: a few atomic instructions).
final class AsyncSendQueue: Sendable {
    private struct State: Sendable {
        var waiters: [(id: UInt64, continuation: UnsafeContinuation<Void, any Error>)] = []
        var head = 0
        /// Resumed to send, not yet run: a newcomer waits behind them too.
        var resumed = 0
        /// Cancelled before they were registered.
        var cancelledEarly: Set<UInt64> = []
        var nextID: UInt64 = 0
        /// The last id registered by `wait`: a cancel for it or an earlier one came after its waiter
        /// was resumed or failed, and is ignored.
        var lastRegistered: UInt64 = 0
        /// The watcher closed: every later waiter fails at once.
        var closed = false
    }

    private let state = Locked(State())

    /// Whether a sender arriving now must queue behind others (or the watcher is closed).
    var mustWait: Bool { state.withLock { $0.waiters.count > $0.head || $0.resumed > 0 } }

    /// Senders waiting now (tests).
    var waitingCount: Int { state.withLock { $0.waiters.count - $0.head } }

    func makeID() -> UInt64 { state.withLock { $0.nextID &+= 1; return $0.nextID } }

    /// Registers a waiter, at the back or (a resumed sender that found the ring full again) at the front;
    /// it is resumed by ``resumeNext()``, or fails with `closed` or CancellationError.
    func wait(id: UInt64, first: Bool, _ continuation: UnsafeContinuation<Void, any Error>) {
        let failure: (any Error)? = state.withLock { state in
            state.lastRegistered = max(state.lastRegistered, id)
            if state.cancelledEarly.remove(id) != nil { return CancellationError() }
            if state.closed { return BatchedUDPError.closed }
            if !first {
                state.waiters.append((id, continuation))
            } else if state.head > 0 {
                state.head -= 1
                state.waiters[state.head] = (id, continuation)
            } else {
                state.waiters.insert((id, continuation), at: 0)
            }
            return nil
        }
        if let failure { continuation.resume(throwing: failure) }
    }

    /// Any thread: the waiter `id` fails with CancellationError, unless it was resumed already.
    func cancel(id: UInt64) {
        let taken = state.withLock { state -> UnsafeContinuation<Void, any Error>? in
            guard let index = state.waiters[state.head...].firstIndex(where: { $0.id == id }) else {
                if id > state.lastRegistered { state.cancelledEarly.insert(id) }
                return nil
            }
            return state.waiters.remove(at: index).continuation
        }
        taken?.resume(throwing: CancellationError())
    }

    /// Loop thread: resumes the longest-waiting sender, which sends when its task runs.
    func resumeNext() {
        let next = state.withLock { state -> UnsafeContinuation<Void, any Error>? in
            guard state.head < state.waiters.count else { return nil }
            let next = state.waiters[state.head].continuation
            state.head += 1
            state.resumed += 1
            if state.head == state.waiters.count {
                state.waiters.removeAll(keepingCapacity: true)
                state.head = 0
            }
            return next
        }
        next?.resume()
    }

    /// Loop thread: a resumed sender ran (and sent, or found it must wait again).
    func resumedSenderRan() { state.withLock { $0.resumed -= 1 } }

    /// Loop thread: the watcher closed; every waiter, now and later, fails with `closed`.
    func failAll() {
        let waiting = state.withLock { state -> [UnsafeContinuation<Void, any Error>] in
            state.closed = true
            defer { state.waiters.removeAll(); state.head = 0 }
            return state.waiters[state.head...].map(\.continuation)
        }
        for continuation in waiting { continuation.resume(throwing: BatchedUDPError.closed) }
    }
}
