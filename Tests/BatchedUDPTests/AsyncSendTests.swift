@testable import BatchedUDP
import Libev
import Testing
import TestSupport

/// A watcher owned by an actor that runs on the watcher's loop, as async code would use it.
actor LoopSender {
    let executor: LoopExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    private(set) var watcher: BatchedUDPWatcher!
    /// While set, the kernel "refuses" every send (EAGAIN), so the queue stays full.
    let holding = Locked(false)
    /// The order sends were called in, and the sequence numbers they got.
    var arrivals: [Int] = []
    var queued: [Int: Int] = [:]

    private init(executor: LoopExecutor) { self.executor = executor }

    /// Creates the socket and watcher on the loop thread (in an isolated method: an actor's init is not).
    static func make(executor: LoopExecutor, to target: SocketAddress, capacity: Int) async throws -> LoopSender {
        let sender = LoopSender(executor: executor)
        try await sender.open(to: target, capacity: capacity)
        return sender
    }

    private func open(to target: SocketAddress, capacity: Int) throws {
        let socket = try UDPSocket(family: .ipv4)
        try socket.connect(to: target)
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.capacity = capacity
        configuration.maxDatagramSize = 64
        watcher = try BatchedUDPWatcher(loop: executor.loop, socket: socket, configuration: configuration)
        let holding = holding
        watcher.sendSeam = { fd, messages, count in
            holding.withLock { $0 } ? .failed(.EAGAIN) : Syscall.sendmmsgOnce(fd, messages, count)
        }
    }

    /// Sends one datagram tagged `tag`, recording when the call arrived and which sequence number it got.
    func send(tag: Int) async throws {
        arrivals.append(tag)
        queued[tag] = try await watcher.send(sequencePayload(tag, size: 16))
    }

    /// Queues without waiting until the watcher is not writable.
    func fill() {
        var tag = 1_000_000
        while watcher.isWritable {
            _ = try? watcher.enqueue(sequencePayload(tag, size: 16))
            tag += 1
        }
    }

    /// Lets the kernel take datagrams again with a newcomer's send already queued on this actor: its job
    /// runs before that of the waiting sender the flush resumes, and must still queue behind it.
    func releaseWithNewcomer(tag: Int) -> Task<Void, any Error> {
        holding.withLock { $0 = false }
        let newcomer = Task { try await self.send(tag: tag) }
        watcher.flush()
        return newcomer
    }

    var waiting: Int { watcher.asyncSenders?.waitingCount ?? 0 }
    var counters: SendCounters { watcher.counters }
    func close() { watcher.close() }
}

@Suite struct AsyncSendTests {
    /// Fills `sender`'s queue while the kernel refuses everything, then starts a send tagged `tag`;
    /// returns once that send waits.
    static func waitingSend(_ sender: LoopSender, tag: Int) async throws -> Task<Void, any Error> {
        sender.holding.withLock { $0 = true }
        await sender.fill()
        let waiting = Task { try await sender.send(tag: tag) }
        while await sender.waiting < 1 { try await sender.executor.sleep(for: 0.001) }
        return waiting
    }

    /// Many tasks send through a 16-slot queue, far more than it holds: nobody gets `queueFull`, every
    /// datagram arrives, and sends are queued in exactly the order they were called (those that waited
    /// resume in order, and newcomers queue behind them).
    @Test func sendersWaitForRoomAndAreQueuedInArrivalOrder() async throws {
        let receiver = try Receiver()
        try await EventLoopThread.run { executor in
            let sender = try await LoopSender.make(executor: executor, to: receiver.address, capacity: 16)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<50 {
                    group.addTask { for n in 0..<4 { try await sender.send(tag: task * 4 + n) } }
                }
                try await group.waitForAll()
            }
            let arrivals = await sender.arrivals, queued = await sender.queued
            #expect(arrivals.count == 200)
            #expect(arrivals.map { queued[$0]! } == (0..<200).map { $0 }, "queued in another order than called")
            let counters = await sender.counters
            #expect(counters.rejected == 0 && counters.failed == 0)
            let got = receiver.receive(200).map(sequence(of:))
            #expect(Set(got) == Set(0..<200), "\(got.count) of 200 arrived")
        }
    }

    /// A sender that was resumed but has not run yet keeps its place: a newcomer whose job runs first
    /// queues behind it.
    @Test func aNewcomerDoesNotOvertakeAResumedSender() async throws {
        let receiver = try Receiver()
        try await EventLoopThread.run { executor in
            let sender = try await LoopSender.make(executor: executor, to: receiver.address, capacity: 8)
            let waiting = try await AsyncSendTests.waitingSend(sender, tag: 1)
            let newcomer = await sender.releaseWithNewcomer(tag: 2)
            try await waiting.value
            try await newcomer.value
            let queued = await sender.queued
            #expect(await sender.arrivals == [1, 2])
            #expect(queued[1]! < queued[2]!, "the newcomer was queued before the sender that waited")
        }
    }

    /// A send suspended behind a full queue ends with CancellationError when its task is cancelled, and
    /// its datagram is never queued; the one behind it still goes once there is room.
    @Test func cancellingASuspendedSendQueuesNothing() async throws {
        let receiver = try Receiver()
        try await EventLoopThread.run { executor in
            let sender = try await LoopSender.make(executor: executor, to: receiver.address, capacity: 8)
            let cancelled = try await AsyncSendTests.waitingSend(sender, tag: 1)
            let enqueuedBefore = await sender.counters.enqueued
            let patient = Task { try await sender.send(tag: 2) }
            while await sender.waiting < 2 { try await executor.sleep(for: 0.001) }
            cancelled.cancel()
            await #expect(throws: CancellationError.self) { try await cancelled.value }
            #expect(await sender.counters.enqueued == enqueuedBefore, "the cancelled datagram was queued")
            sender.holding.withLock { $0 = false }
            try await patient.value
            let queued = await sender.queued
            #expect(queued[1] == nil && queued[2] != nil)
        }
    }

    /// Closing the watcher fails every suspended send with `closed`, and later sends at once.
    @Test func closingFailsSuspendedSends() async throws {
        let receiver = try Receiver()
        try await EventLoopThread.run { executor in
            let sender = try await LoopSender.make(executor: executor, to: receiver.address, capacity: 8)
            let waiting = try await AsyncSendTests.waitingSend(sender, tag: 1)
            await sender.close()
            await #expect(throws: BatchedUDPError.closed) { try await waiting.value }
            await #expect(throws: BatchedUDPError.closed) { try await sender.send(tag: 2) }
        }
    }
}
