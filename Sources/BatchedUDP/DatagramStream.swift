public import Libev

/// Received datagrams as an `AsyncSequence` of owned, `Sendable` batches: a ``BatchedUDPReader`` on the
/// loop copies each `recvmmsg` batch once into a buffer from a reusable pool and hands it to the task
/// iterating the stream, on any executor.
///
/// ```swift
/// let datagrams = try DatagramStream(loop: executor.loop, socket: socket)
/// for await batch in datagrams {
///     for datagram in batch { try await replies.send(datagram, to: datagram.sender) }
/// }
/// ```
///
/// Backpressure: at most `bufferedBatches.high` batches wait for the consumer; then the reader stops
/// reading (EV_READ off) and datagrams wait in the socket's receive buffer, where the kernel drops and
/// counts what does not fit (``UDPSocket/receiveDrops``). Reading starts again once the consumer is down
/// to `bufferedBatches.low`. A slow consumer never makes the process grow.
///
/// Lifetime and threads: create it on the loop thread (an actor pinned to the loop's `LoopExecutor`,
/// or a loop callback). Iterate it from one task at a time, on any executor. It ends when ``finish()`` is
/// called, when the socket closes, or when the iterating task is cancelled; then reading stops, on the
/// loop thread, and the batches already delivered stay valid for as long as they are held.
///
/// Cost: one copy of each payload (and of the metadata asked for) per datagram; no allocation once the
/// pool is warm (a buffer is reused as soon as no batch refers to it); a lock per batch on each side; one
/// continuation resume when the consumer was waiting.
public final class DatagramStream: AsyncSequence, Sendable {
    public typealias Element = Batch
    public typealias Failure = Never

    /// How many batches may wait for the consumer: reading stops at `high` and starts again at `low`.
    public struct BufferLimits: Sendable, Equatable {
        public var low: Int
        public var high: Int

        /// - Precondition: `0 <= low < high`.
        public init(low: Int, high: Int) {
            precondition(low >= 0 && low < high, "DatagramStream.BufferLimits needs 0 <= low < high, got \(low) and \(high)")
            self.low = low
            self.high = high
        }
    }

    let shared: _DatagramStreamState

    /// Starts reading `socket` on `loop`.
    /// - Parameters:
    ///   - loop: the loop whose thread reads (the stream's consumer may run anywhere).
    ///   - socket: a bound UDP socket; the stream ends when it closes.
    ///   - configuration: the reader's (batch size, slot size, GRO, metadata); the metadata asked for
    ///     comes along with each datagram.
    ///   - bufferedBatches: the water marks, 2 and 8 by default (512 datagrams at the default batch size).
    /// - Throws: what ``BatchedUDPReader/init(loop:socket:configuration:handler:)`` throws.
    /// - Precondition: called on the loop's thread.
    public init(loop: EventLoop, socket: UDPSocket, configuration: BatchedUDPReader.Configuration = .init(),
                bufferedBatches: BufferLimits = BufferLimits(low: 2, high: 8)) throws(BatchedUDPError) {
        let shared = _DatagramStreamState(limits: bufferedBatches, configuration: configuration)
        try _DatagramStreamReader.start(loop: loop, socket: socket, configuration: configuration, shared: shared)
        self.shared = shared
    }

    deinit { shared.finish() }

    /// Ends the stream: the consumer gets the batches already buffered, then nil; reading stops on the
    /// loop thread. Any thread; calling it again does nothing.
    public func finish() { shared.finish() }

    /// The reader's counters as of its last batch (datagrams, truncated, errors...). Any thread.
    public var counters: ReceiveCounters { shared.counters }

    /// The iterator; only one may be in use at a time.
    public func makeAsyncIterator() -> Iterator { Iterator(stream: self) }

    /// Waits for the next batch.
    public struct Iterator: AsyncIteratorProtocol {
        let stream: DatagramStream

        /// The next batch, or nil once the stream has ended (or the task was cancelled while waiting).
        /// Waits in the caller's isolation (`for await` passes it), so an actor iterating the stream
        /// does not hop off and back per batch.
        public mutating func next(isolation actor: isolated (any Actor)?) async -> Batch? {
            let shared = stream.shared
            if Task.isCancelled {
                shared.cancel()
                return nil
            }
            if let ready = shared.takeIfReady() { return ready.batch }
            return await withTaskCancellationHandler(operation: {
                await withUnsafeContinuation(isolation: actor) { shared.wait($0) }
            }, onCancel: {
                shared.cancel()
            }, isolation: actor)
        }

        /// The next batch, as ``next(isolation:)``, from no particular isolation.
        public mutating func next() async -> Batch? { await next(isolation: nil) }
    }
}
