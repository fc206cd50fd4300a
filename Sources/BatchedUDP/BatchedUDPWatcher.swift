internal import CUDPShims
public import Libev

/// Sends datagrams from a bounded ring buffer through `sendmmsg(2)`, driven by a libev loop.
///
/// Enqueue datagrams on the loop thread; at the end of the loop iteration one drain sends everything
/// queued, up to ``Configuration/batchSize`` datagrams per `sendmmsg` call. What the kernel does not take
/// stays queued in order: a short count is retried from the first unsent datagram, EAGAIN arms a write
/// watcher whose callback resumes, ENOBUFS is retried a few times and then backed off on a timer. A
/// per-datagram error fails only the datagram at the head (`sendmmsg` reports an error only for the first
/// message of a call) and the drain goes on. Every datagram enqueued is either sent (counted) or reported
/// once to ``onError`` with its errno: `enqueued == sent + failed + queued` holds after every call.
///
/// An error that is not the head datagram's own is not charged to it: a socket's pending error (an ICMP
/// error for an earlier datagram, which `sendmmsg` returns whatever the call carries) is reported to
/// ``onSocketProblem`` and the datagram is sent again; a GSO super-datagram the kernel refuses is re-sent
/// one datagram at a time, and only what the kernel refuses then is reported (see
/// ``Configuration/Segmentation-swift.enum/automatic``).
///
/// The write watcher is active only while datagrams wait for the socket to become writable, so an idle
/// watcher costs the loop nothing. While datagrams are queued, the watcher keeps the loop running (unless
/// ``Configuration/keepsLoopAlive`` is false) and keeps itself alive, even if its owner lets go of it; an
/// empty (or closed) watcher holds neither.
///
/// Works on any loop: an owned one, the default loop, or one borrowed from C code. It installs no signal
/// handler and never breaks or destroys the loop. One watcher per socket; a loop can serve many. Closing
/// its ``UDPSocket`` closes the watcher first.
///
/// Thread confinement: create and use it on its loop's thread only (debug builds check every public
/// entry point while the loop runs). Not `Sendable`.
public final class BatchedUDPWatcher {
    /// Open, closing (`close(flushingWithin:)` is flushing), or closed.
    public enum State: Sendable, Equatable {
        /// Accepting datagrams and sending them.
        case open
        /// `close(flushingWithin:)` is sending what is queued; enqueues throw `closed`.
        case closing
        /// Closed: everything queued was sent or reported; enqueues throw `closed`.
        case closed
    }

    /// The loop the watcher runs on.
    public let loop: EventLoop
    /// The socket datagrams go out of. The watcher never closes it.
    public let socket: UDPSocket
    /// Sizes and policies, as given.
    public let configuration: Configuration

    /// Called on the loop thread, after the send calls of a drain, once for every datagram that was not sent.
    @exclusivity(unchecked) public var onError: ((BatchedUDPWatcher, SendFailure) -> Void)?
    /// Called on the loop thread, after the send calls of a drain, for each error the kernel reported for
    /// the socket rather than for a datagram (see ``SocketProblem``); counted in
    /// ``SendCounters/pendingErrors`` and ``SendCounters/deliveryErrors``.
    @exclusivity(unchecked) public var onSocketProblem: ((BatchedUDPWatcher, SocketProblem) -> Void)?
    /// Called on the loop thread when ``isWritable`` changes: false when the queue reaches the high water
    /// mark (from inside the `enqueue` that reached it), true when a drain brings it to the low water mark.
    @exclusivity(unchecked) public var onWritabilityChanged: ((BatchedUDPWatcher, Bool) -> Void)?

    /// Whether the queue is below its high water mark (with hysteresis down to the low water mark).
    @exclusivity(unchecked) public internal(set) var isWritable = true {
        didSet { applyWaterMarks() }
    }
    /// The high water mark while ``isWritable``, unreachable otherwise: one pair of compares per enqueue
    /// applies it.
    @usableFromInline @exclusivity(unchecked) var enqueueHighWater = Configuration.WaterMark(messages: .max, bytes: .max)
    /// The most datagrams and payload bytes the queue may hold after an enqueue that takes the lean
    /// forms' fast path: room in the ring, and (while ``isWritable``) still below the high water mark.
    /// One pair of compares per datagram checks both; anything else (a full ring, reaching the mark)
    /// goes the slow way.
    @usableFromInline @exclusivity(unchecked) var fastRoom = Configuration.WaterMark(messages: 0, bytes: 0)
    /// Open, closing or closed.
    @exclusivity(unchecked) public internal(set) var state: State = .open {
        didSet { acceptsPeerDatagrams = state == .open && isConnected }
    }
    /// `state == .open && isConnected`, kept as one flag: the lean enqueue forms check it per datagram.
    @usableFromInline @exclusivity(unchecked) var acceptsPeerDatagrams = false {
        didSet {
            acceptedPeerBound = acceptsPeerDatagrams ? UInt(peerPayloadLimit) + 1 : 0
            if !isWritingSlot { peerLengthBound = acceptedPeerBound }
        }
    }
    /// One more than the longest datagram the lean forms accept: the peer's limit plus one while
    /// ``acceptsPeerDatagrams``, 0 otherwise. `UInt(bitPattern: length) < acceptedPeerBound` checks the
    /// flag and the length (negative ones included) in one compare.
    @usableFromInline @exclusivity(unchecked) var acceptedPeerBound: UInt = 0
    /// `acceptedPeerBound`, except 0 while an in-place body writes a slot (`beginWritingSlot`): what the
    /// lean copying form checks, so that a call from inside such a body takes its slow path, where the
    /// reentry check is.
    @usableFromInline @exclusivity(unchecked) var peerLengthBound: UInt = 0

