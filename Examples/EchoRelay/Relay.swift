import ArgumentParser
import BatchedUDP
import Glibc
import Libev
import Logging

/// `echo-relay relay`: a bidirectional UDP relay with one upstream-connected socket per client.
struct Relay: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "Relay datagrams between clients and one upstream, with a session socket per client.",
        discussion: """
            Only clients in the --allow networks are served (by default loopback, RFC 1918, 100.64/10, \
            link-local, ::1, fc00::/7 and fe80::/10, as dnsdist); others are counted (denied), never \
            answered. Each client address gets a session: a socket connected to the upstream, so the kernel accepts \
            replies only from the upstream. Replies go back to the client from the listening socket it \
            used. At --max-sessions, a new client evicts the least recently active unassured session (its \
            client has not sent again since the upstream answered); if all are assured, it is refused. \
            Memory is bounded by the sessions allowed. Each session holds about \
            (--session-ring + --session-read-batch) x --max-datagram bytes of buffers. With --threads N, \
            each thread keeps its own sessions, up to its share of --max-sessions (rounded up).
            """)

    @Option(help: "Address to listen on for clients, HOST:PORT (repeatable).")
    var listen: [String] = []

    @Option(help: "Upstream server, HOST:PORT.")
    var upstream: String

    @Option(help: "Client network allowed to use the relay, a.b.c.d/n or ipv6/n (repeatable); replaces the default list. --allow 0.0.0.0/0 --allow ::/0 serves anyone.")
    var allow: [String] = []

    @Option(help: "Most client sessions at once; a new client then evicts the least recently active unassured session, or is refused when all are assured. Lowered at start-up, with a log line, if the descriptor limit cannot hold them.")
    var maxSessions = 10_000

    @Option(help: "Seconds without traffic after which a session is closed.")
    var sessionTimeout = 60.0

    @Option(help: "Send ring capacity per listening socket, in datagrams.")
    var ring = 4096

    @Option(help: "Send ring capacity per session (towards the upstream), in datagrams.")
    var sessionRing = 32

    @Option(help: "Datagrams per recvmmsg call on a session socket.")
    var sessionReadBatch = 8

    @OptionGroup var daemon: DaemonOptions

    func validate() throws {
        guard !listen.isEmpty else { throw ValidationError("give at least one --listen HOST:PORT") }
        for text in listen { _ = try parseAddress(text, option: "--listen") }
        _ = try parseAddress(upstream, option: "--upstream")
        guard maxSessions >= 1 else { throw ValidationError("--max-sessions must be at least 1, got \(maxSessions)") }
        guard sessionTimeout > 0, sessionTimeout.isFinite else { throw ValidationError("--session-timeout must be a positive number of seconds") }
        guard ring >= 1, sessionRing >= 1 else { throw ValidationError("--ring and --session-ring must be at least 1") }
        guard (1...1024).contains(sessionReadBatch) else { throw ValidationError("--session-read-batch must be 1...1024, got \(sessionReadBatch)") }
        _ = try AccessList(allow)
    }

    func run() throws {
        let upstream = try parseAddress(upstream, option: "--upstream")
        let daemon = Daemon(options: self.daemon)
        var settings = self
        settings.maxSessions = Relay.fitDescriptorLimit(sessions: maxSessions, listeners: listen.count * self.daemon.threads,
                                                        threads: self.daemon.threads, logger: daemon.logger)
        let accessList = try AccessList(allow)
        daemon.logger.notice("relay: serving clients in \(accessList)")
        try daemon.run(listen: listen.map { try parseAddress($0, option: "--listen") }) { [settings] worker, addresses in
            try RelayService(listen: addresses, upstream: upstream, settings: settings, accessList: accessList, worker: worker)
        }
    }

    /// Raises the descriptor soft limit to the hard limit, and returns how many sessions fit under it
    /// (one descriptor each, besides the listeners, each loop's own and a margin): `sessions`, or fewer,
    /// said in one log line. Without it, sessions past the limit fail one by one with EMFILE.
    static func fitDescriptorLimit(sessions: Int, listeners: Int, threads: Int, logger: Logger) -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return sessions }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        let reserved = listeners + threads * 4 + 32
        let available = limit.rlim_cur >= UInt(Int.max) ? Int.max : max(Int(limit.rlim_cur) - reserved, 1)  // RLIM_INFINITY is ~0
        guard sessions > available else { return sessions }
        logger.warning("relay: the descriptor limit is \(limit.rlim_cur); lowering --max-sessions from \(sessions) to \(available)")
        return available
    }
}

