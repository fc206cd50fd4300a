internal import CUDPShims
internal import Libev

/// The send path: enqueue bookkeeping, the drain state machine, and reports.
///
/// Who drains next is always exactly one of: the prepare watcher (end of this iteration), the write
/// watcher (socket full), the back-off timer (ENOBUFS), or nobody (ring empty). Reports collected during
/// the send loop are delivered after it, so callbacks that enqueue, flush or close never see a half-done drain.
extension BatchedUDPWatcher {
    /// How the kernel's answer to one `sendmmsg` is handled (see REFERENCES §1, DESIGN "How data flows").
    enum ErrorClass {
        /// EAGAIN: the send buffer is full; wait for EV_WRITE.
        case wouldBlock
        /// ENOBUFS: a transient shortage; retry a few times, then back off on a timer (never spin on EV_WRITE).
        case noBuffers
        /// Programmer errors on the descriptor (EBADF, ENOTSOCK, EFAULT): fail everything and close.
        case fatal
        /// Anything else concerns the first message (EMSGSIZE, EINVAL, EHOSTUNREACH, EPERM, EIO...), or is
        /// the socket's pending error that this call met: see `headRefused(_:)`.
        case headMessage

        init(_ error: Errno) {
            switch error {
            case .EAGAIN: self = .wouldBlock
            case .ENOBUFS: self = .noBuffers
            case .EBADF, .ENOTSOCK, .EFAULT: self = .fatal
            default: self = .headMessage
            }
        }
    }

    /// The head datagram met `errno` on its first try and is offered once more: as a lone datagram after a
    /// refused super-datagram (`refusedRun`), or because the errno may be the socket's pending error.
    struct HeadRetry {
        let sequence: Int
        let errno: Errno
        let refusedRun: Bool
        /// False once the socket pushed back (EAGAIN, ENOBUFS) before the second try: time passed, and a
        /// new pending error may be what that try meets.
        var immediate = true
    }

    /// A super-datagram the kernel refused, while its datagrams go out one by one: whether one of them
    /// failed alone too tells whether the refusal was about a datagram or about segmentation on the path.
    struct RefusedRun {
        let errno: Errno
        let destination: SegmentationLimits.Destination
        /// One of its datagrams failed when sent alone.
        var anyFailed = false
        /// One of them failed alone with the refusal's own errno.
        var failedWithSameErrno = false
    }

    /// Refusals of super-datagrams (EIO or EINVAL, with the same datagrams then accepted one by one) in a
    /// row, without a super-datagram accepted in between, that turn segmentation off for the socket.
    static let refusalsBeforeSegmentationOff = 3

    /// Why a send loop stopped.
    enum DrainOutcome {
        case empty
        case wouldBlock
        case backOff
        case budgetSpent
        case closed
    }

    // MARK: Enqueue helpers

    /// Checks state, destination, metadata and size; returns the largest payload they allow. The hot
    /// case, a datagram to the connected peer without metadata, is a few loads and compares inline; so is
    /// a datagram with the destination and metadata of the one before (`prepareAddressed`).
    @inline(__always) @discardableResult
    func admit(_ destination: SocketAddress?, length: Int, metadata: SendMetadata?) throws(BatchedUDPError) -> Int {
        guard state == .open else { throw .closed }
        let limit: Int
        if destination == nil && metadata == nil {
            guard isConnected else { throw .destinationRequired }
            limit = peerPayloadLimit
        } else {
            limit = try prepareAddressed(destination, metadata)
        }
        guard length <= limit else { throw .messageTooLarge(size: length, limit: limit) }
        return limit
    }

