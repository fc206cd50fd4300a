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

/// Randomized fault injection: 200,000 random operations (enqueues of every form, flushes, loop
/// iterations, closes, reentrant enqueue and close from callbacks) against a kernel simulated by the
/// sendmmsg seam. The simulated kernel behaves as Linux does where it matters to the contract:
/// - a message with a UDP_SEGMENT control message is split by the segment size (an empty datagram in a
///   run would not exist), one without carries one datagram;
/// - some datagrams are poisoned with an errno of their own: a message carrying one fails with it as the
///   first message of a call, or ends the call's count before it (man sendmmsg BUGS);
/// - the socket's pending error (an ICMP error for an earlier datagram) fails the next call, whatever it
///   carries, once; such errors arrive between calls, but not in the microseconds between a refused call
///   and the watcher's immediate second try of the same head (where the watcher, like any sender, could
///   not tell a new pending error from the datagram's own);
/// - on some watchers the "device" refuses every super-datagram with EIO or EINVAL;
/// - random short counts, EAGAIN, EINTR, ENOBUFS, and a rare EBADF.
/// After every step: `enqueued == sent + failed + queued`; the kernel produced exactly the datagrams
/// counted as sent, in order, none twice, none both sent and reported; a poisoned datagram is never sent
/// and an unpoisoned one never fails with a kernel errno; a refused super-datagram's datagrams are
/// offered one by one; segmentation stays on unless the device refuses; EV_WRITE is armed only while
/// something is queued.
///
/// Deterministic by default (fixed seed). `BATCHED_UDP_FAULT_SEED=<n>` replays a seed;
/// `BATCHED_UDP_FAULT_SEED=random` picks a new one. The seed is printed on failure.
@Suite struct WatcherFaultInjectionTests {
    enum Fate: UInt8 { case queued = 0, sent, failed }

    /// The errnos a datagram can be poisoned with, and those a watcher reports for reasons of its own.
    static let poisons: [Errno] = [.EMSGSIZE, .EPERM, .EACCES, .EHOSTUNREACH, .EINVAL, .ENETUNREACH, .EIO]
    static let pendingErrors: [Errno] = [.ECONNREFUSED, .EHOSTUNREACH, .EMSGSIZE, .ENETUNREACH]
    static let watcherErrnos: Set<Errno> = [.ECANCELED, .ETIMEDOUT, .EBADF, .ENOBUFS]

    final class Harness {
        var rng: SplitMix64
        let loop: EventLoop
        let seed: UInt64
        var watcher: BatchedUDPWatcher!
        var fates: [Fate] = []
        var sizes: [Int] = []
        /// The errno each datagram is poisoned with, if any.
        var poison: [Errno?] = []
        /// The metadata each datagram was enqueued with, if any.
        var metadata: [SendMetadata?] = []
        var lastSent = -1
        var reportedFailures = 0
        var reportedProblems = 0
        var step = 0
        var problem: String?
        var watchers = 0
        /// When set, most datagrams of this watcher have this size, so runs form super-datagrams.
        var runSize: Int?
        /// This watcher's device refuses every super-datagram (EIO or EINVAL).
        var deviceRefuses = false
        /// The socket's pending error, returned by the next call whatever it carries.
        var pendingError: Errno?
        var pendingReturned = 0
        /// Datagrams the simulated kernel produced for this watcher (segments included).
        var kernelDatagrams = 0
        /// Datagrams of refused super-datagrams: the next time they are offered, it must be one by one.
        var mustGoAlone: Set<Int> = []
        /// Over the whole run.
        var segmentationRefusals = 0
        var superDatagrams = 0
        var poisonedRefusals = 0
        var pendingHits = 0
        var emptySent = 0
        let receiver: Receiver

        init(seed: UInt64) throws {
            self.seed = seed
            rng = SplitMix64(seed: seed)
            loop = try EventLoop()
            receiver = try Receiver()
        }

        /// The last calls the simulated kernel answered, for the failure message.
        var history: [String] = []

