public import CUDPShims

/// The datagrams one `recvmmsg` call delivered, in arrival order, as ``BatchedUDPReader`` hands them to
/// its handler (datagrams the kernel merged with GRO are split back into separate elements).
///
/// A view into the reader's preallocated slots: valid only during the handler call (copy what you keep).
/// Truncated datagrams are not in it; they go to ``BatchedUDPReader/onProblem``.
public struct ReceivedBatch: RandomAccessCollection {
    @usableFromInline let slots: ReceiveSlots
    public let count: Int

    /// 0.
    public var startIndex: Int { 0 }
    /// ``count``.
    public var endIndex: Int { count }

    /// The datagram at `position` (0..<count). Cost: a few loads; nothing is decoded until it is read
    /// (the sender from the slot's sockaddr, metadata from its parsed control messages).
    @inlinable
    public subscript(position: Int) -> ReceivedDatagram {
        precondition(position >= 0 && position < count, "ReceivedBatch index \(position) out of 0..<\(count)")
        let piece = slots.pieces[position]
        let slot = Int(piece.slot)
        return ReceivedDatagram(
            payload: UnsafeRawBufferPointer(start: slots.payload + (slot &* slots.slotSize &+ Int(piece.offset)), count: Int(piece.length)),
            senderAddress: UnsafeRawPointer(slots.addresses + slot), senderLength: slots.messages[slot].msg_hdr.msg_namelen,
            metadata: slots.parsed.map { UnsafePointer($0 + slot) }, localPort: slots.localPort)
    }
}

/// One received datagram: its bytes, who sent it, and the metadata the reader was configured to ask for
/// (``BatchedUDPReader/Configuration/metadata``).
///
/// A view into the reader's slots, like its payload: valid only during the handler call. Each property
/// is decoded when it is read (a sender address takes a few dozen instructions), so a handler pays only
/// for what it looks at; copy out the values you keep.
public struct ReceivedDatagram {
    /// The payload, in the reader's slot.
    public let payload: UnsafeRawBufferPointer
    @usableFromInline let senderAddress: UnsafeRawPointer
    @usableFromInline let senderLength: socklen_t
    @usableFromInline let metadata: UnsafePointer<cudp_received_metadata>?
    @usableFromInline let localPort: UInt16

    @usableFromInline
    init(payload: UnsafeRawBufferPointer, senderAddress: UnsafeRawPointer, senderLength: socklen_t,
         metadata: UnsafePointer<cudp_received_metadata>?, localPort: UInt16) {
        self.payload = payload
        self.senderAddress = senderAddress
        self.senderLength = senderLength
        self.metadata = metadata
        self.localPort = localPort
    }

    /// The sender; nil only for address families other than IPv4/IPv6.
    public var sender: SocketAddress? { SocketAddress(senderAddress, length: senderLength) }
    /// The local address and port the datagram was sent to (``BatchedUDPReader/Metadata/destination``):
    /// on a socket bound to a wildcard address, which of the host's addresses the sender contacted. An
    /// IPv4 datagram on a dual-stack IPv6 socket is reported as IPv4. nil when not asked for.
    public var destination: SocketAddress? { metadata.flatMap { ReceiveSlots.destination($0, port: localPort) } }
    /// The interface it arrived on (``BatchedUDPReader/Metadata/destination``); nil when not asked for.
    public var interfaceIndex: UInt32? { metadata.flatMap(ReceiveSlots.interfaceIndex) }
    /// Its ECN codepoint (``BatchedUDPReader/Metadata/ecn``); nil when not asked for.
    public var ecn: ECN? { metadata.flatMap(ReceiveSlots.ecn) }
    /// When the kernel received it (``BatchedUDPReader/Metadata/receiveTime``), as time since the Unix
    /// epoch on the realtime clock (SO_TIMESTAMPNS); nil when not asked for.
    public var receiveTime: Duration? { metadata.flatMap(ReceiveSlots.receiveTime) }
    /// The address to answer from: the destination, or for an IPv4 broadcast or multicast destination
    /// the local address the kernel would answer from; nil for IPv6 multicast or when not asked for.
    var replySource: SocketAddress? { metadata.flatMap(ReceiveSlots.replySource) }