    /// What checking a destination and metadata found, and how they are written: kept for the next
    /// datagram, which usually carries the same (a sender marking every datagram with one ECN codepoint,
    /// a server answering from one address), so a run of them is checked and encoded once. The metadata's
    /// control messages are kept apart from the destination: an echo server answers a different client
    /// each time, from the same address, and encodes that address once. Stored fields of the watcher,
    /// read in place.
    struct Addressed {
        var valid = false
        /// As given: ``SocketAddress/unspecified`` for the connected peer, empty metadata for none (both
        /// behave alike), so that comparing is word compares without optional tags.
        var destination = SocketAddress.unspecified
        var metadata = SendMetadata()
        /// The largest payload: the slot, or the wire family's UDP limit.
        var limit = 0
        /// The destination as written to the slot (IPv4 mapped on a dual-stack IPv6 socket).
        var target: SocketAddress?
        /// Names this destination and metadata in the ring's slots (`DatagramRing.keys`): it changes
        /// whenever they do, so adjacent slots with equal keys go to the same place with the same metadata.
        var key = 0
        /// The metadata whose control messages the ring holds ready (`DatagramRing.stage`), for an IPv4
        /// or IPv6 destination; `controlLength` of them (0 for none).
        var staged: SendMetadata?
        var stagedIPv4 = false
        var stagedValid = false
        var controlLength = 0
    }

    /// The limit for `destination` and `metadata` (not both nil), checked and staged as `addressed`.
    @inline(__always)
    func prepareAddressed(_ destination: SocketAddress?, _ metadata: SendMetadata?) throws(BatchedUDPError) -> Int {
        let sameDestination: Bool, sameMetadata: Bool
        if let destination { sameDestination = addressed.destination == destination } else { sameDestination = addressed.destination.isUnspecified }
        if let metadata { sameMetadata = addressed.metadata == metadata } else { sameMetadata = addressed.metadata.isEmpty }
        if !(addressed.valid && sameDestination && sameMetadata) {
            try readdress(destination, metadata)
        }
        return addressed.limit
    }

    /// The checks of a destination and metadata other than the last ones; the result is in `addressed`.
    @inline(never)
    private func readdress(_ destination: SocketAddress?, _ metadata: SendMetadata?) throws(BatchedUDPError) {
        addressed.valid = false
        // IPv4 on the wire (an IPv4 or IPv4-mapped destination, or a connected IPv4 peer) allows 65,507 bytes.
        let ipv4: Bool
        if let destination {
            switch (socket.family, destination.family) {
            case (.ipv4, .ipv4), (.ipv6, .ipv6): break
            case (.ipv6, .ipv4) where reachesIPv4: break
            default: throw .addressFamilyMismatch(destination: destination, socket: socket.family)
            }
            ipv4 = destination.isIPv4OnTheWire
        } else if isConnected {
            ipv4 = socket.family == .ipv4 || connectedPeerIsIPv4
        } else {
            throw .destinationRequired
        }
        if !(addressed.stagedValid && addressed.staged == metadata && addressed.stagedIPv4 == ipv4) {
            try stage(metadata, ipv4: ipv4, destination: destination)
        }
        addressed.destination = destination ?? .unspecified
        addressed.metadata = metadata ?? SendMetadata()
        addressed.limit = min(ring.slotSize, ipv4 ? SocketAddress.Family.ipv4.maxUDPPayload : SocketAddress.Family.ipv6.maxUDPPayload)
        addressed.target = socket.family == .ipv6 ? destination?.ipv4Mapped : destination
        addressed.key &+= 1
        addressed.valid = true
    }

    /// Checks `metadata` against the destination's real family and has the ring encode its control
    /// messages, ready to be copied into slots.
    private func stage(_ metadata: SendMetadata?, ipv4: Bool, destination: SocketAddress?) throws(BatchedUDPError) {
        addressed.stagedValid = false
        var attached = metadata
        if let source = metadata?.source {
            // The source address must be of the destination's real family.
            let unmapped = source.ipv4Unmapped ?? source
            guard unmapped.family == (ipv4 ? .ipv4 : .ipv6) else {
                throw .sourceFamilyMismatch(source: source, destination: destination)
            }
            attached?.source = unmapped
        }
        if isECNRefused { attached?.ecn = nil }
        addressed.controlLength = attached.map { $0.isEmpty ? 0 : ring.stage($0, ipv4: ipv4) } ?? 0
        addressed.staged = metadata
        addressed.stagedIPv4 = ipv4
        addressed.stagedValid = true
    }

