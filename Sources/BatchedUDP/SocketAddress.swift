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

    /// The sockaddr as the kernel takes it, in one flat value: a `sockaddr_in6` for IPv6, or a
    /// `sockaddr_in` in its first 16 bytes for IPv4 (the IPv4 address where IPv6 has its flow label).
    /// Every byte an address does not use is zero, so comparing is a few word compares, and writing it
    /// into a message header one 28-byte store.
    var raw: sockaddr_in6

    /// Wraps a `sockaddr_in`: its family, port and address where they lie in a `sockaddr_in6`, every
    /// other byte zero (whatever `sin_zero` held).
    @inline(__always)
    init(_ sin: sockaddr_in) {
        raw = sockaddr_in6()
        raw.sin6_family = sin.sin_family
        raw.sin6_port = sin.sin_port
        raw.sin6_flowinfo = sin.sin_addr.s_addr
    }

    /// Wraps a `sockaddr_in6`.
    init(_ sin6: sockaddr_in6) { raw = sin6 }

    /// All zero, family 0: "no address", where an optional would cost every comparison a tag check. Never
    /// handed to a user.
    static var unspecified: SocketAddress { SocketAddress(sockaddr_in6()) }

    /// Whether this is ``unspecified``.
    var isUnspecified: Bool { raw.sin6_family == 0 }

    /// An IPv4 address from its four bytes, `a.b.c.d`, in network order.
    public init(ipv4 a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8, port: UInt16) {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = (UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)).bigEndian
        self.init(sin)
    }

    /// `127.0.0.1:port`.
    public static func loopbackIPv4(port: UInt16) -> SocketAddress { SocketAddress(ipv4: 127, 0, 0, 1, port: port) }

    /// `[::1]:port`.
    public static func loopbackIPv6(port: UInt16) -> SocketAddress {
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        sin6.sin6_addr = in6addr_loopback
        return SocketAddress(sin6)
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
        self.init(sin)
    }

    private init(ipv6 host: String, port: UInt16, input: String) throws(AddressError) {
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        guard inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1 else {
            throw AddressError(input: input, reason: "'\(host)' is not an IPv6 address")
        }
        self.init(sin6)
    }

    /// Reads a `sockaddr` filled by the kernel or C code (`recvfrom`, `getsockname`...), for interop.
    /// Returns nil for families other than IPv4 and IPv6, or a `length` too short for the family. Reads
    /// at most `length` bytes, at any alignment.
    /// Cost: a copy of at most 28 bytes; any thread.
    public init?(_ address: UnsafeRawPointer, length: socklen_t) {
        guard length >= MemoryLayout<sa_family_t>.size else { return nil }
        switch Int32(address.loadUnaligned(as: sa_family_t.self)) {
        case AF_INET where length >= MemoryLayout<sockaddr_in>.size:
            self.init(address.loadUnaligned(as: sockaddr_in.self))
        case AF_INET6 where length >= MemoryLayout<sockaddr_in6>.size:
            self.init(address.loadUnaligned(as: sockaddr_in6.self))
        default:
            return nil
        }
    }

    /// The address family.
    public var family: Family { Int32(raw.sin6_family) == AF_INET ? .ipv4 : .ipv6 }

    /// The port, in host byte order (at the same offset in both families).
    public var port: UInt16 { UInt16(bigEndian: raw.sin6_port) }

    /// The same address with another port.
    public func withPort(_ port: UInt16) -> SocketAddress {
        var copy = self
        copy.raw.sin6_port = port.bigEndian
        return copy
    }

    /// The IPv4 address, in network order, where an IPv4 address keeps it (`sin_addr`).
    private var ipv4Bits: UInt32 { raw.sin6_flowinfo }

    /// Whether the host is the wildcard address (0.0.0.0 or ::): a socket bound to it receives datagrams
    /// sent to any of the host's addresses, and must answer each from the one it was sent to
    /// (``BatchedUDPReader/Metadata/destination``, ``ReceivedDatagram/replyMetadata``).
    public var isWildcard: Bool {
        if family == .ipv4 { return ipv4Bits == 0 }
        return withUnsafeBytes(of: raw.sin6_addr) { $0.allSatisfy { $0 == 0 } }
    }

    /// The host part as text: `127.0.0.1` or `::1`.
    public var host: String {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(INET6_ADDRSTRLEN)) { buffer in
            withRawAddress { bytes in
                _ = inet_ntop(family.rawValue, bytes.baseAddress, buffer.baseAddress, socklen_t(buffer.count))
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
        guard family == .ipv4 else { return self }
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = raw.sin6_port
        let v4 = ipv4Bits
        withUnsafeMutableBytes(of: &sin6.sin6_addr) { bytes in
            bytes[10] = 0xff
            bytes[11] = 0xff
            bytes.storeBytes(of: v4, toByteOffset: 12, as: UInt32.self)
        }
        return SocketAddress(sin6)
    }

    /// Whether this is an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`): two word compares.
    private var isIPv4Mapped: Bool {
        family == .ipv6 && withUnsafeBytes(of: raw.sin6_addr) {
            $0.loadUnaligned(as: UInt64.self) == 0 && $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self) == UInt32(0xFFFF_0000).littleEndian
        }
    }

    /// The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), with the same port; nil
    /// for any other address.
    var ipv4Unmapped: SocketAddress? {
        guard isIPv4Mapped else { return nil }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = raw.sin6_port
        sin.sin_addr.s_addr = withUnsafeBytes(of: raw.sin6_addr) { $0.loadUnaligned(fromByteOffset: 12, as: UInt32.self) }
        return SocketAddress(sin)
    }

    /// Whether a datagram to this address travels as IPv4 (an IPv4 address, or an IPv4-mapped IPv6 one).
    var isIPv4OnTheWire: Bool { family == .ipv4 || isIPv4Mapped }

    /// The address from the 4 (`ipv4`) or 16 bytes at `bytes`, in network order, as control messages
    /// carry them, at any alignment: a load or two.
    @inline(__always)
    init(rawAddress bytes: UnsafeRawPointer, ipv4: Bool, port: UInt16) {
        if ipv4 {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr.s_addr = bytes.loadUnaligned(as: UInt32.self)
            self.init(sin)
        } else {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            sin6.sin6_addr = bytes.loadUnaligned(as: in6_addr.self)
            self.init(sin6)
        }
    }

    /// Calls `body` with the address part alone, 4 or 16 bytes in network order.
    func withRawAddress<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        if family == .ipv4 { return withUnsafeBytes(of: raw.sin6_flowinfo) { body($0) } }
        return withUnsafeBytes(of: raw.sin6_addr) { body($0) }
    }

    /// The length of the sockaddr: 16 bytes for IPv4, 28 for IPv6.
    var length: socklen_t {
        socklen_t(family == .ipv4 ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
    }

    /// Writes the sockaddr into `target` (room for a `sockaddr_in6`: all 28 bytes are written, whatever
    /// the family) and returns its length.
    @inline(__always)
    func write(to target: UnsafeMutableRawPointer) -> socklen_t {
        target.storeBytes(of: raw, as: sockaddr_in6.self)
        return length
    }

    /// Calls `body` with this address as a `sockaddr` and its length, valid during the call only: for
    /// passing it to C (`sendto`, `connect`...). Cost: a stack copy, no allocation; any thread.
    public func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        var storage = raw
        return try withUnsafeMutableBytes(of: &storage) { bytes in
            try body(bytes.baseAddress!.assumingMemoryBound(to: sockaddr.self), length)
        }
    }

    /// The sockaddr's 28 bytes as three words and a half, with the IPv6 flow label (which names a flow,
    /// not an endpoint) masked out: what equality and hashing compare.
    private var words: (UInt64, UInt64, UInt64, UInt32) {
        withUnsafeBytes(of: raw) { bytes in
            var first = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
            if family == .ipv6 { first &= 0xFFFF_FFFF }  // family and port; sin6_flowinfo is bytes 4..<8
            return (first, bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                    bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self), bytes.loadUnaligned(fromByteOffset: 24, as: UInt32.self))
        }
    }

    /// Equal family, port and address (and IPv6 scope); the IPv6 flow label is not compared. Cost: four
    /// word compares.
    @inline(__always)
    public static func == (lhs: SocketAddress, rhs: SocketAddress) -> Bool {
        let (a, b) = (lhs.words, rhs.words)
        return a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && a.3 == b.3
    }

    public func hash(into hasher: inout Hasher) {
        let words = self.words
        hasher.combine(words.0)
        hasher.combine(words.1)
        hasher.combine(words.2)
        hasher.combine(words.3)
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
