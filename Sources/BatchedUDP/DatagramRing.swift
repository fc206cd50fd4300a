public import CUDPShims
internal import Glibc

/// A fixed ring of datagram slots whose memory is allocated once and reused: per slot, `slotSize` payload
/// bytes, a `sockaddr_storage`, an `iovec` and an `mmsghdr` already pointing at them. Any run of slots that
/// does not wrap is therefore a ready `sendmmsg` vector: a drain builds nothing.
///
/// A free slot's header is always plain (no address, no control messages): a datagram to the connected
/// peer without metadata, the hot case, writes only its length. Slots that carried an address or metadata
/// are made plain again as they leave the ring.
///
/// The unsafe part of the package's send path lives here and only here. Slots are used in FIFO order.
/// The members the watcher's inlinable enqueue forms use are `@usableFromInline`: internal still, and
/// touched only through those forms. The indices skip Swift's dynamic exclusivity checks: the ring is
/// confined to its watcher's loop thread, and no access to them spans a call out. (An enqueue body may
/// close the socket, which empties the ring; the batch forms hold no index across a body call that they
/// use after it without checking the watcher is still open.)
@usableFromInline
final class DatagramRing {
    /// Number of slots.
    @usableFromInline let capacity: Int
    /// Payload bytes per slot.
    @usableFromInline let slotSize: Int
    /// Queued payload bytes allowed at once.
    @usableFromInline let byteCapacity: Int

    /// Index of the oldest queued datagram.
    @usableFromInline @exclusivity(unchecked) var head = 0
    /// Index of the free slot after the newest (`head + count`, wrapped), kept rather than computed: every
    /// enqueue needs it.
    @usableFromInline @exclusivity(unchecked) var tail = 0
    /// Number of queued datagrams.
    @usableFromInline @exclusivity(unchecked) var count = 0
    /// Queued payload bytes.
    @usableFromInline @exclusivity(unchecked) var bytes = 0
    /// How many datagrams from the head are known to be `uniformLength` bytes each, with plain headers: a
    /// GSO run over them needs no scan. A batch enqueue extends it (`commitWritten(_:length:uniform:uniformLength:)`)
    /// when the whole queue is such a run (or empty) and its datagrams have that length; it shrinks as
    /// datagrams leave (`popFront`). Nothing else writes the length of a queued slot, and what rewrites a
    /// queued slot's header (`removeECN`, `removeHeadECN`) touches only slots with control messages,
    /// which a run never has.
    @usableFromInline @exclusivity(unchecked) var uniformRun = 0
    @usableFromInline @exclusivity(unchecked) var uniformLength = 0
    /// Whether a slot has ever carried an address or control messages (then leaving slots are made plain).
    private(set) var decorates = false
    /// Most datagrams and payload bytes queued at once. Taken before each removal rather than at each
    /// commit (the queue only grows between removals, so its peak is reached right before one, or now).
    private var peakCount = 0, peakBytes = 0
    var peakQueued: Int { max(peakCount, count) }
    var peakQueuedBytes: Int { max(peakBytes, bytes) }

    @usableFromInline let payload: UnsafeMutableRawPointer
    /// Per-slot control areas for send metadata (PKTINFO, ECN), allocated the first time a datagram
    /// carries metadata: a ring that never does costs nothing for it.
    private var controls: UnsafeMutableRawPointer?
    /// Per slot, which staging (`stagings`) its control area holds the bytes of, 0 for none: a slot
    /// reused for the same metadata as on its last lap (a server answering from one address) keeps
    /// them, and only its header is pointed at them.
    private var controlStagings: UnsafeMutablePointer<Int>?
    /// Counts `stage` calls: names the control messages staged now.
    private var stagings = 0
    /// Bytes of control area per slot.
    static var controlSpace: Int { cudp_send_control_space() }
    /// The same, read once (a static let would cost a swift_once check per datagram).
    private let controlStride = DatagramRing.controlSpace
    /// The control messages of the metadata the watcher checked last (`stage`), copied into each slot
    /// that carries it.
    private let staged: UnsafeMutableRawPointer
    /// Per slot, the watcher's name for its destination and metadata (`BatchedUDPWatcher.Addressed.key`),
    /// 0 for a plain slot: adjacent slots with equal keys go to the same place with the same metadata,
    /// which is all a GSO run needs to know.
    private let keys: UnsafeMutablePointer<Int>
    private let addresses: UnsafeMutablePointer<sockaddr_storage>
    @usableFromInline let iovecs: UnsafeMutablePointer<iovec>
    private let messages: UnsafeMutablePointer<cudp_mmsghdr>