        func fail(_ text: String) {
            if problem == nil { problem = "seed \(seed), step \(step), watcher \(watchers): \(text); last calls: \(history.joined(separator: " | "))" }
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
            deviceRefuses = chance(15)
            let socket = try UDPSocket(family: .ipv4)
            try socket.connect(to: receiver.address)
            let watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration)
            watcher.sendSeam = { [unowned self] _, messages, count in self.kernel(messages, count) }
            watcher.onError = { [unowned self] watcher, failure in
                guard watcher === self.watcher else { return }
                self.reportedFailures += 1
                let sequence = failure.sequence
                guard sequence < self.fates.count, self.fates[sequence] == .queued else {
                    return self.fail("datagram #\(sequence) reported, but it was \(sequence < self.fates.count ? "\(self.fates[sequence])" : "never enqueued")")
                }
                self.fates[sequence] = .failed
                if failure.length != self.sizes[sequence] { self.fail("datagram #\(sequence) reported with length \(failure.length), enqueued with \(self.sizes[sequence])") }
                if !WatcherFaultInjectionTests.watcherErrnos.contains(failure.errno) && failure.errno != self.poison[sequence] {
                    self.fail("datagram #\(sequence) failed with \(failure.errno), but its own error is \(self.poison[sequence].map(\.name) ?? "none")")
                }
                if self.chance(10) { self.enqueueOne() }
                if self.chance(1) { watcher.close() }
            }
            watcher.onSocketProblem = { [unowned self] watcher, problem in
                guard watcher === self.watcher else { return }
                self.reportedProblems += 1
                guard case .pendingError = problem else { return self.fail("unexpected socket problem \(problem)") }
            }
            watcher.onWritabilityChanged = { [unowned self] watcher, writable in
                if writable && watcher === self.watcher && self.chance(30) { self.enqueueOne() }
            }
            self.watcher = watcher
            fates.removeAll(keepingCapacity: true)
            sizes.removeAll(keepingCapacity: true)
            poison.removeAll(keepingCapacity: true)
            metadata.removeAll(keepingCapacity: true)
            mustGoAlone.removeAll()
            lastSent = -1
            reportedFailures = 0
            reportedProblems = 0
            pendingError = nil
            pendingReturned = 0
            kernelDatagrams = 0
            watchers += 1
        }

        /// A closed watcher must have settled every datagram it accepted.
        func retireWatcher() {
            guard let watcher else { return }
            if watcher.state != .closed { watcher.close() }
            check()
            if let index = fates.firstIndex(of: .queued) { fail("datagram #\(index) neither sent nor reported after close") }
            if watcher.isWaitingForWritable || watcher.isDrainScheduled || watcher.isBackingOff { fail("a closed watcher still has a watcher active") }
        }

        /// One message as the kernel sees it: its datagrams' sequence numbers (nil for an empty one).
        func datagrams(of header: msghdr) -> [Int?] {
            var total = 0
            for index in 0..<header.msg_iovlen { total += header.msg_iov[index].iov_len }
            let segment = segmentSize(of: header)
            // Linux: with a segment size smaller than the payload, the payload is cut into segments of
            // that size (the last may be shorter); otherwise it is one datagram, however many iovecs.
            let cut = segment.map { $0 > 0 && $0 < total ? $0 : max(total, 1) } ?? max(total, 1)
            guard total > 0 else { return [nil] }
            var result: [Int?] = []
            var offset = 0
            while offset < total {
                let length = min(cut, total - offset)
                result.append(length >= 8 ? byte(at: offset, of: header).map { _ in sequence(at: offset, of: header) } : nil)
                offset += length
            }
            return result
        }

        func byte(at offset: Int, of header: msghdr) -> UInt8? {
            var offset = offset
            for index in 0..<header.msg_iovlen {
                let iov = header.msg_iov[index]
                if offset < iov.iov_len { return iov.iov_base!.load(fromByteOffset: offset, as: UInt8.self) }
                offset -= iov.iov_len
            }
            return nil
        }

        func sequence(at offset: Int, of header: msghdr) -> Int {
            var value: UInt64 = 0
            for i in (0..<8).reversed() { value = value << 8 | UInt64(byte(at: offset + i, of: header)!) }
            return Int(value)
        }

        /// What the previous call returned: an ICMP error does not land in the microseconds between a
        /// failed call and the watcher's immediate retry (the one moment a second pending error would be
        /// charged to the head).
        var previous: IOResult = .done(0)

