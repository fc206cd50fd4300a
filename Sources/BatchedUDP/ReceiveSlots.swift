public import CUDPShims
internal import Glibc

/// The reader's preallocated receive memory: per slot `slotSize` payload bytes, a `sockaddr_storage`,
/// an `iovec`, an `mmsghdr` pointing at them and (with GRO or metadata) a control buffer and the
/// metadata parsed from it; plus the list of datagrams
/// handed to the callback, each a piece of a slot (with GRO a slot may hold a run of datagrams merged by
/// the kernel, which the pieces split back). The unsafe part of the receive path lives here and only here.
///
/// What ``ReceivedBatch``'s inlinable subscript reads is `@usableFromInline`: internal still.
@usableFromInline
final class ReceiveSlots {
    /// One delivered datagram: where it lies in which slot.
    @usableFromInline
    struct Piece {
        @usableFromInline var slot: Int32
        @usableFromInline var offset: Int32
        @usableFromInline var length: Int32
    }

    let count: Int
    @usableFromInline let slotSize: Int
    /// Whether the kernel may merge datagrams into one slot (UDP_GRO).
    let merges: Bool
    /// Most pieces one batch holds.
    let pieceCapacity: Int
    /// Pieces of the current batch.
    private(set) var pieceCount = 0
    /// The socket's bound port, the port of every reported destination.
    @usableFromInline var localPort: UInt16 = 0

    @usableFromInline let payload: UnsafeMutableRawPointer
    @usableFromInline let addresses: UnsafeMutablePointer<sockaddr_storage>
    private let iovecs: UnsafeMutablePointer<iovec>
    @usableFromInline let messages: UnsafeMutablePointer<cudp_mmsghdr>
    @usableFromInline let pieces: UnsafeMutablePointer<Piece>
    private let controls: UnsafeMutableRawPointer?
    /// Control bytes per slot: 0 without GRO or metadata.
    let controlSpace: Int
    /// What each slot's control messages said, parsed once per receive (`parseControl`).
    @usableFromInline let parsed: UnsafeMutablePointer<cudp_received_metadata>?

    /// Most segments the kernel merges into one GRO receive (UDP_MAX_SEGMENTS is 64 or, since Linux 6.11, 128).
    static let maxMergedSegments = 128
    /// Slot size with GRO: the largest UDP payload a merged receive can carry.
    static let mergedSlotSize = 65_535

    /// - Parameter controlSpace: control bytes per slot (the reader sizes it for every message it asked
    ///   for: `cudp_received_control_space()` with metadata, one UDP_GRO message with GRO alone).
    init(count: Int, slotSize: Int, merges: Bool, controlSpace: Int? = nil) {
        self.count = count
        self.slotSize = slotSize
        self.merges = merges
        pieceCapacity = merges ? count * ReceiveSlots.maxMergedSegments : count
        payload = .allocate(byteCount: max(count * slotSize, 1), alignment: 16)
        // Touch every page now: resident from the start, no page faults on the hot path.
        payload.initializeMemory(as: UInt8.self, repeating: 0, count: max(count * slotSize, 1))
        addresses = .allocate(capacity: count)
        addresses.initialize(repeating: sockaddr_storage(), count: count)
        iovecs = .allocate(capacity: count)
        messages = .allocate(capacity: count)
        pieces = .allocate(capacity: pieceCapacity)
        pieces.initialize(repeating: Piece(slot: 0, offset: 0, length: 0), count: pieceCapacity)
        let space = controlSpace ?? (merges ? cudp_cmsg_space(MemoryLayout<Int32>.size) : 0)
        self.controlSpace = space
        if space > 0 {
            let controls = UnsafeMutableRawPointer.allocate(byteCount: count * space, alignment: MemoryLayout<cmsghdr>.alignment)
            controls.initializeMemory(as: UInt8.self, repeating: 0, count: count * space)
            self.controls = controls
            let parsed = UnsafeMutablePointer<cudp_received_metadata>.allocate(capacity: count)
            parsed.initialize(repeating: cudp_received_metadata(), count: count)
            self.parsed = parsed
        } else {
            controls = nil
            parsed = nil
        }
        for slot in 0..<count {
            (iovecs + slot).initialize(to: iovec(iov_base: payload + slot * slotSize, iov_len: slotSize))
            var message = cudp_mmsghdr()
            message.msg_hdr.msg_iov = iovecs + slot
            message.msg_hdr.msg_iovlen = 1
            message.msg_hdr.msg_name = UnsafeMutableRawPointer(addresses + slot)
            message.msg_hdr.msg_control = controls.map { $0 + slot * space }
            (messages + slot).initialize(to: message)
        }
    }

