import ArgumentParser
import BatchedUDP
import Glibc
import Libev

/// Sends datagrams through one BatchedUDPWatcher on a connected socket, refilling the ring whenever it
/// drains below its low water mark; with --expect-replies, reads the replies on the same socket with a
/// BatchedUDPReader and measures loss, order and round-trip time.
struct Send: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Send datagrams through one BatchedUDPWatcher (sendmmsg) on a connected socket.",
        discussion: """
            Payload: sequence number (8 bytes, little endian), then with --expect-replies the send time in \
            nanoseconds (8 bytes), then filler up to --size.
            """)

    @Option(help: "Destination HOST:PORT: a.b.c.d:port, [ipv6]:port or localhost:port.")
    var to: String

    @Option(help: "Datagrams to send (with --duration: at most this many).")
    var count: Int?

    @Option(help: "Send for this many seconds instead of a fixed --count.")
    var duration: Double?

    @Option(help: "Datagrams per second, spread evenly: a pacer tick every 1/RATE seconds (20 µs at the least) sends what is due and sends it at once. After a stall (the process was not scheduled, the window or the ring was full) a tick catches up at most 2 ms of the schedule and skips the rest, counted as pace_skipped, rather than sending a burst. Unlimited when omitted.")
    var rate: Double?

    @Option(help: "Payload bytes per datagram, 8...65507 (16 or more with --expect-replies).")
    var size = 64

    @Option(help: "Datagrams per sendmmsg call, 1...1024.")
    var batch = 1024

    @Option(help: "Ring capacity in datagrams; by default as many as hold 1 MiB of payload, from 256 to 4,096 (4,096 at 64 bytes, 873 at 1,200).")
    var ring: Int?

    /// The ring's capacity: small datagrams want many slots per drain, large ones a ring that stays in
    /// the cache (at 1,200 bytes, 4,096 slots are 4.9 MB, and took 1.2 times as long as 873).
    var ringCapacity: Int { ring ?? min(max((1 << 20) / size, 256), 4096) }

    @Option(help: "UDP GSO: automatic (runs of equal-size datagrams leave as super-datagrams where the kernel supports it) or off.")
    var segmentation = Segmentation.automatic

    enum Segmentation: String, ExpressibleByArgument, CaseIterable {
        case automatic, off
    }

    @Option(help: "ECN codepoint to mark every datagram with: not-ect, ect0, ect1 or ce (an IP_TOS / IPV6_TCLASS control message per datagram). With --expect-replies the report counts the codepoints the replies carried.")
    var ecn: ECNCodepoint?

    enum ECNCodepoint: String, ExpressibleByArgument, CaseIterable {
        case notECT = "not-ect", ect0, ect1, ce
        var codepoint: ECN {
            switch self {
            case .notECT: return .notECT
            case .ect0: return .ect0
            case .ect1: return .ect1
            case .ce: return .ce
            }
        }
    }

    @Option(help: "SO_SNDBUF in bytes (the kernel doubles it and enforces a minimum).")
    var sndbuf: Int?

    @Flag(help: "Read the replies (an echo server's) and report received, lost, reordered and round-trip times. A round trip runs from the time stamped into the datagram as it is enqueued to the kernel's receive time of its reply (SO_TIMESTAMPNS): both kernels' paths and the echo server's own delay, not this process's reading delay. With --rate a datagram is stamped right before the sendmmsg that sends it; without, the ring is kept full and the wait in it counts too.")
    var expectReplies = false

    @Option(help: "With --expect-replies: at most this many datagrams awaiting their reply (a closed loop that measures round trips per second without overrunning the echo server). A datagram whose reply has not come within --timeout seconds is written off (counted lost unless the reply comes later) and frees its place, so lost replies never stall the run.")
    var window: Int?

    @Option(help: "With --expect-replies: seconds to wait for the last replies after the last send.")
    var timeout = 1.0

    @Option(help: "With --expect-replies: the largest fraction of replies that may be lost (0...1) before the run exits 1. Without it, a run exits 1 only when no reply came back at all.")
    var maxLoss: Double?

    @Flag(help: "With --expect-replies: read replies with UDP GRO (the kernel merges runs of same-size replies).")
    var gro = false

    @Flag(help: "Print one JSON object instead of the human summary.")
    var json = false

    func validate() throws {
        _ = try destination()
        if let count, count < 1 { throw ValidationError("--count must be at least 1, got \(count)") }
        if let duration, !(duration > 0 && duration.isFinite) { throw ValidationError("--duration must be a positive number of seconds") }
        if let rate, !(rate > 0 && rate.isFinite) { throw ValidationError("--rate must be a positive number of datagrams per second") }
        let minimum = expectReplies ? 16 : 8
        guard (minimum...65_507).contains(size) else { throw ValidationError("--size must be \(minimum)...65507 bytes, got \(size)") }
        guard (1...1024).contains(batch) else { throw ValidationError("--batch must be 1...1024, got \(batch)") }
        if let ring, ring < 1 { throw ValidationError("--ring must be at least 1, got \(ring)") }
        if let sndbuf, sndbuf < 1 { throw ValidationError("--sndbuf must be positive, got \(sndbuf)") }
        if let window {
            guard window >= 1 else { throw ValidationError("--window must be at least 1, got \(window)") }
            guard expectReplies else { throw ValidationError("--window needs --expect-replies") }
        }
        guard timeout >= 0, timeout.isFinite else { throw ValidationError("--timeout must be 0 or more seconds") }
        if let maxLoss {
            guard (0...1).contains(maxLoss) else { throw ValidationError("--max-loss must be a fraction 0...1, got \(maxLoss)") }
            guard expectReplies else { throw ValidationError("--max-loss needs --expect-replies") }
        }
    }

    func destination() throws -> SocketAddress {
        do { return try SocketAddress(parsing: to) } catch { throw ValidationError("--to: \(error)") }
    }

    func run() throws {
        do {
            try runReporting()
        } catch let failure as Failure {
            // A runtime failure, not a usage error: the message alone (no usage hint), exit 1.
            let line = "\(failure)\n"
            _ = line.withCString { write(2, $0, strlen($0)) }
            throw ExitCode(1)
        }
    }

    private func runReporting() throws {
        // SIGINT waits, pending, until the run's SignalWatcher takes it (starting it unblocks SIGINT once
        // libev's handler is in place): an interrupt during set-up still gets its report and 130.
        var interrupt = sigset_t()
        sigemptyset(&interrupt)
        sigaddset(&interrupt, SIGINT)
        pthread_sigmask(SIG_BLOCK, &interrupt, nil)
        let blaster = try Blaster(self, destination: try destination())
        let report = blaster.run()
        if json {
            print(report.json)
        } else {
            print(report.human(title: "udp-blast send"))
            for (errno, n) in blaster.watcher.counters.failedByErrno.sorted(by: { $0.value > $1.value }) {
                print("  failed with \(errno): \(n)")
            }
        }
        let c = blaster.watcher.counters
        guard c.sent + c.failed == c.enqueued, c.queued == 0 else {
            throw Failure("udp-blast: \(c.enqueued - c.sent - c.failed) datagrams unaccounted for (\(c))")
        }
        // SIGINT: the report so far, then the shell's status for an interrupted command.
        if blaster.interrupted { throw ExitCode(130) }
        if expectReplies && c.sent > 0 {
            let lost = c.sent - blaster.repliesReceived
            let fraction = Double(lost) / Double(c.sent)
            if let maxLoss, fraction > maxLoss {
                throw Failure("udp-blast: \(lost) of \(c.sent) replies lost (\(fraction)), more than --max-loss \(maxLoss)")
            }
            if maxLoss == nil && blaster.repliesReceived == 0 {
                throw Failure("udp-blast: none of \(c.sent) datagrams came back")
            }
        }
    }
}

