public import Glibc

/// An IPv4 or IPv6 address with a port: where a datagram goes or came from.
///
/// Parses `1.2.3.4:53`, `[::1]:53` and `localhost:53`; names other than `localhost` are refused rather
/// than resolved, so parsing never blocks on DNS. A value type, cheap to copy (at most 28 bytes of sockaddr).
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    /// The address family.
    public enum Family: Sendable, Hashable, CustomStringConvertible {
        /// IPv4 (`AF_INET`).
        case ipv4
        /// IPv6 (`AF_INET6`), which also carries IPv4-mapped addresses on a dual-stack socket.
        case ipv6

        /// `AF_INET` or `AF_INET6`.
        public var rawValue: Int32 { self == .ipv4 ? AF_INET : AF_INET6 }
        /// The largest UDP payload the family allows: 65,507 bytes on IPv4 (65,535 − 20 − 8), 65,527 on IPv6.
        public var maxUDPPayload: Int { self == .ipv4 ? 65_507 : 65_527 }
        public var description: String { self == .ipv4 ? "IPv4" : "IPv6" }
    }

    enum Storage: Sendable {
        case v4(sockaddr_in)
        case v6(sockaddr_in6)
    }

    let storage: Storage

    init(_ storage: Storage) { self.storage = storage }

    /// An IPv4 address from its four bytes, `a.b.c.d`, in network order.
    public init(ipv4 a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8, port: UInt16) {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = (UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)).bigEndian
        storage = .v4(sin)
    }

    /// `127.0.0.1:port`.
    public static func loopbackIPv4(port: UInt16) -> SocketAddress { SocketAddress(ipv4: 127, 0, 0, 1, port: port) }

    /// `[::1]:port`.
    public static func loopbackIPv6(port: UInt16) -> SocketAddress {
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        sin6.sin6_addr = in6addr_loopback
        return SocketAddress(.v6(sin6))
    }

    /// Parses `HOST:PORT`, where HOST is a dotted IPv4 address, a bracketed IPv6 address or `localhost`
    /// (127.0.0.1), and PORT is 0...65535.
    /// - Throws: ``AddressError`` naming the input and what is wrong with it.
    public init(parsing text: String) throws(AddressError) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw AddressError(input: text, reason: "an IPv6 address needs a closing ']' as in [::1]:53")
            }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw AddressError(input: text, reason: "expected ':PORT' after ']'") }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw AddressError(input: text, reason: "expected HOST:PORT, as in 127.0.0.1:53 or [::1]:53")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") {
                throw AddressError(input: text, reason: "an IPv6 address needs brackets, as in [::1]:53")
            }
        }
        guard !portText.isEmpty, portText.allSatisfy(\.isASCII), portText.allSatisfy(\.isNumber),
              let port = UInt16(portText) else {
            throw AddressError(input: text, reason: "the port '\(portText)' is not a number in 0...65535")
        }
        if host == "localhost" {
            self = .loopbackIPv4(port: port)
        } else if text.hasPrefix("[") {
            self = try SocketAddress(ipv6: String(host), port: port, input: text)
        } else {
            self = try SocketAddress(ipv4: String(host), port: port, input: text)
        }
    }

    /// A numeric IPv4 address (`192.0.2.1`) and port.
    /// - Throws: ``AddressError`` if `host` is not a dotted IPv4 address.
    public init(ipv4 host: String, port: UInt16) throws(AddressError) {
        try self.init(ipv4: host, port: port, input: host)
    }

    /// A numeric IPv6 address (`2001:db8::1`, without brackets) and port.
    /// - Throws: ``AddressError`` if `host` is not an IPv6 address.
    public init(ipv6 host: String, port: UInt16) throws(AddressError) {
        try self.init(ipv6: host, port: port, input: host)
    }

    private init(ipv4 host: String, port: UInt16, input: String) throws(AddressError) {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &sin.sin_addr) == 1 else {
            throw AddressError(input: input, reason: "'\(host)' is not an IPv4 address; use a.b.c.d, [IPv6] or localhost (names are not resolved)")
        }
        storage = .v4(sin)
    }

    private init(ipv6 host: String, port: UInt16, input: String) throws(AddressError) {
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        guard inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1 else {
            throw AddressError(input: input, reason: "'\(host)' is not an IPv6 address")
        }
        storage = .v6(sin6)
    }

    /// Reads a `sockaddr` filled by the kernel or C code (`recvfrom`, `getsockname`...), for interop.
    /// Returns nil for families other than IPv4 and IPv6, or a `length` too short for the family. Reads
    /// at most `length` bytes, at any alignment.
    /// Cost: a copy of at most 28 bytes; any thread.
    public init?(_ address: UnsafeRawPointer, length: socklen_t) {
        guard length >= MemoryLayout<sa_family_t>.size else { return nil }
        switch Int32(address.loadUnaligned(as: sa_family_t.self)) {
        case AF_INET where length >= MemoryLayout<sockaddr_in>.size:
            storage = .v4(address.loadUnaligned(as: sockaddr_in.self))
        case AF_INET6 where length >= MemoryLayout<sockaddr_in6>.size:
            storage = .v6(address.loadUnaligned(as: sockaddr_in6.self))
        default:
            return nil
        }
    }

    /// The address family.
    public var family: Family {
        if case .v4 = storage { return .ipv4 }
        return .ipv6
    }

    /// The port, in host byte order.
    public var port: UInt16 {
        switch storage {
        case let .v4(sin): return UInt16(bigEndian: sin.sin_port)
        case let .v6(sin6): return UInt16(bigEndian: sin6.sin6_port)
        }
    }

    /// The same address with another port.
    public func withPort(_ port: UInt16) -> SocketAddress {
        switch storage {
        case var .v4(sin):
            sin.sin_port = port.bigEndian
            return SocketAddress(.v4(sin))
        case var .v6(sin6):
            sin6.sin6_port = port.bigEndian
            return SocketAddress(.v6(sin6))
        }
    }

    /// Whether the host is the wildcard address (0.0.0.0 or ::): a socket bound to it receives datagrams
    /// sent to any of the host's addresses, and must answer each from the one it was sent to
    /// (``BatchedUDPReader/Metadata/destination``, ``ReceivedDatagram/replyMetadata``).
    public var isWildcard: Bool {
        switch storage {
        case let .v4(sin): return sin.sin_addr.s_addr == 0
        case var .v6(sin6): return withUnsafeBytes(of: &sin6.sin6_addr) { $0.allSatisfy { $0 == 0 } }
        }
    }

    /// The host part as text: `127.0.0.1` or `::1`.
    public var host: String {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(INET6_ADDRSTRLEN)) { buffer in
            switch storage {
            case var .v4(sin): _ = inet_ntop(AF_INET, &sin.sin_addr, buffer.baseAddress, socklen_t(buffer.count))
            case var .v6(sin6): _ = inet_ntop(AF_INET6, &sin6.sin6_addr, buffer.baseAddress, socklen_t(buffer.count))
            }
            return String(cString: buffer.baseAddress!)
        }
    }

    /// `127.0.0.1:53` or `[::1]:53`.
    public var description: String {
        family == .ipv4 ? "\(host):\(port)" : "[\(host)]:\(port)"
    }

    /// This IPv4 address as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), for dual-stack IPv6 sockets.
    var ipv4Mapped: SocketAddress {
        guard case let .v4(sin) = storage else { return self }
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = sin.sin_port
        withUnsafeMutableBytes(of: &sin6.sin6_addr) { bytes in
            bytes[10] = 0xff
            bytes[11] = 0xff
            withUnsafeBytes(of: sin.sin_addr) { v4 in
                for i in 0..<4 { bytes[12 + i] = v4[i] }
            }
        }
        return SocketAddress(.v6(sin6))
    }

    /// The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), with the same port; nil
    /// for any other address.
    var ipv4Unmapped: SocketAddress? {
        guard case let .v6(sin6) = storage else { return nil }
        return withUnsafeBytes(of: sin6.sin6_addr) { bytes -> SocketAddress? in
            guard bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff else { return nil }
            return SocketAddress(ipv4: bytes[12], bytes[13], bytes[14], bytes[15], port: UInt16(bigEndian: sin6.sin6_port))
        }
    }

    /// Whether a datagram to this address travels as IPv4 (an IPv4 address, or an IPv4-mapped IPv6 one).
    var isIPv4OnTheWire: Bool { family == .ipv4 || ipv4Unmapped != nil }

    /// The address from 4 (IPv4) or 16 (IPv6) bytes in network order, as control messages carry them.
    init(rawAddress bytes: UnsafeRawBufferPointer, port: UInt16) {
        if bytes.count == 4 {
            self.init(ipv4: bytes[0], bytes[1], bytes[2], bytes[3], port: port)
        } else {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes.prefix(16))) }
            self.init(.v6(sin6))
        }
    }

    /// Calls `body` with the address part alone, 4 or 16 bytes in network order.
    func withRawAddress<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        switch storage {
        case let .v4(sin): return withUnsafeBytes(of: sin.sin_addr) { body($0) }
        case let .v6(sin6): return withUnsafeBytes(of: sin6.sin6_addr) { body($0) }
        }
    }

    /// Writes the sockaddr into `target` and returns its length.
    func write(to target: UnsafeMutableRawPointer) -> socklen_t {
        switch storage {
        case let .v4(sin):
            target.storeBytes(of: sin, as: sockaddr_in.self)
            return socklen_t(MemoryLayout<sockaddr_in>.size)
        case let .v6(sin6):
            target.storeBytes(of: sin6, as: sockaddr_in6.self)
            return socklen_t(MemoryLayout<sockaddr_in6>.size)
        }
    }

    /// Calls `body` with this address as a `sockaddr` and its length, valid during the call only: for
    /// passing it to C (`sendto`, `connect`...). Cost: a stack copy, no allocation; any thread.
    public func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        var storage = sockaddr_in6()  // room for either family
        return try withUnsafeMutableBytes(of: &storage) { bytes in
            let length = write(to: bytes.baseAddress!)
            return try body(bytes.baseAddress!.assumingMemoryBound(to: sockaddr.self), length)
        }
    }

    public static func == (lhs: SocketAddress, rhs: SocketAddress) -> Bool {
        switch (lhs.storage, rhs.storage) {
        case let (.v4(a), .v4(b)):
            return a.sin_port == b.sin_port && a.sin_addr.s_addr == b.sin_addr.s_addr
        case let (.v6(a), .v6(b)):
            return a.sin6_port == b.sin6_port && a.sin6_scope_id == b.sin6_scope_id
                && withUnsafeBytes(of: a.sin6_addr) { x in withUnsafeBytes(of: b.sin6_addr) { y in x.elementsEqual(y) } }
        default:
            return false
        }
    }

    public func hash(into hasher: inout Hasher) {
        switch storage {
        case let .v4(sin):
            hasher.combine(sin.sin_addr.s_addr)
            hasher.combine(sin.sin_port)
        case let .v6(sin6):
            withUnsafeBytes(of: sin6.sin6_addr) { hasher.combine(bytes: $0) }
            hasher.combine(sin6.sin6_port)
            hasher.combine(sin6.sin6_scope_id)
        }
    }
}

/// Text that is not an address ``SocketAddress`` accepts, with the reason.
public struct AddressError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What was given.
    public let input: String
    /// What is wrong with it.
    public let reason: String

    public var description: String { "invalid address '\(input)': \(reason)" }
}
