/// What a ``BatchedUDPWatcher`` has done, since creation. Always `enqueued == sent + failed + queued`.
public struct SendCounters: Sendable, Equatable, CustomStringConvertible {
    /// Datagrams accepted by `enqueue`.
    public internal(set) var enqueued = 0
    /// Datagrams the kernel accepted.
    public internal(set) var sent = 0
    /// Payload bytes the kernel accepted.
    public internal(set) var sentBytes = 0
    /// Datagrams reported to the error callback (kernel errors, ENOBUFS past `noBufferTimeout`, and those
    /// dropped by `close`).
    public internal(set) var failed = 0
    /// `failed`, by errno.
    public internal(set) var failedByErrno: [Errno: Int] = [:]
    /// Enqueues refused because the ring was full (`queueFull`); these never entered the ring.
    public internal(set) var rejected = 0
    /// Datagrams queued now.
    public internal(set) var queued = 0
    /// Payload bytes queued now.
    public internal(set) var queuedBytes = 0
    /// Most datagrams queued at once.
    public internal(set) var peakQueued = 0
    /// Most payload bytes queued at once.
    public internal(set) var peakQueuedBytes = 0
    /// `sendmmsg` calls made (EINTR retries not counted).
    public internal(set) var sendmmsgCalls = 0
    /// Calls that sent fewer datagrams than they were given.
    public internal(set) var shortCounts = 0
    /// Calls that failed with EAGAIN (send buffer full): each arms the write watcher.
    public internal(set) var eagain = 0
    /// Calls that failed with ENOBUFS.
    public internal(set) var noBuffers = 0
    /// Times the watcher backed off on a timer after repeated ENOBUFS.
    public internal(set) var backoffs = 0
    /// Super-datagrams (GSO, several datagrams in one message) the kernel accepted.
    public internal(set) var gsoSends = 0
    /// Super-datagrams the kernel refused, whose datagrams were then sent again one by one in the same
    /// drain (each reported only if the kernel refused it alone too). After EMSGSIZE (segments over the
    /// path MTU) the destination's segment limit is lowered; after EIO or EINVAL with the datagrams then
    /// accepted alone, the destination gets no super-datagrams for a while (``BatchedUDPWatcher``
    /// remembers up to 32 destinations, for 60 s each).
    public internal(set) var segmentationFallbacks = 0
    /// Times segmentation was turned off for the socket (0 or 1): three super-datagrams in a row (with
    /// none accepted in between) were refused with EIO or EINVAL while the same datagrams went out one by
    /// one. A refused destination gets no super-datagrams for 60 s, so the three are usually to three
    /// destinations.
    public internal(set) var segmentationDisabled = 0
    /// Times the kernel refused a datagram's ECN control message (EIO or EINVAL) and took the datagram
    /// without it; ECN is then no longer sent on the socket (0 or 1; ``BatchedUDPWatcher/isSendingECN``).
    public internal(set) var ecnFallbacks = 0
    /// Pending socket errors (`SO_ERROR`: an ICMP error for an earlier datagram) that a send met and
    /// cleared. Each was reported once as ``SocketProblem/pendingError(_:)``; the datagram that met it was
    /// sent again, not failed.
    public internal(set) var pendingErrors = 0
    /// Entries the watcher read from the socket's error queue (IP_RECVERR), each reported once as
    /// ``SocketProblem/deliveryError(_:destination:)``. It reads them when a write wakeup finds the socket
    /// full with entries waiting (epoll reports EPOLLERR for them and would wake it again at once), and
    /// only while no reading ``BatchedUDPReader`` shares its ``UDPSocket``: the reader then reads and
    /// reports them (``ReceiveCounters/deliveryErrors``), and this stays 0.
    public internal(set) var deliveryErrors = 0

    /// All zero.
    public init() {}

    public var description: String {
        "enqueued \(enqueued) sent \(sent) failed \(failed) queued \(queued) rejected \(rejected) "
            + "calls \(sendmmsgCalls) short \(shortCounts) eagain \(eagain) enobufs \(noBuffers) gso \(gsoSends) gso fallbacks \(segmentationFallbacks) backoffs \(backoffs) "
            + "pending errors \(pendingErrors) delivery errors \(deliveryErrors)"
    }
}