    /// Why a datagram of `length` bytes to the connected peer without metadata cannot be queued, in the
    /// order ``admit(_:length:metadata:)`` and then the ring's room are checked (out of line: the lean
    /// forms only branch here).
    @usableFromInline
    func peerRefusal(length: Int) -> BatchedUDPError {
        if state != .open { return .closed }
        if !isConnected { return .destinationRequired }
        if length > peerPayloadLimit { return .messageTooLarge(size: length, limit: peerPayloadLimit) }
        return reject()
    }

    /// Counts `count` datagrams refused for lack of room and returns the error to throw.
    @usableFromInline @inline(never)
    func reject(_ count: Int = 1) -> BatchedUDPError {
        tally.rejected += count
        return .queueFull(capacity: ring.capacity, byteCapacity: ring.byteCapacity)
    }

    /// Queues the tail slot, written with `length` payload bytes, to the destination and with the
    /// metadata `admit` just checked; returns its sequence number.
    @inline(__always)
    func commit(length: Int, destination: SocketAddress?, metadata: SendMetadata?) -> Int {
        if destination == nil && metadata == nil {
            ring.commitTail(length: length)
        } else {
            commitAddressed(length: length)
        }
        return committed(1)
    }

    /// Queues the tail slot with the destination and metadata in `addressed` (what `admit` checked last).
    @inline(__always)
    func commitAddressed(length: Int) {
        assert(addressed.valid, "commit without its admit")
        ring.commitTail(length: length, target: addressed.target, key: addressed.key, controlLength: addressed.controlLength)
    }

    /// The bookkeeping after `n` datagrams were queued at once: their sequence numbers start at the
    /// returned one; a drain is scheduled if the ring was empty; the high water mark is applied. Counters
    /// and marks change once per call, however many datagrams it queued.
    @inlinable @inline(__always)
    func committed(_ n: Int) -> Int {
        let first = nextSequence
        nextSequence = first &+ n
        if ring.count == n { ringBecameBusy() }
        if ring.count >= enqueueHighWater.messages || ring.bytes >= enqueueHighWater.bytes {
            reachedHighWaterMark()
        }
        return first
    }

    /// `committed(1)` for the lean forms' fast path, whose check before the commit showed that the high
    /// water mark is not reached.
    @inlinable @inline(__always)
    func committedOne() -> Int {
        let first = nextSequence
        nextSequence = first &+ 1
        if ring.count == 1 { ringBecameBusy() }
        return first
    }

    /// Sets the limits enqueues check against from ``isWritable`` and the marks.
    func applyWaterMarks() {
        if isWritable {
            enqueueHighWater = highWaterMark
            fastRoom = Configuration.WaterMark(messages: min(ring.capacity, highWaterMark.messages - 1),
                                               bytes: min(ring.byteCapacity, highWaterMark.bytes - 1))
        } else {
            enqueueHighWater = Configuration.WaterMark(messages: .max, bytes: .max)
            fastRoom = Configuration.WaterMark(messages: ring.capacity, bytes: ring.byteCapacity)
        }
    }

    /// The ring was empty, so nothing owns a drain yet. Otherwise one does already (the prepare, write or
    /// back-off watcher), and asking three watchers per datagram costs measurably.
    @usableFromInline
    func ringBecameBusy() {
        scheduleDrain()
        updateSelfRetain()
    }

    @usableFromInline
    func reachedHighWaterMark() {
        isWritable = false
        writabilityChangePending = true
        deliverReports()
    }

    /// Starts the end-of-iteration drain unless a write watcher or back-off timer already owns the next one.
    func scheduleDrain() {
        guard !drainAtIterationEnd.isActive, !writeWatcher.isActive, !backoffTimer.isActive else { return }
        drainAtIterationEnd.start()
    }

    // MARK: Drain

