internal import CUDPShims
internal import Glibc

/// The `sendmmsg` vector of a drain with UDP GSO on: each message is either one ring slot, or a run of
/// ring slots to the same destination with the same metadata and equal sizes (the last may be shorter)
/// sent as one super-datagram that the kernel splits back into those datagrams (a `UDP_SEGMENT` control
/// message after the run's own metadata messages).
///
/// A super-datagram's `msg_iov` points at the run's own `iovec`s in the ring, so nothing is copied: building
/// a vector writes one `mmsghdr` per message and one control message per super-datagram. When the run's
/// payloads lie end to end in the ring (full slots, `maxDatagramSize` equal to the datagram size), one
/// `iovec` covers them all: the kernel copies from one buffer instead of walking 64 (about 7% of the time
/// of 64-byte GSO sends on loopback).
/// Memory (messages, control buffers, segment counts) is allocated once, for `capacity` messages.
/// The unsafe part of segmentation lives here and only here.
final class SegmentedBatch {
    /// Most messages one vector holds (the watcher's batch size).
    let capacity: Int
    /// Largest payload of a super-datagram: 65,507 bytes when IPv4 may be reached, 65,527 on IPv6.
    let maxPayload: Int
    /// Largest segment coalesced: one that fits a 1,500-byte path (1,472 B IPv4, 1,452 B IPv6). The
    /// kernel refuses a super-datagram whose segments exceed the route's MTU (EMSGSIZE; EINVAL on older
    /// kernels) where it would fragment a lone datagram; such a refusal lowers the limit of that
    /// destination only (``SegmentationLimits``).
    let maxSegment: Int
    /// Lower limits for single destinations, learnt from refusals.
    let limits = SegmentationLimits()

    let messages: UnsafeMutablePointer<cudp_mmsghdr>
    /// One `iovec` per message, for runs whose payloads are contiguous.
    private let joined: UnsafeMutablePointer<iovec>
    /// Datagrams carried by each message of the current vector, and the size of their segments.
    private let segments: UnsafeMutablePointer<Int32>
    private let sizes: UnsafeMutablePointer<Int32>
    /// Payload bytes each message carries.
    private let totals: UnsafeMutablePointer<Int>
    private let controls: UnsafeMutableRawPointer
    private let controlSpace: Int
    /// The UDP_SEGMENT message's `cmsg_len`, the offset of its data, and its space: read once, not per run.
    private let segmentLength: Int, segmentDataOffset: Int, segmentSpace: Int
    /// Messages in the current vector.
    private(set) var count = 0

    /// The kernel's limit on segments per send (UDP_MAX_SEGMENTS).
    static let maxSegments = Int(CUDP_UDP_MAX_SEGMENTS)

    init(capacity: Int, maxPayload: Int, maxSegment: Int) {
        self.capacity = capacity
        self.maxPayload = maxPayload
        self.maxSegment = maxSegment
        // Room for the run's metadata messages (copied from its first slot) followed by UDP_SEGMENT.
        segmentLength = cudp_cmsg_len(MemoryLayout<UInt16>.size)
        segmentSpace = cudp_cmsg_space(MemoryLayout<UInt16>.size)
        var header = cmsghdr()
        segmentDataOffset = withUnsafeMutablePointer(to: &header) { UnsafeRawPointer(cudp_cmsg_data($0)) - UnsafeRawPointer($0) }
        controlSpace = DatagramRing.controlSpace + segmentSpace
        messages = .allocate(capacity: capacity)
        messages.initialize(repeating: cudp_mmsghdr(), count: capacity)
        segments = .allocate(capacity: capacity)
        segments.initialize(repeating: 0, count: capacity)
        sizes = .allocate(capacity: capacity)
        sizes.initialize(repeating: 0, count: capacity)
        totals = .allocate(capacity: capacity)
        totals.initialize(repeating: 0, count: capacity)
        joined = .allocate(capacity: capacity)
        joined.initialize(repeating: iovec(), count: capacity)
        controls = .allocate(byteCount: capacity * controlSpace, alignment: MemoryLayout<cmsghdr>.alignment)
        controls.initializeMemory(as: UInt8.self, repeating: 0, count: capacity * controlSpace)
    }

    deinit {
        messages.deallocate()
        segments.deallocate()
        sizes.deallocate()
        totals.deallocate()
        joined.deallocate()
        controls.deallocate()
    }

