import BatchedUDP
import Libev
import Logging
import Synchronization

/// One event loop on one thread, with its own service: its sockets, readers, watchers and relay sessions.
/// Nothing in it is shared with other workers, so the hot path takes no lock. The daemon's thread talks
/// to it only through `control` (stop requests) and reads its totals once its loop has ended.
final class Worker {
    let loop: EventLoop
    let logger: Logger
    let options: DaemonOptions
    private(set) var control: Control!
    private var service: Service?
    private var stopWatcher: AsyncWatcher!
    private var statsTimer: TimerWatcher?
    /// The stop level acted on so far (0 running, 1 draining, 2 dropping).
    private var stopLevelHandled = 0
    /// Whether a stop request has been acted on: readers stay stopped.
    var isStopping: Bool { stopLevelHandled > 0 }

    /// The daemon's side of a worker: a stop request (1: drain, 2: drop what is queued) and its wake-up.
    final class Control: Sendable {
        let stopLevel = Atomic<Int>(0)
        let signalName = Locked("SIGTERM")
        let wake: AsyncWatcher.Sender

        init(wake: AsyncWatcher.Sender) { self.wake = wake }

        /// Asks the worker to stop at `level` because of `signal` (from any thread). Levels only go up: a
        /// request below the current level changes nothing.
        func stop(level: Int, signal: String) {
            signalName.withLock { $0 = signal }
            var current = stopLevel.load(ordering: .relaxed)
            while current < level {
                let (exchanged, original) = stopLevel.compareExchange(expected: current, desired: level, ordering: .acquiringAndReleasing)
                if exchanged { break }
                current = original
            }
            wake.send()
        }
    }

    init(index: Int, options: DaemonOptions, logger baseLogger: Logger) throws {
        self.options = options
        var logger = baseLogger
        if options.threads > 1 { logger[metadataKey: "worker"] = "\(index)" }
        self.logger = logger
        do { loop = try EventLoop() } catch { throw Daemon.failure("cannot create an event loop: \(error)", logger) }
        stopWatcher = AsyncWatcher(loop: loop) { [unowned self] _ in self.stopRequested() }
        stopWatcher.keepsLoopAlive = false
        stopWatcher.start()
        control = Control(wake: stopWatcher.sender)
    }

    /// Opens, sizes and binds a listening socket (SO_REUSEPORT when several workers share its address)
    /// and puts a reader and a watcher on it; `handler` gets each received batch with that endpoint's
    /// watcher. A failure names the address and exits 1.
    /// On a wildcard address the reader also reports each datagram's destination, so the service can
    /// answer from the address each client contacted; `metadata` adds what else the service needs.
    /// With `backpressure` (an echo: the socket's own reader feeds its watcher), the reader stops when
    /// the watcher passes its high-water mark and starts again at the low one: the kernel's receive
    /// buffer absorbs the burst, or drops and counts (`kernel_drops`), and no datagram costs a syscall
    /// to drop.
    /// `listen` is every address the service listens on (see `takesIPv6Only`).
    func endpoint(on address: SocketAddress, among listen: [SocketAddress], ring: Int, metadata: BatchedUDPReader.Metadata = [],
                  backpressure: Bool = false, handler: @escaping (BatchedUDPWatcher, ReceivedBatch) -> Void) throws -> Endpoint {
        let socket: UDPSocket
        do {
            socket = try UDPSocket(family: address.family)
            if Worker.takesIPv6Only(address, among: listen) { try socket.setIPv6Only(true) }
            do { try socket.setReceiveBufferSize(options.rcvbuf, force: true) } catch { try socket.setReceiveBufferSize(options.rcvbuf) }
            if let sndbuf = options.sndbuf { try socket.setSendBufferSize(sndbuf) }
            if options.threads > 1 { try socket.setReusePort(true) }
            try socket.bind(to: address)
        } catch {
            throw Daemon.failure("cannot listen on \(address): \(error)", logger)
        }
        let watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: options.watcherConfiguration(capacity: ring))
        var readerConfiguration = options.readerConfiguration()
        readerConfiguration.metadata = metadata.union(address.isWildcard ? .destination : [])
        let reader = try BatchedUDPReader(loop: loop, socket: socket, configuration: readerConfiguration) { _, batch in
            handler(watcher, batch)
        }
        let logger = self.logger
        reader.onProblem = { _, problem in logger.debug("\(problem)") }
        watcher.onError = { _, failure in logger.debug("\(failure)") }
        watcher.onSocketProblem = { _, problem in logger.debug("\(problem)") }
        if backpressure {
            watcher.onWritabilityChanged = { [unowned self, unowned reader] _, writable in
                if !writable { reader.stop() } else if !self.isStopping { reader.start() }
            }
        }
        reader.start()
        return Endpoint(socket: socket, reader: reader, watcher: watcher)
    }

    /// Whether the IPv6 listener `address` must refuse IPv4 (IPV6_V6ONLY) because an IPv4 listener has
    /// its port: with Linux's default (net.ipv6.bindv6only = 0) an IPv6 socket also takes the port on
    /// IPv4, so `--listen 0.0.0.0:P --listen [::]:P` would fail with EADDRINUSE. As nginx's `ipv6only=on`,
    /// each family then has its own socket. Alone, `[::]:P` stays dual-stack and answers IPv4 clients too.
    static func takesIPv6Only(_ address: SocketAddress, among listen: [SocketAddress]) -> Bool {
        address.family == .ipv6 && address.port != 0 && listen.contains { $0.family == .ipv4 && $0.port == address.port }
    }

    /// Runs the loop until the service has stopped reading and drained; returns its final totals.
    func run(_ service: Service) -> Stats {
        self.service = service
        if options.statsInterval > 0 {
            var previous = service.stats
            var previousTime = loop.now
            let timer = TimerWatcher(loop: loop, after: options.statsInterval, repeat: options.statsInterval) { [unowned self] timer in
                let now = service.stats
                self.logger.info("stats: \(now.line(since: previous, seconds: timer.loop.now - previousTime))")
                previous = now
                previousTime = timer.loop.now
            }
            timer.keepsLoopAlive = false
            timer.start()
            statsTimer = timer
        }
        stopRequested()  // a signal that came while the service was being set up
        loop.run()
        stopWatcher.stop()
        statsTimer = nil
        self.service = nil
        return service.stats
    }

    /// Acts on a stop level above the one handled so far. Any stop stops reading (the readers would keep
    /// the loop running); level 1 then sends what is queued for up to `--drain-timeout`, level 2 drops it.
    /// Both levels may arrive at once (SIGTERM and SIGINT together): reading stops all the same.
    private func stopRequested() {
        guard let service else { return }
        let level = control.stopLevel.load(ordering: .acquiring)
        guard level > stopLevelHandled else { return }
        let name = control.signalName.withLock { $0 }
        if stopLevelHandled == 0 {
            statsTimer?.stop()
            service.stopReading()
        }
        if level == 1 {
            logger.notice("\(name): stopped reading; sending \(service.stats.queued) queued datagrams for up to \(options.drainTimeout) s")
            for sender in service.senders { sender.close(flushingWithin: options.drainTimeout) }
        } else {
            logger.warning("\(name)\(stopLevelHandled == 0 ? " (a second stop request)" : " again"): stopped reading; dropping \(service.stats.queued) queued datagrams")
            service.senders.forEach { $0.close() }
        }
        stopLevelHandled = level
    }
}