/// Listening sockets for clients, and a session per client.
final class RelayService: Service {
    /// A session is one client as seen on one local address: on a wildcard listener the same client may
    /// contact several of the host's addresses, and each must be answered from its own (as nginx and
    /// envoy key their UDP sessions).
    struct SessionKey: Hashable {
        let client: SocketAddress
        /// The local address the client contacted; nil on a listener bound to one address.
        let local: SocketAddress?
    }

    /// One client's path to the upstream.
    final class Session {
        let client: SocketAddress
        /// The address to answer the client from (the one it contacted), on a wildcard listener.
        let local: SocketAddress?
        let listener: Int
        let socket: UDPSocket
        var reader: BatchedUDPReader!
        var watcher: BatchedUDPWatcher!
        var lastActive: Double
        /// The client batch in which a flush of this session's ring made no room (its socket is blocked):
        /// no more flushes for it in that batch.
        var blockedInBatch = -1
        /// An upstream reply went to the client since its last datagram.
        var answered = false
        /// The client sent again after an upstream reply (as conntrack's assured entries): never evicted
        /// for a newcomer.
        var assured = false
        /// Neighbours in its `SessionList` (assured or unassured), by last activity.
        weak var older: Session?
        weak var newer: Session?
        var key: SessionKey { SessionKey(client: client, local: local) }

        init(client: SocketAddress, local: SocketAddress?, listener: Int, socket: UDPSocket, now: Double) {
            self.client = client
            self.local = local
            self.listener = listener
            self.socket = socket
            lastActive = now
        }
    }

    private unowned let worker: Worker  // the worker owns this service
    private let upstream: SocketAddress
    /// This worker's share of --max-sessions.
    private let maxSessions: Int
    private let settings: Relay
    private var listeners: [Endpoint] = []
    private var sessions: [SessionKey: Session] = [:]
    /// The sessions by last activity: those a newcomer may evict, and those it may not.
    private var unassured = SessionList(), assured = SessionList()
    private var evicted = 0
    private var sweep: TimerWatcher!
    /// Counters of closed sessions, so totals never go down.
    private var retired = Stats()
    private var queueFull = 0
    private var refused = 0
    private var denied = 0
    private var foreign = 0
    private let accessList: AccessList
    /// Listeners whose send ring is past its high-water mark: their sessions do not read.
    private var pausedListeners: [Bool] = []
    /// Client batches read so far (see `Session.blockedInBatch`).
    private var clientBatches = 0
    /// Warnings a remote sender can provoke, each at most once per 10 s.
    private var fullWarning = RateLimitedWarning(), openWarning = RateLimitedWarning(), deniedWarning = RateLimitedWarning()

    init(listen: [SocketAddress], upstream: SocketAddress, settings: Relay, accessList: AccessList, worker: Worker) throws {
        self.worker = worker
        self.accessList = accessList
        self.upstream = upstream
        self.settings = settings
        let threads = worker.options.threads
        maxSessions = (settings.maxSessions + threads - 1) / threads
        sessions.reserveCapacity(maxSessions)
        for (index, address) in listen.enumerated() {
            let endpoint = try worker.endpoint(on: address, among: listen, ring: settings.ring, metadata: .ecn) { [unowned self] _, batch in
                self.fromClients(batch, listener: index)
            }
            endpoint.watcher.onWritabilityChanged = { [unowned self] _, writable in
                self.listenerWritabilityChanged(index, writable: writable)
            }
            listeners.append(endpoint)
            pausedListeners.append(false)
            worker.logger.notice("relay: listening on \(endpoint.address), upstream \(upstream)")
        }
        let interval = min(settings.sessionTimeout / 4, 1.0)
        sweep = TimerWatcher(loop: worker.loop, after: interval, repeat: interval) { [unowned self] _ in self.closeIdleSessions() }
        sweep.keepsLoopAlive = false
        sweep.start()
    }