        /// The simulated kernel.
        func kernel(_ messages: UnsafeMutablePointer<cudp_mmsghdr>, _ count: Int) -> IOResult {
            let result = simulate(messages, count)
            if result != .failed(.EINTR) { previous = result }  // the wrapper retries EINTR at once
            let offered = (0..<count).map { index in
                let carried = datagrams(of: messages[index].msg_hdr)
                return carried.count == 1 ? "\(carried[0].map(String.init) ?? "empty")" : "\(carried.first!.map(String.init) ?? "?")+\(carried.count - 1)"
            }
            history.append("[\(offered.joined(separator: " "))] → \(result)")
            if history.count > 8 { history.removeFirst() }
            return result
        }

        func simulate(_ messages: UnsafeMutablePointer<cudp_mmsghdr>, _ count: Int) -> IOResult {
            let justFailed = if case let .failed(error) = previous { ![.EAGAIN, .ENOBUFS, .EBADF].contains(error) } else { false }
            if !justFailed && chance(3) { pendingError = WatcherFaultInjectionTests.pendingErrors[Int(rng.next() % 4)] }
            let roll = rng.next() % 100
            switch roll {
            case 0..<12: return .failed(.EAGAIN)
            case 12..<17: return .failed(.EINTR)
            case 17..<24: return .failed(.ENOBUFS)
            case 24: return .failed(.EBADF)
            default: break
            }
            if let error = pendingError {
                pendingError = nil
                pendingReturned += 1
                pendingHits += 1
                return .failed(error)
            }
            let limit = chance(30) ? Int(1 + rng.next() % UInt64(count)) : count
            var sent = 0
            for index in 0..<limit {
                let header = messages[index].msg_hdr
                let carried = datagrams(of: header)
                let isSuper = segmentSize(of: header) != nil
                // A super-datagram's datagrams share its control messages: they must have been enqueued
                // with equal metadata.
                let sequencesHere = carried.compactMap { $0 }
                // (Once the kernel refused ECN, the watcher sends without it.)
                let sendsECN = watcher?.isSendingECN ?? true
                func effective(_ sequence: Int) -> SendMetadata? {
                    guard var chosen = metadata[sequence], !sendsECN else { return metadata[sequence] }
                    chosen.ecn = nil
                    return chosen.source == nil ? nil : chosen
                }
                if isSuper, let first = sequencesHere.first, sequencesHere.contains(where: { effective($0) != effective(first) }) {
                    fail("datagrams with different metadata in one super-datagram: \(sequencesHere.map { metadata[$0].map(String.init(describing:)) ?? "none" })")
                }
                if isSuper && carried.count < 2 { fail("a UDP_SEGMENT control message on a message that carries one datagram") }
                if !isSuper && header.msg_iovlen > 1 { fail("several iovecs without a UDP_SEGMENT control message") }
                let sequences = carried.compactMap { $0 }
                if isSuper, let alone = sequences.first(where: { mustGoAlone.contains($0) }) {
                    fail("datagram #\(alone) of a refused super-datagram offered in a super-datagram again")
                }
                // Refusals, as the first message of the call or ending the count before it.
                var refusal: Errno?
                if let poisoned = sequences.first(where: { $0 < poison.count && poison[$0] != nil }) {
                    refusal = poison[poisoned]
                    if index == 0 { poisonedRefusals += 1 }
                } else if isSuper && deviceRefuses {
                    refusal = chance(50) ? .EIO : .EINVAL
                    if index == 0 { segmentationRefusals += 1 }
                }
                if let refusal {
                    guard index == 0 else { break }
                    if isSuper { mustGoAlone.formUnion(sequences) }
                    return .failed(refusal)
                }
                for sequence in sequences {
                    mustGoAlone.remove(sequence)
                    guard sequence < fates.count, fates[sequence] == .queued else {
                        fail("datagram #\(sequence) sent but it was \(sequence < fates.count ? "\(fates[sequence])" : "never enqueued")")
                        continue
                    }
                    if sequence <= lastSent { fail("datagram #\(sequence) sent after #\(lastSent)") }
                    fates[sequence] = .sent
                    lastSent = sequence
                }
                if carried.contains(where: { $0 == nil }) {
                    // An empty datagram: the next queued one of size 0 after the last one sent.
                    guard let empty = (lastSent + 1..<fates.count).first(where: { fates[$0] == .queued && sizes[$0] == 0 }) else {
                        fail("an empty datagram sent, but none is queued")
                        continue
                    }
                    fates[empty] = .sent
                    lastSent = empty
                    emptySent += 1
                }
                kernelDatagrams += carried.count
                if isSuper { superDatagrams += 1 }
                sent += 1
            }
            return sent == 0 ? .failed(.EAGAIN) : .done(sent)
        }