    /// The metadata that answers this datagram from the address it arrived on (nil when the reader
    /// does not report destinations): pass it to ``BatchedUDPWatcher``'s `enqueue` forms, or use
    /// ``BatchedUDPWatcher/enqueue(_:replyingTo:)``.
    public var replyMetadata: SendMetadata? { replySource.map { SendMetadata(source: $0) } }
}

/// Something a ``BatchedUDPReader`` could not deliver.
public enum ReceiveProblem: Sendable, Equatable, CustomStringConvertible {
    /// A datagram longer than the slot (`maxDatagramSize`): counted and dropped, never delivered cut short.
    case truncated(sender: SocketAddress?, size: Int, limit: Int)
    /// `recvmmsg` failed with this errno (ECONNREFUSED is an ICMP error queued on a connected socket;
    /// reading goes on).
    case error(Errno)
    /// An earlier datagram to `destination` failed with this errno (an ICMP unreachable, for example), as
    /// the socket's error queue said. Only with ``UDPSocket/setReceivesErrors(_:)`` on.
    case deliveryError(Errno, destination: SocketAddress?)
    /// The kernel had more control messages for a datagram than the reader's buffer holds (MSG_CTRUNC):
    /// its metadata may be incomplete. With GRO on it is `dropped` (a lost segment size would deliver
    /// merged datagrams as one); otherwise it is delivered with what metadata arrived. Expect it when
    /// something else enabled control messages on the socket (SO_TIMESTAMP, IP_RECVTTL...).
    case controlTruncated(sender: SocketAddress?, size: Int, dropped: Bool)

    public var description: String {
        switch self {
        case let .truncated(sender, size, limit):
            return "dropped a \(size)-byte datagram from \(sender.map(String.init(describing:)) ?? "?"): larger than the \(limit)-byte slot"
        case let .error(errno):
            return "recvmmsg failed: \(errno)"
        case let .deliveryError(errno, destination):
            return "a datagram to \(destination.map(String.init(describing:)) ?? "?") failed: \(errno)"
        case let .controlTruncated(sender, size, dropped):
            return "the control messages of a \(size)-byte datagram from \(sender.map(String.init(describing:)) ?? "?") were truncated (MSG_CTRUNC)"
                + (dropped ? "; dropped: with GRO its segment size may be lost" : "; delivered with what metadata arrived")
        }
    }
}

/// What a ``BatchedUDPReader`` has received since creation.
public struct ReceiveCounters: Sendable, Equatable, CustomStringConvertible {
    /// Datagrams delivered to the handler.
    public internal(set) var datagrams = 0
    /// Payload bytes delivered to the handler.
    public internal(set) var bytes = 0
    /// `recvmmsg` calls (EINTR retries not counted).
    public internal(set) var recvmmsgCalls = 0
    /// Datagrams dropped because they were larger than the slot.
    public internal(set) var truncated = 0
    /// `recvmmsg` calls that failed with something other than EAGAIN.
    public internal(set) var errors = 0
    /// Receives that carried several datagrams merged by the kernel (GRO), split back for the handler.
    public internal(set) var mergedReceives = 0
    /// Entries read from the socket's error queue (``ReceiveProblem/deliveryError(_:destination:)``).
    public internal(set) var deliveryErrors = 0
    /// Receives whose control messages were truncated (``ReceiveProblem/controlTruncated(sender:size:dropped:)``).
    public internal(set) var controlTruncated = 0

    /// All zero.
    public init() {}

    public var description: String {
        "datagrams \(datagrams) bytes \(bytes) calls \(recvmmsgCalls) truncated \(truncated) errors \(errors) delivery errors \(deliveryErrors) control truncated \(controlTruncated)"
    }
}
