import Glibc

/// Datagrams the kernel dropped on arrival at the daemon's own sockets (receive buffer full, which is
/// where backpressure leaves them): the socket's drop counter, `SK_MEMINFO_DROPS` of `SO_MEMINFO` (Linux
/// 4.6; the `drops` column of `/proc/net/udp`). One getsockopt per socket, read when stats are printed or a
/// session closes, never per datagram.
enum KernelDrops {
    /// The drops counted on `descriptors`' sockets, which must be open.
    static func count(_ descriptors: [Int32]) -> Int {
        descriptors.reduce(0) { $0 + count($1) }
    }

    /// The drops counted on one open socket; 0 if the kernel does not say.
    static func count(_ descriptor: Int32) -> Int {
        // SK_MEMINFO_VARS is 9 on current kernels; room for more, which later kernels may add at the end.
        var memory = (UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0),
                      UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0))
        var length = socklen_t(MemoryLayout.size(ofValue: memory))
        guard getsockopt(descriptor, SOL_SOCKET, SO_MEMINFO, &memory, &length) == 0,
              Int(length) > dropsIndex * MemoryLayout<UInt32>.size else { return 0 }
        return withUnsafeBytes(of: &memory) { Int($0.load(fromByteOffset: dropsIndex * MemoryLayout<UInt32>.size, as: UInt32.self)) }
    }

    /// `SK_MEMINFO_DROPS` in <linux/sock_diag.h>.
    private static let dropsIndex = 8
}
