/// The datagrams one `recvmmsg` call delivered, in arrival order, as ``BatchedUDPReader`` hands them to
/// its handler (datagrams the kernel merged with GRO are split back into separate elements).
///
/// A view into the reader's preallocated slots: valid only during the handler call (copy what you keep).
/// Truncated datagrams are not in it; they go to ``BatchedUDPReader/onProblem``.
public struct ReceivedBatch: RandomAccessCollection {
    let slots: ReceiveSlots
    public let count: Int

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    /// The datagram at `position` (0..<count). Cost: no copy; the sender is decoded from its sockaddr.
    public subscript(position: Int) -> ReceivedDatagram {
        precondition(position >= 0 && position < count, "ReceivedBatch index \(position) out of 0..<\(count)")
        let piece = slots.piece(position)
        return ReceivedDatagram(payload: slots.payload(of: piece), sender: slots.sender(Int(piece.slot)))
    }
}

/// One received datagram: its bytes (valid during the handler call only) and who sent it.
public struct ReceivedDatagram {
    /// The payload, in the reader's slot.
    public let payload: UnsafeRawBufferPointer
    /// The sender; nil only for address families other than IPv4/IPv6.
    public let sender: SocketAddress?
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

    public var description: String {
        switch self {
        case let .truncated(sender, size, limit):
            return "dropped a \(size)-byte datagram from \(sender.map(String.init(describing:)) ?? "?"): larger than the \(limit)-byte slot"
        case let .error(errno):
            return "recvmmsg failed: \(errno)"
        case let .deliveryError(errno, destination):
            return "a datagram to \(destination.map(String.init(describing:)) ?? "?") failed: \(errno)"
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

    public init() {}

    public var description: String {
        "datagrams \(datagrams) bytes \(bytes) calls \(recvmmsgCalls) truncated \(truncated) errors \(errors) delivery errors \(deliveryErrors)"
    }
}
