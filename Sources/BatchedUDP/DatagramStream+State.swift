internal import Libev

/// What the loop side (producer) and the iterating task (consumer) of a ``DatagramStream`` share, behind
/// one lock: the buffered batches, a waiting consumer, whether reading is paused, and the pool of
/// buffers batches are copied into.
final class _DatagramStreamState: Sendable {
    /// What `takeIfReady` found.
    enum Ready {
        case batch(DatagramStream.Batch?)
        var batch: DatagramStream.Batch? { if case .batch(let batch) = self { return batch } else { return nil } }
    }

    private struct State: Sendable {
        /// Taken batches are set to nil at once: a reference left here would keep their buffers from reuse.
        var buffered: [DatagramStream.Batch?] = []
        var head = 0
        var waiting: UnsafeContinuation<DatagramStream.Batch?, Never>?
        /// The producer stopped reading at the high mark.
        var paused = false
        /// The consumer asked the loop to read again (at the low mark) or to finish.
        var signalled = false
        var finished = false
        var counters = ReceiveCounters()
        var bufferedCount: Int { buffered.count - head }
    }

    let limits: DatagramStream.BufferLimits
    let pool: _DatagramBufferPool
    private let state = Locked(State())
    /// Wakes the loop side (set once, before the stream is handed out).
    private let wakeLoop = Locked<AsyncWatcher.Sender?>(nil)

    init(limits: DatagramStream.BufferLimits, configuration: BatchedUDPReader.Configuration) {
        self.limits = limits
        // Buffered batches, one in a resumed consumer's hands and one being iterated, with room to spare.
        pool = _DatagramBufferPool(keep: limits.high + 4, metadata: configuration.metadata,
                                   payloadCapacity: configuration.batchSize * configuration.maxDatagramSize,
                                   records: configuration.batchSize)
    }

    func setWake(_ sender: AsyncWatcher.Sender) { wakeLoop.withLock { $0 = sender } }

    private func signalLoop() { wakeLoop.withLock { $0 }?.send() }

    var counters: ReceiveCounters { state.withLock { $0.counters } }

    var isFinished: Bool { state.withLock { $0.finished } }

    /// Batches waiting for the consumer (tests).
    var bufferedForTests: Int { state.withLock { $0.bufferedCount } }

    // MARK: Consumer (any thread)

    /// A buffered batch, or nil-in-a-box once finished; nil if the consumer has to wait.
    func takeIfReady() -> Ready? {
        var signal = false
        let ready = state.withLock { take(&$0, signal: &signal) }
        if signal { signalLoop() }
        return ready
    }

    /// Under the lock: the next buffered batch (asking the loop to read again at the low mark), nil-in-a-box
    /// once finished, or nil.
    private func take(_ state: inout State, signal: inout Bool) -> Ready? {
        if state.bufferedCount > 0 {
            let batch = state.buffered[state.head].take()
            state.head += 1
            if state.head == state.buffered.count { state.buffered.removeAll(keepingCapacity: true); state.head = 0 }
            if state.paused && !state.signalled && state.bufferedCount <= limits.low { state.signalled = true; signal = true }
            return .batch(batch)
        }
        return state.finished ? .batch(nil) : nil
    }

    /// Parks the consumer until a batch comes or the stream finishes (at once if either happened), deciding
    /// under one lock.
    func wait(_ continuation: UnsafeContinuation<DatagramStream.Batch?, Never>) {
        var signal = false
        let ready = state.withLock { state -> Ready? in
            if let ready = take(&state, signal: &signal) { return ready }
            precondition(state.waiting == nil, "DatagramStream is iterated by two tasks at once; iterate it from one")
            state.waiting = continuation
            return nil
        }
        if signal { signalLoop() }
        if let ready { continuation.resume(returning: ready.batch) }
    }

    /// The iterating task was cancelled: it gets nil, and the stream finishes.
    func cancel() {
        let waiting = state.withLock { state -> UnsafeContinuation<DatagramStream.Batch?, Never>? in
            defer { state.waiting = nil }
            return state.waiting
        }
        finish()
        waiting?.resume(returning: nil)
    }

