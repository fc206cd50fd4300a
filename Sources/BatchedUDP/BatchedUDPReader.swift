internal import CUDPShims
internal import Glibc
public import Libev

/// Reads datagrams from a UDP socket with `recvmmsg(2)` when the loop reports it readable, and hands
/// them to a handler one batch at a time.
///
/// Slots are allocated once; a batch is a view into them, so there is no copy and no allocation per
/// datagram. A datagram larger than a slot is dropped and reported (``onProblem``), never delivered cut
/// short. A readiness callback makes at most ``Configuration/maxCallsPerEvent`` calls, so one busy socket
/// cannot starve the loop (libev's level-triggered EV_READ comes back next iteration). EAGAIN ends a read;
/// an ICMP error queued on a connected socket (ECONNREFUSED) is reported and reading goes on. With
/// ``UDPSocket/setReceivesErrors(_:)`` on, the kernel's per-datagram error queue is read and reported too.
///
/// A reader and a ``BatchedUDPWatcher`` can share one ``UDPSocket``: they use separate read and write
/// watchers on the same descriptor, and while the reader reads, it alone reads the error queue (the
/// watcher leaves the entries to it). The reader never closes the socket; closing the socket stops the
/// reader for good.
///
/// Thread confinement: create and use it on its loop's thread only (debug builds check ``start()`` and
/// ``stop()`` while the loop runs). Not `Sendable`.
public final class BatchedUDPReader {
    /// Sizes of a reader, fixed at creation. Memory: `batchSize × maxDatagramSize` bytes plus about
    /// 220 bytes per slot (defaults: 64 × 2,048 B = 128 KiB); with `gro`, `batchSize × 64 KiB` instead.
    public struct Configuration: Sendable, Equatable {
        /// Datagrams per `recvmmsg` call, 1...1024. Default 64.
        public var batchSize = 64
        /// Slot size in bytes: larger datagrams are dropped as truncated. Default 2,048; at most 65,535.
        public var maxDatagramSize = 2048
        /// `recvmmsg` calls per readiness callback. Default 16.
        public var maxCallsPerEvent = 16
        /// Whether the active reader keeps its loop running (a server's usually does). Default true.
        public var keepsLoopAlive = true
        /// Lets the kernel merge runs of same-size datagrams from one sender into one receive (UDP_GRO,
        /// Linux 5.0+; on loopback, a sender's GSO super-datagrams arrive unsplit). The reader splits them
        /// back by the segment size the kernel reports, so the handler sees the same datagrams as without
        /// GRO, at a fraction of the receive cost. Each slot then holds 64 KiB. Default false.
        public var gro = false
        /// Per-datagram metadata to ask the kernel for; none by default (then the reader costs what it
        /// did without metadata). Each kind adds a socket option at creation and control messages to
        /// parse per receive; every slot's control buffer holds every kind at once, plus UDP_GRO.
        public var metadata: Metadata = []
        /// Tests shrink the control buffers to make the kernel truncate them (MSG_CTRUNC).
        var controlSpaceForTests: Int? = nil

        /// The defaults above.
        public init() {}

        func validate() throws(BatchedUDPError) {
            guard (1...1024).contains(batchSize) else {
                throw .invalidConfiguration("batchSize must be 1...1024 (UIO_MAXIOV), got \(batchSize)")
            }
            guard (1...65_535).contains(maxDatagramSize) else {
                throw .invalidConfiguration("maxDatagramSize must be 1...65535, got \(maxDatagramSize)")
            }
            guard maxCallsPerEvent >= 1 else {
                throw .invalidConfiguration("maxCallsPerEvent must be at least 1, got \(maxCallsPerEvent)")
            }
        }
    }

    /// Per-datagram metadata a reader can ask the kernel for (``Configuration/metadata``).
    public struct Metadata: OptionSet, Sendable, Hashable {
        /// One bit per kind of metadata.
        public let rawValue: Int
        /// The kinds whose bits are `rawValue`.
        public init(rawValue: Int) { self.rawValue = rawValue }

        /// The local address each datagram was sent to and the interface it came in on (IP_PKTINFO,
        /// IPV6_RECVPKTINFO; both on a dual-stack socket): ``ReceivedDatagram/destination``,
        /// ``ReceivedDatagram/interfaceIndex``. What a server on a wildcard address needs to answer from
        /// the right address (``BatchedUDPWatcher/enqueue(_:replyingTo:)``).
        public static let destination = Metadata(rawValue: 1 << 0)
        /// The ECN codepoint (IP_RECVTOS, IPV6_RECVTCLASS; both on a dual-stack socket):
        /// ``ReceivedDatagram/ecn``.
        public static let ecn = Metadata(rawValue: 1 << 1)
        /// The kernel's receive time (SO_TIMESTAMPNS): ``ReceivedDatagram/receiveTime``.
        public static let receiveTime = Metadata(rawValue: 1 << 2)
    }

    /// Called on the loop thread once per `recvmmsg` call that delivered at least one whole datagram.
    public typealias Handler = (BatchedUDPReader, ReceivedBatch) -> Void

