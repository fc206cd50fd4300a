import BatchedUDP

/// The daemon's figures: totals since start, summed over every reader and watcher (closed relay
/// sessions included), plus the drops the services count themselves.
struct Stats {
    var received = 0
    var receivedBytes = 0
    var sent = 0
    var sentBytes = 0
    /// Dropped because a send ring was full (a burst larger than the room left above the high-water
    /// mark; past the mark the daemon stops reading instead).
    var queueFull = 0
    /// Dropped by the kernel on arrival at the daemon's sockets (receive buffer full), mostly while the
    /// daemon had stopped reading because a send ring was past its high-water mark.
    var kernelDrops = 0
    /// Reported by a watcher: the kernel refused them, or they were still queued at a close.
    var sendFailed = 0
    /// Dropped on receive: larger than --max-datagram.
    var truncated = 0
    /// recvmmsg errors (ICMP errors included).
    var receiveErrors = 0
    /// Errors a watcher's socket reported for earlier datagrams (pending errors, error-queue entries);
    /// no datagram was dropped for them.
    var socketErrors = 0
    /// Relay: datagrams from new clients refused because --max-sessions sessions exist.
    var refused = 0
    /// Relay: unassured sessions closed to make room for a new client.
    var evicted = 0
    /// Relay: datagrams from clients outside the --allow networks.
    var denied = 0
    /// Relay: datagrams on a session socket from someone other than the upstream.
    var foreign = 0
    /// Datagrams waiting in send rings now.
    var queued = 0
    /// Relay: open sessions now.
    var sessions = 0

    mutating func add(_ reader: ReceiveCounters) {
        received += reader.datagrams
        receivedBytes += reader.bytes
        truncated += reader.truncated
        receiveErrors += reader.errors
    }

    mutating func add(_ watcher: SendCounters) {
        sent += watcher.sent
        sentBytes += watcher.sentBytes
        sendFailed += watcher.failed
        socketErrors += watcher.pendingErrors + watcher.deliveryErrors
        queued += watcher.queued
    }

    /// Adds another worker's totals.
    mutating func add(_ other: Stats) {
        received += other.received
        receivedBytes += other.receivedBytes
        sent += other.sent
        sentBytes += other.sentBytes
        queueFull += other.queueFull
        kernelDrops += other.kernelDrops
        sendFailed += other.sendFailed
        truncated += other.truncated
        receiveErrors += other.receiveErrors
        socketErrors += other.socketErrors
        refused += other.refused
        denied += other.denied
        evicted += other.evicted
        foreign += other.foreign
        queued += other.queued
        sessions += other.sessions
    }

    /// `in 1200/s 53.1 KB/s (total 1234 datagrams, 56789 bytes) | out ... | drops ... | queued 0 | sessions 1`
    func line(since previous: Stats, seconds: Double) -> String {
        let rate = { (now: Int, before: Int) in Int((Double(now - before) / max(seconds, 1e-9)).rounded()) }
        return "in \(rate(received, previous.received))/s (total \(received) datagrams, \(receivedBytes) bytes)"
            + " | out \(rate(sent, previous.sent))/s (total \(sent) datagrams, \(sentBytes) bytes)"
            + " | drops queue_full=\(queueFull) kernel_drops=\(kernelDrops) send_failed=\(sendFailed) truncated=\(truncated)"
            + " receive_errors=\(receiveErrors) refused=\(refused) evicted=\(evicted) denied=\(denied) foreign=\(foreign)"
            + " | socket_errors=\(socketErrors) | queued \(queued) | sessions \(sessions)"
    }

    /// The final totals, as one line.
    var totals: String {
        "received \(received) datagrams (\(receivedBytes) bytes), sent \(sent) (\(sentBytes) bytes);"
            + " drops queue_full=\(queueFull) kernel_drops=\(kernelDrops) send_failed=\(sendFailed) truncated=\(truncated)"
            + " receive_errors=\(receiveErrors) refused=\(refused) evicted=\(evicted) denied=\(denied) foreign=\(foreign); socket_errors=\(socketErrors); queued \(queued); sessions \(sessions)"
    }
}
