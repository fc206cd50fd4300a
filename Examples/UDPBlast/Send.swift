import ArgumentParser
import BatchedUDP
import Libev

/// Sends `--count` datagrams through one BatchedUDPWatcher on a connected socket, refilling the ring
/// whenever it drains below its low water mark, then prints what happened.
struct Send: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send datagrams through one BatchedUDPWatcher (sendmmsg) on a connected socket.")

    @Option(help: "Destination HOST:PORT: a.b.c.d:port, [ipv6]:port or localhost:port.")
    var to: String

    @Option(help: "Datagrams to send.")
    var count = 1_000_000

    @Option(help: "Payload bytes per datagram, 8...65507 (the first 8 carry the sequence number).")
    var size = 64

    @Option(help: "Datagrams per sendmmsg call, 1...1024.")
    var batch = 1024

    @Option(help: "Ring capacity in datagrams.")
    var ring = 4096

    @Option(help: "SO_SNDBUF in bytes (the kernel doubles it and enforces a minimum).")
    var sndbuf: Int?

    @Flag(help: "Print one JSON object instead of the human summary.")
    var json = false

    func validate() throws {
        _ = try destination()
        guard count >= 1 else { throw ValidationError("--count must be at least 1, got \(count)") }
        guard (8...65_507).contains(size) else { throw ValidationError("--size must be 8...65507 bytes, got \(size)") }
        guard (1...1024).contains(batch) else { throw ValidationError("--batch must be 1...1024, got \(batch)") }
        guard ring >= 1 else { throw ValidationError("--ring must be at least 1, got \(ring)") }
        if let sndbuf, sndbuf < 1 { throw ValidationError("--sndbuf must be positive, got \(sndbuf)") }
    }

    func destination() throws -> SocketAddress {
        do { return try SocketAddress(parsing: to) } catch { throw ValidationError("--to: \(error)") }
    }

    func run() throws {
        let destination = try destination()
        let loop: EventLoop
        let watcher: BatchedUDPWatcher
        do {
            loop = try EventLoop()
            let socket = try UDPSocket(family: destination.family)
            if let sndbuf { try socket.setSendBufferSize(sndbuf) }
            try socket.connect(to: destination)
            var configuration = BatchedUDPWatcher.Configuration()
            configuration.capacity = ring
            configuration.maxDatagramSize = size
            configuration.batchSize = batch
            watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration)
        } catch {
            throw Failure("udp-blast: \(error)")
        }

        var next = 0
        let count = self.count, size = self.size
        func refill(_ watcher: BatchedUDPWatcher) {
            while next < count && watcher.isWritable {
                do {
                    try watcher.enqueue { slot in
                        slot.storeBytes(of: UInt64(next).littleEndian, as: UInt64.self)
                        return size
                    }
                } catch {
                    break
                }
                next += 1
            }
            if next == count { watcher.close(flushingWithin: 3600) }
        }
        watcher.onWritabilityChanged = { watcher, writable in if writable { refill(watcher) } }

        let clock = ContinuousClock()
        let start = clock.now
        refill(watcher)
        loop.run()
        let seconds = Report.seconds(clock.now - start)

        let c = watcher.counters
        let report = Report([
            ("to", .text(destination.description)), ("count", .int(count)), ("size", .int(size)),
            ("batch", .int(batch)), ("sent", .int(c.sent)), ("failed", .int(c.failed)),
            ("syscalls", .int(c.sendmmsgCalls)), ("short_counts", .int(c.shortCounts)),
            ("eagain", .int(c.eagain)), ("enobufs", .int(c.noBuffers)), ("rejected", .int(c.rejected)),
            ("peak_queued", .int(c.peakQueued)), ("seconds", .seconds(seconds)),
            ("pps", .int(Int(Double(c.sent) / max(seconds, 1e-9)))),
            ("mbit_per_s", .rate(Double(c.sentBytes) * 8 / max(seconds, 1e-9) / 1e6)),
        ])
        if json {
            print(report.json)
        } else {
            print(report.human(title: "udp-blast send"))
            for (errno, n) in c.failedByErrno.sorted(by: { $0.value > $1.value }) {
                print("  failed with \(errno): \(n)")
            }
        }
        guard c.sent + c.failed == count, c.queued == 0 else {
            throw Failure("udp-blast: \(count - c.sent - c.failed) datagrams unaccounted for (\(c))")
        }
    }
}

/// A runtime failure: the message goes to stderr and the process exits 1.
struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
