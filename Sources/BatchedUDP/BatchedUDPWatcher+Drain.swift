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
        /// Anything else is about the head datagram (EMSGSIZE, EINVAL, EHOSTUNREACH, ENETUNREACH, EPERM,
        /// EACCES, ECONNREFUSED, EIO...): fail it alone and go on, so a poison datagram never stalls the ring.
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

    /// Why a send loop stopped.
    enum DrainOutcome {
        case empty
        case wouldBlock
        case backOff
        case budgetSpent
        case closed
    }

    // MARK: Enqueue helpers

    /// Checks state, destination and size; returns the destination as it will be written to the slot.
    func resolve(_ destination: SocketAddress?, length: Int) throws(BatchedUDPError) -> SocketAddress? {
        guard state == .open else { throw .closed }
        var target = destination
        if let destination {
            switch (socket.family, destination.family) {
            case (.ipv4, .ipv4), (.ipv6, .ipv6): break
            case (.ipv6, .ipv4) where reachesIPv4: target = destination.ipv4Mapped
            default: throw .addressFamilyMismatch(destination: destination, socket: socket.family)
            }
        } else if !isConnected {
            throw .destinationRequired
        }
        let limit = min(ring.slotSize, (destination?.family ?? socket.family).maxUDPPayload)
        guard length <= limit else { throw .messageTooLarge(size: length, limit: limit) }
        return target
    }

    func reject() -> BatchedUDPError {
        tally.rejected += 1
        return .queueFull(capacity: ring.capacity, byteCapacity: ring.byteCapacity)
    }

    /// Queues the tail slot, updates counters and marks, and makes sure a drain will run.
    func commit(length: Int, destination: SocketAddress?) -> Int {
        ring.commitTail(length: length, destination: destination)
        let sequence = tally.enqueued
        tally.enqueued += 1
        tally.peakQueued = max(tally.peakQueued, ring.count)
        tally.peakQueuedBytes = max(tally.peakQueuedBytes, ring.bytes)
        if ring.count == 1 {
            // The ring was empty, so nothing owns a drain yet. Otherwise one does already (the prepare,
            // write or back-off watcher), and asking three watchers per datagram costs measurably.
            scheduleDrain()
            updateSelfRetain()
        }
        if updateWritability() { deliverReports() }
        return sequence
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
        if tally.sent == sentBefore && tally.eagain > eagainBefore { discardQueuedErrors() }
    }

    /// Woken for EV_WRITE, yet the socket took nothing: epoll reports EPOLLERR (as writable) while the
    /// error queue holds entries (IP_RECVERR), so read them, or the write watcher spins until space frees.
    private func discardQueuedErrors() {
        for _ in 0..<configuration.batchSize {
            guard case .success(_?) = Syscall.receiveQueuedError(fd) else { return }
            tally.deliveryErrors += 1
        }
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
            case .wouldBlock:
                writeWatcher.start()
            case .backOff:
                writeWatcher.stop()
                tally.backoffs += 1
                backoffTimer.start()
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
                segmented.build(from: ring)
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
                var datagrams = sent
                if let segmented {
                    let carried = segmented.datagrams(inFirst: sent)
                    datagrams = carried.datagrams
                    tally.gsoSends += carried.superDatagrams
                }
                tally.sent += datagrams
                tally.sentBytes += ring.popFront(datagrams)
            case let .failed(error):
                // How many datagrams the failing head message carries.
                let headRun = segmented?.datagrams(inMessage: 0) ?? 1
                switch ErrorClass(error) {
                case .wouldBlock:
                    tally.eagain += 1
                    return .wouldBlock
                case .noBuffers:
                    tally.noBuffers += 1
                    noBuffers += 1
                    if noBuffers > configuration.noBufferRetries { return .backOff }
                case .headMessage where headRun > 1 && (error == .EIO || error == .EINVAL):
                    // The device or path cannot segment: send these, and all later ones, one by one.
                    segmented = nil
                    tally.segmentationFallbacks += 1
                case .headMessage where headRun > 1 && error == .EMSGSIZE:
                    // Segments larger than the path MTU: a lone datagram of that size would be fragmented
                    // (or fail on its own, if it must not be). Stop coalescing this size and re-send.
                    if let segmented { segmented.maxSegment = segmented.segmentSize(ofMessage: 0) - 1 }
                    tally.segmentationFallbacks += 1
                case .headMessage:
                    for _ in 0..<headRun { failHead(error) }
                case .fatal:
                    shutDown(reporting: error)
                    return .closed
                }
            }
        }
        return .empty
    }

    /// Removes the head datagram and records its failure.
    func failHead(_ error: Errno) {
        let failure = SendFailure(sequence: tally.sent + tally.failed, errno: error,
                                  destination: ring.destination(at: 0), length: ring.length(at: 0))
        ring.popFront(1)
        tally.failed += 1
        tally.failedByErrno[error, default: 0] += 1
        failures.append(failure)
    }

    /// Closes: stops every watcher and records every queued datagram as failed with `error`.
    func shutDown(reporting error: Errno) {
        state = .closed
        drainAtIterationEnd.stop()
        writeWatcher.stop()
        backoffTimer.stop()
        closeTimer?.stop()
        closeTimer = nil
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

    /// Runs pending callbacks in order: failures, then a writability change, then close completion.
    /// Callbacks may enqueue, flush or close; what they cause is delivered by this same loop.
    func deliverReports() {
        guard !isDraining, !isDelivering else { return }
        isDelivering = true
        var next = 0
        while true {
            if next < failures.count {
                let failure = failures[next]
                next += 1
                onError?(self, failure)
            } else if writabilityChangePending {
                writabilityChangePending = false
                onWritabilityChanged?(self, isWritable)
            } else if let completion = closeCompletionPending {
                closeCompletionPending = nil
                completion(self)
            } else {
                break
            }
        }
        failures.removeAll(keepingCapacity: true)
        isDelivering = false
    }

    /// Holds the watcher alive while datagrams are queued or a flushing close is under way.
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
