import ArgumentParser
import BatchedUDP
import Glibc
import Libev

/// Receives udp-blast datagrams and checks them: how many arrived, how many are missing, out of order,
/// or duplicated, by the sequence number in their first 8 bytes.
struct Sink: ParsableCommand {
    static let configuration = CommandConfiguration(
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
        let clock = ContinuousClock()
        var first: ContinuousClock.Instant?
        var last = clock.now
        let expected = count
        var buffer = [UInt8](repeating: 0, count: 65_536)

        let idle = TimerWatcher(loop: loop, after: startTimeout) { timer in timer.loop.breakLoop() }
        let reader = try IOWatcher(loop: loop, fileDescriptor: socket.fileDescriptor, events: .read) { watcher, _ in
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(watcher.fileDescriptor, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                guard n >= 0 else { break }
                received += 1
                bytes += n
                last = clock.now
                if first == nil { first = last }
                guard n >= 8 else { foreign += 1; continue }
                let sequence = buffer.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
                guard sequence >= 0 && sequence < expected else { foreign += 1; continue }
                let (word, bit) = (sequence / 64, UInt64(1) << UInt64(sequence % 64))
                if seen[word] & bit != 0 { duplicates += 1; continue }
                seen[word] |= bit
                unique += 1
                if sequence < highest { reordered += 1 } else { highest = sequence }
            }
            if unique == expected { watcher.loop.breakLoop() }
            idle.repeatInterval = self.timeout
            idle.again()
        }
        reader.start()
        idle.start()
        loop.run()

        let span = first.map { Report.seconds(last - $0) } ?? 0
        let report = Report([
            ("listen", .text((try? socket.localAddress.description) ?? listen)), ("expected", .int(expected)),
            ("received", .int(received)), ("lost", .int(expected - unique)), ("reordered", .int(reordered)),
            ("duplicates", .int(duplicates)), ("foreign", .int(foreign)), ("bytes", .int(bytes)),
            ("seconds", .seconds(span)), ("pps", .int(Int(Double(received) / max(span, 1e-9)))),
        ])
        print(json ? report.json : report.human(title: "udp-blast sink"))
        guard unique == expected, duplicates == 0 else {
            throw Failure("udp-blast sink: \(expected - unique) lost, \(duplicates) duplicated")
        }
    }
}