    /// Ends the stream (any thread): buffered batches are still delivered; the loop stops reading.
    func finish() {
        let (waiting, signal) = state.withLock { state -> (UnsafeContinuation<DatagramStream.Batch?, Never>?, Bool) in
            guard !state.finished else { return (nil, false) }
            state.finished = true
            let waiting = state.bufferedCount == 0 ? state.waiting : nil
            if waiting != nil { state.waiting = nil }
            return (waiting, true)
        }
        waiting?.resume(returning: nil)
        if signal { signalLoop() }
    }

    // MARK: Producer (loop thread)

    /// Hands `batch` to the waiting consumer or buffers it; true if reading must pause (high mark), or
    /// the stream has finished.
    func deliver(_ batch: DatagramStream.Batch, counters: ReceiveCounters) -> Bool {
        let (waiting, stop) = state.withLock { state -> (UnsafeContinuation<DatagramStream.Batch?, Never>?, Bool) in
            state.counters = counters
            if state.finished { return (nil, true) }
            if let waiting = state.waiting {
                state.waiting = nil
                return (waiting, false)
            }
            state.buffered.append(batch)
            if state.bufferedCount >= limits.high { state.paused = true; state.signalled = false; return (nil, true) }
            return (nil, false)
        }
        waiting?.resume(returning: batch)
        return stop
    }

    /// The loop was woken: whether to finish, or to read again.
    func loopWoken() -> (finish: Bool, resume: Bool) {
        state.withLock { state in
            if state.finished { return (true, false) }
            guard state.paused && state.signalled else { return (false, false) }
            state.paused = false
            state.signalled = false
            return (false, true)
        }
    }
}

/// The loop side of a ``DatagramStream``: the reader and the watcher that wakes it. Keeps itself alive
/// until the stream has finished, so it is torn down on the loop thread, never by the last task to drop
/// the stream.
final class _DatagramStreamReader {
    private let shared: _DatagramStreamState
    private var reader: BatchedUDPReader?
    private var wake: AsyncWatcher?
    private var retained: Unmanaged<_DatagramStreamReader>?

    private init(shared: _DatagramStreamState) { self.shared = shared }

    static func start(loop: EventLoop, socket: UDPSocket, configuration: BatchedUDPReader.Configuration,
                      shared: _DatagramStreamState) throws(BatchedUDPError) {
        let side = _DatagramStreamReader(shared: shared)
        let reader = try BatchedUDPReader(loop: loop, socket: socket, configuration: configuration) { [unowned side] reader, batch in
            side.received(batch, from: reader)
        }
        reader.onProblem = { [unowned side] reader, problem in
            if case .error(.EBADF) = problem { side.finish() }
        }
        let wake = AsyncWatcher(loop: loop) { [unowned side] _ in side.woken() }
        wake.keepsLoopAlive = false
        wake.start()
        shared.setWake(wake.sender)
        side.reader = reader
        side.wake = wake
        side.retained = Unmanaged.passRetained(side)
        socket.register(side)
        reader.start()
    }

    private func received(_ batch: ReceivedBatch, from reader: BatchedUDPReader) {
        let owned = shared.pool.copy(batch)
        if shared.deliver(owned, counters: reader.counters) {
            reader.stop()
            if shared.isFinished { finish() }
        }
    }

    private func woken() {
        let (finish, resume) = shared.loopWoken()
        if finish { self.finish() } else if resume { reader?.start() }
    }

    /// Loop thread: stops reading and lets go of everything, once.
    private func finish() {
        shared.finish()
        reader?.stop()
        reader = nil
        wake?.stop()
        wake = nil
        if let retained {
            self.retained = nil
            retained.release()
        }
    }
}

extension _DatagramStreamReader: SocketUser {
    /// The socket is closing: the stream ends (what was buffered is still delivered).
    func socketWillClose() { finish() }
    var readsErrorQueue: Bool { false }
}