    func socketBecameWritable(_ events: IOEvents) {
        if events.contains(.error) {
            // libev found the descriptor invalid and stopped the watcher.
            shutDown(reporting: .EBADF)
            deliverReports()
            updateSelfRetain()
            return
        }
        let sentBefore = tally.sent, eagainBefore = tally.eagain
        drain()
        if tally.sent == sentBefore && tally.eagain > eagainBefore && state != .closed && !socket.errorQueueHasReader {
            readQueuedErrors()
            deliverReports()
        }
    }

    /// Woken for EV_WRITE, yet the socket took nothing: epoll reports EPOLLERR (as writable) while the
    /// error queue holds entries (IP_RECVERR), so read them, or the write watcher spins until space frees.
    /// Each is reported (``SocketProblem/deliveryError(_:destination:)``); a reading ``BatchedUDPReader``
    /// on the same socket reads them instead, and this is not called.
    private func readQueuedErrors() {
        for _ in 0..<configuration.batchSize {
            guard case let .success(entry?) = Syscall.receiveQueuedError(fd) else { return }
            tally.deliveryErrors += 1
            problems.append(.deliveryError(entry.errno, destination: entry.destination))
        }
    }

    /// Whether ENOBUFS has kept every datagram out for ``Configuration/noBufferTimeout`` seconds.
    private func noBufferTimeExpired() -> Bool {
        guard let timeout = configuration.noBufferTimeout else { return false }
        let now = loop.now
        guard let since = noBufferSince else {
            noBufferSince = now
            return false
        }
        return now - since >= timeout
    }

    /// Sends from the head of the ring until it is empty, the socket pushes back, or the budget is spent;
    /// arms whichever watcher should continue; delivers reports. Datagrams that report callbacks enqueue
    /// are sent by this same drain while the budget lasts: a prepare watcher started now (we are inside the
    /// loop's prepare phase) would not run until after the loop has blocked in its poll.
    func drain() {
        guard !isDraining else { return }
        drainAtIterationEnd.stop()
        var calls = 0, noBuffers = 0
        while true {
            isDraining = true
            let outcome = sendLoop(calls: &calls, noBuffers: &noBuffers)
            switch outcome {
            case .empty, .closed:
                writeWatcher.stop()
                backoffTimer.stop()
                noBufferSince = nil
            case .wouldBlock:
                writeWatcher.start()
            case .backOff:
                writeWatcher.stop()
                if noBufferTimeExpired() {
                    // No datagram has gone out for noBufferTimeout seconds: report them all, so a host's
                    // loop can finish and the caller learns that the path is not taking anything.
                    clearRetryState()
                    while !ring.isEmpty { failHead(.ENOBUFS) }
                    noBufferSince = nil
                } else {
                    tally.backoffs += 1
                    backoffTimer.start()
                }
            case .budgetSpent:
                // Yield to the loop's other watchers; the socket is writable, so EV_WRITE fires after the
                // next poll without blocking it.
                writeWatcher.start()
            }
            if state == .closing && ring.isEmpty { shutDown(reporting: .ECANCELED) }
            _ = updateWritability()
            isDraining = false
            deliverReports()
            guard drainAtIterationEnd.isActive else { break }
            // A report callback enqueued more.
            drainAtIterationEnd.stop()
            if calls >= configuration.maxCallsPerDrain {
                writeWatcher.start()
                break
            }
        }
        updateSelfRetain()
    }