/// The sending (and, with --expect-replies, receiving) state of one run.
final class Blaster {
    let options: Send
    let destination: SocketAddress
    let loop: EventLoop
    let watcher: BatchedUDPWatcher
    private var reader: BatchedUDPReader?
    private let limit: Int
    private var next = 0
    private var start: UInt64 = 0
    private var sendingEnded: UInt64 = 0
    private var lastReplyAt: UInt64 = 0
    private var pacer: TimerWatcher?
    private var replyDeadline: TimerWatcher?
    // --window: lost replies must not hold the window shut (and with it --count and --duration).
    /// Datagrams written off: no reply within --timeout. A late reply moves one back to `unique`.
    private var writtenOff = 0
    private var writtenOffBits: [UInt64] = []
    /// Every sequence number below it is answered or written off.
    private var unresolved = 0
    /// When each refill queued its datagrams: (first sequence number, monotonic time), oldest first.
    private var sendTimes: [(first: Int, at: UInt64)] = []
    private var sendTimesHead = 0
    private var windowWatchdog: TimerWatcher?
    private var interruption: SignalWatcher?
    /// SIGINT ended the run early.
    private(set) var interrupted = false
    /// Distinct replies received so far.
    var repliesReceived: Int { unique }
    // Replies.
    private var seen: [UInt64] = []
    private var replies = 0, unique = 0, reordered = 0, duplicates = 0, foreign = 0
    private var highest = -1
    private var latency = LatencyHistogram()
    /// ECN codepoints and local destination addresses the replies carried, counted.
    private var replyECN: [ECN: Int] = [:]
    private var replyDestinations: [SocketAddress: Int] = [:]
    /// What every datagram carries (--ecn), built once.
    private let metadata: SendMetadata?

