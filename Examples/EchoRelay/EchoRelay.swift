import ArgumentParser
import BatchedUDP
import Glibc

/// `echo-relay`: a callback-based UDP daemon built only from the public API of BatchedUDP and Libev.
@main
struct EchoRelay: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo-relay",
        abstract: "A UDP echo server and a bidirectional UDP relay on libev, sending with sendmmsg.",
        discussion: """
            SIGINT or SIGTERM stops reading, sends what is queued for up to --drain-timeout seconds, prints \
            the final totals and exits 0; a second stop request (either signal, even at once) drops what is \
            left and exits. SIGPIPE is ignored. \
            Exit codes: 0 clean stop; 1 runtime failure (for example the address is in use); 64 bad \
            arguments.
            """,
        subcommands: [Echo.self, Relay.self])

    /// Blocks SIGINT and SIGTERM before anything else runs: a stop request during start-up then waits,
    /// pending, until the daemon's signal watchers take it (starting them unblocks the signals), instead of
    /// ending the process with the default action. The daemon honours it once its workers run.
    static func main() {
        var stops = sigset_t()
        sigemptyset(&stops)
        sigaddset(&stops, SIGINT)
        sigaddset(&stops, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &stops, nil)
        main(nil)
    }
}

/// Options both modes share.
struct DaemonOptions: ParsableArguments {
    @Option(help: "Seconds between stats lines on stderr; 0 for none.")
    var statsInterval = 0.0

    @Option(help: "Seconds to keep sending queued datagrams after SIGINT/SIGTERM.")
    var drainTimeout = 2.0

    @Option(help: "Largest datagram, in bytes (slot size of rings and receive buffers); larger ones are dropped and counted.")
    var maxDatagram = 2048

    @Option(help: "Datagrams per recvmmsg call, 1...1024.")
    var readBatch = 64

    @Option(help: "Datagrams per sendmmsg call, 1...1024.")
    var sendBatch = 1024

    @Option(help: "SO_RCVBUF of listening sockets, in bytes (forced past rmem_max when running as root).")
    var rcvbuf = 4 << 20

    @Option(help: "SO_SNDBUF of listening sockets, in bytes; the kernel default when omitted.")
    var sndbuf: Int?

    @Option(help: "Event loops, each on its own thread with its own SO_REUSEPORT listening sockets (the kernel spreads clients by address); no state is shared.")
    var threads = 1

    @Flag(help: "Read listening sockets with UDP GRO: the kernel merges runs of datagrams from one sender (64 KiB per read slot).")
    var gro = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    func validate() throws {
        guard statsInterval >= 0, statsInterval.isFinite else { throw ValidationError("--stats-interval must be 0 or more seconds") }
        guard drainTimeout >= 0, drainTimeout.isFinite else { throw ValidationError("--drain-timeout must be 0 or more seconds") }
        guard (1...65_527).contains(maxDatagram) else { throw ValidationError("--max-datagram must be 1...65527 bytes, got \(maxDatagram)") }
        guard (1...1024).contains(readBatch) else { throw ValidationError("--read-batch must be 1...1024, got \(readBatch)") }
        guard (1...1024).contains(sendBatch) else { throw ValidationError("--send-batch must be 1...1024, got \(sendBatch)") }
        if let sndbuf, sndbuf < 1 { throw ValidationError("--sndbuf must be positive, got \(sndbuf)") }
        guard (1...64).contains(threads) else { throw ValidationError("--threads must be 1...64, got \(threads)") }
        guard rcvbuf >= 1 else { throw ValidationError("--rcvbuf must be positive, got \(rcvbuf)") }
        guard Daemon.level(logLevel) != nil else { throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical; got '\(logLevel)'") }
    }

    /// A listening socket's reader (GRO if asked), or with `batch` a relay session's (never GRO: it
    /// would cost each session 64 KiB per slot).
    func readerConfiguration(batch: Int? = nil, metadata: BatchedUDPReader.Metadata = []) -> BatchedUDPReader.Configuration {
        var configuration = BatchedUDPReader.Configuration()
        configuration.metadata = metadata
        configuration.batchSize = min(batch ?? readBatch, readBatch)
        configuration.maxDatagramSize = maxDatagram
        configuration.gro = gro && batch == nil
        return configuration
    }

    /// A send ring of `capacity` slots whose high-water mark leaves room for one more read batch (what
    /// a reader may hand over before it sees the mark and stops), and whose low mark is half of it.
    func watcherConfiguration(capacity: Int) -> BatchedUDPWatcher.Configuration {
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.capacity = capacity
        configuration.maxDatagramSize = maxDatagram
        configuration.batchSize = min(sendBatch, capacity)
        let batch = readBatch * (gro ? 64 : 1)
        let high = capacity > 2 * batch ? capacity - batch : max(capacity / 2, 1)
        configuration.highWaterMark = .init(messages: high, bytes: high * maxDatagram)
        configuration.lowWaterMark = .init(messages: high / 2, bytes: high / 2 * maxDatagram)
        return configuration
    }
}

/// Parses `HOST:PORT` options with a message naming the option.
func parseAddress(_ text: String, option: String) throws -> SocketAddress {
    do { return try SocketAddress(parsing: text) } catch { throw ValidationError("\(option): \(error)") }
}