    /// What the watcher has done so far, with the queue's current occupancy.
    public var counters: SendCounters {
        var snapshot = tally
        snapshot.enqueued = nextSequence
        snapshot.queued = ring.count
        snapshot.queuedBytes = ring.bytes
        snapshot.peakQueued = ring.peakQueued
        snapshot.peakQueuedBytes = ring.peakQueuedBytes
        return snapshot
    }

    @usableFromInline let ring: DatagramRing
    let fd: Int32
    @usableFromInline let isConnected: Bool
    /// An IPv6 socket without IPV6_V6ONLY also reaches IPv4 destinations (as ::ffff:a.b.c.d).
    let reachesIPv4: Bool
    /// Whether the connected peer (if any) is reached over IPv4, which decides the family of its
    /// metadata control messages.
    let connectedPeerIsIPv4: Bool
    /// The largest datagram to the connected peer: the slot, or the peer family's UDP limit.
    @usableFromInline let peerPayloadLimit: Int
    @usableFromInline let highWaterMark: Configuration.WaterMark
    let lowWaterMark: Configuration.WaterMark

    // The state touched for every datagram or every drain (and the callbacks above) skips Swift's dynamic
    // exclusivity checks, which cost about 3% of a 64-byte GSO send, and an instruction per datagram of a
    // drain of 1,024: it is confined to the loop thread, and no access to it spans a callback.
    @exclusivity(unchecked) var tally = SendCounters()
    /// The next datagram's sequence number: `enqueued` in ``counters``.
    @usableFromInline @exclusivity(unchecked) var nextSequence = 0
    @exclusivity(unchecked) var writeWatcher: IOWatcher!
    @exclusivity(unchecked) var drainAtIterationEnd: PrepareWatcher!
    @exclusivity(unchecked) var backoffTimer: TimerWatcher!
    var closeTimer: TimerWatcher?
    var closeCompletion: ((BatchedUDPWatcher) -> Void)?
    @exclusivity(unchecked) var failures: [SendFailure] = []
    @exclusivity(unchecked) var problems: [SocketProblem] = []
    @exclusivity(unchecked) var writabilityChangePending = false
    @exclusivity(unchecked) var closeCompletionPending: ((BatchedUDPWatcher) -> Void)?
    @exclusivity(unchecked) var isDraining = false
    @exclusivity(unchecked) var isDelivering = false
    @exclusivity(unchecked) var selfRetain: Unmanaged<BatchedUDPWatcher>?
    /// The GSO vector while segmentation is on; nil when it is off, unsupported, or turned off after
    /// repeated refusals.
    @exclusivity(unchecked) var segmented: SegmentedBatch?
    /// The head datagram met an error that may not be its own; it is offered once more before that error
    /// is charged to it.
    @exclusivity(unchecked) var headRetry: HeadRetry?
    /// Datagrams at the head that go one per message: the rest of a refused super-datagram.
    @exclusivity(unchecked) var singlesAtHead = 0
    /// The refused super-datagram whose datagrams are going out one by one.
    var refusedRun: RefusedRun?
    /// Super-datagrams refused with EIO or EINVAL whose datagrams then went out one by one, in a row
    /// (a super-datagram the kernel takes resets it).
    var segmentationStrikes = 0
    /// Loop time of the first ENOBUFS back-off since the last datagram the kernel took.
    @exclusivity(unchecked) var noBufferSince: Double?
    /// The kernel refused a datagram with an ECN control message and took it without one: ECN is no
    /// longer sent on this socket.
    var isECNRefused = false
    /// The destination and metadata checked last (see `Addressed`).
    @exclusivity(unchecked) var addressed = Addressed()
    /// The head datagram whose ECN message was dropped after EIO/EINVAL, to see whether it goes out now.
    @exclusivity(unchecked) var ecnRetry: Int?
    /// The ECN codepoint that head datagram was enqueued with, for its failure report.
    var ecnRetryCodepoint: ECN?
    /// True while an `enqueue(writingWith:)` body holds the tail slot.
    @usableFromInline @exclusivity(unchecked) var isWritingSlot = false
    /// The tasks suspended in `send` until the queue drains; created by the first that has to wait.
    @exclusivity(unchecked) var asyncSenders: AsyncSendQueue?
    /// Tests replace `sendmmsg` here to script what loopback cannot produce; nil (the real call) otherwise.
    @exclusivity(unchecked) var sendSeam: Syscall.SendmmsgSeam?