    private func fromClients(_ batch: ReceivedBatch, listener: Int) {
        let now = worker.loop.now
        clientBatches &+= 1
        for datagram in batch {
            guard let client = datagram.sender else { continue }
            let key = SessionKey(client: client, local: datagram.replyMetadata?.source)
            guard let session = sessions[key] ?? openSession(for: key, listener: listener, now: now) else { continue }
            clientSent(session, now: now)
            // A client's burst can be larger than its session's ring: past the high-water mark, send what
            // the ring holds now (one sendmmsg for the whole ring, not one per datagram). If that made no
            // room (the upstream socket is blocked), no more flushes for this session in this batch, and
            // a full ring drops the datagram (counted) without touching other sessions.
            if !session.watcher.isWritable && session.blockedInBatch != clientBatches {
                session.watcher.flush()
                if !session.watcher.isWritable { session.blockedInBatch = clientBatches }
            }
            // The datagram's ECN codepoint goes on to the upstream (not-ECT needs no control message).
            do { try session.watcher.enqueue(datagram.payload, to: nil, metadata: ecnMetadata(datagram.ecn)) } catch { queueFull += 1 }
        }
    }

    /// The metadata that carries `ecn` across, nil for not-ECT (as the socket sends by default).
    private func ecnMetadata(_ ecn: ECN?, from source: SocketAddress? = nil) -> SendMetadata? {
        let carried = ecn == .notECT ? nil : ecn
        return carried == nil && source == nil ? nil : SendMetadata(source: source, ecn: carried)
    }

    private func openSession(for key: SessionKey, listener: Int, now: Double) -> Session? {
        let client = key.client
        guard accessList.allows(client) else {
            denied += 1
            deniedWarning.log(worker.logger, now: now, "relay: denying clients outside --allow such as \(client)")
            return nil
        }
        if sessions.count >= maxSessions {
            // Full: the least recently active unassured session (a client that has not sent again since
            // the upstream answered, such as a spoofed or one-shot source) makes room; assured ones never do.
            guard let victim = unassured.oldest else {
                refused += 1
                fullWarning.log(worker.logger, now: now, "relay: \(maxSessions) sessions open, all assured; refusing new clients such as \(client)")
                return nil
            }
            evicted += 1
            close(victim)
            sessions[victim.key] = nil
            worker.logger.debug("relay: session for \(victim.client) evicted for \(client)")
        }
        do {
            let socket = try UDPSocket(family: upstream.family)
            try socket.connect(to: upstream)
            let session = Session(client: client, local: key.local, listener: listener, socket: socket, now: now)
            session.watcher = try BatchedUDPWatcher(loop: worker.loop, socket: socket,
                                                    configuration: worker.options.watcherConfiguration(capacity: settings.sessionRing))
            session.reader = try BatchedUDPReader(loop: worker.loop, socket: socket,
                                                  configuration: worker.options.readerConfiguration(batch: settings.sessionReadBatch, metadata: .ecn)) {
                [unowned self, unowned session] _, batch in self.fromUpstream(batch, session: session)
            }
            let logger = worker.logger
            session.reader.onProblem = { _, problem in logger.debug("session \(client): \(problem)") }
            session.watcher.onError = { _, failure in logger.debug("to upstream for \(client): \(failure)") }
            session.watcher.onSocketProblem = { _, problem in logger.debug("session \(client): \(problem)") }
            if !pausedListeners[listener] { session.reader.start() }
            sessions[key] = session
            unassured.append(session)
            logger.debug("relay: session for \(client)\(key.local.map { " (contacted at \($0.host))" } ?? "") opened on local \((try? socket.localAddress)?.description ?? "?")")
            return session
        } catch {
            refused += 1
            openWarning.log(worker.logger, now: now, "relay: cannot open a session for \(client): \(error)")
            return nil
        }
    }

    /// A client datagram: the session is active now, and assured if the upstream had answered it.
    private func clientSent(_ session: Session, now: Double) {
        session.lastActive = now
        if session.answered && !session.assured {
            unassured.remove(session)
            session.assured = true
            assured.append(session)
        } else if session.assured {
            assured.touch(session)
        } else {
            unassured.touch(session)
        }
        session.answered = false
    }