    init(capacity: Int, slotSize: Int, byteCapacity: Int) {
        precondition(capacity > 0 && slotSize >= 0 && byteCapacity >= 0)
        // `FreeStretch.copy(_:from:to:allOf:)` reads a buffer as its start and end addresses.
        precondition(unsafeBitCast(UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: 64), count: 16), to: (UInt, UInt).self) == (64, 80),
                     "UnsafeRawBufferPointer is no longer laid out as (start, end)")
        self.capacity = capacity
        self.slotSize = slotSize
        self.byteCapacity = byteCapacity
        payload = .allocate(byteCount: max(capacity * slotSize, 1), alignment: 16)
        // Touch every page now: memory is resident from the start (no page faults on the hot path, and a
        // process's size does not creep up as the queue first grows deep).
        payload.initializeMemory(as: UInt8.self, repeating: 0, count: max(capacity * slotSize, 1))
        addresses = .allocate(capacity: capacity)
        addresses.initialize(repeating: sockaddr_storage(), count: capacity)
        iovecs = .allocate(capacity: capacity)
        messages = .allocate(capacity: capacity)
        keys = .allocate(capacity: capacity)
        keys.initialize(repeating: 0, count: capacity)
        staged = .allocate(byteCount: controlStride, alignment: MemoryLayout<cmsghdr>.alignment)
        staged.initializeMemory(as: UInt8.self, repeating: 0, count: controlStride)
        for slot in 0..<capacity {
            (iovecs + slot).initialize(to: iovec(iov_base: payload + slot * slotSize, iov_len: 0))
            var message = cudp_mmsghdr()
            message.msg_hdr.msg_iov = iovecs + slot
            message.msg_hdr.msg_iovlen = 1
            (messages + slot).initialize(to: message)
        }
    }

    deinit {
        payload.deallocate()
        addresses.deallocate()
        iovecs.deallocate()
        messages.deallocate()
        keys.deallocate()
        staged.deallocate()
        controls?.deallocate()
        controlStagings?.deallocate()
    }

    var isEmpty: Bool { count == 0 }

    /// Whether a datagram of `length` bytes fits now, in slots and in bytes.
    func canAccept(length: Int) -> Bool {
        count < capacity && bytes + length <= byteCapacity
    }

    /// The free slot after the last queued datagram, to be written and then committed.
    @inlinable
    var tailPayload: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: payload + tail &* slotSize, count: slotSize)
    }

    /// Copies the `length` bytes at `source` (nil only when `length` is 0) into the tail slot; the caller
    /// has checked they fit.
    @inlinable @inline(__always)
    func copyToTail(from source: UnsafeRawPointer?, length: Int) {
        DatagramRing.copy(payload + tail &* slotSize, fromOptional: source, length: length)
    }

    /// Copies the `length` bytes at `source` (nil only when `length` is 0) to `target`, without a
    /// separate check for nil, which only the out-of-line case needs.
    @inlinable @inline(__always)
    static func copy(_ target: UnsafeMutableRawPointer, fromOptional source: UnsafeRawPointer?, length: Int) {
        if UInt(bitPattern: length &- 16) <= 48 {
            copy(target, from: source.unsafelyUnwrapped, length: length)
        } else if let source {
            target.copyMemory(from: source, byteCount: length)
        }
    }

    /// Copies a payload into a slot. From 16 to 64 bytes (acknowledgements, DNS queries, game and
    /// telemetry updates) with two or four overlapping 16-byte moves inline: a call to `memmove` costs a
    /// batch loop its registers, about as much again as such a copy.
    @inlinable
    static func copy(_ target: UnsafeMutableRawPointer, from source: UnsafeRawPointer, length: Int) {
        guard length >= 16 && length <= 64 else {
            target.copyMemory(from: source, byteCount: length)
            return
        }
        copySmall(target, from: source, length: length)
    }

    /// The moves of `copy(_:from:length:)` for 16 to 64 bytes (`length` must be in that range).
    @inlinable @inline(__always)
    static func copySmall(_ target: UnsafeMutableRawPointer, from source: UnsafeRawPointer, length: Int) {
        typealias Chunk = SIMD16<UInt8>
        let first = source.loadUnaligned(as: Chunk.self)
        let last = source.loadUnaligned(fromByteOffset: length &- 16, as: Chunk.self)
        if length > 32 {
            let second = source.loadUnaligned(fromByteOffset: 16, as: Chunk.self)
            let third = source.loadUnaligned(fromByteOffset: length &- 32, as: Chunk.self)
            target.storeBytes(of: second, toByteOffset: 16, as: Chunk.self)
            target.storeBytes(of: third, toByteOffset: length &- 32, as: Chunk.self)
        }
        target.storeBytes(of: first, as: Chunk.self)
        target.storeBytes(of: last, toByteOffset: length &- 16, as: Chunk.self)
    }

    /// The payload of the free slot `offset` places after the tail (`offset < capacity - count`).
    @inlinable
    func payload(afterTail offset: Int) -> UnsafeMutableRawPointer {
        payload + index(count &+ offset) &* slotSize
    }

    /// Queues the tail slot: its first `length` payload bytes, to the connected peer, without metadata.
    /// The hot path: its header is plain already, so one store and the bookkeeping. The caller has
    /// checked that a slot is free and `length` fits it.
    @inlinable @inline(__always)
    func commitTail(length: Int) {
        let slot = tail
        iovecs[slot].iov_len = length
        tail = slot &+ 1 == capacity ? 0 : slot &+ 1
        count &+= 1
        bytes &+= length
    }

    /// Queues the tail slot: its first `length` payload bytes, to `target` (already in the socket's
    /// family: an IPv4 one mapped for a dual-stack IPv6 socket; nil for the connected peer), with the
    /// first `controlLength` bytes of the staged control messages (`stage`), named `key`.
    @inline(__always)
    func commitTail(length: Int, target: SocketAddress?, key: Int, controlLength: Int) {
        precondition(count < capacity && length <= slotSize)
        let slot = tail
        decorates = true
        keys[slot] = key
        if let target {
            let name = UnsafeMutableRawPointer(addresses + slot)
            messages[slot].msg_hdr.msg_name = name
            messages[slot].msg_hdr.msg_namelen = target.write(to: name)
        }
        if controlLength > 0 {
            let control = controls.unsafelyUnwrapped + slot &* controlStride
            if controlStagings.unsafelyUnwrapped[slot] != stagings {
                DatagramRing.copy(control, from: staged, length: controlLength)
                controlStagings.unsafelyUnwrapped[slot] = stagings
            }
            messages[slot].msg_hdr.msg_control = control
            messages[slot].msg_hdr.msg_controllen = controlLength
        }
        commitTail(length: length)
    }

    /// Free slots from `slot` up to the ring's end, which a batch fills without a wrap check: a cursor the
    /// batch keeps in registers, moved on by each `fill` or `copy`.
    @usableFromInline
    struct FreeStretch {
        @usableFromInline var target: UnsafeMutableRawPointer
        @usableFromInline var slot: Int
        @usableFromInline let slotSize: Int
        @usableFromInline let iovecs: UnsafeMutablePointer<iovec>

        @inlinable
        init(target: UnsafeMutableRawPointer, slot: Int, slotSize: Int, iovecs: UnsafeMutablePointer<iovec>) {
            (self.target, self.slot, self.slotSize, self.iovecs) = (target, slot, slotSize, iovecs)
        }

        /// Gives the next slot, its payload written in place, its length, and moves on.
        @inlinable @inline(__always)
        mutating func fill(length: Int) {
            iovecs[slot].iov_len = length
            slot &+= 1
            target += slotSize
        }

        /// Copies `datagrams[written..<end]` into the stretch's slots and writes their lengths, checking
        /// each size against `limit` and, when given, the running total `bytes` against `budget` (a
        /// datagram that does not fit ends the copy before it). Nothing is queued: the caller commits the
        /// slots.
        /// - Throws: `messageTooLarge` for a datagram over `limit`.
        @inlinable @inline(__always)
        mutating func copy(_ datagrams: UnsafeBufferPointer<UnsafeRawBufferPointer>, from written: inout Int, to end: Int,
                           limit: Int, bytes: inout Int, budget: Int?) throws(BatchedUDPError) {
            while written < end {
                let datagram = datagrams[written]
                let length = datagram.count
                guard length <= limit else { throw .messageTooLarge(size: length, limit: limit) }
                if let budget, bytes &+ length > budget { break }
                DatagramRing.copy(target, fromOptional: datagram.baseAddress, length: length)
                iovecs[slot].iov_len = length
                bytes &+= length
                written &+= 1
                slot &+= 1
                target += slotSize
            }
        }

        /// As `copy(_:from:to:limit:bytes:budget:)` while the datagrams are `length` bytes long (more than
        /// 0, checked against the limit and the budget by the caller), stopping at the first that is not:
        /// the usual producer's batch, copied without a size dispatch or check per datagram. A function of
        /// its own, so its loop keeps its few values in registers.
        @usableFromInline @inline(never)
        mutating func copy(_ datagrams: UnsafeBufferPointer<UnsafeRawBufferPointer>, from written: inout Int, to end: Int,
                           allOf length: Int) {
            if length > 32 && length <= 64 {
                copy(datagrams, from: &written, to: end, allOf: length) { target, source in
                    DatagramRing.copySmall(target, from: source, length: length)
                }
            } else if length >= 16 && length <= 32 {
                copy(datagrams, from: &written, to: end, allOf: length) { target, source in
                    DatagramRing.copySmall(target, from: source, length: length)
                }
            } else {
                copy(datagrams, from: &written, to: end, allOf: length) { target, source in
                    target.copyMemory(from: source, byteCount: length)
                }
            }
        }

        /// The loop of `copy(_:from:to:allOf:)`, with pointers for indices, around one way to `move` a
        /// payload: instantiated per length class, so each loop has no dispatch in it.
        @inlinable @inline(__always)
        mutating func copy(_ datagrams: UnsafeBufferPointer<UnsafeRawBufferPointer>, from written: inout Int, to end: Int,
                           allOf length: Int, _ move: (UnsafeMutableRawPointer, UnsafeRawPointer) -> Void) {
            let start = datagrams.baseAddress.unsafelyUnwrapped + written
            let stop = datagrams.baseAddress.unsafelyUnwrapped + end
            var next = start, iovec = iovecs + slot, target = self.target
            let slotSize = self.slotSize
            while next < stop {
                // A buffer is its start and end addresses (both 0 when it has none, as an empty one may):
                // their difference is its size without the nil check of `count` (`init` checks the layout).
                let (low, high) = unsafeBitCast(next.pointee, to: (UInt, UInt).self)
                guard high &- low == UInt(bitPattern: length) else { break }
                assert(next.pointee.count == length && UInt(bitPattern: next.pointee.baseAddress) == low)
                move(target, UnsafeRawPointer(bitPattern: low).unsafelyUnwrapped)
                iovec.pointee.iov_len = length
                next += 1
                iovec += 1
                target += slotSize
            }
            let copied = start.distance(to: next)
            written &+= copied
            slot &+= copied
            self.target = target
        }
    }

    /// Writes the length of the free slot `offset` places after the tail (its payload written by the
    /// caller), without queuing it yet: `commitWritten` queues the slots written, in one step.
    @inlinable
    func writeSlot(afterTail offset: Int, length: Int) {
        iovecs[index(count &+ offset)].iov_len = length
    }

    /// The length `writeSlot` gave the free slot `offset` places after the tail.
    func length(afterTail offset: Int) -> Int { iovecs[index(count + offset)].iov_len }

    /// Queues the `n` slots after the tail written with `writeSlot`, holding `length` payload bytes in all.
    /// The first `uniform` of them are plain datagrams of `uniformLength` bytes each (see `uniformRun`).
    @inlinable
    func commitWritten(_ n: Int, length: Int, uniform: Int, uniformLength: Int) {
        if uniformRun == count && (count == 0 || self.uniformLength == uniformLength) {
            uniformRun = count &+ uniform
            self.uniformLength = uniformLength
        }
        commitWritten(n, length: length)
    }

    /// Queues the `n` slots after the tail written with `writeSlot`, holding `length` payload bytes in all.
    @inlinable
    func commitWritten(_ n: Int, length: Int) {
        count &+= n
        bytes &+= length
        tail = index(count)
    }

    /// Encodes `metadata`'s control messages (see `cudp_write_send_control`), the PKTINFO and ECN
    /// messages of the destination's real family (`ipv4`), ready for `commitTail(length:target:key:controlLength:)`
    /// to copy into slots; returns their length. The first call allocates the slots' control areas: a ring
    /// that never carries metadata costs nothing for them.
    func stage(_ metadata: SendMetadata, ipv4: Bool) -> Int {
        if controls == nil {
            let area = UnsafeMutableRawPointer.allocate(byteCount: capacity * controlStride, alignment: MemoryLayout<cmsghdr>.alignment)
            area.initializeMemory(as: UInt8.self, repeating: 0, count: capacity * controlStride)
            controls = area
            controlStagings = .allocate(capacity: capacity)
            controlStagings!.initialize(repeating: 0, count: capacity)
        }
        stagings &+= 1
        let ecn = metadata.ecn.map { Int32($0.rawValue) } ?? -1
        guard let source = metadata.source else {
            return cudp_write_send_control(staged, ipv4 ? 1 : 0, nil, metadata.interfaceIndex ?? 0, ecn)
        }
        return source.withRawAddress { raw in
            cudp_write_send_control(staged, ipv4 ? 1 : 0, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), metadata.interfaceIndex ?? 0, ecn)
        }
    }

    /// The metadata of the datagram `offset` places after the head, read back from its control messages.
    func metadata(at offset: Int) -> SendMetadata? {
        let header = messages[index(offset)].msg_hdr
        guard let control = header.msg_control, header.msg_controllen > 0 else { return nil }
        var parsed = cudp_received_metadata()
        cudp_parse_send_control(control, header.msg_controllen, &parsed)
        var metadata = SendMetadata()
        if parsed.destination_family != 0 {
            metadata.source = withUnsafeBytes(of: parsed.destination) {
                SocketAddress(rawAddress: $0.baseAddress!, ipv4: parsed.destination_family == 4, port: 0)
            }
        }
        if parsed.interface_index != 0 { metadata.interfaceIndex = parsed.interface_index }
        if parsed.ecn != 0xFF { metadata.ecn = ECN(rawValue: parsed.ecn) }
        return metadata.isEmpty ? nil : metadata
    }

    /// Drops the ECN message from every queued datagram (the kernel refused ECN on this socket).
    func removeECN() {
        for offset in 0..<count {
            let slot = index(offset)
            guard let control = messages[slot].msg_hdr.msg_control, messages[slot].msg_hdr.msg_controllen > 0 else { continue }
            let kept = cudp_send_control_without_ecn(control, messages[slot].msg_hdr.msg_controllen)
            messages[slot].msg_hdr.msg_controllen = kept
            if kept == 0 { messages[slot].msg_hdr.msg_control = nil }
            controlStagings?[slot] = 0
        }
    }

    /// Whether the head datagram carries an ECN message.
    var headCarriesECN: Bool {
        let header = messages[head].msg_hdr
        guard count > 0, let control = header.msg_control, header.msg_controllen > 0 else { return false }
        return cudp_send_control_without_ecn(control, header.msg_controllen) < header.msg_controllen
    }

    /// Drops the ECN message of the head datagram only.
    func removeHeadECN() {
        guard let control = messages[head].msg_hdr.msg_control else { return }
        let kept = cudp_send_control_without_ecn(control, messages[head].msg_hdr.msg_controllen)
        messages[head].msg_hdr.msg_controllen = kept
        if kept == 0 { messages[head].msg_hdr.msg_control = nil }
        controlStagings?[head] = 0
        // Its control messages now differ from those of the datagrams that share its key: a key of its
        // own (no other slot has -1 while it is queued), so no GSO run can join it to them.
        keys[head] = -1
    }

    /// How many queued datagrams from the head can go in one `sendmmsg` vector (they stop at the ring's end).
    var contiguousFromHead: Int { min(count, capacity - head) }

    /// The `mmsghdr` of the head datagram; the next `contiguousFromHead` follow it in memory.
    var headMessages: UnsafeMutablePointer<cudp_mmsghdr> { messages + head }

    /// The `iovec` of the head datagram; those of the next `contiguousFromHead` follow it in memory.
    var headIovecs: UnsafeMutablePointer<iovec> { iovecs + head }

    /// The key of the head datagram (see `keys`); those of the next `contiguousFromHead` follow it.
    var headKeys: UnsafeMutablePointer<Int> { keys + head }

    /// Payload length of the datagram `offset` places after the head.
    func length(at offset: Int) -> Int { iovecs[index(offset)].iov_len }

    /// Destination of the datagram `offset` places after the head; nil when it goes to the connected peer.
    func destination(at offset: Int) -> SocketAddress? {
        let slot = index(offset)
        guard let name = messages[slot].msg_hdr.msg_name else { return nil }
        return SocketAddress(name, length: messages[slot].msg_hdr.msg_namelen)
    }

    /// Removes `n` datagrams from the head and returns their payload bytes.
    /// `knownBytes`, when given, is their payload bytes (a GSO drain knows them per message).
    @discardableResult
    func popFront(_ n: Int, knownBytes: Int? = nil) -> Int {
        precondition(n <= count)
        peakCount = max(peakCount, count)
        peakBytes = max(peakBytes, bytes)
        // A drain pops what it sent from the head's contiguous run: sum it without wrapping indices.
        let straight = min(n, capacity - head)
        var removed = 0
        if let knownBytes {
            removed = knownBytes
        } else if n == count {
            removed = bytes  // the whole queue went out, as it mostly does: nothing to sum
        } else {
            removed = DatagramRing.sumLengths(iovecs + head, straight) &+ DatagramRing.sumLengths(iovecs, n &- straight)
        }
        if decorates {
            for slot in head..<head + straight { makePlain(slot) }
            for slot in 0..<n - straight { makePlain(slot) }
        }
        head = index(n)
        count -= n
        bytes -= removed
        uniformRun = uniformRun > n ? uniformRun &- n : 0
        if count == 0 { (head, tail) = (0, 0) }
        return removed
    }

    /// The payload lengths of `n` iovecs, summed four at a time (two loads and adds per datagram, where a
    /// plain loop costs four: this is most of a drain's work per datagram without GSO).
    private static func sumLengths(_ iovecs: UnsafeMutablePointer<iovec>, _ n: Int) -> Int {
        var (a, b, c, d) = (0, 0, 0, 0)
        var i = 0
        while i &+ 4 <= n {
            a &+= iovecs[i].iov_len
            b &+= iovecs[i &+ 1].iov_len
            c &+= iovecs[i &+ 2].iov_len
            d &+= iovecs[i &+ 3].iov_len
            i &+= 4
        }
        while i < n {
            a &+= iovecs[i].iov_len
            i &+= 1
        }
        return a &+ b &+ c &+ d
    }

    /// Clears a leaving slot's address and control messages.
    private func makePlain(_ slot: Int) {
        messages[slot].msg_hdr.msg_name = nil
        messages[slot].msg_hdr.msg_namelen = 0
        messages[slot].msg_hdr.msg_control = nil
        messages[slot].msg_hdr.msg_controllen = 0
        keys[slot] = 0
    }

    @inlinable
    func index(_ offset: Int) -> Int {
        let i = head &+ offset
        return i < capacity ? i : i &- capacity
    }
}