    /// Registers `socket` on `loop`.
    ///
    /// Checks that the descriptor is an open IPv4/IPv6 datagram socket, sets O_NONBLOCK if it is not set,
    /// notes whether it is connected (connect it before registering if it is going to be), and allocates
    /// the ring once.
    /// - Throws: ``BatchedUDPError/invalidConfiguration(_:)`` naming the field;
    ///   ``BatchedUDPError/socket(_:)`` for a closed descriptor, a pipe, a TCP socket or a failing fcntl.
    /// - Cost: the ring's allocation (see ``Configuration``) and four or five syscalls.
    public init(loop: EventLoop, socket: UDPSocket, configuration: Configuration = Configuration()) throws(BatchedUDPError) {
        try configuration.validate()
        let fd = socket.fileDescriptor
        do throws(SocketError) {
            let checked = try UDPSocket(adopting: fd)
            if try !checked.isNonBlocking { try checked.setNonBlocking(true) }
            let peer = try checked.remoteAddress
            isConnected = peer != nil
            connectedPeerIsIPv4 = peer?.isIPv4OnTheWire ?? false
            let ipv6Only = try checked.isIPv6Only
            reachesIPv4 = socket.family == .ipv4 || !ipv6Only
        } catch {
            throw .socket(error)
        }
        self.loop = loop
        self.socket = socket
        self.configuration = configuration
        self.fd = fd
        highWaterMark = configuration.resolvedHighWaterMark
        lowWaterMark = configuration.resolvedLowWaterMark
        peerPayloadLimit = min(configuration.maxDatagramSize, socket.family.maxUDPPayload,
                               socket.family == .ipv4 || connectedPeerIsIPv4 ? SocketAddress.Family.ipv4.maxUDPPayload : SocketAddress.Family.ipv6.maxUDPPayload)
        ring = DatagramRing(capacity: configuration.capacity,
                            slotSize: min(configuration.maxDatagramSize, socket.family.maxUDPPayload),
                            byteCapacity: configuration.resolvedByteCapacity)
        failures.reserveCapacity(2 * configuration.capacity)
        problems.reserveCapacity(configuration.batchSize)
        if configuration.segmentation == .automatic && BatchedUDPWatcher.kernelSegments(fd) {
            segmented = SegmentedBatch(capacity: configuration.batchSize,
                                       maxPayload: reachesIPv4 ? SocketAddress.Family.ipv4.maxUDPPayload : SocketAddress.Family.ipv6.maxUDPPayload,
                                       maxSegment: socket.family == .ipv4 ? 1472 : 1452)
        }
        do {
            writeWatcher = try IOWatcher(loop: loop, fileDescriptor: fd, events: .write) { [unowned self] _, events in
                withExtendedLifetime(self) { self.socketBecameWritable(events) }
            }
        } catch {
            throw .socket(SocketError("register(fd \(fd))", problem: error.description))
        }
        drainAtIterationEnd = PrepareWatcher(loop: loop) { [unowned self] _ in
            withExtendedLifetime(self) { self.drain() }
        }
        backoffTimer = TimerWatcher(loop: loop, after: configuration.noBufferBackoff) { [unowned self] _ in
            withExtendedLifetime(self) { self.drain() }
        }
        if !configuration.keepsLoopAlive {
            writeWatcher.keepsLoopAlive = false
            drainAtIterationEnd.keepsLoopAlive = false
            backoffTimer.keepsLoopAlive = false
        }
        // Set directly (an initializer does not run property observers).
        acceptsPeerDatagrams = isConnected
        acceptedPeerBound = isConnected ? UInt(peerPayloadLimit) + 1 : 0
        peerLengthBound = acceptedPeerBound
        applyWaterMarks()
        socket.register(self)
    }

    /// Whether datagrams enqueued with an ``SendMetadata/ecn`` carry it: true until the kernel refuses
    /// one with EIO or EINVAL and then takes it without (``SendCounters/ecnFallbacks``).
    public var isSendingECN: Bool { !isECNRefused }

    /// Whether queued runs go out as GSO super-datagrams now: ``Configuration/segmentation`` is
    /// `.automatic`, the kernel supports it, and it has not been turned off after repeated refusals
    /// (``SendCounters/segmentationDisabled``).
    public var isSegmenting: Bool { segmented != nil }

    /// Probes UDP_SEGMENT once: readable means the kernel segments. A size someone left set socket-wide
    /// would split every send, so it is cleared: segmentation is asked for per send, by control message.
    private static func kernelSegments(_ fd: Int32) -> Bool {
        guard case let .done(size) = Syscall.getsockopt(fd, Int32(CUDP_SOL_UDP), Int32(CUDP_UDP_SEGMENT)) else { return false }
        return size == 0 || Syscall.setsockopt(fd, Int32(CUDP_SOL_UDP), Int32(CUDP_UDP_SEGMENT), 0) == nil
    }

    /// Registers a datagram socket made elsewhere (C code, another library); its creator keeps owning
    /// the descriptor.
    /// - Throws: as ``init(loop:socket:configuration:)``.
    public convenience init(loop: EventLoop, fileDescriptor: Int32, configuration: Configuration = Configuration()) throws(BatchedUDPError) {
        let socket: UDPSocket
        do throws(SocketError) { socket = try UDPSocket(adopting: fileDescriptor) } catch { throw .socket(error) }
        try self.init(loop: loop, socket: socket, configuration: configuration)
    }

    // MARK: Enqueue

    /// Queues a copy of `bytes` as one datagram to the connected peer, without metadata: the lean form
    /// of ``enqueue(_:to:metadata:)-(UnsafeRawBufferPointer,_,_)``, chosen when neither is given.
    /// - Returns: the datagram's sequence number.
    /// - Throws: ``BatchedUDPError`` (`closed`, `destinationRequired` on a socket that is not connected,
    ///   `messageTooLarge`, `queueFull`); then nothing was queued. In-place forms check the byte budget
    ///   (``Configuration/byteCapacity``) once the length is known, after the body ran.
    /// - Cost: one copy into a preallocated slot and a few loads, compares and stores; no allocation, no
    ///   syscall.
    @inlinable @discardableResult
    public func enqueue(_ bytes: UnsafeRawBufferPointer) throws(BatchedUDPError) -> Int {
        // No reentry check here: while an in-place body runs, `peerLengthBound` is 0 and this takes the
        // slow path, which makes it.
        checkLoopThread("enqueue(_:)")
        let length = bytes.count
        guard UInt(bitPattern: length) < peerLengthBound, ring.count < fastRoom.messages, ring.bytes &+ length <= fastRoom.bytes else {
            return try enqueueSlowly(bytes)
        }
        ring.copyToTail(from: bytes.baseAddress, length: length)
        ring.commitTail(length: length)
        return committedOne()
    }

    /// `enqueue(_:)` when the fast path's checks fail: the ring is full, the high water mark is reached
    /// now, or the datagram is refused.
    @usableFromInline @inline(never)
    func enqueueSlowly(_ bytes: UnsafeRawBufferPointer) throws(BatchedUDPError) -> Int {
        checkEntry("enqueue(_:)")
        let length = bytes.count
        guard acceptsPeerDatagrams, length <= peerPayloadLimit, ring.count < ring.capacity, ring.bytes &+ length <= ring.byteCapacity else {
            throw peerRefusal(length: length)
        }
        ring.copyToTail(from: bytes.baseAddress, length: length)
        ring.commitTail(length: length)
        return committed(1)
    }

