extension BatchedUDPWatcher {
    /// Sizes and policies of a ``BatchedUDPWatcher``, fixed at creation.
    ///
    /// Memory allocated once: `capacity × maxDatagramSize` payload bytes plus about 220 bytes of
    /// bookkeeping per slot (defaults: 1,024 × 2,048 B ≈ 2 MiB + 220 KiB). Values whose memory would
    /// exceed 16 GiB (or overflow) are refused with ``BatchedUDPError/invalidConfiguration(_:)``.
    public struct Configuration: Sendable, Equatable {
        /// Datagrams the ring holds at once. Default 1,024.
        public var capacity = 1024
        /// Largest datagram accepted, in bytes: the size of each slot. Default 2,048 (enough for
        /// 1,500-byte MTU traffic, DNS and QUIC). At most 65,527 (IPv6; 65,507 on IPv4).
        public var maxDatagramSize = 2048
        /// Payload bytes queued at once; nil means `capacity × maxDatagramSize`.
        public var byteCapacity: Int? = nil
        /// Datagrams per `sendmmsg` call, 1...1024 (the kernel's UIO_MAXIOV). Default 1,024.
        public var batchSize = 1024
        /// `sendmmsg` calls one drain may make before it yields to the loop's other watchers. Default 16.
        public var maxCallsPerDrain = 16
        /// Occupancy at which ``BatchedUDPWatcher/isWritable`` turns false: the first of messages or bytes
        /// reached. nil means full (`capacity` messages, `byteCapacity` bytes).
        public var highWaterMark: WaterMark? = nil
        /// Occupancy at or below which ``BatchedUDPWatcher/isWritable`` turns true again (both must hold).
        /// nil means half of the high mark.
        public var lowWaterMark: WaterMark? = nil
        /// Immediate retries after ENOBUFS within one drain before backing off. Default 2.
        public var noBufferRetries = 2
        /// Seconds to wait after repeated ENOBUFS before trying again. Default 0.005.
        public var noBufferBackoff = 0.005
        /// Seconds the watcher keeps backing off after ENOBUFS while not one datagram goes out; then it
        /// reports every queued datagram with ENOBUFS (a path that takes nothing, such as an interface
        /// that is down, with IP_RECVERR on), so neither the queue nor the loop waits forever. nil retries
        /// for as long as it takes. Default 5.
        public var noBufferTimeout: Double? = 5
        /// Whether queued datagrams keep the loop running (`ev_ref`) until they are sent or reported.
        /// Set it to false for a watcher on a host's loop that must be able to finish while datagrams wait:
        /// they then go out only while something else keeps the loop running, and `close()` reports them.
        /// The watcher keeps itself alive while it holds datagrams either way. Default true.
        public var keepsLoopAlive = true
        /// Whether runs of queued datagrams are sent as UDP GSO super-datagrams. Default `.automatic`.
        public var segmentation = Segmentation.automatic

        /// UDP generic segmentation offload (GSO, `UDP_SEGMENT`, Linux 4.18+).
        public enum Segmentation: Sendable, Equatable {
            /// Where the kernel supports it (probed once per socket): at each drain, consecutive queued
            /// datagrams to the same destination with equal sizes (the last may be shorter, none may be
            /// empty), of at most 1,472 bytes (1,452 on IPv6) each, up to 64 of them and 65,507 bytes
            /// (65,527 IPv6-only) in all, go to the kernel as one super-datagram that it splits back into
            /// those datagrams. Receivers see the same datagrams; the sender saves most of the
            /// per-datagram kernel work.
            ///
            /// A refusal is taken as being about that run's path, not the socket: the same datagrams are
            /// sent again one by one in the same drain, and only those the kernel refuses then are
            /// reported. EMSGSIZE (segments over the path MTU) lowers that destination's segment limit;
            /// EIO or EINVAL with the datagrams then accepted alone (a route or device that cannot
            /// segment) stops super-datagrams to that destination. Such limits are kept for up to 32
            /// destinations and expire after 60 s. Only when three refusals in a row, with no
            /// super-datagram accepted in between, are followed by accepted single sends is segmentation
            /// turned off for the socket (``SendCounters/segmentationDisabled``).
            case automatic
            /// One datagram per `sendmmsg` message, always.
            case off
        }

