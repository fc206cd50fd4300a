internal import CUDPShims
internal import Glibc

/// A UDP socket: open, bind, connect, options, addresses, close. Owns its descriptor unless adopted with
/// `closesOnDeinit: false`.
///
/// Sockets opened here are nonblocking and close-on-exec. Every failing call throws a ``SocketError``
/// naming the call, the address and the errno. Not `Sendable`: use it on one thread (its loop's).
///
/// ``close()`` first closes the ``BatchedUDPWatcher``s and stops the ``BatchedUDPReader``s registered on
/// this object, so none of them can send to or read from a later socket that reuses the descriptor number.
/// (A descriptor closed behind this object's back cannot be noticed: close it here.)
public final class UDPSocket {
    /// The descriptor, or -1 after `close()`.
    public private(set) var fileDescriptor: Int32
    /// IPv4 or IPv6.
    public let family: SocketAddress.Family
    private let closesOnDeinit: Bool
    /// The watchers and readers registered on this socket (held weakly), told before the descriptor closes.
    var users: [WeakSocketUser] = []
    /// Whether IP_RECVERR was turned on through this object: a reader then reads the error queue on every
    /// wakeup that emptied the receive queue, so entries never wait behind steady traffic.
    var errorQueueEnabled = false

    /// Opens a nonblocking UDP socket (`socket(2)`).
    /// - Throws: ``SocketError`` (for example EMFILE when out of descriptors).
    public init(family: SocketAddress.Family) throws(SocketError) {
        switch Syscall.socket(family) {
        case let .done(fd): fileDescriptor = Int32(fd)
        case let .failed(error): throw SocketError("socket(\(family))", errno: error)
        }
        self.family = family
        closesOnDeinit = true
    }

    /// Opens a socket of the address's family, sets the reuse options asked for, and binds it.
    /// - Throws: ``SocketError``; EADDRINUSE when the port is taken.
    public convenience init(bindingTo address: SocketAddress, reuseAddress: Bool = false, reusePort: Bool = false) throws(SocketError) {
        try self.init(family: address.family)
        if reuseAddress { try setReuseAddress(true) }
        if reusePort { try setReusePort(true) }
        try bind(to: address)
    }

    /// Wraps a descriptor made elsewhere (C code, another library) after checking that it is an open
    /// IPv4 or IPv6 datagram socket.
    ///
    /// - Parameters:
    ///   - fd: the descriptor; its flags are left as they are (the watcher and reader set it nonblocking).
    ///   - closesOnDeinit: whether this object closes the descriptor when it goes away.
    /// - Throws: ``SocketError`` for a closed descriptor (EBADF), a pipe or file (ENOTSOCK), a stream
    ///   (TCP) socket, or a family other than IPv4/IPv6.
    public init(adopting fd: Int32, closesOnDeinit: Bool = false) throws(SocketError) {
        let operation = "adopt(fd \(fd))"
        guard fd >= 0 else { throw SocketError(operation, errno: .EBADF, problem: "a descriptor is never negative") }
        switch Syscall.getsockopt(fd, SOL_SOCKET, SO_TYPE) {
        case let .failed(error):
            throw SocketError(operation, errno: error, problem: error == .ENOTSOCK ? "it is not a socket (a pipe or a file?)" : nil)
        case let .done(type) where type != Int(SOCK_DGRAM.rawValue):
            let kind = type == Int(SOCK_STREAM.rawValue) ? "a stream (TCP) socket" : "a socket of type \(type)"
            throw SocketError(operation, problem: "it is \(kind); a datagram (SOCK_DGRAM) socket is needed")
        case .done:
            break
        }
        switch Syscall.getsockopt(fd, SOL_SOCKET, SO_DOMAIN) {
        case .done(Int(AF_INET)): family = .ipv4
        case .done(Int(AF_INET6)): family = .ipv6
        case let .done(domain): throw SocketError(operation, problem: "its address family \(domain) is neither IPv4 nor IPv6")
        case let .failed(error): throw SocketError(operation, errno: error)
        }
        fileDescriptor = fd
        self.closesOnDeinit = closesOnDeinit
    }

    deinit {
        if closesOnDeinit && fileDescriptor >= 0 { _ = Syscall.close(fileDescriptor) }
    }

    /// Binds to a local address (`bind(2)`); port 0 picks a free port (read it from ``localAddress``).
    /// - Throws: ``SocketError`` (EADDRINUSE, EACCES below port 1024, EADDRNOTAVAIL, EINVAL for a wrong family).
    public func bind(to address: SocketAddress) throws(SocketError) {
        if let error = Syscall.bind(try open("bind"), address) { throw SocketError("bind", errno: error, address: address) }
    }

