internal import CUDPShims
internal import Glibc

/// What the kernel taught a watcher about single destinations: the largest segment it may coalesce for
/// each (0: none), learnt from refused super-datagrams whose datagrams then went out one by one.
///
/// A refusal is about one path, not the socket (REFERENCES §10): EMSGSIZE says the path's MTU is below
/// the segment size, EIO or EINVAL from an IPsec route or a device behind it say that path cannot take
/// GSO. Other destinations keep their full limit. Entries expire after ``lifetime`` seconds (paths
/// change, routes come back) and the table holds at most ``capacity`` of them: when it is full, the entry
/// closest to expiry makes room. Memory is allocated once; looking a destination up costs one `memcmp` per
/// live entry and happens once per run, and not at all while the table is empty.
final class SegmentationLimits {
    /// Destinations remembered at once.
    static let capacity = 32
    /// Seconds an entry lives.
    static let lifetime = 60.0

    /// A message's destination, copied out of its slot: the `sockaddr` bytes, or length 0 for the
    /// connected peer (a message without `msg_name`).
    struct Destination: Equatable {
        var address = sockaddr_storage()
        var length: socklen_t = 0

        init() {}

        init(of message: cudp_mmsghdr) {
            guard let name = message.msg_hdr.msg_name, message.msg_hdr.msg_namelen > 0 else { return }
            length = min(message.msg_hdr.msg_namelen, socklen_t(MemoryLayout<sockaddr_storage>.size))
            withUnsafeMutableBytes(of: &address) { $0.baseAddress!.copyMemory(from: name, byteCount: Int(length)) }
        }

        /// Whether `message` goes to this destination.
        func matches(_ message: cudp_mmsghdr) -> Bool {
            let other = message.msg_hdr.msg_name == nil ? 0 : message.msg_hdr.msg_namelen
            guard length == other else { return false }
            guard length > 0, let name = message.msg_hdr.msg_name else { return true }
            return withUnsafeBytes(of: address) { memcmp($0.baseAddress!, name, Int(length)) == 0 }
        }

        static func == (a: Destination, b: Destination) -> Bool {
            a.length == b.length && withUnsafeBytes(of: a.address) { left in
                withUnsafeBytes(of: b.address) { right in memcmp(left.baseAddress!, right.baseAddress!, Int(a.length)) == 0 }
            }
        }
    }

    private struct Entry {
        var destination = Destination()
        var maxSegment = 0
        var expiry = 0.0
    }

    private let entries: UnsafeMutablePointer<Entry>
    private(set) var count = 0

    init() {
        entries = .allocate(capacity: SegmentationLimits.capacity)
        entries.initialize(repeating: Entry(), count: SegmentationLimits.capacity)
    }

    deinit { entries.deallocate() }

    var isEmpty: Bool { count == 0 }

    /// The largest segment to coalesce for the destination of `message`: its entry's, or `fallback`.
    /// Drops the entries that have expired by `now`.
    func maxSegment(for message: cudp_mmsghdr, fallback: Int, now: Double) -> Int {
        var index = 0
        while index < count {
            if entries[index].expiry <= now {
                remove(at: index)
                continue
            }
            if entries[index].destination.matches(message) { return min(entries[index].maxSegment, fallback) }
            index += 1
        }
        return fallback
    }

    /// Remembers that `destination` takes segments of at most `maxSegment` bytes (0: no super-datagrams at
    /// all) until `now + lifetime`. A lower limit replaces a higher one.
    func limit(_ destination: Destination, to maxSegment: Int, now: Double) {
        let expiry = now + SegmentationLimits.lifetime
        for index in 0..<count where entries[index].destination == destination {
            entries[index].maxSegment = min(entries[index].maxSegment, maxSegment)
            entries[index].expiry = expiry
            return
        }
        var slot = count
        if count == SegmentationLimits.capacity {
            slot = 0
            for index in 1..<count where entries[index].expiry < entries[slot].expiry { slot = index }
        } else {
            count += 1
        }
        entries[slot] = Entry(destination: destination, maxSegment: maxSegment, expiry: expiry)
    }

    private func remove(at index: Int) {
        count -= 1
        if index != count { entries[index] = entries[count] }
    }
}
