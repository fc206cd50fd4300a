import BatchedUDP
import Glibc
import Libev

/// The echo server: an actor whose executor is the loop's, so its methods, the streams it reads and the
/// watchers it sends through all run on the loop thread. Plain libev callbacks (signals, the stats timer)
/// reach it with `assumeIsolated`, without a hop.
actor EchoServer {
    let executor: LoopExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    private let options: AsyncEcho

    private struct Endpoint {
        let socket: UDPSocket
        let address: SocketAddress
        let watcher: BatchedUDPWatcher
        let stream: DatagramStream
    }

    private var endpoints: [Endpoint] = []
    private var watchers: [Watcher] = []
    /// 0 running; 1 stopping (reading stopped, queued replies draining); 2 dropping what is queued.
    private var stopLevel = 0
    /// Replies that could not be queued (the watcher closed under them, or refused them).
    private var unsent = 0
    private var failed = 0
    private var last = (received: 0, sent: 0, at: 0.0)

    init(executor: LoopExecutor, options: AsyncEcho) {
        self.executor = executor
        self.options = options
    }

    /// Opens a socket, a stream and a watcher per address, and the signal and stats watchers.
    /// - Throws: `Failure` naming the address that could not be used.
    func start(_ addresses: [SocketAddress]) throws {
        let loop = executor.loop
        for address in addresses {
            do {
                // An IPv6 listener sharing its port with an IPv4 one takes IPv6 only (else its bind, or
                // the IPv4 one's, fails with EADDRINUSE: Linux binds [::]:P on IPv4 too); alone it stays
                // dual-stack. As echo-relay does.
                let socket = try UDPSocket(family: address.family)
                if address.family == .ipv6 && address.port != 0 && addresses.contains(where: { $0.family == .ipv4 && $0.port == address.port }) {
                    try socket.setIPv6Only(true)
                }
                try socket.bind(to: address)
                // 4 MiB: past net.core.rmem_max with CAP_NET_ADMIN (SO_RCVBUFFORCE), else up to it.
                do { try socket.setReceiveBufferSize(4 << 20, force: true) } catch { try? socket.setReceiveBufferSize(4 << 20) }
                var sending = BatchedUDPWatcher.Configuration()
                sending.capacity = options.ring
                sending.maxDatagramSize = options.maxDatagram
                let watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: sending)
                watcher.onError = { [unowned self] _, _ in self.assumeIsolated { $0.failed += 1 } }
                var reading = BatchedUDPReader.Configuration()
                reading.batchSize = options.readBatch
                reading.maxDatagramSize = options.maxDatagram
                // On a wildcard address, each answer must leave from the address its client contacted.
                if address.isWildcard { reading.metadata = [.destination] }
                let stream = try DatagramStream(loop: loop, socket: socket, configuration: reading)
                let bound = try socket.localAddress
                endpoints.append(Endpoint(socket: socket, address: bound, watcher: watcher, stream: stream))
                log("async-echo: listening on \(bound)")
            } catch {
                throw Failure(message: "cannot listen on \(address): \(error)")
            }
        }
        for signal in [SIGINT, SIGTERM] {
            do {
                let watcher = try SignalWatcher(loop: loop, signal: signal) { [unowned self] _ in
                    self.assumeIsolated { $0.stop(signal) }
                }
                watcher.keepsLoopAlive = false
                watcher.start()
                watchers.append(watcher)
            } catch {
                throw Failure(message: "cannot watch signal \(signal): \(error)")
            }
        }
        if options.statsInterval > 0 {
            let timer = TimerWatcher(loop: loop, after: options.statsInterval, repeat: options.statsInterval) { [unowned self] _ in
                self.assumeIsolated { $0.printStats() }
            }
            timer.keepsLoopAlive = false
            timer.start()
            watchers.append(timer)
        }
    }

    /// Echoes until a stop request has ended every stream, then drains the send queues and prints the totals.
    func serve() async {
        await withTaskGroup(of: Void.self) { group in
            for index in endpoints.indices {
                group.addTask { await self.echo(index) }
            }
        }
        await withTaskGroup(of: Void.self) { group in
            for index in endpoints.indices {
                group.addTask { await self.flush(index) }
            }
        }
        // Stopping a signal watcher gives its signal the default action back (for SIGINT and SIGTERM, the
        // end of the process). Block both on this thread first (our other threads have them blocked
        // since main), and ignore them once the watchers are stopped, for any thread started before
        // main blocked them (AddressSanitizer's): a second stop request arriving now is ignored, and
        // the process exits 0 with its totals. Seen once: exit 130 right after the final totals.
        var stops = sigset_t()
        sigemptyset(&stops)
        sigaddset(&stops, SIGINT)
        sigaddset(&stops, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &stops, nil)
        watchers.forEach { $0.stop() }
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        log("async-echo: final totals: \(totals)")
        // Let go of the loop's objects here, on the loop thread, not wherever the last reference to the
        // server happens to be dropped.
        watchers.removeAll()
        endpoints.removeAll()
    }

    /// Runs on the loop thread too, whoever drops the server last (SE-0371).
    isolated deinit {}

    /// One listening socket: every datagram back to its sender, answered from the address it came to.
    private func echo(_ index: Int) async {
        let endpoint = endpoints[index]
        for await batch in endpoint.stream {
            for datagram in batch {
                do {
                    try await endpoint.watcher.send(datagram, to: datagram.sender, metadata: datagram.replyMetadata)
                } catch {
                    unsent += 1
                }
            }
        }
    }

    /// Sends what `watcher` still holds, for up to --drain-timeout seconds (or until a second stop).
    private func flush(_ index: Int) async {
        let watcher = endpoints[index].watcher
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            guard watcher.counters.queued > 0, stopLevel < 2 else {
                watcher.close()
                return done.resume()
            }
            log("async-echo: sending \(watcher.counters.queued) queued datagrams for up to \(options.drainTimeout) s")
            watcher.close(flushingWithin: options.drainTimeout) { _ in done.resume() }
        }
    }

    /// SIGINT or SIGTERM: the first stops reading (the streams end once what they hold is echoed); the
    /// second drops what is still queued.
    private func stop(_ signal: Int32) {
        stopLevel = min(stopLevel + 1, 2)
        if stopLevel == 1 {
            log("async-echo: \(signal == SIGINT ? "SIGINT" : "SIGTERM"): stopped reading; echoing what was received")
            endpoints.forEach { $0.stream.finish() }
        } else {
            log("async-echo: stop requested again: dropping what is still queued")
            endpoints.forEach { $0.watcher.close() }
        }
    }

    private var totals: String {
        var received = 0, sent = 0, queued = 0, truncated = 0, drops = 0
        for endpoint in endpoints {
            received += endpoint.stream.counters.datagrams
            truncated += endpoint.stream.counters.truncated
            sent += endpoint.watcher.counters.sent
            queued += endpoint.watcher.counters.queued
            drops += (try? endpoint.socket.receiveDrops) ?? 0
        }
        return "received \(received) sent \(sent) queued \(queued) failed \(failed) unsent \(unsent) truncated \(truncated) kernel_drops \(drops)"
    }

    private func printStats() {
        var received = 0, sent = 0
        for endpoint in endpoints {
            received += endpoint.stream.counters.datagrams
            sent += endpoint.watcher.counters.sent
        }
        let now = executor.loop.now, seconds = max(now - last.at, 1e-9)
        if last.at > 0 {
            log("async-echo: stats: in \(Int(Double(received - last.received) / seconds))/s out \(Int(Double(sent - last.sent) / seconds))/s | \(totals)")
        }
        last = (received, sent, now)
    }
}