    /// Sets the default destination and accepts datagrams only from it (`connect(2)`).
    /// - Throws: ``SocketError`` (ENETUNREACH, EINVAL for a wrong family).
    public func connect(to address: SocketAddress) throws(SocketError) {
        if let error = Syscall.connect(try open("connect"), address) { throw SocketError("connect", errno: error, address: address) }
    }

    /// The bound address (`getsockname(2)`).
    public var localAddress: SocketAddress {
        get throws(SocketError) {
            switch Syscall.address(try open("getsockname"), peer: false) {
            case let .success(address?): return address
            case .success(nil): throw SocketError("getsockname", problem: "not an IPv4/IPv6 address")
            case let .failure(error): throw SocketError("getsockname", errno: error)
            }
        }
    }

    /// The connected peer (`getpeername(2)`), or nil if the socket is not connected.
    public var remoteAddress: SocketAddress? {
        get throws(SocketError) {
            switch Syscall.address(try open("getpeername"), peer: true) {
            case let .success(address): return address
            case .failure(.ENOTCONN): return nil
            case let .failure(error): throw SocketError("getpeername", errno: error)
            }
        }
    }

    /// SO_SNDBUF. The kernel doubles what is asked and enforces a minimum; read it back for the real value.
    public var sendBufferSize: Int {
        get throws(SocketError) { try option(SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF") }
    }

    /// Sets SO_SNDBUF (capped by `net.core.wmem_max`).
    public func setSendBufferSize(_ bytes: Int) throws(SocketError) {
        try setOption(SOL_SOCKET, SO_SNDBUF, Int32(clamping: bytes), "SO_SNDBUF")
    }

    /// SO_RCVBUF. The kernel doubles what is asked; read it back for the real value.
    public var receiveBufferSize: Int {
        get throws(SocketError) { try option(SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF") }
    }

    /// Sets SO_RCVBUF (capped by `net.core.rmem_max` unless `force` and the process has CAP_NET_ADMIN,
    /// which uses SO_RCVBUFFORCE).
    public func setReceiveBufferSize(_ bytes: Int, force: Bool = false) throws(SocketError) {
        if force {
            try setOption(SOL_SOCKET, SO_RCVBUFFORCE, Int32(clamping: bytes), "SO_RCVBUFFORCE")
        } else {
            try setOption(SOL_SOCKET, SO_RCVBUF, Int32(clamping: bytes), "SO_RCVBUF")
        }
    }

    /// Sets SO_REUSEADDR.
    public func setReuseAddress(_ on: Bool) throws(SocketError) {
        try setOption(SOL_SOCKET, SO_REUSEADDR, on ? 1 : 0, "SO_REUSEADDR")
    }

    /// Sets SO_REUSEPORT: several sockets (one per thread) share a port and the kernel spreads datagrams.
    public func setReusePort(_ on: Bool) throws(SocketError) {
        try setOption(SOL_SOCKET, SO_REUSEPORT, on ? 1 : 0, "SO_REUSEPORT")
    }

    /// IPV6_V6ONLY: whether an IPv6 socket refuses IPv4 (mapped) traffic.
    public var isIPv6Only: Bool {
        get throws(SocketError) {
            guard family == .ipv6 else { return false }
            return try option(Int32(IPPROTO_IPV6), IPV6_V6ONLY, "IPV6_V6ONLY") != 0
        }
    }

    /// Sets IPV6_V6ONLY on an IPv6 socket, before `bind`.
    /// - Throws: ``SocketError`` on an IPv4 socket.
    public func setIPv6Only(_ on: Bool) throws(SocketError) {
        guard family == .ipv6 else { throw SocketError("setsockopt(IPV6_V6ONLY)", problem: "the socket is IPv4") }
        try setOption(Int32(IPPROTO_IPV6), IPV6_V6ONLY, on ? 1 : 0, "IPV6_V6ONLY")
    }

    /// Whether the kernel reports per-datagram errors to this socket (IP_RECVERR, or IPV6_RECVERR on IPv6).
    /// - Throws: ``SocketError`` if the option cannot be read.
    public var receivesErrors: Bool {
        get throws(SocketError) {
            let (level, name) = family == .ipv4 ? (Int32(IPPROTO_IP), IP_RECVERR) : (Int32(IPPROTO_IPV6), IPV6_RECVERR)
            return try option(level, name, family == .ipv4 ? "IP_RECVERR" : "IPV6_RECVERR") != 0
        }
    }

    /// Turns IP_RECVERR on or off (on an IPv6 socket: IPV6_RECVERR, and IP_RECVERR for IPv4-mapped traffic).
    ///
    /// With it on, Linux reports a datagram its queueing discipline or driver dropped as ENOBUFS, which a
    /// ``BatchedUDPWatcher`` retries; with it off (the default) such a drop is silent and counted only in
    /// the kernel's SndbufErrors. It also queues ICMP errors (port or host unreachable) for unconnected
    /// sockets: a reading ``BatchedUDPReader`` on this socket reports each as
    /// ``ReceiveProblem/deliveryError(_:destination:)``, otherwise the watcher reports it as
    /// ``SocketProblem/deliveryError(_:destination:)``. Each also sets a pending error that the next send
    /// meets whatever it carries; the watcher reports that as ``SocketProblem/pendingError(_:)`` and sends
    /// the datagram again.
    /// - Throws: ``SocketError`` naming the option and errno.
    public func setReceivesErrors(_ on: Bool) throws(SocketError) {
        let value: Int32 = on ? 1 : 0
        if family == .ipv6 { try setOption(Int32(IPPROTO_IPV6), IPV6_RECVERR, value, "IPV6_RECVERR") }
        try setOption(Int32(IPPROTO_IP), IP_RECVERR, value, "IP_RECVERR")
        errorQueueEnabled = on
    }

    /// Whether O_NONBLOCK is set.
    public var isNonBlocking: Bool {
        get throws(SocketError) {
            switch Syscall.fileStatusFlags(try open("fcntl(F_GETFL)")) {
            case let .done(flags): return Int32(flags) & O_NONBLOCK != 0
            case let .failed(error): throw SocketError("fcntl(F_GETFL)", errno: error)
            }
        }
    }

    /// Sets or clears O_NONBLOCK.
    public func setNonBlocking(_ on: Bool) throws(SocketError) {
        let fd = try open("fcntl(F_SETFL)")
        switch Syscall.fileStatusFlags(fd) {
        case let .failed(error): throw SocketError("fcntl(F_GETFL)", errno: error)
        case let .done(flags):
            let new = on ? Int32(flags) | O_NONBLOCK : Int32(flags) & ~O_NONBLOCK
            if new != Int32(flags), let error = Syscall.setFileStatusFlags(fd, new) {
                throw SocketError("fcntl(F_SETFL)", errno: error)
            }
        }
    }

    /// Reads an integer socket option.
    public func option(_ level: Int32, _ name: Int32, _ label: String) throws(SocketError) -> Int {
        switch Syscall.getsockopt(try open("getsockopt(\(label))"), level, name) {
        case let .done(value): return value
        case let .failed(error): throw SocketError("getsockopt(\(label))", errno: error)
        }
    }

    /// Datagrams the kernel dropped on arrival at this socket, mostly because its receive buffer was
    /// full: where a reader that stopped reading (backpressure) leaves the overflow. The socket's own
    /// counter (`SO_MEMINFO`'s `SK_MEMINFO_DROPS`, the `drops` column of `/proc/net/udp`), from its creation.
    /// - Throws: ``SocketError`` if the socket is closed or the kernel does not report it (before 4.6).
    /// - Cost: one `getsockopt`. Any thread that keeps the socket open.
    public var receiveDrops: Int {
        get throws(SocketError) {
            switch Syscall.receiveDrops(try open("getsockopt(SO_MEMINFO)")) {
            case let .done(drops): return drops
            case let .failed(error): throw SocketError("getsockopt(SO_MEMINFO)", errno: error)
            }
        }
    }

    /// Sets an integer socket option.
    public func setOption(_ level: Int32, _ name: Int32, _ value: Int32, _ label: String) throws(SocketError) {
        if let error = Syscall.setsockopt(try open("setsockopt(\(label))"), level, name, value) {
            throw SocketError("setsockopt(\(label))", errno: error)
        }
    }

    /// Closes the descriptor (`close(2)`); later calls throw EBADF. Closing twice does nothing.
    ///
    /// Every ``BatchedUDPWatcher`` registered on this socket is closed first (its queued datagrams are
    /// reported with ECANCELED) and every ``BatchedUDPReader`` stops for good, before the descriptor is
    /// released. Loop thread only.
    /// - Throws: ``SocketError`` if the kernel reports an error (the descriptor is released anyway).
    public func close() throws(SocketError) {
        guard fileDescriptor >= 0 else { return }
        let fd = fileDescriptor
        fileDescriptor = -1  // a callback run below that closes again finds it closed
        let current = users.compactMap(\.user)
        users.removeAll()
        for user in current { user.socketWillClose() }
        if let error = Syscall.close(fd) { throw SocketError("close", errno: error) }
    }

    private func open(_ operation: String) throws(SocketError) -> Int32 {
        guard fileDescriptor >= 0 else { throw SocketError(operation, errno: .EBADF, problem: "the socket is closed") }
        return fileDescriptor
    }
}