    private func fromUpstream(_ batch: ReceivedBatch, session: Session) {
        session.lastActive = worker.loop.now
        session.answered = true
        if session.assured { assured.touch(session) } else { unassured.touch(session) }
        let toClient = listeners[session.listener].watcher
        for datagram in batch {
            // The session socket is connected, so the kernel delivers only the upstream's datagrams;
            // check anyway rather than trust it.
            guard datagram.sender == upstream else {
                foreign += 1
                continue
            }
            // Answered from the address the client contacted, with the upstream's ECN codepoint.
            do {
                try toClient.enqueue(datagram.payload, to: session.client, metadata: ecnMetadata(datagram.ecn, from: session.local))
            } catch {
                queueFull += 1
            }
        }
    }

    /// Closes the sessions idle for --session-timeout: only those, from the least recent end of each list.
    private func closeIdleSessions() {
        let deadline = worker.loop.now - settings.sessionTimeout
        var idle: [Session] = []
        for list in [unassured, assured] {
            var next = list.oldest
            while let session = next, session.lastActive < deadline {
                idle.append(session)
                next = session.newer
            }
        }
        for session in idle {
            close(session)
            sessions[session.key] = nil
            worker.logger.debug("relay: session for \(session.client) closed after \(settings.sessionTimeout) s idle")
        }
    }

    /// Closes a session and takes it out of its list; its counters, and the kernel's drops on its socket,
    /// go on counting in `retired`.
    private func close(_ session: Session) {
        if session.assured { assured.remove(session) } else { unassured.remove(session) }
        session.reader.stop()
        session.watcher.close()
        retired.add(session.reader.counters)
        retired.add(session.watcher.counters)
        retired.kernelDrops += (try? session.socket.receiveDrops) ?? 0
        try? session.socket.close()
    }

    /// Backpressure towards the clients: while a listener's send ring is past its high-water mark, the
    /// sessions whose replies go out through it stop reading (the upstream's replies wait in, or are
    /// dropped and counted by, their sockets' receive buffers), and all of them start again at the low
    /// mark. No syscall per dropped datagram; a session that floods cannot take the ring from the others
    /// for longer than one read batch.
    private func listenerWritabilityChanged(_ listener: Int, writable: Bool) {
        pausedListeners[listener] = !writable
        for session in sessions.values where session.listener == listener {
            if !writable { session.reader.stop() } else if !worker.isStopping { session.reader.start() }
        }
    }

    var stats: Stats {
        var stats = retired
        for listener in listeners {
            stats.add(listener.reader.counters)
            stats.add(listener.watcher.counters)
        }
        for session in sessions.values {
            stats.add(session.reader.counters)
            stats.add(session.watcher.counters)
        }
        stats.queueFull = queueFull
        stats.kernelDrops = retired.kernelDrops
            + (listeners.map(\.socket) + sessions.values.map(\.socket)).reduce(0) { $0 + ((try? $1.receiveDrops) ?? 0) }
        stats.refused = refused
        stats.evicted = evicted
        stats.denied = denied
        stats.foreign = foreign
        stats.sessions = sessions.count
        return stats
    }

    var senders: [BatchedUDPWatcher] { listeners.map(\.watcher) + sessions.values.map(\.watcher) }

    var listeningAddresses: [SocketAddress] { listeners.compactMap { try? $0.socket.localAddress } }

    func stopReading() {
        sweep.stop()
        listeners.forEach { $0.reader.stop() }
        sessions.values.forEach { $0.reader.stop() }
    }
}

/// A warning a remote sender can provoke (a flood of new clients), logged at most once per `interval`
/// seconds, with how many were held back since the last one.
struct RateLimitedWarning {
    var interval = 10.0
    private var last = -Double.infinity
    private var held = 0

    mutating func log(_ logger: Logger, now: Double, _ message: @autoclosure () -> String) {
        guard now - last >= interval else {
            held += 1
            return
        }
        logger.warning("\(message())\(held > 0 ? " (\(held) more since the last such line)" : "")")
        last = now
        held = 0
    }
}
