/// An error the kernel reported for a ``BatchedUDPWatcher``'s socket rather than for the datagram being
/// sent, as given to ``BatchedUDPWatcher/onSocketProblem``. No datagram is failed for it.
public enum SocketProblem: Sendable, Equatable, CustomStringConvertible {
    /// A send met the socket's pending error (`SO_ERROR`, which that send cleared): the kernel received an
    /// ICMP error for an *earlier* datagram (port or host unreachable, fragmentation needed) on a
    /// connected socket, or on any socket with ``UDPSocket/setReceivesErrors(_:)`` on. `sendmmsg` returns
    /// it whatever the call carries, so the datagram that met it was sent again, and went out.
    case pendingError(Errno)
    /// An entry of the socket's error queue (``UDPSocket/setReceivesErrors(_:)`` on): an earlier datagram
    /// to `destination` failed with this errno. The watcher reads the queue only while no reading
    /// ``BatchedUDPReader`` shares its ``UDPSocket``; otherwise the reader reports each entry as
    /// ``ReceiveProblem/deliveryError(_:destination:)``.
    case deliveryError(Errno, destination: SocketAddress?)

    public var description: String {
        switch self {
        case let .pendingError(errno):
            return "the socket reported an error for an earlier datagram: \(errno)"
        case let .deliveryError(errno, destination):
            return "a datagram to \(destination.map(String.init(describing:)) ?? "?") failed: \(errno)"
        }
    }
}