    deinit {
        payload.deallocate()
        addresses.deallocate()
        iovecs.deallocate()
        messages.deallocate()
        pieces.deallocate()
        controls?.deallocate()
        parsed?.deallocate()
    }

    /// Resets what the kernel overwrites, for the first `n` slots.
    func prepare(_ n: Int) {
        for slot in 0..<n {
            messages[slot].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
            messages[slot].msg_hdr.msg_controllen = controlSpace
            messages[slot].msg_hdr.msg_flags = 0
        }
    }

    /// The slot's real length (recvmmsg is called with MSG_TRUNC, so it may exceed `slotSize`).
    func length(_ slot: Int) -> Int { Int(messages[slot].msg_len) }

    func isTruncated(_ slot: Int) -> Bool { messages[slot].msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 }

    /// Whether the kernel had more control messages for `slot` than its buffer holds (MSG_CTRUNC).
    func isControlTruncated(_ slot: Int) -> Bool { messages[slot].msg_hdr.msg_flags & Int32(MSG_CTRUNC) != 0 }

    /// Parses `slot`'s control messages (nothing to do without a control buffer). Call once per receive,
    /// before `segmentSize` and the metadata accessors.
    func parseControl(_ slot: Int) {
        guard let parsed else { return }
        cudp_parse_received_control(&messages[slot].msg_hdr, parsed + slot)
    }

    /// The size of the datagrams the kernel merged into `slot` (its UDP_GRO control message), or nil when
    /// the slot holds one datagram.
    func segmentSize(_ slot: Int) -> Int? {
        guard merges, let parsed, parsed[slot].segment_size > 0 else { return nil }
        return Int(parsed[slot].segment_size)
    }

    /// The parsed metadata of `slot` (nil without a control buffer), for ``ReceivedDatagram`` to decode
    /// what its reader reads.
    func metadata(_ slot: Int) -> UnsafePointer<cudp_received_metadata>? {
        parsed.map { UnsafePointer($0 + slot) }
    }

    /// The address `slot`'s datagram was sent to (IP_PKTINFO / IPV6_PKTINFO), with `port`; an IPv4
    /// datagram on a dual-stack socket is reported as IPv4.
    func destination(_ slot: Int, port: UInt16) -> SocketAddress? { metadata(slot).flatMap { ReceiveSlots.destination($0, port: port) } }
    func replySource(_ slot: Int) -> SocketAddress? { metadata(slot).flatMap(ReceiveSlots.replySource) }
    func interfaceIndex(_ slot: Int) -> UInt32? { metadata(slot).flatMap(ReceiveSlots.interfaceIndex) }
    func ecn(_ slot: Int) -> ECN? { metadata(slot).flatMap(ReceiveSlots.ecn) }
    func receiveTime(_ slot: Int) -> Duration? { metadata(slot).flatMap(ReceiveSlots.receiveTime) }

    static func destination(_ parsed: UnsafePointer<cudp_received_metadata>, port: UInt16) -> SocketAddress? {
        let family = parsed.pointee.destination_family
        guard family != 0 else { return nil }
        return withUnsafeBytes(of: parsed.pointee.destination) { SocketAddress(rawAddress: $0.baseAddress!, ipv4: family == 4, port: port) }
    }

