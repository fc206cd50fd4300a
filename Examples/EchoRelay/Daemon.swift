import ArgumentParser
import BatchedUDP
import Glibc
import Libev
import Logging

/// What a mode (echo, relay) gives the daemon.
protocol Service: AnyObject {
    /// Totals so far.
    var stats: Stats { get }
    /// Every watcher that may hold queued datagrams, to flush at shutdown.
    var senders: [BatchedUDPWatcher] { get }
    /// Stops reading and any timers of its own: after this, only queued datagrams keep the loop running.
    func stopReading()
}

extension BatchedUDPWatcher {
    /// Enqueues; if the ring is full, sends what it holds now (one sendmmsg) and tries once more.
    /// Returns false if the datagram was dropped.
    func enqueueOrFlush(_ payload: UnsafeRawBufferPointer, to destination: SocketAddress? = nil) -> Bool {
        do {
            try enqueue(payload, to: destination)
            return true
        } catch .queueFull {
            flush()
            return (try? enqueue(payload, to: destination)) != nil
        } catch {
            return false
        }
    }
}

/// A listening socket with the reader and the watcher that share it.
struct Endpoint {
    let socket: UDPSocket
    let reader: BatchedUDPReader
    let watcher: BatchedUDPWatcher

    /// The bound address, for log lines.
    var address: String { (try? socket.localAddress)?.description ?? "?" }
}

/// The process around a service: its loop, SIGINT/SIGTERM, SIGPIPE, stats lines, graceful drain.
final class Daemon {
    let loop: EventLoop
    let logger: Logger
    let options: DaemonOptions
    private var signalWatchers: [SignalWatcher] = []
    private var statsTimer: TimerWatcher?
    private var stopping = false

    init(options: DaemonOptions) throws {
        self.options = options
        var logger = Logger(label: "echo-relay")
        logger.logLevel = Daemon.level(options.logLevel) ?? .info
        self.logger = logger
        signal(SIGPIPE, SIG_IGN)
        do { loop = try EventLoop() } catch { throw Daemon.failure("cannot create the event loop: \(error)", logger) }
    }

    /// Opens, sizes and binds a listening socket and puts a reader and a watcher on it; `handler` gets
    /// each received batch with that endpoint's watcher. A failure names the address and exits 1.
    func endpoint(on address: SocketAddress, ring: Int,
                  handler: @escaping (BatchedUDPWatcher, ReceivedBatch) -> Void) throws -> Endpoint {
        let socket: UDPSocket
        do {
            socket = try UDPSocket(family: address.family)
            do { try socket.setReceiveBufferSize(options.rcvbuf, force: true) } catch { try socket.setReceiveBufferSize(options.rcvbuf) }
            if let sndbuf = options.sndbuf { try socket.setSendBufferSize(sndbuf) }
            try socket.bind(to: address)
        } catch {
            throw Daemon.failure("cannot listen on \(address): \(error)", logger)
        }
        let watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: options.watcherConfiguration(capacity: ring))
        let reader = try BatchedUDPReader(loop: loop, socket: socket, configuration: options.readerConfiguration()) { _, batch in
            handler(watcher, batch)
        }
        let logger = self.logger
        reader.onProblem = { _, problem in logger.debug("\(problem)") }
        watcher.onError = { _, failure in logger.debug("\(failure)") }
        reader.start()
        return Endpoint(socket: socket, reader: reader, watcher: watcher)
    }

    static func level(_ text: String) -> Logger.Level? { Logger.Level(rawValue: text.lowercased()) }

    /// Logs `message` as an error and returns the exit-1 error to throw.
    static func failure(_ message: String, _ logger: Logger) -> ExitCode {
        logger.error("\(message)")
        return ExitCode(1)
    }

    /// Runs the loop until the service is drained after a signal, then logs the final totals.
    func run(_ service: Service) throws {
        for number in [SIGINT, SIGTERM] {
            let watcher = try SignalWatcher(loop: loop, signal: number) { [unowned self] watcher in
                self.stop(service, signal: watcher.signal)
            }
            watcher.keepsLoopAlive = false
            watcher.start()
            signalWatchers.append(watcher)
        }
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
        loop.run()
        logger.notice("final totals: \(service.stats.totals)")
    }

    private func stop(_ service: Service, signal number: Int32) {
        let name = number == SIGINT ? "SIGINT" : "SIGTERM"
        guard !stopping else {
            logger.warning("\(name) again: dropping what is still queued")
            service.senders.forEach { $0.close() }
            return
        }
        stopping = true
        let queued = service.stats.queued
        logger.notice("\(name): stopped reading; sending \(queued) queued datagrams for up to \(options.drainTimeout) s")
        statsTimer?.stop()
        service.stopReading()
        for sender in service.senders {
            sender.close(flushingWithin: options.drainTimeout)
        }
    }
}
