import ArgumentParser
import BatchedUDP
import Libev
import Logging

/// `echo-relay echo`: sends every datagram back to its sender, unchanged.
struct Echo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo",
        abstract: "Send every datagram back to its sender, unchanged, from the socket and address it arrived on.")

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
        let ring = ring
        try Daemon(options: daemon).run(listen: listen.map { try parseAddress($0, option: "--listen") }) { worker, addresses in
            try EchoService(listen: addresses, ring: ring, worker: worker)
        }
    }
}

/// One listening socket per address, each with a reader and a watcher on the same socket.
final class EchoService: Service {
    private var endpoints: [Endpoint] = []
    private var queueFull = 0

    init(listen: [SocketAddress], ring: Int, worker: Worker) throws {
        for address in listen {
            let endpoint = try worker.endpoint(on: address, among: listen, ring: ring, backpressure: true) { [unowned self] watcher, batch in
                // replyMetadata is nil unless the socket is on a wildcard address (then it is the
                // address the client contacted, which the answer must come from). Past the high-water
                // mark the reader stops, so a full ring is rare: the datagram is dropped and counted.
                for datagram in batch {
                    do {
                        try watcher.enqueue(datagram.payload, to: datagram.sender, metadata: datagram.replyMetadata)
                    } catch {
                        self.queueFull += 1
                    }
                }
            }
            endpoints.append(endpoint)
            worker.logger.notice("echo: listening on \(endpoint.address)")
        }
    }

    var stats: Stats {
        var stats = Stats()
        for endpoint in endpoints {
            stats.add(endpoint.reader.counters)
            stats.add(endpoint.watcher.counters)
        }
        stats.queueFull = queueFull
        stats.kernelDrops = endpoints.reduce(0) { $0 + ((try? $1.socket.receiveDrops) ?? 0) }
        return stats
    }

    var senders: [BatchedUDPWatcher] { endpoints.map(\.watcher) }

    func stopReading() { endpoints.forEach { $0.reader.stop() } }

    var listeningAddresses: [SocketAddress] { endpoints.compactMap { try? $0.socket.localAddress } }
}
