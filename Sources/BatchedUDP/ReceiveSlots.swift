internal import CUDPShims
internal import Glibc

/// The reader's preallocated receive memory: per slot `slotSize` payload bytes, a `sockaddr_storage`,
/// an `iovec`, an `mmsghdr` pointing at them and (with GRO) a control buffer; plus the list of datagrams
/// handed to the callback, each a piece of a slot (with GRO a slot may hold a run of datagrams merged by
/// the kernel, which the pieces split back). The unsafe part of the receive path lives here and only here.
final class ReceiveSlots {
    /// One delivered datagram: where it lies in which slot.
    struct Piece {
        var slot: Int32
        var offset: Int32
        var length: Int32
    }

    let count: Int
    let slotSize: Int
    /// Whether slots carry a control buffer for the UDP_GRO segment size.
    let merges: Bool
    /// Most pieces one batch holds.
    let pieceCapacity: Int
    /// Pieces of the current batch.
    private(set) var pieceCount = 0

    private let payload: UnsafeMutableRawPointer
    private let addresses: UnsafeMutablePointer<sockaddr_storage>
    private let iovecs: UnsafeMutablePointer<iovec>
    let messages: UnsafeMutablePointer<cudp_mmsghdr>
    private let pieces: UnsafeMutablePointer<Piece>
    private let controls: UnsafeMutableRawPointer?
    private let controlSpace: Int

    /// Most segments the kernel merges into one GRO receive (UDP_MAX_SEGMENTS is 64 or, since Linux 6.11, 128).
    static let maxMergedSegments = 128
    /// Slot size with GRO: the largest UDP payload a merged receive can carry.
    static let mergedSlotSize = 65_535

    init(count: Int, slotSize: Int, merges: Bool) {
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
        controlSpace = merges ? cudp_cmsg_space(MemoryLayout<Int32>.size) : 0
        if merges {
            let controls = UnsafeMutableRawPointer.allocate(byteCount: count * controlSpace, alignment: MemoryLayout<cmsghdr>.alignment)
            controls.initializeMemory(as: UInt8.self, repeating: 0, count: count * controlSpace)
            self.controls = controls
        } else {
            controls = nil
        }
        for slot in 0..<count {
            (iovecs + slot).initialize(to: iovec(iov_base: payload + slot * slotSize, iov_len: slotSize))
            var message = cudp_mmsghdr()
            message.msg_hdr.msg_iov = iovecs + slot
            message.msg_hdr.msg_iovlen = 1
            message.msg_hdr.msg_name = UnsafeMutableRawPointer(addresses + slot)
            message.msg_hdr.msg_control = controls.map { $0 + slot * controlSpace }
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

    /// The size of the datagrams the kernel merged into `slot` (its UDP_GRO control message), or nil when
    /// the slot holds one datagram.
    func segmentSize(_ slot: Int) -> Int? {
        guard merges else { return nil }
        var header = messages[slot].msg_hdr
        var control = cudp_cmsg_firsthdr(&header)
        while let current = control {
            if current.pointee.cmsg_level == Int32(CUDP_SOL_UDP) && current.pointee.cmsg_type == Int32(CUDP_UDP_GRO)
                && current.pointee.cmsg_len >= cudp_cmsg_len(MemoryLayout<Int32>.size) {
                let size = Int(UnsafeRawPointer(cudp_cmsg_data(current)).loadUnaligned(as: Int32.self))
                return size > 0 ? size : nil
            }
            control = cudp_cmsg_nxthdr(&header, current)
        }
        return nil
    }

    func sender(_ slot: Int) -> SocketAddress? {
        SocketAddress(UnsafeRawPointer(addresses + slot), length: messages[slot].msg_hdr.msg_namelen)
    }

    // MARK: The batch handed to the callback

    func resetPieces() { pieceCount = 0 }

    var piecesFull: Bool { pieceCount == pieceCapacity }

    func appendPiece(slot: Int, offset: Int, length: Int) {
        precondition(pieceCount < pieceCapacity)
        pieces[pieceCount] = Piece(slot: Int32(slot), offset: Int32(offset), length: Int32(length))
        pieceCount += 1
    }

    func piece(_ index: Int) -> Piece { pieces[index] }

    func payload(of piece: Piece) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: payload + Int(piece.slot) * slotSize + Int(piece.offset), count: Int(piece.length))
    }
}
