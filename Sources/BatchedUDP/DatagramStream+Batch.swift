internal import Glibc
internal import Libev

extension DatagramStream {
    /// The datagrams of one `recvmmsg` call, owned: valid for as long as the batch (or one of its
    /// datagrams) is held, on any thread. Its buffer is reused by the stream once the last reference is
    /// gone.
    public struct Batch: RandomAccessCollection, Sendable {
        let buffer: _DatagramBuffer

        /// 0.
        public var startIndex: Int { 0 }
        /// The number of datagrams.
        public var endIndex: Int { buffer.records.count }

        /// The datagram at `position`. Cost: a retain; nothing is copied.
        public subscript(position: Int) -> Datagram {
            precondition(position >= 0 && position < endIndex, "DatagramStream.Batch index \(position) out of 0..<\(endIndex)")
            return Datagram(buffer: buffer, index: position)
        }
    }

    /// One received datagram, owned: its payload, its sender, and the metadata the stream was configured
    /// to ask for (nil where not asked for).
    public struct Datagram: Sendable {
        let buffer: _DatagramBuffer
        let index: Int

        private var record: _DatagramBuffer.Record { buffer.records[index] }

        /// The payload's length in bytes.
        public var count: Int { record.length }

        /// Calls `body` with the payload, valid during the call. Cost: no copy.
        public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
            let record = record
            return try body(UnsafeRawBufferPointer(start: buffer.payload + record.offset, count: record.length))
        }

        /// A copy of the payload. Cost: an allocation; ``withUnsafeBytes(_:)`` avoids it.
        public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

        /// The sender; nil only for address families other than IPv4/IPv6.
        public var sender: SocketAddress? { record.sender }
        /// The local address it was sent to (``BatchedUDPReader/Metadata/destination``).
        public var destination: SocketAddress? { record.destination }
        /// The interface it arrived on (``BatchedUDPReader/Metadata/destination``).
        public var interfaceIndex: UInt32? { record.interfaceIndex }
        /// Its ECN codepoint (``BatchedUDPReader/Metadata/ecn``).
        public var ecn: ECN? { record.ecn }
        /// When the kernel received it, since the Unix epoch (``BatchedUDPReader/Metadata/receiveTime``).
        public var receiveTime: Duration? { record.receiveTime }
        /// The metadata that answers it from the address it arrived on (nil without destinations), as
        /// ``ReceivedDatagram/replyMetadata``.
        public var replyMetadata: SendMetadata? { record.replySource.map { SendMetadata(source: $0) } }
    }
}

/// The memory one batch is copied into: payloads end to end, and a record per datagram. Reused through
/// `_DatagramBufferPool`; written on the loop thread before it is handed out, read-only after.
final class _DatagramBuffer: @unchecked Sendable {
    struct Record {
        var offset: Int
        var length: Int
        var sender: SocketAddress?
        var destination: SocketAddress?
        var replySource: SocketAddress?
        var interfaceIndex: UInt32?
        var ecn: ECN?
        var receiveTime: Duration?
    }

    private(set) var payload: UnsafeMutableRawPointer
    private var capacity: Int
    private(set) var records: [Record] = []

    init(payloadCapacity: Int, records: Int) {
        capacity = max(payloadCapacity, 1)
        payload = .allocate(byteCount: capacity, alignment: 16)
        self.records.reserveCapacity(records)
    }

    deinit { payload.deallocate() }

    /// Loop thread: copies `batch` in, with the metadata `asked` for.
    func fill(from batch: ReceivedBatch, asked: BatchedUDPReader.Metadata) {
        records.removeAll(keepingCapacity: true)
        var total = 0
        for datagram in batch { total += datagram.payload.count }
        if total > capacity {
            payload.deallocate()
            capacity = total
            payload = .allocate(byteCount: capacity, alignment: 16)
        }
        var offset = 0
        for datagram in batch {
            let length = datagram.payload.count
            if let base = datagram.payload.baseAddress { (payload + offset).copyMemory(from: base, byteCount: length) }
            var record = Record(offset: offset, length: length, sender: datagram.sender)
            if asked.contains(.destination) {
                record.destination = datagram.destination
                record.replySource = datagram.replySource
                record.interfaceIndex = datagram.interfaceIndex
            }
            if asked.contains(.ecn) { record.ecn = datagram.ecn }
            if asked.contains(.receiveTime) { record.receiveTime = datagram.receiveTime }
            records.append(record)
            offset += length
        }
    }
}

/// Buffers for a stream's batches, reused: steady state allocates nothing. The pool keeps a reference
/// to every buffer it may reuse; one that nobody else references any more (`isKnownUniquelyReferenced`:
/// every batch and datagram copied from it is gone) is filled again. Loop thread only.
final class _DatagramBufferPool: @unchecked Sendable {
    private var buffers: [_DatagramBuffer] = []
    private var next = 0
    private let keep: Int
    private let metadata: BatchedUDPReader.Metadata
    private let payloadCapacity: Int
    private let recordCapacity: Int

    init(keep: Int, metadata: BatchedUDPReader.Metadata, payloadCapacity: Int, records: Int) {
        self.keep = keep
        self.metadata = metadata
        self.payloadCapacity = payloadCapacity
        recordCapacity = records
        buffers.reserveCapacity(keep)
    }

    /// Loop thread: a batch owning a copy of `batch`, in a free buffer (or a new one).
    func copy(_ batch: ReceivedBatch) -> DatagramStream.Batch {
        let buffer = takeFree() ?? makeBuffer()
        buffer.fill(from: batch, asked: metadata)
        return DatagramStream.Batch(buffer: buffer)
    }

    /// A kept buffer no batch refers to any more, looking from where the last search stopped.
    private func takeFree() -> _DatagramBuffer? {
        for step in 0..<buffers.count {
            let index = (next + step) % buffers.count
            if isKnownUniquelyReferenced(&buffers[index]) {
                next = index + 1
                return buffers[index]
            }
        }
        return nil
    }

    private func makeBuffer() -> _DatagramBuffer {
        let buffer = _DatagramBuffer(payloadCapacity: payloadCapacity, records: recordCapacity)
        if buffers.count < keep { buffers.append(buffer) }
        return buffer
    }
}