    /// The local address to answer from: the destination, or for an IPv4 broadcast or multicast one the
    /// address the kernel would answer from (ipi_spec_dst); nil for IPv6 multicast.
    static func replySource(_ parsed: UnsafePointer<cudp_received_metadata>) -> SocketAddress? {
        let family = parsed.pointee.destination_family
        guard family != 0, !(family == 6 && parsed.pointee.local.0 == 0xff) else { return nil }
        return withUnsafeBytes(of: parsed.pointee.local) { SocketAddress(rawAddress: $0.baseAddress!, ipv4: family == 4, port: 0) }
    }

    static func interfaceIndex(_ parsed: UnsafePointer<cudp_received_metadata>) -> UInt32? {
        parsed.pointee.destination_family != 0 ? parsed.pointee.interface_index : nil
    }

    static func ecn(_ parsed: UnsafePointer<cudp_received_metadata>) -> ECN? {
        parsed.pointee.ecn != 0xFF ? ECN(rawValue: parsed.pointee.ecn) : nil
    }

    /// The kernel's receive time (SCM_TIMESTAMPNS, CLOCK_REALTIME) as time since the Unix epoch.
    static func receiveTime(_ parsed: UnsafePointer<cudp_received_metadata>) -> Duration? {
        parsed.pointee.has_time != 0 ? .seconds(parsed.pointee.seconds) + .nanoseconds(parsed.pointee.nanoseconds) : nil
    }

    func sender(_ slot: Int) -> SocketAddress? {
        SocketAddress(UnsafeRawPointer(addresses + slot), length: messages[slot].msg_hdr.msg_namelen)
    }

    /// The kernel's flags for `slot` (MSG_TRUNC, MSG_CTRUNC).
    func flags(_ slot: Int) -> Int32 { messages[slot].msg_hdr.msg_flags }

    /// Whether slots carry control messages (GRO or metadata): they must be parsed.
    var hasControl: Bool { parsed != nil }

    // MARK: The batch handed to the callback

    func resetPieces() { pieceCount = 0 }

    var piecesFull: Bool { pieceCount == pieceCapacity }

    /// Adds a datagram to the batch; the caller has checked `piecesFull`. Slot, offset and length fit
    /// 32 bits (slots are at most 64 KiB, and there are at most 1,024).
    func appendPiece(slot: Int, offset: Int, length: Int) {
        assert(pieceCount < pieceCapacity)
        pieces[pieceCount] = Piece(slot: Int32(truncatingIfNeeded: slot), offset: Int32(truncatingIfNeeded: offset),
                                   length: Int32(truncatingIfNeeded: length))
        pieceCount &+= 1
    }

    /// Adds the pieces of a merged receive in `slot` (`length` bytes cut every `segment` bytes) from
    /// `offset` on, as many as the batch has room for; returns where it stopped and the pieces added.
    /// One tight loop: the piece count stays in a register.
    func appendRun(slot: Int, from offset: Int, length: Int, segment: Int) -> (offset: Int, pieces: Int) {
        let room = pieceCapacity &- pieceCount
        let slot32 = Int32(truncatingIfNeeded: slot), segment32 = Int32(truncatingIfNeeded: segment)
        var offset = offset, added = 0
        let next = pieces + pieceCount
        while offset < length && added < room {
            let piece = min(segment, length &- offset)
            next[added] = Piece(slot: slot32, offset: Int32(truncatingIfNeeded: offset),
                                length: piece == segment ? segment32 : Int32(truncatingIfNeeded: piece))
            offset &+= piece
            added &+= 1
        }
        pieceCount &+= added
        return (offset, added)
    }

    func payload(of piece: Piece) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: payload + Int(piece.slot) * slotSize + Int(piece.offset), count: Int(piece.length))
    }
}
