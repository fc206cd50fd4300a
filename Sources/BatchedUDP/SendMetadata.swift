/// What a datagram carries besides its payload and destination, for ``BatchedUDPWatcher``'s `enqueue`
/// forms: the local address to send it from, the interface, and its ECN codepoint.
///
/// A server on a wildcard address (0.0.0.0, [::]) must answer from the address each request was sent
/// to, or a connected client drops the answer and an unconnected one sees it come from an address it
/// never contacted: pass the received datagram's ``ReceivedDatagram/destination`` as `source` (or use
/// ``BatchedUDPWatcher/enqueue(_:replyingTo:)``). The watcher writes it into the slot's preallocated
/// control area as an IP_PKTINFO / IPV6_PKTINFO message and the ECN as IP_TOS / IPV6_TCLASS, chosen by
/// the destination's real family (an IPv4 destination on a dual-stack socket gets the IPv4 ones).
public struct SendMetadata: Sendable, Hashable, CustomStringConvertible {
    /// The local address to send from (its port is ignored); nil lets the kernel choose by route.
    public var source: SocketAddress?
    /// The interface to send on (`if_nametoindex`); nil lets the route decide.
    public var interfaceIndex: UInt32?
    /// The ECN codepoint to mark the datagram with; nil sends the socket's default (not-ECT).
    public var ecn: ECN?

    /// Metadata asking for what is given; nil fields leave the choice to the kernel. Cost: none (a value).
    public init(source: SocketAddress? = nil, interfaceIndex: UInt32? = nil, ecn: ECN? = nil) {
        self.source = source
        self.interfaceIndex = interfaceIndex
        self.ecn = ecn
    }

    /// Whether it asks for nothing.
    var isEmpty: Bool { source == nil && interfaceIndex == nil && ecn == nil }

    public var description: String {
        var parts: [String] = []
        if let source { parts.append("from \(source.host)") }
        if let interfaceIndex { parts.append("interface \(interfaceIndex)") }
        if let ecn { parts.append("ECN \(ecn)") }
        return parts.isEmpty ? "no metadata" : parts.joined(separator: ", ")
    }
}