    /// Builds the vector from the ring's contiguous run at its head: at most `capacity` messages.
    ///
    /// - Parameters:
    ///   - singles: how many datagrams at the head go one per message whatever their sizes (the rest of a
    ///     run the kernel refused as a super-datagram, being re-sent one by one).
    ///   - now: the loop's time, which expires per-destination limits.
    ///
    /// A run never includes a zero-length datagram: the kernel splits a super-datagram's payload by the
    /// segment size, so an empty datagram inside it would not exist on the wire (a shorter last datagram
    /// is only a shorter last segment, and a datagram of 0 bytes is no segment at all).
    func build(from ring: DatagramRing, singles: Int, now: Double) {
        let available = ring.contiguousFromHead
        let source = ring.headMessages
        let iovecs = ring.headIovecs
        var next = 0
        count = 0
        while next < available && count < capacity {
            let first = next
            let size = iovecs[first].iov_len
            next += 1
            if first >= singles && size > 0 && size <= maxSegment
                && (limits.isEmpty || size <= limits.maxSegment(for: source[first], fallback: maxSegment, now: now)) {
                // The ring's uniform run needs no look (`DatagramRing.uniformRun`): its datagrams are plain
                // and `size` bytes long. After it, each datagram is looked at once: its length, and (on a
                // ring where some slots carry an address or metadata) its key, which equals the first's
                // only if it goes where the first goes with the same metadata (`DatagramRing.keys`).
                let end = min(available, first + min(SegmentedBatch.maxSegments, maxPayload / size))
                let keys = ring.headKeys
                next = min(end, max(next, ring.uniformRun))
                assert((first..<next).allSatisfy { iovecs[$0].iov_len == size && keys[$0] == keys[first] })
                if next < end {
                    next = ring.decorates
                        ? SegmentedBatch.equalLengthsAndKeys(iovecs, keys, from: next, to: end, size: size)
                        : SegmentedBatch.equalLengths(iovecs, from: next, to: end, size: size)
                }
                // A shorter (never empty) datagram may end the run.
                if next < end, case let length = iovecs[next].iov_len, length > 0, length < size,
                   !ring.decorates || keys[next] == keys[first] {
                    next += 1
                }
            }
            var message = source[first]
            let run = next &- first
            var total = size
            if run > 1 {
                total = size &* (run &- 1) &+ iovecs[next &- 1].iov_len
                if ring.slotSize == size {
                    // Full slots lie end to end in the ring: one iovec covers the run.
                    joined[count] = iovec(iov_base: iovecs[first].iov_base, iov_len: total)
                    message.msg_hdr.msg_iov = joined + count
                    message.msg_hdr.msg_iovlen = 1
                } else {
                    message.msg_hdr.msg_iov = iovecs + first
                    message.msg_hdr.msg_iovlen = run
                }
                // The run's metadata messages (all its datagrams carry the same), then UDP_SEGMENT.
                let control = controls + count &* controlSpace
                let metadataLength = message.msg_hdr.msg_controllen
                if metadataLength > 0 { control.copyMemory(from: message.msg_hdr.msg_control!, byteCount: metadataLength) }
                let header = (control + metadataLength).assumingMemoryBound(to: cmsghdr.self)
                header.pointee.cmsg_level = Int32(CUDP_SOL_UDP)
                header.pointee.cmsg_type = Int32(CUDP_UDP_SEGMENT)
                header.pointee.cmsg_len = segmentLength
                // `size` is at most `maxSegment` (1,472 bytes), so it fits in 16 bits.
                (UnsafeMutableRawPointer(header) + segmentDataOffset).storeBytes(of: UInt16(truncatingIfNeeded: size), as: UInt16.self)
                message.msg_hdr.msg_control = control
                message.msg_hdr.msg_controllen = metadataLength &+ segmentSpace
            }
            messages[count] = message
            // At most 64 datagrams of at most a slot each.
            segments[count] = Int32(truncatingIfNeeded: run)
            sizes[count] = Int32(truncatingIfNeeded: size)
            totals[count] = total
            count &+= 1
        }
    }

    /// The end of the run of datagrams of `size` bytes starting at `from`, at most `end`: a loop of its
    /// own, so it keeps its few values in registers (a few instructions per datagram).
    @inline(never)
    private static func equalLengths(_ iovecs: UnsafeMutablePointer<iovec>, from: Int, to end: Int, size: Int) -> Int {
        var next = from
        // Four at a time: one bound check per four datagrams.
        while next &+ 4 <= end {
            if iovecs[next].iov_len != size { return next }
            if iovecs[next &+ 1].iov_len != size { return next &+ 1 }
            if iovecs[next &+ 2].iov_len != size { return next &+ 2 }
            if iovecs[next &+ 3].iov_len != size { return next &+ 3 }
            next &+= 4
        }
        while next < end && iovecs[next].iov_len == size { next &+= 1 }
        return next
    }

    /// As `equalLengths`, for a ring whose slots may carry addresses or metadata: the run also ends at
    /// the first datagram whose key differs from the one before `from`.
    @inline(never)
    private static func equalLengthsAndKeys(_ iovecs: UnsafeMutablePointer<iovec>, _ keys: UnsafeMutablePointer<Int>,
                                            from: Int, to end: Int, size: Int) -> Int {
        let key = keys[from &- 1]
        var next = from
        while next < end && iovecs[next].iov_len == size && keys[next] == key { next &+= 1 }
        return next
    }

    /// Payload size of the segments of message `index` (its first datagram's size).
    func segmentSize(ofMessage index: Int) -> Int { Int(sizes[index]) }

    /// Datagrams carried by message `index` of the current vector.
    func datagrams(inMessage index: Int) -> Int { Int(segments[index]) }

    /// Datagrams and payload bytes carried by the first `n` messages, and how many of those messages were
    /// super-datagrams.
    func datagrams(inFirst n: Int) -> (datagrams: Int, bytes: Int, superDatagrams: Int) {
        var datagrams = 0, bytes = 0, superDatagrams = 0
        for index in 0..<n {
            let run = Int(segments[index])
            datagrams += run
            bytes += totals[index]
            if run > 1 { superDatagrams += 1 }
        }
        return (datagrams, bytes, superDatagrams)
    }
}
