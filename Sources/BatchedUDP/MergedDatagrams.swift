/// The datagrams one received slot holds: `length` bytes cut every `segmentSize` bytes when the kernel
/// merged several (UDP GRO; the last may be shorter), or one datagram (possibly empty) otherwise.
/// A value type iterated in place: no allocation.
struct MergedDatagrams: Sequence, IteratorProtocol {
    private let length: Int
    private let step: Int
    private var offset = 0
    private var done = false

    init(length: Int, segmentSize: Int?) {
        self.length = length
        step = Swift.max(segmentSize ?? length, 1)
    }

    mutating func next() -> (offset: Int, length: Int)? {
        guard !done else { return nil }
        let piece = (offset: offset, length: Swift.min(step, length - offset))
        offset += piece.length
        done = offset >= length
        return piece
    }
}