    /// Queues a copy of `bytes` as one datagram to the connected peer, without metadata.
    /// See ``enqueue(_:)-(UnsafeRawBufferPointer)``.
    @discardableResult
    public func enqueue(_ bytes: [UInt8]) throws(BatchedUDPError) -> Int {
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(BatchedUDPError) -> Int in try enqueue(raw) }
        }
        return try result.get()
    }

    /// Queues a datagram written in place, to the connected peer, without metadata: the lean form of
    /// ``enqueue(to:metadata:writingWith:)``, chosen when neither is given. `body` gets the free slot
    /// (``Configuration/maxDatagramSize`` bytes, valid only during the call), writes the payload at its
    /// start and returns its length.
    /// - Returns: the datagram's sequence number.
    /// - Throws: ``BatchedUDPError`` as ``enqueue(_:)-(UnsafeRawBufferPointer)``, or whatever `body`
    ///   throws; then nothing was queued.
    /// - Cost: the call to `body` and a few loads, compares and stores; no allocation, no syscall.
    /// - Precondition: `body` returns a length between 0 and the slot's size, and does not call
    ///   `enqueue`, ``flush()`` or `close` on this watcher.
    @inlinable @discardableResult
    public func enqueue(writingWith body: (UnsafeMutableRawBufferPointer) throws -> Int) throws -> Int {
        checkEntry("enqueue(writingWith:)")
        // The byte budget is checked once the length is known.
        guard acceptsPeerDatagrams, ring.count < ring.capacity else { throw peerRefusal(length: 0) }
        let length = try writeTail(body)
        // One unsigned compare checks the length (a negative one too; the peer's limit is at most the
        // slot) and that the body did not close the socket; another pair, room and the water mark.
        guard UInt(bitPattern: length) < acceptedPeerBound, ring.count < fastRoom.messages, ring.bytes &+ length <= fastRoom.bytes else {
            return try commitSlowly(length: length)
        }
        ring.commitTail(length: length)
        return committedOne()
    }

    /// The end of `enqueue(writingWith:)` when the fast path's checks fail.
    @usableFromInline @inline(never)
    func commitSlowly(length: Int) throws(BatchedUDPError) -> Int {
        guard UInt(bitPattern: length) <= UInt(bitPattern: peerPayloadLimit), acceptsPeerDatagrams, ring.bytes &+ length <= ring.byteCapacity else {
            checkSlotLength(length)
            throw peerRefusal(length: length)
        }
        ring.commitTail(length: length)
        return committed(1)
    }

    /// Queues a copy of `bytes` as one datagram.
    ///
    /// - Parameters:
    ///   - bytes: the payload, copied into a slot before the call returns.
    ///   - destination: where it goes; nil for the connected peer. An IPv4 destination on a dual-stack
    ///     IPv6 socket is sent as an IPv4-mapped address.
    ///   - metadata: the source address to send from, the interface, the ECN codepoint; nil for none.
    ///     Datagrams are coalesced into a GSO super-datagram only with others of equal metadata.
    /// - Returns: the datagram's sequence number (0, 1, 2... per watcher), as ``SendFailure/sequence`` reports it.
    /// - Throws: ``BatchedUDPError`` (`closed`, `destinationRequired`, `addressFamilyMismatch`,
    ///   `sourceFamilyMismatch`, `messageTooLarge`, `queueFull`); then nothing was queued.
    /// - Cost: one copy into a preallocated slot; no allocation, no syscall (the send happens at the end of
    ///   the loop iteration, in a prepare watcher); metadata adds its control messages (at most 64 bytes,
    ///   in an area allocated once, on first use). From a prepare or check watcher of your own, call
    ///   ``flush()`` afterwards: libev does not run a prepare watcher started there before it next blocks.
    @discardableResult
    public func enqueue(_ bytes: UnsafeRawBufferPointer, to destination: SocketAddress? = nil, metadata: SendMetadata? = nil) throws(BatchedUDPError) -> Int {
        checkEntry("enqueue(_:to:metadata:)")
        return try enqueueCopy(bytes, to: destination, metadata: metadata)
    }

    /// The copying forms' work, inlined into each (an answer to a received datagram passes its address
    /// and metadata straight in).
    @inline(__always)
    private func enqueueCopy(_ bytes: UnsafeRawBufferPointer, to destination: SocketAddress?, metadata: SendMetadata?) throws(BatchedUDPError) -> Int {
        try admit(destination, length: bytes.count, metadata: metadata)
        guard ring.canAccept(length: bytes.count) else { throw reject() }
        ring.copyToTail(from: bytes.baseAddress, length: bytes.count)
        return commit(length: bytes.count, destination: destination, metadata: metadata)
    }

    /// Queues a copy of `bytes` as one datagram.
    /// See ``enqueue(_:to:metadata:)-(UnsafeRawBufferPointer,_,_)``.
    @discardableResult
    public func enqueue(_ bytes: [UInt8], to destination: SocketAddress? = nil, metadata: SendMetadata? = nil) throws(BatchedUDPError) -> Int {
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(BatchedUDPError) -> Int in try enqueue(raw, to: destination, metadata: metadata) }
        }
        return try result.get()
    }

    /// Queues a copy of `bytes` as the answer to `datagram`: to its sender, from the local address it
    /// was sent to (when the reader reports destinations, ``BatchedUDPReader/Metadata/destination``), so a
    /// server on a wildcard address answers from the address each client contacted.
    /// - Throws: as ``enqueue(_:to:metadata:)-(UnsafeRawBufferPointer,_,_)``.
    /// - Cost: as that form; the source goes in the slot's control area.
    @discardableResult
    public func enqueue(_ bytes: UnsafeRawBufferPointer, replyingTo datagram: ReceivedDatagram) throws(BatchedUDPError) -> Int {
        checkEntry("enqueue(_:replyingTo:)")
        guard let sender = datagram.sender else { throw .destinationRequired }
        return try enqueueCopy(bytes, to: sender, metadata: datagram.replySource.map { SendMetadata(source: $0) })
    }

    /// Queues several buffers, concatenated, as ONE datagram (the gather of `sendmsg`'s iovec).
    /// - Throws: as ``enqueue(_:to:metadata:)-(UnsafeRawBufferPointer,_,_)``, with the total length checked.
    @discardableResult
    public func enqueue(gathering buffers: some Collection<UnsafeRawBufferPointer>, to destination: SocketAddress? = nil,
                        metadata: SendMetadata? = nil) throws(BatchedUDPError) -> Int {
        checkEntry("enqueue(gathering:to:metadata:)")
        var length = 0
        for buffer in buffers { length += buffer.count }
        try admit(destination, length: length, metadata: metadata)
        guard ring.canAccept(length: length) else { throw reject() }
        var slot = ring.tailPayload
        for buffer in buffers where buffer.count > 0 {
            slot.copyMemory(from: buffer)
            slot = UnsafeMutableRawBufferPointer(rebasing: slot[buffer.count...])
        }
        return commit(length: length, destination: destination, metadata: metadata)
    }

    /// Queues a datagram written in place: `body` gets the free slot (``Configuration/maxDatagramSize``
    /// bytes, valid only during the call), writes the payload at its start and returns its length.
    ///
    /// The zero-copy form. If `body` throws, nothing is queued and its error is rethrown.
    /// - Throws: ``BatchedUDPError`` as the copying forms (`queueFull` is checked before and, for the byte
    ///   budget, after `body`), or whatever `body` throws.
    /// - Precondition: `body` returns a length between 0 and the slot's size, and does not call
    ///   `enqueue`, ``flush()`` or `close` on this watcher (the slot it writes is not queued yet).
    @discardableResult
    public func enqueue(to destination: SocketAddress? = nil, metadata: SendMetadata? = nil,
                        writingWith body: (UnsafeMutableRawBufferPointer) throws -> Int) throws -> Int {
        checkEntry("enqueue(to:metadata:writingWith:)")
        let limit = try admit(destination, length: 0, metadata: metadata)
        guard ring.canAccept(length: 0) else { throw reject() }
        let length = try writeTail(body)
        checkSlotLength(length)
        // The body may have closed the watcher's socket (and so the watcher); the length is known now.
        guard state == .open else { throw BatchedUDPError.closed }
        guard length <= limit else { throw BatchedUDPError.messageTooLarge(size: length, limit: limit) }
        guard ring.canAccept(length: length) else { throw reject() }
        return commit(length: length, destination: destination, metadata: metadata)
    }

    /// Lets `body` write the tail slot, with reentry from it refused (`checkEntry`). The caller checks
    /// the length it returns (`checkSlotLength`).
    @inlinable
    func writeTail(_ body: (UnsafeMutableRawBufferPointer) throws -> Int) rethrows -> Int {
        beginWritingSlot()
        defer { endWritingSlot() }
        return try body(ring.tailPayload)
    }

    /// Marks the tail slot as being written by a body: entry points refuse reentry from it
    /// (`checkEntry`), and the lean copying form, which skips that check, is sent to its slow path (which
    /// makes it) by a zero `peerLengthBound`.
    @inlinable @inline(__always)
    func beginWritingSlot() {
        isWritingSlot = true
        peerLengthBound = 0
    }

    /// The body is done: `peerLengthBound` is `acceptedPeerBound` again (which a body that closed the
    /// socket has set to 0).
    @inlinable @inline(__always)
    func endWritingSlot() {
        isWritingSlot = false
        peerLengthBound = acceptedPeerBound
    }

    /// Stops on a length an in-place body cannot have written: negative, or past its slot.
    @inlinable
    func checkSlotLength(_ length: Int) {
        precondition(UInt(bitPattern: length) <= UInt(bitPattern: ring.slotSize), "enqueue(writingWith:) body returned \(length) for a slot of \(ring.slotSize) bytes")
    }

    // MARK: Batch enqueue

    /// Queues `count` datagrams written in place, to the connected peer, without metadata: the lean form
    /// of ``enqueue(count:to:metadata:partially:writingWith:)``, chosen when neither is given. `body` gets
    /// each datagram's index (0, 1, ... in order) and its free slot (``Configuration/maxDatagramSize``
    /// bytes, valid only during that call), writes the payload at its start and returns its length.
    ///
    /// For producers with many datagrams at once (a load generator, a QUIC flight): the checks, counters
    /// and water marks are done once per call rather than once per datagram.
    /// - Parameters:
    ///   - count: how many datagrams to queue.
    ///   - partially: false (the default): all `count` datagrams or none; `queueFull` is thrown before
    ///     `body` runs when fewer slots are free, or after it when the byte budget
    ///     (``Configuration/byteCapacity``) is exceeded. True: as many as fit; `body` is called for one
    ///     datagram more than is queued when the byte budget is what stops it.
    ///   - body: writes datagram `index` into `slot` and returns its length.
    /// - Returns: the sequence numbers of the datagrams queued, in order; with `partially`, possibly fewer
    ///   than `count`, or none when the ring is full.
    /// - Throws: ``BatchedUDPError`` as ``enqueue(writingWith:)``, or whatever `body` throws; then
    ///   nothing from this call is queued. A body that closes the socket is called for the remaining
    ///   datagrams all the same; the call then throws `closed`.
    /// - Cost: per datagram, `body`, a few compares and the store of its length; no allocation, no
    ///   syscall.
    /// - Precondition: `count >= 0`; `body` returns a length between 0 and the slot's size and does not
    ///   call `enqueue`, ``flush()`` or `close` on this watcher.
    @inlinable @discardableResult
    public func enqueue(count: Int, partially: Bool = false,
                        writingWith body: (_ index: Int, _ slot: UnsafeMutableRawBufferPointer) throws -> Int) throws -> Range<Int> {
        checkEntry("enqueue(count:partially:writingWith:)")
        precondition(count >= 0, "enqueue(count:): count \(count) is negative")
        guard acceptsPeerDatagrams else { throw peerRefusal(length: 0) }
        let free = ring.capacity &- ring.count
        guard partially || count <= free else { throw reject(count) }
        let n = min(count, free)
        // The limits and the ring's layout in locals: the loop reloads nothing. The free slots are walked
        // in stretches that end at the ring's end (no wrap check per datagram). When no `n` datagrams the
        // peer's limit allows can exceed the byte budget (as with the default budget, a full slot per
        // datagram), the loop does not check it.
        let budget = ring.byteCapacity &- ring.bytes, limit = peerPayloadLimit
        let checksBudget = limit &* n > budget
        let base = ring.payload, slotSize = ring.slotSize, capacity = ring.capacity, iovecs = ring.iovecs
        var slot = ring.tail
        var written = 0, bytes = 0
        // How many lengths from the first equal it (`uniform`): those datagrams are queued as a run a GSO
        // drain need not scan. One compare per datagram while they do; the rest out of line.
        var uniform = -1, uniformCount = n
        beginWritingSlot()
        do {
            defer { endWritingSlot() }
            // A body that closes the socket is still called for the rest of the batch (the slots stay
            // allocated), and nothing is queued: checking the flag per datagram would cost every batch.
            batch: while written < n {
                let end = written &+ min(n &- written, capacity &- slot)
                var stretch = DatagramRing.FreeStretch(target: base + slot &* slotSize, slot: slot, slotSize: slotSize, iovecs: iovecs)
                while written < end {
                    let length = try body(written, UnsafeMutableRawBufferPointer(start: stretch.target, count: slotSize))
                    guard UInt(bitPattern: length) <= UInt(bitPattern: limit) else {
                        checkSlotLength(length)
                        if !acceptsPeerDatagrams { break batch }  // closed: reported below, before any size
                        throw BatchedUDPError.messageTooLarge(size: length, limit: limit)
                    }
                    if checksBudget && bytes &+ length > budget {
                        // A body that closed the socket made the budget stale: `closed` is reported below.
                        guard partially || !acceptsPeerDatagrams else { throw reject(count) }
                        break batch
                    }
                    if _slowPath(length != uniform) {
                        if written == 0 { uniform = length } else if uniformCount > written { uniformCount = written }
                    }
                    stretch.fill(length: length)
                    bytes &+= length
                    written &+= 1
                }
                slot = 0
            }
        }
        // The body may have closed the watcher's socket.
        guard acceptsPeerDatagrams else { throw BatchedUDPError.closed }
        guard written > 0 else { return nextSequence..<nextSequence }
        ring.commitWritten(written, length: bytes, uniform: uniform == 0 ? 0 : min(uniformCount, written), uniformLength: uniform)
        let first = committed(written)
        return first..<first &+ written
    }

    /// Queues a copy of each buffer as one datagram to the connected peer, without metadata: the lean
    /// form of ``enqueue(contentsOf:to:metadata:partially:)-(UnsafeBufferPointer<UnsafeRawBufferPointer>,_,_,_)``.
    /// See ``enqueue(count:partially:writingWith:)`` for `partially` and what is returned.
    /// - Throws: ``BatchedUDPError`` as ``enqueue(_:)-(UnsafeRawBufferPointer)``; then nothing from this
    ///   call is queued.
    /// - Cost: one copy per datagram into its preallocated slot, and the batch form's bookkeeping.
    @inlinable @discardableResult
    public func enqueue(contentsOf datagrams: UnsafeBufferPointer<UnsafeRawBufferPointer>, partially: Bool = false) throws(BatchedUDPError) -> Range<Int> {
        checkEntry("enqueue(contentsOf:partially:)")
        guard acceptsPeerDatagrams else { throw peerRefusal(length: 0) }
        let total = datagrams.count, limit = peerPayloadLimit
        let free = ring.capacity &- ring.count
        guard partially || total <= free else {
            // Every size first, as the general form and `enqueue(_:)` check size before room.
            try checkPeerSizes(datagrams, from: 0)
            throw reject(total)
        }
        let n = min(total, free)
        // Locals, and the free slots walked in stretches that end at the ring's end (no wrap check per
        // datagram); each size is checked as its datagram is copied, and the rest of the call's
        // datagrams after an early stop, so a size is still reported before room. Nothing is queued
        // until every datagram of the call is written.
        // When no `n` datagrams the peer's limit allows can exceed the byte budget (as with the default
        // budget, a full slot per datagram), the loop does not check it.
        let budget = ring.byteCapacity &- ring.bytes
        let checksBudget = limit &* n > budget
        let base = ring.payload, slotSize = ring.slotSize, capacity = ring.capacity, iovecs = ring.iovecs
        var slot = ring.tail
        var written = 0, bytes = 0
        // A producer's batch is mostly datagrams of one length: while they have the first's, they are
        // copied with one compare each, and they are queued as a run a GSO drain need not scan.
        let uniformLength = n > 0 ? datagrams[0].count : 0
        var uniform = !checksBudget && uniformLength > 0 && uniformLength <= limit
        var uniformCount = 0
        while written < n {
            let end = written &+ min(n &- written, capacity &- slot)
            var stretch = DatagramRing.FreeStretch(target: base + slot &* slotSize, slot: slot, slotSize: slotSize, iovecs: iovecs)
            if uniform {
                stretch.copy(datagrams, from: &written, to: end, allOf: uniformLength)
                uniformCount = written
                uniform = written == end
            }
            if written < end {
                if checksBudget {
                    try stretch.copy(datagrams, from: &written, to: end, limit: limit, bytes: &bytes, budget: budget)
                } else {
                    try stretch.copy(datagrams, from: &written, to: end, limit: limit, bytes: &bytes, budget: nil)
                }
            }
            slot = stretch.slot
            guard written == end else { break }  // the byte budget stopped it
            if slot == capacity { slot = 0 }
        }
        if written < total {
            try checkPeerSizes(datagrams, from: written)
            guard partially else { throw reject(total) }
        }
        guard written > 0 else { return nextSequence..<nextSequence }
        ring.commitWritten(written, length: bytes &+ uniformCount &* uniformLength, uniform: uniformCount, uniformLength: uniformLength)
        let first = committed(written)
        return first..<first &+ written
    }

    /// Throws `messageTooLarge` for the first of `datagrams` from `start` on that exceeds the peer's limit.
    @usableFromInline @inline(never)
    func checkPeerSizes(_ datagrams: UnsafeBufferPointer<UnsafeRawBufferPointer>, from start: Int) throws(BatchedUDPError) {
        let limit = peerPayloadLimit
        var index = start
        while index < datagrams.count {
            let size = datagrams[index].count
            guard size <= limit else { throw .messageTooLarge(size: size, limit: limit) }
            index &+= 1
        }
    }

    /// Queues a copy of each buffer as one datagram to the connected peer, without metadata.
    /// See ``enqueue(contentsOf:partially:)-(UnsafeBufferPointer<UnsafeRawBufferPointer>,_)``.
    @discardableResult
    public func enqueue(contentsOf datagrams: [UnsafeRawBufferPointer], partially: Bool = false) throws(BatchedUDPError) -> Range<Int> {
        let result = datagrams.withUnsafeBufferPointer { buffers in
            Result { () throws(BatchedUDPError) -> Range<Int> in try enqueue(contentsOf: buffers, partially: partially) }
        }
        return try result.get()
    }

    /// Queues `count` datagrams written in place, all to `destination` with `metadata`: `body` gets each
    /// datagram's index (0, 1, ... in order) and its free slot (``Configuration/maxDatagramSize`` bytes,
    /// valid only during that call), writes the payload at its start and returns its length.
    ///
    /// For producers with many datagrams at once (a load generator, a QUIC flight): the checks, counters
    /// and water marks are done once per call rather than once per datagram.
    /// - Parameters:
    ///   - count: how many datagrams to queue.
    ///   - destination: where they all go; nil for the connected peer.
    ///   - metadata: the source address, interface and ECN codepoint they all carry; nil for none.
    ///   - partially: false (the default): all `count` datagrams or none; `queueFull` is thrown before
    ///     `body` runs when fewer slots are free, or after it when the byte budget
    ///     (``Configuration/byteCapacity``) is exceeded. True: as many as fit; `body` is called for one
    ///     datagram more than is queued when the byte budget is what stops it.
    ///   - body: writes datagram `index` into `slot` and returns its length.
    /// - Returns: the sequence numbers of the datagrams queued, in order; with `partially`, possibly fewer
    ///   than `count`, or none when the ring is full.
    /// - Throws: ``BatchedUDPError`` as ``enqueue(to:metadata:writingWith:)``, or whatever `body` throws;
    ///   then nothing from this call is queued.
    /// - Cost: per datagram, the call to `body` and a few stores into the slot's preallocated header; no
    ///   allocation, no syscall.
    /// - Precondition: `count >= 0`; `body` returns a length between 0 and the slot's size and does not
    ///   call `enqueue`, ``flush()`` or `close` on this watcher.
    @discardableResult
    public func enqueue(count: Int, to destination: SocketAddress? = nil, metadata: SendMetadata? = nil, partially: Bool = false,
                        writingWith body: (_ index: Int, _ slot: UnsafeMutableRawBufferPointer) throws -> Int) throws -> Range<Int> {
        checkEntry("enqueue(count:to:metadata:partially:writingWith:)")
        return try enqueueBatch(count: count, destination: destination, metadata: metadata, partially: partially, body)
    }

    /// Queues a copy of each buffer as one datagram, all to `destination` with `metadata`.
    ///
    /// See ``enqueue(count:to:metadata:partially:writingWith:)`` for `partially` and what is returned.
    /// - Throws: ``BatchedUDPError`` as ``enqueue(_:to:metadata:)-(UnsafeRawBufferPointer,_,_)``; a buffer
    ///   too large is found before anything is copied; then nothing from this call is queued.
    /// - Cost: one copy per datagram into its preallocated slot, and the batch form's bookkeeping.
    @discardableResult
    public func enqueue(contentsOf datagrams: UnsafeBufferPointer<UnsafeRawBufferPointer>, to destination: SocketAddress? = nil,
                        metadata: SendMetadata? = nil, partially: Bool = false) throws(BatchedUDPError) -> Range<Int> {
        checkEntry("enqueue(contentsOf:to:metadata:partially:)")
        for datagram in datagrams { try admit(destination, length: datagram.count, metadata: metadata) }
        do {
            return try enqueueBatch(count: datagrams.count, destination: destination, metadata: metadata, partially: partially) { index, slot in
                let bytes = datagrams[index]
                if bytes.count > 0 { slot.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
                return bytes.count
            }
        } catch {
            throw error as! BatchedUDPError  // the copying body throws nothing else
        }
    }

    /// Queues a copy of each buffer as one datagram.
    /// See ``enqueue(contentsOf:to:metadata:partially:)-(UnsafeBufferPointer<UnsafeRawBufferPointer>,_,_,_)``.
    @discardableResult
    public func enqueue(contentsOf datagrams: [UnsafeRawBufferPointer], to destination: SocketAddress? = nil,
                        metadata: SendMetadata? = nil, partially: Bool = false) throws(BatchedUDPError) -> Range<Int> {
        let result = datagrams.withUnsafeBufferPointer { buffers in
            Result { () throws(BatchedUDPError) -> Range<Int> in
                try enqueue(contentsOf: buffers, to: destination, metadata: metadata, partially: partially)
            }
        }
        return try result.get()
    }

    /// The batch forms' work: the slots after the tail are written one by one, and queued together once
    /// all are written and checked.
    private func enqueueBatch(count: Int, destination: SocketAddress?, metadata: SendMetadata?, partially: Bool,
                              _ body: (Int, UnsafeMutableRawBufferPointer) throws -> Int) throws -> Range<Int> {
        precondition(count >= 0, "enqueue(count:): count \(count) is negative")
        let limit = try admit(destination, length: 0, metadata: metadata)
        let free = ring.capacity - ring.count
        guard partially || count <= free else { throw reject(count) }
        let n = min(count, free)
        let budget = ring.byteCapacity - ring.bytes
        var written = 0, bytes = 0
        beginWritingSlot()
        do {
            defer { endWritingSlot() }
            // A body that closes the socket ends the batch.
            while written < n && state == .open {
                let slot = UnsafeMutableRawBufferPointer(start: ring.payload(afterTail: written), count: ring.slotSize)
                let length = try body(written, slot)
                precondition(length >= 0 && length <= slot.count, "enqueue(count:writingWith:) body returned \(length) for a slot of \(slot.count) bytes")
                guard state == .open else { break }  // closed: reported below
                guard length <= limit else { throw BatchedUDPError.messageTooLarge(size: length, limit: limit) }
                guard bytes + length <= budget else {
                    guard partially else { throw reject(count) }
                    break
                }
                ring.writeSlot(afterTail: written, length: length)
                bytes += length
                written += 1
            }
        }
        // The body may have closed the watcher's socket.
        guard state == .open else { throw BatchedUDPError.closed }
        guard written > 0 else { return nextSequence..<nextSequence }
        if destination == nil && metadata == nil {
            ring.commitWritten(written, length: bytes)
        } else {
            for _ in 0..<written { commitAddressed(length: ring.length(afterTail: 0)) }
        }
        let first = committed(written)
        return first..<first + written
    }

    /// Sends what is queued now instead of at the end of the loop iteration. Does nothing while a drain
    /// or a back-off is under way. Error reports run before it returns.
    public func flush() {
        checkEntry("flush()")
        guard !backoffTimer.isActive else { return }
        drain()
    }

    // MARK: Close

    /// Stops the watcher at once: every queued datagram is reported to ``onError`` with ECANCELED before
    /// this returns (or, if called from a report, right after it), and later enqueues throw `closed`.
    /// The socket stays open. Calling it again does nothing.
    public func close() {
        checkEntry("close()")
        guard state != .closed else { return }
        shutDown(reporting: .ECANCELED)
        deliverReports()
        updateSelfRetain()
    }

    /// Stops accepting datagrams, keeps sending the queued ones for up to `seconds`, then reports what is
    /// left with ETIMEDOUT and closes. `completion` runs on the loop thread once the watcher is closed.
    /// While flushing, the watcher keeps the loop running (unless ``Configuration/keepsLoopAlive`` is
    /// false). Does nothing unless the watcher is open.
    public func close(flushingWithin seconds: Double, completion: ((BatchedUDPWatcher) -> Void)? = nil) {
        checkEntry("close(flushingWithin:completion:)")
        guard state == .open else { return }
        closeCompletion = completion
        asyncSenders?.failAll()
        guard !ring.isEmpty else {
            close()
            return
        }
        state = .closing
        let timer = TimerWatcher(loop: loop, after: max(seconds, 0)) { [unowned self] _ in
            withExtendedLifetime(self) {
                self.shutDown(reporting: .ETIMEDOUT)
                self.deliverReports()
                self.updateSelfRetain()
            }
        }
        closeTimer = timer
        timer.keepsLoopAlive = configuration.keepsLoopAlive
        timer.start()
        scheduleDrain()
        updateSelfRetain()
    }

    /// The checks every public entry point makes: loop-thread confinement (debug builds only: the call
    /// into Libev is compiled out here, since a call across modules is not free) and no reentry from an
    /// `enqueue(writingWith:)` body (one load and branch).
    @inlinable
    func checkEntry(_ entry: StaticString) {
        checkLoopThread(entry)
        precondition(!isWritingSlot, "BatchedUDPWatcher.\(entry) called from inside an enqueue(writingWith:) body on the same watcher: the slot being written is not queued yet; finish the body first")
    }

    /// Loop-thread confinement, checked in debug builds only.
    @inlinable @inline(__always)
    func checkLoopThread(_ entry: StaticString) {
        #if DEBUG
        assertOnLoopThread(entry)
        #endif
    }

    @usableFromInline
    func assertOnLoopThread(_ entry: StaticString) {
        loop.assertOnLoopThread("BatchedUDPWatcher.\(entry)")
    }

    // MARK: Test hooks

    /// Whether the EV_WRITE watcher is armed (only while queued datagrams wait for the socket).
    var isWaitingForWritable: Bool { writeWatcher.isActive }
    /// Whether a drain is scheduled for the end of this iteration.
    var isDrainScheduled: Bool { drainAtIterationEnd.isActive }
    /// Whether the watcher is backing off after ENOBUFS.
    var isBackingOff: Bool { backoffTimer.isActive }
}
