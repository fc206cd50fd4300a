/// What a datagram carries besides its payload and destination, for ``BatchedUDPWatcher``'s `enqueue`
/// forms: the local address to send it from, the interface, and its ECN codepoint.
///
/// A server on a wildcard address (0.0.0.0, [::]) must answer from the address each request was sent
/// to, or a connected client drops the answer and an unconnected one sees it come from an address it
/// never contacted: pass the received datagram's ``ReceivedDatagram/destination`` as `source` (or use
/// ``BatchedUDPWatcher/enqueue(_:replyingTo:)``). The watcher writes it into the slot's preallocated
/// control area as an IP_PKTINFO / IPV6_PKTINFO message and the ECN as IP_TOS / IPV6_TCLASS, chosen by
/// the destination's real family (an IPv4 destination on a dual-stack socket gets the IPv4 ones).
///
/// Stored flat (no source: a zeroed sockaddr; no interface: 0; no ECN: 0xFF), so comparing two, which
/// every enqueue with metadata does against the one before, is a few word compares. An interface index of
/// 0 means "the route decides" to the kernel, so it reads back as nil.
public struct SendMetadata: Sendable, Hashable, CustomStringConvertible {
    /// The source address, family 0 (`SocketAddress.unspecified`) for none.
    private var sourceAddress: SocketAddress
    private var interface: UInt32
    private var ecnBits: UInt8

    /// The local address to send from (its port is ignored); nil lets the kernel choose by route.
    public var source: SocketAddress? {
        get { sourceAddress.isUnspecified ? nil : sourceAddress }
        set { sourceAddress = newValue ?? .unspecified }
    }
    /// The interface to send on (`if_nametoindex`); nil (or 0) lets the route decide.
    public var interfaceIndex: UInt32? {
        get { interface == 0 ? nil : interface }
        set { interface = newValue ?? 0 }
    }
    /// The ECN codepoint to mark the datagram with; nil sends the socket's default (not-ECT).
    public var ecn: ECN? {
        get { ECN(rawValue: ecnBits) }
        set { ecnBits = newValue?.rawValue ?? 0xFF }
    }

    /// Metadata asking for what is given; nil fields leave the choice to the kernel. Cost: none (a value).
    public init(source: SocketAddress? = nil, interfaceIndex: UInt32? = nil, ecn: ECN? = nil) {
        sourceAddress = source ?? .unspecified
        interface = interfaceIndex ?? 0
        ecnBits = ecn?.rawValue ?? 0xFF
    }

    /// Equal source, interface and ECN codepoint. Cost: a few word compares.
    @inline(__always)
    public static func == (lhs: SendMetadata, rhs: SendMetadata) -> Bool {
        lhs.interface == rhs.interface && lhs.ecnBits == rhs.ecnBits && lhs.sourceAddress == rhs.sourceAddress
    }

    /// Whether it asks for nothing.
    var isEmpty: Bool { sourceAddress.isUnspecified && interface == 0 && ecnBits == 0xFF }

    public var description: String {
        var parts: [String] = []
        if let source { parts.append("from \(source.host)") }
        if let interfaceIndex { parts.append("interface \(interfaceIndex)") }
        if let ecn { parts.append("ECN \(ecn)") }
        return parts.isEmpty ? "no metadata" : parts.joined(separator: ", ")
    }
}