    /// `noBuffers` counts ENOBUFS over the whole drain, not in a row: under a full qdisc each retry sends
    /// a datagram or two before the next ENOBUFS, and resetting on that progress would busy-poll the qdisc.
    private func sendLoop(calls: inout Int, noBuffers: inout Int) -> DrainOutcome {
        while !ring.isEmpty {
            guard state != .closed else { return .closed }
            guard calls < configuration.maxCallsPerDrain else { return .budgetSpent }
            // The vector: the ring's own slots, or (GSO) messages of which each may carry a run of them.
            let vector: UnsafeMutablePointer<cudp_mmsghdr>, offered: Int
            if let segmented {
                segmented.build(from: ring, singles: singlesAtHead, now: loop.now)
                (vector, offered) = (segmented.messages, segmented.count)
            } else {
                (vector, offered) = (ring.headMessages, min(ring.contiguousFromHead, configuration.batchSize))
            }
            calls += 1
            tally.sendmmsgCalls += 1
            switch Syscall.sendmmsg(fd, vector, offered, seam: sendSeam) {
            case let .done(sent):
                precondition(sent <= offered, "sendmmsg reported \(sent) sent of \(offered)")
                guard sent > 0 else { return .wouldBlock }
                if sent < offered { tally.shortCounts += 1 }
                if let retry = headRetry {
                    headRetry = nil
                    if retry.sequence == headSequence { headWentThrough(after: retry) }
                }
                if let sequence = ecnRetry {
                    ecnRetry = nil
                    if sequence == headSequence { ecnWasRefused() }
                }
                var datagrams = sent, bytes: Int? = nil
                if let segmented {
                    let carried = segmented.datagrams(inFirst: sent)
                    (datagrams, bytes) = (carried.datagrams, carried.bytes)
                    if carried.superDatagrams > 0 {
                        tally.gsoSends += carried.superDatagrams
                        segmentationStrikes = 0
                    }
                }
                noBufferSince = nil
                tally.sent += datagrams
                tally.sentBytes += popHead(datagrams, knownBytes: bytes)
            case let .failed(error):
                switch ErrorClass(error) {
                case .wouldBlock:
                    tally.eagain += 1
                    headRetry?.immediate = false
                    return .wouldBlock
                case .noBuffers:
                    tally.noBuffers += 1
                    headRetry?.immediate = false
                    noBuffers += 1
                    if noBuffers > configuration.noBufferRetries { return .backOff }
                case .headMessage:
                    headRefused(error)
                case .fatal:
                    shutDown(reporting: error)
                    return .closed
                }
            }
        }
        return .empty
    }

    /// The sequence number of the datagram at the head of the ring.
    var headSequence: Int { tally.sent + tally.failed }

    /// The first message of a call failed with `error`. Who is to blame:
    /// - the head datagram, on its second try right after the first: it fails alone (after a wait, a
    ///   pending-class errno may be a new pending error, so it gets another try);
    /// - maybe not the super-datagram at the head (its path may not take GSO, its segments may exceed the
    ///   path MTU, one of its datagrams may be bad, or the error is an earlier datagram's): the run is sent
    ///   again one datagram at a time, and each datagram answers only for itself;
    /// - maybe not a lone head datagram, when the errno is one an ICMP error leaves pending on the socket
    ///   (man sendmmsg: it is returned by the next call, whatever it carries): the head is offered again;
    /// - otherwise the head datagram: it fails alone.
    private func headRefused(_ error: Errno) {
        let sequence = headSequence
        let run = segmented?.datagrams(inMessage: 0) ?? 1
        if (error == .EIO || error == .EINVAL) && run == 1 && !isECNRefused && ecnRetry != sequence && ring.headCarriesECN {
            // Some drivers and kernels refuse the ECN control message (quinn-rs/quinn PR 2719): offer
            // the datagram again without it, and stop sending ECN if it then goes out.
            ecnRetryCodepoint = ring.metadata(at: 0)?.ecn
            ring.removeHeadECN()
            ecnRetry = sequence
            singlesAtHead = max(singlesAtHead, 1)  // alone, so the answer is about this datagram only
            return
        }
        if let retry = headRetry, retry.sequence == sequence {
            if !retry.immediate && error.mayBeSocketsPendingError && run == 1 {
                headRetry = HeadRetry(sequence: sequence, errno: error, refusedRun: false)
                if retry.refusedRun && error == retry.errno { refusedRun?.failedWithSameErrno = true }
                return
            }
            headRetry = nil
            for _ in 0..<run { failHead(error) }
        } else if run > 1, let segmented {
            tally.segmentationFallbacks += 1
            singlesAtHead = run
            let destination = SegmentationLimits.Destination(of: segmented.messages[0])
            refusedRun = RefusedRun(errno: error, destination: destination)
            headRetry = HeadRetry(sequence: sequence, errno: error, refusedRun: true)
            if error == .EMSGSIZE {
                // Segments larger than this path's MTU: a lone datagram of that size is fragmented (or
                // fails on its own if it must not be). Coalesce only smaller ones for this destination.
                segmented.limits.limit(destination, to: segmented.segmentSize(ofMessage: 0) - 1, now: loop.now)
            }
        } else if error.mayBeSocketsPendingError {
            // Offered again alone (more datagrams may have joined its run meanwhile), so that the
            // answer to the second try is about this datagram only.
            headRetry = HeadRetry(sequence: sequence, errno: error, refusedRun: false)
            singlesAtHead = max(singlesAtHead, 1)
        } else {
            failHead(error)
        }
    }