    /// The loop the reader runs on.
    public let loop: EventLoop
    /// The socket it reads. The reader never closes it.
    public let socket: UDPSocket
    /// Sizes, as given.
    public let configuration: Configuration
    /// Called on the loop thread for each truncated datagram, each failed `recvmmsg`, and each entry of
    /// the socket's error queue.
    public var onProblem: ((BatchedUDPReader, ReceiveProblem) -> Void)?
    /// What the reader has received so far.
    @exclusivity(unchecked) public private(set) var counters = ReceiveCounters()

    private let handler: Handler
    private let slots: ReceiveSlots
    private let fd: Int32
    private var readWatcher: IOWatcher!
    /// Set when the socket closed: the descriptor number may belong to someone else now.
    private var socketClosed = false

    /// Registers `socket` for reading; call ``start()`` to begin.
    /// - Throws: ``BatchedUDPError/invalidConfiguration(_:)``, or ``BatchedUDPError/socket(_:)`` for a
    ///   closed descriptor or one that is not a UDP socket, or (with `gro`) a kernel without UDP_GRO.
    /// - Cost: the slots' allocation; a few syscalls to check the socket.
    public init(loop: EventLoop, socket: UDPSocket, configuration: Configuration = Configuration(),
                handler: @escaping Handler) throws(BatchedUDPError) {
        try configuration.validate()
        do throws(SocketError) {
            let checked = try UDPSocket(adopting: socket.fileDescriptor)
            if try !checked.isNonBlocking { try checked.setNonBlocking(true) }
        } catch {
            throw .socket(error)
        }
        self.loop = loop
        self.socket = socket
        self.configuration = configuration
        self.handler = handler
        fd = socket.fileDescriptor
        var localPort: UInt16 = 0
        do throws(SocketError) {
            if configuration.gro { try socket.setOption(Int32(CUDP_SOL_UDP), Int32(CUDP_UDP_GRO), 1, "UDP_GRO") }
            try BatchedUDPReader.enable(configuration.metadata, on: socket)
            if configuration.metadata.contains(.destination) { localPort = try socket.localAddress.port }
        } catch {
            throw .socket(error)
        }
        slots = ReceiveSlots(count: configuration.batchSize,
                             slotSize: configuration.gro ? ReceiveSlots.mergedSlotSize : configuration.maxDatagramSize,
                             merges: configuration.gro,
                             controlSpace: configuration.controlSpaceForTests
                                ?? (configuration.metadata.isEmpty ? nil : cudp_received_control_space()))
        slots.localPort = localPort
        do {
            readWatcher = try IOWatcher(loop: loop, fileDescriptor: fd, events: .read) { [unowned self] _, events in
                withExtendedLifetime(self) { self.readable(events) }
            }
        } catch {
            throw .socket(SocketError("register(fd \(fd))", problem: error.description))
        }
        readWatcher.keepsLoopAlive = configuration.keepsLoopAlive
        socket.register(self)
    }

