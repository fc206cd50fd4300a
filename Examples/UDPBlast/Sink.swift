import ArgumentParser
import BatchedUDP
import Glibc
import Libev

/// Receives udp-blast datagrams and checks them: how many arrived, how many are missing, out of order,
/// or duplicated, by the sequence number in their first 8 bytes; and which ECN codepoints and which of
/// the host's addresses (on a wildcard --listen) they came with.
struct Sink: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sink",
        abstract: "Receive udp-blast datagrams and report received, lost, reordered and duplicated.",
        discussion: "Prints 'listening HOST:PORT' on stdout once bound (port 0 picks a free one).")

    @Option(help: "Local HOST:PORT to bind.")
    var listen = "127.0.0.1:0"

    @Option(help: "Datagrams expected (sequence numbers 0..<count).")
    var count = 1_000_000

    @Option(help: "Seconds without a datagram, once the first has arrived, before giving up.")
    var timeout = 2.0

    @Option(help: "Seconds to wait for the first datagram.")
    var startTimeout = 60.0

    @Option(help: "SO_RCVBUF in bytes; forced past rmem_max when running as root.")
    var rcvbuf = 256 << 20

    @Flag(help: "Print one JSON object instead of the human summary.")
    var json = false

    func validate() throws {
        do { _ = try SocketAddress(parsing: listen) } catch { throw ValidationError("--listen: \(error)") }
        guard count >= 1 else { throw ValidationError("--count must be at least 1, got \(count)") }
        guard timeout > 0, startTimeout > 0 else { throw ValidationError("--timeout and --start-timeout must be positive") }
    }

    func run() throws {
        let address = try SocketAddress(parsing: listen)
        let loop: EventLoop
        let socket: UDPSocket
        do {
            loop = try EventLoop()
            socket = try UDPSocket(bindingTo: address)
            do { try socket.setReceiveBufferSize(rcvbuf, force: true) } catch { try socket.setReceiveBufferSize(rcvbuf) }
            print("listening \(try socket.localAddress)")
            fflush(nil)  // stdout may be a pipe or file: the caller waits for this line
        } catch {
            throw Failure("udp-blast sink: \(error)")
        }

        var seen = [UInt64](repeating: 0, count: (count + 63) / 64)
        var received = 0, unique = 0, reordered = 0, duplicates = 0, foreign = 0, bytes = 0
        var highest = -1
        var ecn: [ECN: Int] = [:]
        var destinations: [SocketAddress: Int] = [:]
        let clock = ContinuousClock()
        var first: ContinuousClock.Instant?
        var last = clock.now
        let expected = count

        let idle = TimerWatcher(loop: loop, after: startTimeout) { timer in timer.loop.breakLoop() }
        var configuration = BatchedUDPReader.Configuration()
        configuration.batchSize = 32             // 32 slots of the largest datagram: 2 MiB
        configuration.maxDatagramSize = 65_507
        configuration.maxCallsPerEvent = 64
        configuration.metadata = [.ecn, .destination]  // which codepoints, and which local addresses, were used
        let reader = try BatchedUDPReader(loop: loop, socket: socket, configuration: configuration) { reader, batch in
            for datagram in batch {
                received += 1
                bytes += datagram.payload.count
                if let codepoint = datagram.ecn { ecn[codepoint, default: 0] += 1 }
                if let destination = datagram.destination { destinations[destination, default: 0] += 1 }
                guard datagram.payload.count >= 8 else { foreign += 1; continue }
                let sequence = Int(UInt64(littleEndian: datagram.payload.loadUnaligned(as: UInt64.self)))
                guard sequence >= 0 && sequence < expected else { foreign += 1; continue }
                let (word, bit) = (sequence / 64, UInt64(1) << UInt64(sequence % 64))
                if seen[word] & bit != 0 { duplicates += 1; continue }
                seen[word] |= bit
                unique += 1
                if sequence < highest { reordered += 1 } else { highest = sequence }
            }
            last = clock.now
            if first == nil { first = last }
            if unique == expected { reader.loop.breakLoop() }
            idle.repeatInterval = self.timeout
            idle.again()
        }
        reader.start()
        idle.start()
        loop.run()
        reader.stop()

        let span = first.map { Report.seconds(last - $0) } ?? 0
        let report = Report([
            ("listen", .text((try? socket.localAddress.description) ?? listen)), ("expected", .int(expected)),
            ("received", .int(received)), ("lost", .int(expected - unique)), ("reordered", .int(reordered)),
            ("duplicates", .int(duplicates)), ("foreign", .int(foreign)), ("bytes", .int(bytes)),
            ("seconds", .seconds(span)), ("pps", .int(Int(Double(received) / max(span, 1e-9)))),
            ("ecn", .text(ECN.allCases.compactMap { codepoint in ecn[codepoint].map { "\(codepoint)=\($0)" } }.joined(separator: " "))),
            ("destinations", .text(destinations.sorted { $0.value > $1.value }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))),
        ])
        print(json ? report.json : report.human(title: "udp-blast sink"))
        guard unique == expected, duplicates == 0 else {
            throw Failure("udp-blast sink: \(expected - unique) lost, \(duplicates) duplicated")
        }
    }
}