    init(_ options: Send, destination: SocketAddress) throws {
        self.options = options
        self.destination = destination
        limit = options.count ?? (options.duration == nil ? 1_000_000 : Int.max)
        metadata = options.ecn.map { SendMetadata(ecn: $0.codepoint) }
        do {
            // A paced run needs timers finer than epoll's millisecond: select's resolve microseconds, and
            // with one or two descriptors select costs no more than epoll.
            loop = try EventLoop(backend: options.rate == nil ? .epoll : .select)
            let socket = try UDPSocket(family: destination.family)
            if let sndbuf = options.sndbuf { try socket.setSendBufferSize(sndbuf) }
            if options.expectReplies {
                // Room for the replies: past net.core.rmem_max with CAP_NET_ADMIN, else up to it.
                do { try socket.setReceiveBufferSize(64 << 20, force: true) } catch { try? socket.setReceiveBufferSize(64 << 20) }
            }
            try socket.connect(to: destination)
            var configuration = BatchedUDPWatcher.Configuration()
            configuration.capacity = options.ringCapacity
            configuration.maxDatagramSize = options.size
            configuration.batchSize = options.batch
            configuration.segmentation = options.segmentation == .off ? .off : .automatic
            watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration)
            if options.expectReplies {
                var readerConfiguration = BatchedUDPReader.Configuration()
                readerConfiguration.maxDatagramSize = options.size
                readerConfiguration.batchSize = options.gro ? 64 : 256
                readerConfiguration.gro = options.gro
                readerConfiguration.metadata = [.ecn, .destination, .receiveTime]
                reader = try BatchedUDPReader(loop: loop, socket: socket, configuration: readerConfiguration) { [unowned self] _, batch in
                    self.received(batch)
                }
                if limit != Int.max { seen.reserveCapacity((limit + 63) / 64) }
            }
        } catch {
            throw Failure("udp-blast: \(error)")
        }
    }

    func run() -> Report {
        watcher.onWritabilityChanged = { [unowned self] _, writable in if writable { self.refill() } }
        start = Blaster.nanoseconds()
        reader?.start()
        if let rate = options.rate {
            let period = max(1 / rate, Blaster.shortestPacingPeriod)
            let timer = TimerWatcher(loop: loop, after: period, repeat: period) { [unowned self] _ in self.pace(rate) }
            timer.start()
            pacer = timer
        }
        if options.window != nil {
            let period = min(max(options.timeout / 4, 0.001), 0.25)
            let watchdog = TimerWatcher(loop: loop, after: period, repeat: period) { [unowned self] _ in self.writeOffLateReplies() }
            watchdog.keepsLoopAlive = false
            watchdog.start()
            windowWatchdog = watchdog
        }
        // SIGINT: stop sending and reading, report what happened so far (queued datagrams are reported
        // failed with ECANCELED, so the totals still add up), and exit 130.
        if let sigint = try? SignalWatcher(loop: loop, signal: SIGINT, callback: { [unowned self] watcher in
            self.interrupted = true
            if self.sendingEnded == 0 { self.sendingEnded = Blaster.nanoseconds() }
            self.pacer?.stop()
            self.windowWatchdog?.stop()
            self.replyDeadline?.stop()
            self.reader?.stop()
            self.watcher.close()
            watcher.stop()
        }) {
            sigint.keepsLoopAlive = false
            sigint.start()
            interruption = sigint
        } else {
            var interrupt = sigset_t()
            sigemptyset(&interrupt)
            sigaddset(&interrupt, SIGINT)
            pthread_sigmask(SIG_UNBLOCK, &interrupt, nil)
        }
        refill()
        loop.run()
        windowWatchdog?.stop()
        interruption?.stop()
        return report()
    }

    /// --rate: datagrams at most one pacer tick may catch up after a stall (2 ms of the rate, at least 1);
    /// the rest of the missed schedule is skipped and counted, never sent as a burst.
    private var pacedBurstLimit: Int { max(1, Int(options.rate.map { $0 * 0.002 } ?? 1)) }
    /// --rate: datagrams the schedule skipped rather than burst after a stall, and the most one tick sent.
    private var paceSkipped = 0, largestPacedBurst = 0
    /// The finest pacer period: the select backend's timers resolve microseconds; the timer slack of a
    /// normal thread (50 µs) is the real limit.
    static let shortestPacingPeriod = 20e-6

    /// One pacer tick: what the schedule says is due by now, at most ``pacedBurstLimit`` beyond what was
    /// sent, leaves at once (enqueue, then flush: the send-time stamps are taken just before sendmmsg).
    private func pace(_ rate: Double) {
        // With --duration the schedule ends there: rate × duration datagrams, sent or skipped.
        let elapsed = min(Double(Blaster.nanoseconds() - start) / 1e9, options.duration ?? .infinity)
        var due = Int(rate * elapsed) - paceSkipped
        if due - next > pacedBurstLimit {
            paceSkipped += due - next - pacedBurstLimit
            due = next + pacedBurstLimit
        }
        let before = next
        refill(upTo: due)
        if next > before {
            largestPacedBurst = max(largestPacedBurst, next - before)
            watcher.flush()
        }
    }

    /// Enqueues until the ring is at its high mark, the pace allows no more, or sending is over.
    private func refill(upTo paced: Int = Int.max) {
        if options.rate != nil && paced == Int.max { return }
        let now = Blaster.nanoseconds()
        var timeUp = options.duration.map { Double(now - start) / 1e9 >= $0 } ?? false
        if timeUp && options.rate != nil && next < paced {
            // The last of a paced schedule were due just before the end: the tick that finds the time
            // up sends them (a window holding them back gets the pacer's 2 ms of catch-up, no more).
            timeUp = Double(now - start) / 1e9 >= options.duration! + 0.002
        }
        if timeUp, let rate = options.rate, let duration = options.duration {
            // What the schedule still owed when the time ran out (a stall near its end) is skipped too:
            // every datagram of it is sent or counted in pace_skipped.
            paceSkipped = max(paceSkipped, min(limit, Int(rate * duration)) - next)
        }
        let size = options.size, stamp = options.expectReplies
        let window = options.window.map { unique + writtenOff + $0 } ?? Int.max
        // One batch call queues what the ring, the pace and the window allow.
        let wanted = min(limit, paced, window) - next
        if wanted > 0 && !timeUp && watcher.isWritable {
            // Sequence numbers are below `limit`, an Int: they fit a UInt64 and cannot overflow.
            let first = UInt64(next)
            let write = { (index: Int, slot: UnsafeMutableRawBufferPointer) -> Int in
                slot.storeBytes(of: (first &+ UInt64(truncatingIfNeeded: index)).littleEndian, as: UInt64.self)
                return size
            }
            let writeStamped = { (index: Int, slot: UnsafeMutableRawBufferPointer) -> Int in
                slot.storeBytes(of: (first &+ UInt64(truncatingIfNeeded: index)).littleEndian, as: UInt64.self)
                slot.storeBytes(of: Blaster.wallNanoseconds().littleEndian, toByteOffset: 8, as: UInt64.self)
                return size
            }
            let queued: Range<Int>?
            if let metadata {
                queued = try? watcher.enqueue(count: wanted, metadata: metadata, partially: true, writingWith: stamp ? writeStamped : write)
            } else if stamp {
                queued = try? watcher.enqueue(count: wanted, partially: true, writingWith: writeStamped)
            } else {
                queued = try? watcher.enqueue(count: wanted, partially: true, writingWith: write)
            }
            if let queued, !queued.isEmpty, options.window != nil { sendTimes.append((queued.lowerBound, now)) }
            next += queued?.count ?? 0
        }
        if next == limit || timeUp { finishSending() }
    }

    /// --window: writes off the datagrams whose reply is more than --timeout late, oldest first, so their
    /// places in the window go to new datagrams; then refills (which also ends the run once --duration is up).
    private func writeOffLateReplies() {
        guard sendingEnded == 0 else { return }
        let now = Blaster.nanoseconds(), patience = UInt64(options.timeout * 1e9)
        while unresolved < next {
            let (word, bit) = (unresolved / 64, UInt64(1) << UInt64(unresolved % 64))
            if word < seen.count && seen[word] & bit != 0 { unresolved += 1; continue }
            while sendTimesHead + 1 < sendTimes.count && sendTimes[sendTimesHead + 1].first <= unresolved { sendTimesHead += 1 }
            guard now - sendTimes[sendTimesHead].at >= patience else { break }
            while writtenOffBits.count <= word { writtenOffBits.append(0) }
            writtenOffBits[word] |= bit
            writtenOff += 1
            unresolved += 1
        }
        if sendTimesHead >= 1024 {
            sendTimes.removeFirst(sendTimesHead)
            sendTimesHead = 0
        }
        refill()
    }

    private func finishSending() {
        guard sendingEnded == 0, !interrupted else { return }
        pacer?.stop()
        watcher.close(flushingWithin: 3600) { [unowned self] _ in
            guard !self.interrupted else { return }  // SIGINT cut the flush short: no wait for replies
            self.sendingEnded = Blaster.nanoseconds()
            guard let reader = self.reader else { return }
            if self.unique == self.watcher.counters.sent { return reader.stop() }
            let deadline = TimerWatcher(loop: self.loop, after: self.options.timeout) { _ in reader.stop() }
            deadline.start()
            self.replyDeadline = deadline
        }
    }

    private func received(_ batch: ReceivedBatch) {
        // Round trips are measured on the realtime clock, the one the kernel stamps receives with; the
        // run's own timing (pacing, duration, rates) stays on the monotonic clock.
        let now = Blaster.wallNanoseconds()
        for datagram in batch {
            // A round trip ends when the kernel received the reply (SO_TIMESTAMPNS), not when this loop
            // got round to reading it; without a kernel timestamp, now.
            let arrived = datagram.receiveTime.map { UInt64($0.components.seconds) * 1_000_000_000 + UInt64($0.components.attoseconds / 1_000_000_000) } ?? now
            replies += 1
            if let ecn = datagram.ecn { replyECN[ecn, default: 0] += 1 }
            if let destination = datagram.destination { replyDestinations[destination, default: 0] += 1 }
            guard datagram.payload.count >= 16 else { foreign += 1; continue }
            let sequence = Int(UInt64(littleEndian: datagram.payload.loadUnaligned(as: UInt64.self)))
            let sentAt = UInt64(littleEndian: datagram.payload.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            guard sequence >= 0, sequence < next, sentAt <= now else { foreign += 1; continue }
            let ended = max(arrived, sentAt)
            let (word, bit) = (sequence / 64, UInt64(1) << UInt64(sequence % 64))
            while seen.count <= word { seen.append(0) }
            if seen[word] & bit != 0 { duplicates += 1; continue }
            seen[word] |= bit
            unique += 1
            if word < writtenOffBits.count && writtenOffBits[word] & bit != 0 {
                writtenOffBits[word] &= ~bit   // a late reply: answered after all
                writtenOff -= 1
            }
            latency.record(nanoseconds: ended - sentAt)
            if sequence < highest { reordered += 1 } else { highest = sequence }
        }
        lastReplyAt = Blaster.nanoseconds()
        if sendingEnded != 0 && unique == watcher.counters.sent {
            replyDeadline?.stop()
            reader?.stop()
        } else if options.window != nil && sendingEnded == 0 {
            refill()
        }
    }

    private func report() -> Report {
        let c = watcher.counters
        let seconds = Double((sendingEnded == 0 ? Blaster.nanoseconds() : sendingEnded) - start) / 1e9
        var fields: [(String, Report.Value)] = [
            ("to", .text(destination.description)), ("count", .int(c.enqueued)), ("size", .int(options.size)),
            ("batch", .int(options.batch)), ("segmentation", .text(watcher.isSegmenting ? "on" : "off")),
            ("sent", .int(c.sent)), ("failed", .int(c.failed)), ("gso_sends", .int(c.gsoSends)),
            ("syscalls", .int(c.sendmmsgCalls)), ("short_counts", .int(c.shortCounts)),
            ("eagain", .int(c.eagain)), ("enobufs", .int(c.noBuffers)), ("rejected", .int(c.rejected)),
            ("peak_queued", .int(c.peakQueued)), ("seconds", .seconds(seconds)),
            ("pps", .int(Int(Double(c.sent) / max(seconds, 1e-9)))),
            ("mbit_per_s", .rate(Double(c.sentBytes) * 8 / max(seconds, 1e-9) / 1e6)),
        ]
        if options.rate != nil {
            fields += [("pace_skipped", .int(paceSkipped)), ("largest_burst", .int(largestPacedBurst))]
        }
        if reader != nil {
            let micro = { (ns: UInt64) in Double(ns) / 1000 }
            fields += [
                ("received", .int(unique)), ("lost", .int(c.sent - unique)), ("reordered", .int(reordered)),
                ("duplicates", .int(duplicates)), ("foreign", .int(foreign)),
                ("round_trips_per_s", .int(Int(Double(unique) / max(Double(lastReplyAt &- start) / 1e9, 1e-9)))),
                ("rtt_p50_us", .rate(micro(latency.percentile(0.5)))), ("rtt_p99_us", .rate(micro(latency.percentile(0.99)))),
                ("rtt_max_us", .rate(micro(latency.max))),
                ("reply_ecn", .text(ECN.allCases.compactMap { ecn in replyECN[ecn].map { "\(ecn)=\($0)" } }.joined(separator: " "))),
                ("reply_destinations", .text(replyDestinations.sorted { $0.value > $1.value }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))),
            ]
        }
        return Report(fields)
    }

    /// The monotonic clock, in nanoseconds: pacing, duration and rates.
    static func nanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    /// The realtime clock, as the kernel's receive timestamps (SO_TIMESTAMPNS) use it, in nanoseconds
    /// since the epoch: the stamps round trips are measured with.
    static func wallNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}

/// A runtime failure: the message goes to stderr and the process exits 1.
struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