    /// The head datagram went out on its second try, after `retry.errno`: if that errno can be the
    /// socket's pending error, it was (reported as such). A refused super-datagram is judged once all its
    /// datagrams went out or failed (`refusedRunResolved()`).
    private func headWentThrough(after retry: HeadRetry) {
        guard retry.errno.mayBeSocketsPendingError, !retry.refusedRun else { return }
        reportPendingError(retry.errno)
    }

    /// The head went out once its ECN message was dropped: this socket's path refuses ECN. Queued
    /// datagrams lose theirs too, and later ones are enqueued without.
    private func ecnWasRefused() {
        isECNRefused = true
        addressed.valid = false
        addressed.stagedValid = false
        ring.removeECN()
        tally.ecnFallbacks += 1
    }

    private func reportPendingError(_ error: Errno) {
        tally.pendingErrors += 1
        problems.append(.pendingError(error))
    }

    /// Every datagram of a refused super-datagram has been sent or failed on its own. If none failed with
    /// the refusal's errno, the refusal was not about one of them: the socket's pending error, if the
    /// errno can be one (EMSGSIZE aside: segments too large for the path, already limited); or, for EIO
    /// and EINVAL with none failed at all, a path that takes the datagrams but not the super-datagram: no
    /// GSO to that destination for a while, and when that happens on several paths in a row, the device
    /// cannot segment.
    private func refusedRunResolved() {
        guard let run = refusedRun else { return }
        refusedRun = nil
        if !run.failedWithSameErrno && run.errno.mayBeSocketsPendingError && run.errno != .EMSGSIZE {
            reportPendingError(run.errno)
        }
        guard !run.anyFailed, run.errno == .EIO || run.errno == .EINVAL, let segmented else { return }
        segmented.limits.limit(run.destination, to: 0, now: loop.now)
        segmentationStrikes += 1
        if segmentationStrikes >= BatchedUDPWatcher.refusalsBeforeSegmentationOff {
            self.segmented = nil
            tally.segmentationDisabled += 1
        }
    }

    /// Forgets second tries and refused runs: every queued datagram is about to be failed.
    private func clearRetryState() {
        headRetry = nil
        ecnRetry = nil
        refusedRun = nil
        singlesAtHead = 0
    }

    /// Removes `n` datagrams from the head; returns their payload bytes.
    private func popHead(_ n: Int, knownBytes: Int? = nil) -> Int {
        if singlesAtHead > 0 {
            singlesAtHead = max(singlesAtHead - n, 0)
            if singlesAtHead == 0 { refusedRunResolved() }
        }
        return ring.popFront(n, knownBytes: knownBytes)
    }

    /// Removes the head datagram and records its failure.
    func failHead(_ error: Errno) {
        var metadata = ring.metadata(at: 0)
        if ecnRetry == headSequence, let ecn = ecnRetryCodepoint {
            // Its ECN message was dropped for a second try that failed all the same: report it as enqueued.
            metadata = SendMetadata(source: metadata?.source, interfaceIndex: metadata?.interfaceIndex, ecn: ecn)
        }
        let failure = SendFailure(sequence: headSequence, errno: error, destination: ring.destination(at: 0),
                                  length: ring.length(at: 0), metadata: metadata)
        if singlesAtHead > 0 {
            refusedRun?.anyFailed = true
            if error == refusedRun?.errno { refusedRun?.failedWithSameErrno = true }
        }
        _ = popHead(1)
        tally.failed += 1
        tally.failedByErrno[error, default: 0] += 1
        failures.append(failure)
    }

