import ArgumentParser
import BatchedUDP
import Libev
import Logging

/// `echo-relay echo`: sends every datagram back to its sender, unchanged.
struct Echo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send every datagram back to its sender, unchanged, from the socket it arrived on.")

    @Option(help: "Address to listen on, HOST:PORT (repeatable). Port 0 picks a free port; the log says which.")
    var listen: [String] = []

    @Option(help: "Send ring capacity per listening socket, in datagrams.")
    var ring = 4096

    @OptionGroup var daemon: DaemonOptions

    func validate() throws {
        guard !listen.isEmpty else { throw ValidationError("give at least one --listen HOST:PORT") }
        for text in listen { _ = try parseAddress(text, option: "--listen") }
        guard ring >= 1 else { throw ValidationError("--ring must be at least 1, got \(ring)") }
    }

    func run() throws {
        let process = try Daemon(options: daemon)
        let service = try EchoService(listen: listen.map { try parseAddress($0, option: "--listen") },
                                      ring: ring, daemon: process)
        try process.run(service)
    }
}

/// One listening socket per address, each with a reader and a watcher on the same socket.
final class EchoService: Service {
    private struct Endpoint {
        let socket: UDPSocket
        let reader: BatchedUDPReader
        let watcher: BatchedUDPWatcher
    }

    private var endpoints: [Endpoint] = []
    private var queueFull = 0

    init(listen: [SocketAddress], ring: Int, daemon: Daemon) throws {
        for address in listen {
            let socket = try daemon.listen(on: address)
            let watcher = try BatchedUDPWatcher(loop: daemon.loop, socket: socket,
                                                configuration: daemon.options.watcherConfiguration(capacity: ring))
            let reader = try BatchedUDPReader(loop: daemon.loop, socket: socket,
                                              configuration: daemon.options.readerConfiguration()) { [unowned self] _, batch in
                for datagram in batch {
                    if !watcher.enqueueOrFlush(datagram.payload, to: datagram.sender) { self.queueFull += 1 }
                }
            }
            let logger = daemon.logger
            reader.onProblem = { _, problem in logger.debug("\(problem)") }
            watcher.onError = { _, failure in logger.debug("\(failure)") }
            reader.start()
            endpoints.append(Endpoint(socket: socket, reader: reader, watcher: watcher))
            logger.notice("echo: listening on \((try? socket.localAddress)?.description ?? address.description)")
        }
    }

    var stats: Stats {
        var stats = Stats()
        for endpoint in endpoints {
            stats.add(endpoint.reader.counters)
            stats.add(endpoint.watcher.counters)
        }
        stats.queueFull = queueFull
        return stats
    }

    var senders: [BatchedUDPWatcher] { endpoints.map(\.watcher) }

    func stopReading() { endpoints.forEach { $0.reader.stop() } }
}
