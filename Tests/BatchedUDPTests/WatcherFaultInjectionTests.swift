@testable import BatchedUDP
import CUDPShims
import Foundation
import Libev
import Testing
import TestSupport

/// A small, fast, seedable generator (SplitMix64), so a failing run can be replayed exactly.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Randomized fault injection through the sendmmsg seam: 200,000 random operations (enqueues of every
/// form, flushes, loop iterations, closes, reentrant enqueue and close from callbacks) against a kernel
/// simulated by the seam (random short counts, EAGAIN, EINTR, ENOBUFS, per-datagram errnos, EBADF, and
/// for GSO super-datagrams EIO/EINVAL, which must turn segmentation off and lose nothing).
/// After every step: `enqueued == sent + failed + queued`, sends in order, nothing sent twice or both
/// sent and reported, counters consistent, EV_WRITE armed only while something is queued.
///
/// Deterministic by default (fixed seed). `BATCHED_UDP_FAULT_SEED=<n>` replays a seed;
/// `BATCHED_UDP_FAULT_SEED=random` picks a new one. The seed is printed on failure.
@Suite struct WatcherFaultInjectionTests {
    enum Fate: UInt8 { case queued = 0, sent, failed }

    final class Harness {
        var rng: SplitMix64
        let loop: EventLoop
        let seed: UInt64
        var watcher: BatchedUDPWatcher!
        var fates: [Fate] = []
        var lastSent = -1
        var reportedFailures = 0
        var step = 0
        var problem: String?
        var watchers = 0
        /// When set, most datagrams of this watcher have this size, so runs form super-datagrams.
        var runSize: Int?
        /// GSO sends the simulated kernel refused with EIO/EINVAL, over the whole run.
        var segmentationRefusals = 0
        var superDatagrams = 0
        /// The current watcher's GSO send failed with EIO or EINVAL: it must have stopped segmenting.
        var segmentationRefused = false
        let receiver: Receiver

        init(seed: UInt64) throws {
            self.seed = seed
            rng = SplitMix64(seed: seed)
            loop = try EventLoop()
            receiver = try Receiver()
        }

        func fail(_ text: String) {
            if problem == nil { problem = "seed \(seed), step \(step), watcher \(watchers): \(text)" }
        }

        func chance(_ percent: UInt64) -> Bool { rng.next() % 100 < percent }

        func newWatcher() throws {
            retireWatcher()
            var configuration = BatchedUDPWatcher.Configuration()
            configuration.capacity = Int(8 + rng.next() % 120)
            configuration.batchSize = Int(1 + rng.next() % UInt64(configuration.capacity))
            configuration.maxCallsPerDrain = Int(1 + rng.next() % 6)
            configuration.maxDatagramSize = 300
            configuration.noBufferRetries = Int(rng.next() % 3)
            configuration.noBufferBackoff = 0.0002
            configuration.segmentation = chance(70) ? .automatic : .off
            runSize = chance(50) ? Int(8 + rng.next() % 200) : nil
            let socket = try UDPSocket(family: .ipv4)
            try socket.connect(to: receiver.address)
            let watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration)
            watcher.sendSeam = { [unowned self] _, messages, count in self.kernel(messages, count) }
            watcher.onError = { [unowned self] watcher, failure in
                guard watcher === self.watcher else { return }
                self.reportedFailures += 1
                guard failure.sequence < self.fates.count, self.fates[failure.sequence] == .queued else {
                    return self.fail("datagram #\(failure.sequence) reported, but it was \(failure.sequence < self.fates.count ? "\(self.fates[failure.sequence])" : "never enqueued")")
                }
                self.fates[failure.sequence] = .failed
                if self.chance(10) { self.enqueueOne() }
                if self.chance(1) { watcher.close() }
            }
            watcher.onWritabilityChanged = { [unowned self] watcher, writable in
                if writable && watcher === self.watcher && self.chance(30) { self.enqueueOne() }
            }
            self.watcher = watcher
            fates.removeAll(keepingCapacity: true)
            lastSent = -1
            reportedFailures = 0
            watchers += 1
            segmentationRefused = false
        }

        /// A closed watcher must have settled every datagram it accepted.
        func retireWatcher() {
            guard let watcher else { return }
            if watcher.state != .closed { watcher.close() }
            check()
            if let index = fates.firstIndex(of: .queued) { fail("datagram #\(index) neither sent nor reported after close") }
            if watcher.isWaitingForWritable || watcher.isDrainScheduled || watcher.isBackingOff { fail("a closed watcher still has a watcher active") }
        }

        /// The simulated kernel. A message carries one datagram per iovec (GSO super-datagrams carry several).
        func kernel(_ messages: UnsafeMutablePointer<cudp_mmsghdr>, _ count: Int) -> IOResult {
            let roll = rng.next() % 100
            switch roll {
            case 0..<50:
                let sent = chance(50) ? count : Int(1 + rng.next() % UInt64(count))
                for i in 0..<sent {
                    let header = messages[i].msg_hdr
                    if header.msg_iovlen > 1 && header.msg_controllen == 0 { fail("a super-datagram without its UDP_SEGMENT control message") }
                    if header.msg_iovlen == 1 && header.msg_controllen != 0 { fail("a control message on a one-segment send") }
                    for segment in 0..<header.msg_iovlen {
                        let base = header.msg_iov[segment].iov_base!
                        let sequence = Int(UInt64(littleEndian: base.loadUnaligned(as: UInt64.self)))
                        guard sequence < fates.count, fates[sequence] == .queued else {
                            fail("datagram #\(sequence) sent but it was \(sequence < fates.count ? "\(fates[sequence])" : "never enqueued")")
                            continue
                        }
                        if sequence <= lastSent { fail("datagram #\(sequence) sent after #\(lastSent)") }
                        fates[sequence] = .sent
                        lastSent = sequence
                    }
                    if header.msg_iovlen > 1 { superDatagrams += 1 }
                }
                return .done(sent)
            case 50..<62: return .failed(.EAGAIN)
            case 62..<68: return .failed(.EINTR)
            case 68..<76: return .failed(.ENOBUFS)
            case 76..<99:
                let errnos: [Errno] = [.EMSGSIZE, .EIO, .EINVAL, .ECONNREFUSED, .EHOSTUNREACH, .ENETUNREACH, .EPERM, .EACCES]
                let error = messages[0].msg_hdr.msg_iovlen > 1 && chance(30) ? (chance(50) ? .EIO : .EINVAL)
                    : errnos[Int(rng.next() % UInt64(errnos.count))]
                if messages[0].msg_hdr.msg_iovlen > 1 && (error == .EIO || error == .EINVAL) {
                    segmentationRefusals += 1
                    segmentationRefused = true
                }
                return .failed(error)
            default: return .failed(.EBADF)
            }
        }