    /// Closes: stops every watcher and records every queued datagram as failed with `error`.
    func shutDown(reporting error: Errno) {
        state = .closed
        asyncSenders?.failAll()
        drainAtIterationEnd.stop()
        writeWatcher.stop()
        backoffTimer.stop()
        closeTimer?.stop()
        closeTimer = nil
        clearRetryState()
        while !ring.isEmpty { failHead(error) }
        if let completion = closeCompletion {
            closeCompletion = nil
            closeCompletionPending = completion
        }
    }

    /// Applies the water marks; returns true if ``isWritable`` changed (a report is then pending).
    func updateWritability() -> Bool {
        let changed: Bool
        if isWritable {
            changed = ring.count >= highWaterMark.messages || ring.bytes >= highWaterMark.bytes
        } else {
            changed = ring.count <= lowWaterMark.messages && ring.bytes <= lowWaterMark.bytes
        }
        if changed {
            isWritable.toggle()
            writabilityChangePending = true
        }
        return changed
    }

    /// Runs pending callbacks in order: failures, socket problems, then a writability change, then close
    /// completion. Callbacks may enqueue, flush or close; what they cause is delivered by this same loop.
    func deliverReports() {
        guard !isDraining, !isDelivering else { return }
        guard !failures.isEmpty || !problems.isEmpty || writabilityChangePending || closeCompletionPending != nil else { return }
        isDelivering = true
        var next = 0, nextProblem = 0
        while true {
            if next < failures.count {
                let failure = failures[next]
                next += 1
                onError?(self, failure)
            } else if nextProblem < problems.count {
                let problem = problems[nextProblem]
                nextProblem += 1
                onSocketProblem?(self, problem)
            } else if writabilityChangePending {
                writabilityChangePending = false
                if isWritable { asyncSenders?.resumeNext() }
                onWritabilityChanged?(self, isWritable)
            } else if let completion = closeCompletionPending {
                closeCompletionPending = nil
                completion(self)
            } else {
                break
            }
        }
        if !failures.isEmpty { failures.removeAll(keepingCapacity: true) }
        if !problems.isEmpty { problems.removeAll(keepingCapacity: true) }
        isDelivering = false
    }

    /// Holds the watcher alive while datagrams are queued or a flushing close is under way (also when it
    /// does not keep the loop running: queued datagrams are always sent or reported).
    func updateSelfRetain() {
        let busy = !ring.isEmpty || state == .closing
        if busy, selfRetain == nil {
            selfRetain = Unmanaged.passRetained(self)
        } else if !busy, let retained = selfRetain {
            selfRetain = nil
            retained.release()
        }
    }
}

extension BatchedUDPWatcher: SocketUser {
    /// Its socket is closing: close at once (queued datagrams are reported with ECANCELED), so nothing
    /// is ever sent through a later socket that reuses the descriptor number.
    func socketWillClose() {
        guard state != .closed else { return }
        shutDown(reporting: .ECANCELED)
        deliverReports()
        updateSelfRetain()
    }

    var readsErrorQueue: Bool { false }
}

extension Errno {
    /// Whether this errno can be the socket's pending error (`sk_err`, set by an ICMP error for an earlier
    /// datagram: `icmp_err_convert` and `icmpv6_err_convert` in Linux), which the next send returns
    /// whatever it carries.
    var mayBeSocketsPendingError: Bool {
        switch self {
        case .ECONNREFUSED, .EHOSTUNREACH, .ENETUNREACH, .EHOSTDOWN, .ENONET, .ENOPROTOOPT, .EOPNOTSUPP,
             .EPROTO, .EMSGSIZE, .EACCES:
            return true
        default:
            return false
        }
    }
}
