import ArgumentParser
import BatchedUDP
import Glibc
import Libev

/// `async-echo`: the echo server of `echo-relay echo`, written with Swift concurrency: an actor pinned to
/// a libev loop, a `DatagramStream` per listening socket, and `BatchedUDPWatcher.send`, which waits
/// instead of dropping when the send queue is full.
@main
struct AsyncEcho: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "async-echo",
        abstract: "A UDP echo server on libev written with async/await: sends every datagram back to its sender.",
        discussion: """
            Each datagram goes back to its sender from the socket and address it arrived on. SIGINT or \
            SIGTERM stops reading, echoes what was already received, sends what is queued for up to \
            --drain-timeout seconds, prints the final totals and exits 0; a second stop request drops what \
            is left and exits. Exit codes: 0 clean stop; 1 runtime failure (for example the address is in \
            use); 64 bad arguments.
            """)

    @Option(help: "Address to listen on, HOST:PORT (repeatable). Port 0 picks a free port; the log says which.")
    var listen: [String] = []

    @Option(help: "Seconds between stats lines on stderr; 0 for none.")
    var statsInterval = 0.0

    @Option(help: "Seconds to keep sending queued datagrams after SIGINT/SIGTERM.")
    var drainTimeout = 2.0

    @Option(help: "Send ring capacity per listening socket, in datagrams.")
    var ring = 4096

    @Option(help: "Datagrams per recvmmsg call, 1...1024.")
    var readBatch = 64

    @Option(help: "Largest datagram, in bytes; larger ones are dropped and counted.")
    var maxDatagram = 2048

    func validate() throws {
        guard !listen.isEmpty else { throw ValidationError("give at least one --listen HOST:PORT") }
        _ = try addresses()
        guard statsInterval >= 0, statsInterval.isFinite else { throw ValidationError("--stats-interval must be 0 or more seconds") }
        guard drainTimeout >= 0, drainTimeout.isFinite else { throw ValidationError("--drain-timeout must be 0 or more seconds") }
        guard ring >= 1 else { throw ValidationError("--ring must be at least 1, got \(ring)") }
        guard (1...1024).contains(readBatch) else { throw ValidationError("--read-batch must be 1...1024, got \(readBatch)") }
        guard (1...65_535).contains(maxDatagram) else { throw ValidationError("--max-datagram must be 1...65535, got \(maxDatagram)") }
    }

    func addresses() throws -> [SocketAddress] {
        try listen.map { text in
            do { return try SocketAddress(parsing: text) } catch { throw ValidationError("--listen: \(error)") }
        }
    }

    /// Blocks SIGINT and SIGTERM before any thread starts: every thread inherits the block, and the loop
    /// thread's signal watchers unblock them there (a stop request during start-up waits, pending, for them).
    static func main() async {
        var stops = sigset_t()
        sigemptyset(&stops)
        sigaddset(&stops, SIGINT)
        sigaddset(&stops, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &stops, nil)
        signal(SIGPIPE, SIG_IGN)
        await main(nil)
    }

    func run() async throws {
        let addresses = try addresses(), options = self
        do {
            try await EventLoopThread.run { executor in
                let server = EchoServer(executor: executor, options: options)
                try await server.start(addresses)
                await server.serve()
            }
        } catch let failure as Failure {
            log("async-echo: \(failure.message)")
            throw ExitCode(1)
        }
    }
}

/// A runtime failure: logged, exit 1.
struct Failure: Error {
    let message: String
}

/// One line on stderr.
func log(_ line: String) {
    let text = line + "\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
}
