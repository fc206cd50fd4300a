internal import CUDPShims
internal import Glibc

/// The reader's preallocated receive memory: per slot `slotSize` payload bytes, a `sockaddr_storage`,
/// an `iovec` and an `mmsghdr` pointing at them, plus the list of slots handed to the callback.
/// The unsafe part of the receive path lives here and only here.
final class ReceiveSlots {
    let count: Int
    let slotSize: Int

    private let payload: UnsafeMutableRawPointer
    private let addresses: UnsafeMutablePointer<sockaddr_storage>
    private let iovecs: UnsafeMutablePointer<iovec>
    let messages: UnsafeMutablePointer<cudp_mmsghdr>
    /// Indices of the slots in the current batch that hold whole datagrams.
    let delivered: UnsafeMutablePointer<Int32>

    init(count: Int, slotSize: Int) {
        self.count = count
        self.slotSize = slotSize
        payload = .allocate(byteCount: max(count * slotSize, 1), alignment: 16)
        // Touch every page now: memory is resident from the start (no page faults on the hot path, and a
        // process's size does not creep up as the queue first grows deep).
        payload.initializeMemory(as: UInt8.self, repeating: 0, count: max(count * slotSize, 1))
        addresses = .allocate(capacity: count)
        addresses.initialize(repeating: sockaddr_storage(), count: count)
        iovecs = .allocate(capacity: count)
        messages = .allocate(capacity: count)
        delivered = .allocate(capacity: count)
        delivered.initialize(repeating: 0, count: count)
        for slot in 0..<count {
            (iovecs + slot).initialize(to: iovec(iov_base: payload + slot * slotSize, iov_len: slotSize))
            var message = cudp_mmsghdr()
            message.msg_hdr.msg_iov = iovecs + slot
            message.msg_hdr.msg_iovlen = 1
            message.msg_hdr.msg_name = UnsafeMutableRawPointer(addresses + slot)
            (messages + slot).initialize(to: message)
        }
    }

    deinit {
        payload.deallocate()
        addresses.deallocate()
        iovecs.deallocate()
        messages.deallocate()
        delivered.deallocate()
    }

    /// Resets what the kernel overwrites, for the first `n` slots.
    func prepare(_ n: Int) {
        for slot in 0..<n {
            messages[slot].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
            messages[slot].msg_hdr.msg_flags = 0
        }
    }

    /// The datagram's real length (recvmmsg is called with MSG_TRUNC, so it may exceed `slotSize`).
    func length(_ slot: Int) -> Int { Int(messages[slot].msg_len) }

    func isTruncated(_ slot: Int) -> Bool { messages[slot].msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 }

    func payload(_ slot: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: payload + slot * slotSize, count: min(length(slot), slotSize))
    }

    func sender(_ slot: Int) -> SocketAddress? {
        SocketAddress(UnsafeRawPointer(addresses + slot), length: messages[slot].msg_hdr.msg_namelen)
    }
}