        /// Enqueues one datagram in a random form; checks that a refusal leaves nothing behind.
        func enqueueOne() {
            guard let watcher else { return }
            let before = watcher.counters
            let sequence = before.enqueued
            var size = runSize.flatMap { chance(85) ? $0 : nil } ?? Int(8 + rng.next() % 200)
            if chance(4) { size = 0 }
            var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: sequence), count: size)
            if size >= 8 { withUnsafeBytes(of: UInt64(sequence).littleEndian) { for i in 0..<8 { bytes[i] = $0[i] } } }
            let form = rng.next() % 3
            fates.append(.queued)
            sizes.append(size)
            poison.append(size > 0 && chance(2) ? WatcherFaultInjectionTests.poisons[Int(rng.next() % UInt64(WatcherFaultInjectionTests.poisons.count))] : nil)
            // Some datagrams carry metadata (two sources, ECN codepoints), in runs, so runs split on it.
            let chosen: SendMetadata? = chance(25) ? SendMetadata(source: chance(50) ? .loopbackIPv4(port: 0) : nil, ecn: chance(50) ? .ect0 : .ce) : nil
            metadata.append(chosen)
            do {
                let returned: Int
                switch form {
                case 0: returned = try watcher.enqueue(bytes, metadata: chosen)
                case 1 where size >= 8:
                    returned = try bytes.withUnsafeBytes { raw in
                        try watcher.enqueue(gathering: [UnsafeRawBufferPointer(rebasing: raw[..<8]), UnsafeRawBufferPointer(rebasing: raw[8...])], metadata: chosen)
                    }
                default:
                    returned = try watcher.enqueue(metadata: chosen) { slot in
                        slot.copyBytes(from: bytes)
                        return bytes.count
                    }
                }
                if returned != sequence { fail("enqueue returned \(returned), expected \(sequence)") }
            } catch {
                fates.removeLast()
                sizes.removeLast()
                poison.removeLast()
                metadata.removeLast()
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
            if c.sent != kernelDatagrams { fail("counters.sent \(c.sent) but the kernel produced \(kernelDatagrams) datagrams") }
            let sent = fates.lazy.filter { $0 == .sent }.count
            let failed = fates.lazy.filter { $0 == .failed }.count
            if c.sent != sent { fail("counters.sent \(c.sent) but the kernel took \(sent)") }
            if c.failed != c.failedByErrno.values.reduce(0, +) { fail("failedByErrno does not add up to failed") }
            if c.failed != failed || reportedFailures != failed { fail("counters.failed \(c.failed), reported \(reportedFailures), recorded \(failed)") }
            if c.pendingErrors != reportedProblems || c.pendingErrors > pendingReturned {
                fail("pendingErrors \(c.pendingErrors), reported \(reportedProblems), returned by the kernel \(pendingReturned)")
            }
            if watcher.isWaitingForWritable && c.queued == 0 { fail("EV_WRITE armed with nothing queued") }
            if watcher.configuration.segmentation == .automatic && !deviceRefuses && !watcher.isSegmenting {
                fail("segmentation turned off, though only datagrams (never the device) refused: \(c)")
            }
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
        #expect(harness.segmentationRefusals > 10, "the device should refuse GSO sends: \(harness.segmentationRefusals)")
        #expect(harness.superDatagrams > 1000, "the run should send super-datagrams: \(harness.superDatagrams)")
        #expect(harness.poisonedRefusals > 100 && harness.pendingHits > 100 && harness.emptySent > 100,
                "poisoned \(harness.poisonedRefusals), pending \(harness.pendingHits), empty \(harness.emptySent)")
    }
}
