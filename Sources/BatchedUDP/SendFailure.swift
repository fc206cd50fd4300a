/// A datagram that was not sent, as reported to ``BatchedUDPWatcher/onError``.
public struct SendFailure: Sendable, Equatable, CustomStringConvertible {
    /// The value `enqueue` returned for it: its position among all datagrams enqueued on the watcher, from 0.
    public let sequence: Int
    /// Why: the kernel's errno, or ECANCELED (dropped by `close()`), ETIMEDOUT (left when
    /// `close(flushingWithin:)` ran out of time).
    public let errno: Errno
    /// Its destination; nil for the connected peer.
    public let destination: SocketAddress?
    /// Its payload length in bytes.
    public let length: Int

    public var description: String {
        "datagram #\(sequence) (\(length) bytes to \(destination.map(String.init(describing:)) ?? "the connected peer")) not sent: \(errno)"
    }
}
