/// Why a ``BatchedUDPWatcher`` refused a datagram or could not be created. When `enqueue` throws, nothing
/// was queued and the caller still holds the datagram.
public enum BatchedUDPError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The ring holds `capacity` datagrams or `byteCapacity` bytes; wait for ``BatchedUDPWatcher/onWritabilityChanged``.
    case queueFull(capacity: Int, byteCapacity: Int)
    /// The datagram is longer than a slot (`maxDatagramSize`) or than UDP allows for the family.
    case messageTooLarge(size: Int, limit: Int)
    /// The destination's family cannot be reached from this socket (IPv6 on an IPv4 socket, IPv4 on an
    /// IPV6_V6ONLY socket).
    case addressFamilyMismatch(destination: SocketAddress, socket: SocketAddress.Family)
    /// The socket is not connected, so every datagram needs a destination.
    case destinationRequired
    /// ``SendMetadata/source`` is not of the destination's family (an IPv6 source for an IPv4
    /// destination, or the other way round); `destination` is nil for the connected peer.
    case sourceFamilyMismatch(source: SocketAddress, destination: SocketAddress?)
    /// The watcher is closed or closing.
    case closed
    /// A configuration field is out of range; the text names it.
    case invalidConfiguration(String)
    /// The socket could not be registered (closed descriptor, wrong type, fcntl failure).
    case socket(SocketError)

    public var description: String {
        switch self {
        case let .queueFull(capacity, bytes):
            return "queue full (\(capacity) datagrams or \(bytes) bytes); nothing was queued, retry after onWritabilityChanged(true)"
        case let .messageTooLarge(size, limit):
            return "datagram of \(size) bytes exceeds the limit of \(limit) bytes (slot size or UDP maximum)"
        case let .addressFamilyMismatch(destination, family):
            return "cannot send to \(destination) from an \(family) socket"
        case let .sourceFamilyMismatch(source, destination):
            return "cannot send from \(source.host) to \(destination.map(String.init(describing:)) ?? "the connected peer"): the source must be of the destination's family"
        case .destinationRequired:
            return "the socket is not connected: give each datagram a destination, or connect the socket before registering it"
        case .closed:
            return "the watcher is closed"
        case let .invalidConfiguration(problem):
            return "invalid BatchedUDPWatcher configuration: \(problem)"
        case let .socket(error):
            return "cannot register the socket: \(error)"
        }
    }
}
