import ArgumentParser
import BatchedUDP
import Glibc
import Dispatch
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
    /// The addresses its listening sockets are bound to (port 0 resolved).
    var listeningAddresses: [SocketAddress] { get }
}

/// A listening socket with the reader and the watcher that share it.
struct Endpoint {
    let socket: UDPSocket
    let reader: BatchedUDPReader
    let watcher: BatchedUDPWatcher

    /// The bound address, for log lines.
    var address: String { (try? socket.localAddress)?.description ?? "?" }
}

/// The process: its options and logger, SIGINT/SIGTERM, SIGPIPE, and `--threads` workers, each with
/// its own loop, thread and service. The daemon's own loop, on the main thread, only takes signals and
/// waits for the workers to finish draining.
final class Daemon {
    let logger: Logger
    let options: DaemonOptions

    init(options: DaemonOptions) {
        self.options = options
        var logger = Logger(label: "echo-relay")
        logger.logLevel = Daemon.level(options.logLevel) ?? .info
        self.logger = logger
        signal(SIGPIPE, SIG_IGN)
    }

    static func level(_ text: String) -> Logger.Level? { Logger.Level(rawValue: text.lowercased()) }

    /// Logs `message` as an error and returns the exit-1 error to throw.
    static func failure(_ message: String, _ logger: Logger) -> ExitCode {
        logger.error("\(message)")
        return ExitCode(1)
    }

    /// Starts the workers one after another, each building its service with `makeService` on its own
    /// thread (the first binds the addresses given; later ones bind the addresses the first one got, so
    /// port 0 means one port for all). Returns after a signal, once every worker has drained, having
    /// logged the summed final totals.
    func run(listen: [SocketAddress], _ makeService: @escaping @Sendable (Worker, [SocketAddress]) throws -> Service) throws {
        let control: EventLoop
        do { control = try EventLoop() } catch { throw Daemon.failure("cannot create the event loop: \(error)", logger) }
        let finished = Locked<[Stats]>([])
        let threads = options.threads
        let allFinished = AsyncWatcher(loop: control) { watcher in
            if finished.withLock({ $0.count }) == threads { watcher.loop.breakLoop() }
        }
        allFinished.start()
        var workers: [Worker.Control] = []
        // The handlers first: from here on SIGINT and SIGTERM are the daemon's whichever thread they
        // reach (one a runtime or a sanitizer started before the mask below), never the default action
        // that ends the process. One that arrives during start-up is handled once the loop runs.
        var stopLevel = 0
        let signalWatchers = try [SIGINT, SIGTERM].map { number in
            try SignalWatcher(loop: control, signal: number) { watcher in
                stopLevel = min(stopLevel + 1, 2)
                let name = watcher.signal == SIGINT ? "SIGINT" : "SIGTERM"
                workers.forEach { $0.stop(level: stopLevel, signal: name) }
            }
        }
        signalWatchers.forEach { $0.start() }
        // Worker threads inherit this mask, so SIGINT/SIGTERM reach the daemon's thread and not theirs
        // (see SignalWatcher: where libev reads them through a signalfd, only blocked signals reach it).
        var blocked = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGINT)
        sigaddset(&blocked, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &blocked, nil)
        var threadHandles: [pthread_t] = []
        var addresses = listen
        for index in 0..<threads {
            let started = Locked<Result<(Worker.Control, [SocketAddress]), ExitCode>?>(nil)
            let ready = DispatchSemaphore(value: 0)
            let (options, logger, bind, done) = (self.options, self.logger, addresses, allFinished.sender)
            threadHandles.append(Daemon.spawn {
                let worker: Worker, service: Service
                do {
                    worker = try Worker(index: index, options: options, logger: logger)
                    service = try makeService(worker, bind)
                } catch {
                    started.withLock { $0 = .failure(error as? ExitCode ?? ExitCode(1)) }
                    ready.signal()
                    return
                }
                started.withLock { $0 = .success((worker.control, service.listeningAddresses)) }
                ready.signal()
                let totals = worker.run(service)
                finished.withLock { $0.append(totals) }
                done.send()
            })
            ready.wait()
            switch started.withLock({ $0 })! {
            case let .failure(exit):
                // Let the workers already running stop (nothing is queued yet) and join every thread.
                workers.forEach { $0.stop(level: 1, signal: "startup failed") }
                for handle in threadHandles { pthread_join(handle, nil) }
                throw exit
            case let .success((worker, bound)):
                workers.append(worker)
                if index == 0 { addresses = bound }
            }
        }
        pthread_sigmask(SIG_UNBLOCK, &blocked, nil)
        control.run()
        // Stopping a signal watcher gives the signal its default action back: block the two first, so a
        // late second request while the workers finish is ignored rather than ending the process; then
        // ignore them, for a thread started before they were blocked (AddressSanitizer's).
        pthread_sigmask(SIG_BLOCK, &blocked, nil)
        signalWatchers.forEach { $0.stop() }
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        for handle in threadHandles { pthread_join(handle, nil) }
        let totals = finished.withLock { $0 }.reduce(into: Stats()) { $0.add($1) }
        logger.notice("final totals: \(totals.totals)")
    }

    /// Starts a thread running `body` (pthread_create; Foundation's Thread cannot be joined).
    private static func spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t {
        final class Box { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
        var handle = pthread_t()
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        let rc = pthread_create(&handle, nil, { context in
            Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
            return nil
        }, context)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        return handle
    }
}
