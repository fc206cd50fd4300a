/// Sending from Swift concurrency: `send` waits, instead of throwing `queueFull`, while the queue is above
/// its high-water mark.
extension BatchedUDPWatcher {
    /// Queues a copy of `bytes` as one datagram, first suspending while the watcher is not writable
    /// (its queue reached the high-water mark and has not drained to the low one). Senders that had to
    /// wait resume one at a time, in the order they arrived, and a newcomer queues behind them.
    ///
    /// Runs in the caller's isolation (`isolation`, the caller's actor by default), which must be the
    /// watcher's loop thread: an actor pinned to the loop's `LoopExecutor`, or a task that prefers that
    /// executor.
    /// - Returns: the datagram's sequence number, as ``enqueue(_:to:metadata:)-(UnsafeRawBufferPointer,_,_)``.
    /// - Throws: `CancellationError` if the task is cancelled before the datagram is queued;
    ///   ``BatchedUDPError/closed`` if the watcher closes (or is closing) first; otherwise what `enqueue`
    ///   throws (a destination, metadata or size the watcher refuses). Whatever was not queued is still the
    ///   caller's.
    /// - Cost: as `enqueue` when the watcher is writable and nobody waits; a waiting sender costs a
    ///   continuation, a lock and one hop through its executor.
    @discardableResult
    public func send(_ bytes: [UInt8], to destination: SocketAddress? = nil, metadata: SendMetadata? = nil,
                     isolation: isolated (any Actor)? = #isolation) async throws -> Int {
        try await whenThereIsRoom("send(_:to:metadata:)", isolation: isolation) {
            try enqueue(bytes, to: destination, metadata: metadata)
        }
    }

    /// Queues a datagram written in place by `body` (as ``enqueue(to:metadata:writingWith:)``), first
    /// suspending while the watcher is not writable, as `send(_:to:metadata:)`.
    /// - Throws: as `send(_:to:metadata:)`, or what `body` throws.
    @discardableResult
    public func send(to destination: SocketAddress? = nil, metadata: SendMetadata? = nil,
                     isolation: isolated (any Actor)? = #isolation,
                     writingWith body: (UnsafeMutableRawBufferPointer) throws -> Int) async throws -> Int {
        try await whenThereIsRoom("send(to:metadata:writingWith:)", isolation: isolation) {
            try enqueue(to: destination, metadata: metadata, writingWith: body)
        }
    }

    /// Queues a copy of a datagram received through a ``DatagramStream`` (an echo, a relay's forward),
    /// first suspending while the watcher is not writable, as `send(_:to:metadata:)`.
    /// - Throws: as `send(_:to:metadata:)`.
    /// - Cost: one copy of the payload; no allocation.
    @discardableResult
    public func send(_ datagram: DatagramStream.Datagram, to destination: SocketAddress? = nil, metadata: SendMetadata? = nil,
                     isolation: isolated (any Actor)? = #isolation) async throws -> Int {
        try await whenThereIsRoom("send(_:to:metadata:)", isolation: isolation) {
            try datagram.withUnsafeBytes { bytes throws(BatchedUDPError) in try enqueue(bytes, to: destination, metadata: metadata) }
        }
    }

    /// Runs `enqueue` once this sender may queue: the watcher is writable and no earlier sender waits.
    /// The last check and `enqueue` run in one stretch, with no suspension between them (returning from
    /// an await may hop through the executor's queue, behind other jobs): a resumed sender counts as
    /// waiting until it has queued, so a newcomer cannot overtake it.
    private func whenThereIsRoom(_ entry: StaticString, isolation: isolated (any Actor)?,
                                 _ enqueue: () throws -> Int) async throws -> Int {
        checkEntry(entry)
        try Task.checkCancellation()
        var resumed = false
        while true {
            guard state == .open else {
                if resumed { asyncSenders?.resumedSenderRan() }
                throw BatchedUDPError.closed
            }
            if isWritable && (resumed || !(asyncSenders?.mustWait ?? false)) { break }
            let queue: AsyncSendQueue
            if let existing = asyncSenders { queue = existing } else { queue = AsyncSendQueue(); asyncSenders = queue }
            // Resumed, yet the queue filled again: wait at the front.
            if resumed { queue.resumedSenderRan() }
            let id = queue.makeID(), first = resumed
            try await withTaskCancellationHandler(operation: {
                try await withUnsafeThrowingContinuation(isolation: isolation) { queue.wait(id: id, first: first, $0) }
            }, onCancel: {
                queue.cancel(id: id)
            }, isolation: isolation)
            resumed = true
        }
        defer {
            if resumed { asyncSenders?.resumedSenderRan() }
            passTurn()
        }
        return try enqueue()
    }

    /// After a sender's turn: while the watcher is still writable, the next waiting sender goes.
    private func passTurn() {
        if isWritable { asyncSenders?.resumeNext() }
    }
}
