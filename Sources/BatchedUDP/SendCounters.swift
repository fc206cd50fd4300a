/// What a ``BatchedUDPWatcher`` has done, since creation. Always `enqueued == sent + failed + queued`.
public struct SendCounters: Sendable, Equatable, CustomStringConvertible {
    /// Datagrams accepted by `enqueue`.
    public internal(set) var enqueued = 0
    /// Datagrams the kernel accepted.
    public internal(set) var sent = 0
    /// Payload bytes the kernel accepted.
    public internal(set) var sentBytes = 0
    /// Datagrams reported to the error callback (kernel errors, and those dropped by `close`).
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
    /// GSO sends the kernel refused, whose datagrams were then re-sent one by one in the same drain:
    /// EIO or EINVAL turn segmentation off for the watcher; EMSGSIZE (segments over the path MTU) stops
    /// coalescing datagrams of that size or larger.
    public internal(set) var segmentationFallbacks = 0
    /// Entries read (and discarded) from the socket's error queue (IP_RECVERR) when a write wakeup found
    /// the socket full: epoll reports EPOLLERR while they wait, which would wake the write watcher at once.
    /// A ``BatchedUDPReader`` on the socket reports such entries with their destination instead.
    public internal(set) var deliveryErrors = 0

    public init() {}

    public var description: String {
        "enqueued \(enqueued) sent \(sent) failed \(failed) queued \(queued) rejected \(rejected) "
            + "calls \(sendmmsgCalls) short \(shortCounts) eagain \(eagain) enobufs \(noBuffers) gso \(gsoSends) backoffs \(backoffs) delivery errors \(deliveryErrors)"
    }
}