        /// The defaults above.
        public init() {}

        /// Queue occupancy, in datagrams and payload bytes.
        public struct WaterMark: Sendable, Equatable {
            /// Datagrams queued.
            public var messages: Int
            /// Payload bytes queued.
            public var bytes: Int
            /// A mark at `messages` datagrams or `bytes` payload bytes, whichever is reached first (going
            /// up; going down, both must be at or below it).
            public init(messages: Int, bytes: Int) {
                self.messages = messages
                self.bytes = bytes
            }
        }

        /// Most slots a ring may have (16 Mi), and most memory it may take: checked before anything is
        /// computed from them, so no size can overflow.
        static let maxCapacity = 1 << 24
        static let maxMemory = 1 << 34
        /// Bookkeeping per slot besides the payload: sockaddr_storage, iovec, mmsghdr (≈ 220 bytes).
        static let bytesPerSlot = 256

        var resolvedByteCapacity: Int { byteCapacity ?? capacity * maxDatagramSize }
        var resolvedHighWaterMark: WaterMark { highWaterMark ?? WaterMark(messages: capacity, bytes: resolvedByteCapacity) }
        var resolvedLowWaterMark: WaterMark {
            lowWaterMark ?? WaterMark(messages: resolvedHighWaterMark.messages / 2, bytes: resolvedHighWaterMark.bytes / 2)
        }

        /// Checks every field and says which one is wrong.
        func validate() throws(BatchedUDPError) {
            func check(_ ok: Bool, _ problem: @autoclosure () -> String) throws(BatchedUDPError) {
                if !ok { throw .invalidConfiguration(problem()) }
            }
            try check((1...Configuration.maxCapacity).contains(capacity),
                      "capacity must be 1...\(Configuration.maxCapacity), got \(capacity)")
            try check((0...65_527).contains(maxDatagramSize), "maxDatagramSize must be 0...65527, got \(maxDatagramSize)")
            // Both factors are bounded now, so the product cannot overflow.
            try check(capacity * (maxDatagramSize + Configuration.bytesPerSlot) <= Configuration.maxMemory,
                      "capacity × (maxDatagramSize + \(Configuration.bytesPerSlot) bytes of bookkeeping) must stay under 16 GiB, got \(capacity) × \(maxDatagramSize)")
            try check(byteCapacity.map { $0 >= 0 } ?? true, "byteCapacity must not be negative, got \(byteCapacity ?? 0)")
            try check((1...1024).contains(batchSize), "batchSize must be 1...1024 (UIO_MAXIOV), got \(batchSize)")
            try check(maxCallsPerDrain >= 1, "maxCallsPerDrain must be at least 1, got \(maxCallsPerDrain)")
            try check(noBufferRetries >= 0, "noBufferRetries must not be negative, got \(noBufferRetries)")
            try check(noBufferBackoff.isFinite && noBufferBackoff > 0, "noBufferBackoff must be a positive number of seconds, got \(noBufferBackoff)")
            try check(noBufferTimeout.map { $0.isFinite && $0 >= 0 } ?? true,
                      "noBufferTimeout must be nil or a number of seconds ≥ 0, got \(noBufferTimeout ?? 0)")
            let high = resolvedHighWaterMark
            let low = resolvedLowWaterMark
            try check(high.messages >= 1 && high.bytes >= 0, "highWaterMark must be at least 1 message")
            try check(low.messages >= 0 && low.bytes >= 0 && low.messages <= high.messages && low.bytes <= high.bytes,
                      "lowWaterMark (\(low.messages) messages, \(low.bytes) bytes) must not exceed highWaterMark (\(high.messages), \(high.bytes))")
        }
    }
}
