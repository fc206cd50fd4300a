internal import CUDPShims
internal import Glibc

/// The result of one kernel call: a count, or the errno it failed with.
enum IOResult: Equatable {
    case done(Int)
    case failed(Errno)
}

/// An error the kernel queued for an earlier datagram (ICMP unreachable, a local MTU error...).
struct QueuedError {
    let errno: Errno
    /// Where the failed datagram was going.
    let destination: SocketAddress?
}

/// One small wrapper per system call the package makes. Each reads errno straight after the call,
/// inside a non-inlined function so nothing (ARC included) can run in between, and retries EINTR here.
enum Syscall {
    /// A stand-in for `sendmmsg(2)` that tests install to script what loopback cannot produce on demand.
    typealias SendmmsgSeam = (_ fd: Int32, _ messages: UnsafeMutablePointer<cudp_mmsghdr>, _ count: Int) -> IOResult

    /// `sendmmsg(2)`, retried on EINTR. `count` must be 1...1024.
    @inline(never)
    static func sendmmsg(_ fd: Int32, _ messages: UnsafeMutablePointer<cudp_mmsghdr>, _ count: Int, seam: SendmmsgSeam?) -> IOResult {
        while true {
            let result = seam?(fd, messages, count) ?? sendmmsgOnce(fd, messages, count)
            if result != .failed(.EINTR) { return result }
        }
    }

    /// One `sendmmsg(2)` attempt; also what a seam calls when it wants the real kernel.
    ///
    /// MSG_DONTWAIT makes every call nonblocking even if someone clears O_NONBLOCK on a shared descriptor
    /// after registration: a blocking send would stall the whole loop.
    @inline(never)
    static func sendmmsgOnce(_ fd: Int32, _ messages: UnsafeMutablePointer<cudp_mmsghdr>, _ count: Int) -> IOResult {
        let rc = cudp_sendmmsg(fd, messages, UInt32(count), Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
        return rc >= 0 ? .done(Int(rc)) : .failed(.current)
    }

    /// `recvmmsg(2)` without a timeout, nonblocking, retried on EINTR. MSG_TRUNC makes each `msg_len`
    /// the datagram's real length, so a truncated one can be reported with its size.
    @inline(never)
    static func recvmmsg(_ fd: Int32, _ messages: UnsafeMutablePointer<cudp_mmsghdr>, _ count: Int) -> IOResult {
        while true {
            let rc = cudp_recvmmsg(fd, messages, UInt32(count), Int32(MSG_DONTWAIT) | Int32(MSG_TRUNC))
            if rc >= 0 { return .done(Int(rc)) }
            let error = Errno.current
            if error != .EINTR { return .failed(error) }
        }
    }

    /// One entry of the socket's error queue (filled when IP_RECVERR/IPV6_RECVERR is on), nil when it is
    /// empty. Reading it is what clears EPOLLERR, which epoll reports for as long as an entry waits.
    @inline(never)
    static func receiveQueuedError(_ fd: Int32) -> Result<QueuedError?, Errno> {
        var storage = sockaddr_storage()
        var length = socklen_t(0)
        var error: Int32 = 0
        while true {
            if cudp_recv_queued_error(fd, &storage, &length, &error) == 1 {
                let destination = withUnsafeBytes(of: &storage) { SocketAddress($0.baseAddress!, length: length) }
                return .success(QueuedError(errno: Errno(rawValue: error), destination: destination))
            }
            let failure = Errno.current
            if failure == .EAGAIN { return .success(nil) }
            if failure != .EINTR { return .failure(failure) }
        }
    }

    /// `socket(2)` for a nonblocking, close-on-exec UDP socket.
    @inline(never)
    static func socket(_ family: SocketAddress.Family) -> IOResult {
        let type = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let fd = Glibc.socket(family.rawValue, type, Int32(IPPROTO_UDP))
        return fd >= 0 ? .done(Int(fd)) : .failed(.current)
    }

    @inline(never)
    static func bind(_ fd: Int32, _ address: SocketAddress) -> Errno? {
        address.withSockAddr { Glibc.bind(fd, $0, $1) == 0 ? nil : .current }
    }

    /// `connect(2)`; for UDP it only sets the default peer and filters what is received.
    @inline(never)
    static func connect(_ fd: Int32, _ address: SocketAddress) -> Errno? {
        address.withSockAddr { sockaddr, length in
            while Glibc.connect(fd, sockaddr, length) != 0 {
                let error = Errno.current
                if error != .EINTR { return error }
            }
            return nil
        }
    }

    @inline(never)
    static func getsockopt(_ fd: Int32, _ level: Int32, _ name: Int32) -> IOResult {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return Glibc.getsockopt(fd, level, name, &value, &length) == 0 ? .done(Int(value)) : .failed(.current)
    }

    /// `getsockopt(SO_MEMINFO)`'s `SK_MEMINFO_DROPS`: datagrams the kernel dropped on arrival (Linux 4.6+).
    @inline(never)
    static func receiveDrops(_ fd: Int32) -> IOResult {
        // SK_MEMINFO_VARS is 9 on current kernels; room for more, which later kernels may add at the end.
        var memory = (UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0),
                      UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0))
        var length = socklen_t(MemoryLayout.size(ofValue: memory))
        let dropsOffset = 8 * MemoryLayout<UInt32>.size  // SK_MEMINFO_DROPS in <linux/sock_diag.h>
        guard Glibc.getsockopt(fd, SOL_SOCKET, SO_MEMINFO, &memory, &length) == 0 else { return .failed(.current) }
        guard Int(length) > dropsOffset else { return .failed(.ENOPROTOOPT) }
        return .done(withUnsafeBytes(of: &memory) { Int($0.load(fromByteOffset: dropsOffset, as: UInt32.self)) })
    }

    @inline(never)
    static func setsockopt(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) -> Errno? {
        var value = value
        return Glibc.setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 ? nil : .current
    }

    /// `getsockname(2)` (`peer: false`) or `getpeername(2)` (`peer: true`).
    @inline(never)
    static func address(_ fd: Int32, peer: Bool) -> Result<SocketAddress?, Errno> {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutableBytes(of: &storage) { bytes in
            let pointer = bytes.baseAddress!.assumingMemoryBound(to: sockaddr.self)
            return peer ? getpeername(fd, pointer, &length) : getsockname(fd, pointer, &length)
        }
        guard rc == 0 else { return .failure(.current) }
        return .success(withUnsafeBytes(of: &storage) { SocketAddress($0.baseAddress!, length: length) })
    }

    @inline(never)
    static func fileStatusFlags(_ fd: Int32) -> IOResult {
        let flags = fcntl(fd, F_GETFL)
        return flags >= 0 ? .done(Int(flags)) : .failed(.current)
    }

    @inline(never)
    static func setFileStatusFlags(_ fd: Int32, _ flags: Int32) -> Errno? {
        fcntl(fd, F_SETFL, flags) == 0 ? nil : .current
    }

    /// `close(2)`. EINTR is not retried: on Linux the descriptor is released even then.
    @inline(never)
    static func close(_ fd: Int32) -> Errno? {
        Glibc.close(fd) == 0 ? nil : .current
    }
}
