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
    /// The metadata it was enqueued with (source address, interface, ECN); nil when none. An ECN the
    /// kernel refused and the watcher dropped is not in it.
    public let metadata: SendMetadata?

    init(sequence: Int, errno: Errno, destination: SocketAddress?, length: Int, metadata: SendMetadata? = nil) {
        self.sequence = sequence
        self.errno = errno
        self.destination = destination
        self.length = length
        self.metadata = metadata
    }

    public var description: String {
        "datagram #\(sequence) (\(length) bytes to \(destination.map(String.init(describing:)) ?? "the connected peer")"
            + (metadata.map { ", \($0)" } ?? "") + ") not sent: \(errno)"
    }
}