        /// Enqueues one datagram in a random form; checks that a refusal leaves nothing behind.
        func enqueueOne() {
            guard let watcher else { return }
            let before = watcher.counters
            let sequence = before.enqueued
            let size = runSize.flatMap { chance(85) ? $0 : nil } ?? Int(8 + rng.next() % 200)
            var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: sequence), count: size)
            withUnsafeBytes(of: UInt64(sequence).littleEndian) { for i in 0..<8 { bytes[i] = $0[i] } }
            let form = rng.next() % 3
            fates.append(.queued)
            do {
                let returned: Int
                switch form {
                case 0: returned = try watcher.enqueue(bytes)
                case 1:
                    returned = try bytes.withUnsafeBytes { raw in
                        try watcher.enqueue(gathering: [UnsafeRawBufferPointer(rebasing: raw[..<8]), UnsafeRawBufferPointer(rebasing: raw[8...])])
                    }
                default:
                    returned = try watcher.enqueue { slot in
                        slot.copyBytes(from: bytes)
                        return bytes.count
                    }
                }
                if returned != sequence { fail("enqueue returned \(returned), expected \(sequence)") }
            } catch {
                fates.removeLast()
                let after = watcher.counters
                if after.enqueued != before.enqueued { fail("a refused enqueue (\(error)) changed enqueued") }
                switch error as? BatchedUDPError {
                case .queueFull?: if after.rejected != before.rejected + 1 { fail("queueFull not counted as rejected") }
                case .closed?: if watcher.state == .open { fail("closed thrown by an open watcher") }
                default: fail("unexpected enqueue error \(error)")
                }
            }
        }

        /// The invariants, after every step.
        func check() {
            guard let watcher else { return }
            let c = watcher.counters
            if c.enqueued != c.sent + c.failed + c.queued { fail("enqueued \(c.enqueued) != sent \(c.sent) + failed \(c.failed) + queued \(c.queued)") }
            if c.enqueued != fates.count { fail("enqueued \(c.enqueued) but \(fates.count) accepted") }
            let sent = fates.lazy.filter { $0 == .sent }.count
            let failed = fates.lazy.filter { $0 == .failed }.count
            if c.sent != sent { fail("counters.sent \(c.sent) but the kernel took \(sent)") }
            if c.failed != c.failedByErrno.values.reduce(0, +) { fail("failedByErrno does not add up to failed") }
            if c.failed != failed || reportedFailures != failed { fail("counters.failed \(c.failed), reported \(reportedFailures), recorded \(failed)") }
            if watcher.isWaitingForWritable && c.queued == 0 { fail("EV_WRITE armed with nothing queued") }
            if segmentationRefused && watcher.isSegmenting { fail("still segmenting after a GSO send failed with EIO or EINVAL") }
            if c.queued > 0 && watcher.state == .open && !(watcher.isWaitingForWritable || watcher.isDrainScheduled || watcher.isBackingOff) {
                fail("\(c.queued) queued but no drain is scheduled")
            }
        }
    }

    @Test func randomOperationsKeepEveryPromise() throws {
        let environment = ProcessInfo.processInfo.environment["BATCHED_UDP_FAULT_SEED"]
        let seed = environment == "random" ? UInt64.random(in: 0...UInt64.max) : environment.flatMap { UInt64($0) } ?? 0x5EED_2026_1121
        let harness = try Harness(seed: seed)
        try harness.newWatcher()
        let operations = 200_000
        for step in 0..<operations {
            harness.step = step
            let roll = harness.rng.next() % 100
            switch roll {
            case 0..<55: harness.enqueueOne()
            case 55..<65: harness.watcher.flush()
            case 65..<93: harness.loop.run(.noWait)
            case 93..<95: try harness.newWatcher()
            case 95..<97:
                harness.watcher.close(flushingWithin: Double(harness.rng.next() % 3) * 0.0005)
            default:
                if harness.watcher.state == .closed { try harness.newWatcher() }
            }
            harness.check()
            if let problem = harness.problem {
                Issue.record("\(problem) (replay with BATCHED_UDP_FAULT_SEED=\(seed))")
                return
            }
        }
        harness.retireWatcher()
        #expect(harness.problem == nil, "\(harness.problem ?? "") (replay with BATCHED_UDP_FAULT_SEED=\(seed))")
        #expect(harness.watchers > 100, "the run should exercise many watchers, closes and re-creations")
        #expect(harness.segmentationRefusals > 10, "the run should refuse GSO sends: \(harness.segmentationRefusals)")
        #expect(harness.superDatagrams > 1000, "the run should send super-datagrams: \(harness.superDatagrams)")
    }
}