    /// Turns on the socket options behind `metadata`, for the socket's family (both families' on a
    /// dual-stack socket, whose IPv4 datagrams carry IPv4 control messages).
    private static func enable(_ metadata: Metadata, on socket: UDPSocket) throws(SocketError) {
        guard !metadata.isEmpty else { return }
        let ipv6 = socket.family == .ipv6
        var ipv4 = !ipv6
        if ipv6 { ipv4 = !(try socket.isIPv6Only) }
        if metadata.contains(.destination) {
            if ipv6 { try socket.setOption(Int32(IPPROTO_IPV6), IPV6_RECVPKTINFO, 1, "IPV6_RECVPKTINFO") }
            if ipv4 { try socket.setOption(Int32(IPPROTO_IP), IP_PKTINFO, 1, "IP_PKTINFO") }
        }
        if metadata.contains(.ecn) {
            if ipv6 { try socket.setOption(Int32(IPPROTO_IPV6), IPV6_RECVTCLASS, 1, "IPV6_RECVTCLASS") }
            if ipv4 { try socket.setOption(Int32(IPPROTO_IP), IP_RECVTOS, 1, "IP_RECVTOS") }
        }
        if metadata.contains(.receiveTime) {
            try socket.setOption(SOL_SOCKET, SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS")
        }
    }

    /// Starts reading (EV_READ). Does nothing if reading, or once the socket has been closed.
    public func start() {
        #if DEBUG
        loop.assertOnLoopThread("BatchedUDPReader.start()")
        #endif
        guard !socketClosed else { return }
        readWatcher.start()
    }

    /// Stops reading; datagrams wait in the socket's receive buffer. Safe inside the handler.
    public func stop() {
        #if DEBUG
        loop.assertOnLoopThread("BatchedUDPReader.stop()")
        #endif
        readWatcher.stop()
    }

    /// Whether the reader is watching its socket.
    public var isReading: Bool { readWatcher.isActive }

    private func readable(_ events: IOEvents) {
        guard !events.contains(.error) else {
            report(.error(.EBADF))
            return
        }
        var calls = 0
        let datagramsBefore = counters.datagrams
        while calls < configuration.maxCallsPerEvent && readWatcher.isActive {
            calls += 1
            counters.recvmmsgCalls += 1
            slots.prepare(slots.count)
            switch Syscall.recvmmsg(fd, slots.messages, slots.count) {
            case let .done(received):
                deliver(received)
                if received < slots.count {
                    // The receive queue is empty. With IP_RECVERR on, read the error queue now too: with
                    // steady traffic no wakeup would come back empty, and its entries (EPOLLERR) would
                    // keep waking a watcher that leaves them to this reader.
                    if socket.errorQueueEnabled && !socketClosed { readQueuedErrors() }
                    return
                }
            case .failed(.EAGAIN):
                // Woken with nothing to read: epoll reports EPOLLERR while the error queue (IP_RECVERR)
                // holds entries, and would wake the reader again at once until they are read.
                if counters.datagrams == datagramsBefore || socket.errorQueueEnabled { readQueuedErrors() }
                return
            case let .failed(error):
                counters.errors += 1
                report(.error(error))
                switch error {
                case .ECONNREFUSED, .EHOSTUNREACH, .ENETUNREACH:
                    continue  // an ICMP error for an earlier send, now consumed: keep reading
                case .EBADF, .ENOTSOCK, .EFAULT:
                    readWatcher.stop()
                    return
                default:
                    return
                }
            }
        }
    }

    /// Reports what the socket's error queue holds, at most one batch's worth per wakeup.
    private func readQueuedErrors() {
        for _ in 0..<configuration.batchSize where !socketClosed {
            switch Syscall.receiveQueuedError(fd) {
            case let .success(entry?):
                counters.deliveryErrors += 1
                report(.deliveryError(entry.errno, destination: entry.destination))
            case .success(nil), .failure:
                return
            }
        }
    }

    /// Hands the datagrams of `received` slots to the handler, splitting merged (GRO) slots back into
    /// their datagrams; reports the truncated ones instead.
    private func deliver(_ received: Int) {
        slots.resetPieces()
        let limit = configuration.maxDatagramSize
        for slot in 0..<received {
            let length = slots.length(slot)
            let flags = slots.flags(slot)
            if flags & Int32(MSG_TRUNC | MSG_CTRUNC) != 0 || length > slots.slotSize {
                guard flags & Int32(MSG_TRUNC) == 0 && length <= slots.slotSize else {
                    counters.truncated += 1
                    report(.truncated(sender: slots.sender(slot), size: length, limit: limit))
                    continue
                }
                // MSG_CTRUNC, also without a control buffer: the kernel sets it when something else on
                // the socket turned control messages on (SO_TIMESTAMP, UDP_GRO...), and a merged receive
                // would otherwise reach the handler as one datagram.
                counters.controlTruncated += 1
                report(.controlTruncated(sender: slots.sender(slot), size: length, dropped: slots.merges))
                if slots.merges { continue }
            }
            var segment: Int? = nil
            if slots.hasControl {
                slots.parseControl(slot)
                segment = slots.segmentSize(slot)
            }
            guard let segment, segment < length else {
                // One datagram (possibly empty): the common case, without GRO always.
                guard length <= limit else {
                    counters.truncated += 1
                    report(.truncated(sender: slots.sender(slot), size: length, limit: limit))
                    continue
                }
                if slots.piecesFull { handOver() }
                slots.appendPiece(slot: slot, offset: 0, length: length)
                counters.datagrams &+= 1
                counters.bytes &+= length
                continue
            }
            counters.mergedReceives += 1
            if segment <= limit {
                // Every piece fits: cut the run without looking at each piece twice.
                var offset = 0
                while offset < length {
                    if slots.piecesFull { handOver() }
                    let (reached, pieces) = slots.appendRun(slot: slot, from: offset, length: length, segment: segment)
                    counters.datagrams &+= pieces
                    counters.bytes &+= reached &- offset
                    offset = reached
                }
                continue
            }
            for piece in MergedDatagrams(length: length, segmentSize: segment) {
                if piece.length > limit {
                    counters.truncated += 1
                    report(.truncated(sender: slots.sender(slot), size: piece.length, limit: limit))
                } else {
                    if slots.piecesFull { handOver() }
                    slots.appendPiece(slot: slot, offset: piece.offset, length: piece.length)
                    counters.datagrams &+= 1
                    counters.bytes &+= piece.length
                }
            }
        }
        handOver()
    }

    private func handOver() {
        guard slots.pieceCount > 0 else { return }
        handler(self, ReceivedBatch(slots: slots, count: slots.pieceCount))
        slots.resetPieces()
    }

    private func report(_ problem: ReceiveProblem) {
        onProblem?(self, problem)
    }
}

extension BatchedUDPReader: SocketUser {
    /// Its socket is closing: stop for good, so nothing is read from a later socket that reuses the
    /// descriptor number.
    func socketWillClose() {
        socketClosed = true
        readWatcher.stop()
    }

    var readsErrorQueue: Bool { readWatcher.isActive }
}
