import BatchedUDP
import Foundation
import Glibc
import Testing
import TestSupport

/// Whether this test process (and so the echo-relay built beside it) is instrumented by AddressSanitizer.
let addressSanitizerIsOn = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__asan_init") != nil

/// What a relay must refuse to become: a memory sink for spoofed clients, an amplifier, a path for
/// strangers, or a descriptor leak when its upstream goes quiet. Each runs the real `echo-relay relay`.
@Suite struct RelayAbuseTests {
    /// Sends `bytes` from a fresh socket bound to `source`, then closes it: one more client address.
    func send(_ bytes: [UInt8], from source: String, to target: SocketAddress) throws {
        let socket = try UDPSocket(bindingTo: try SocketAddress(parsing: source))
        target.withSockAddr { address, length in
            let sent = bytes.withUnsafeBytes { sendto(socket.fileDescriptor, $0.baseAddress, $0.count, 0, address, length) }
            #expect(sent == bytes.count, "sendto from \(source): \(Errno(rawValue: errno))")
        }
        try socket.close()
    }

    /// A loopback address of its own for client `index` (127.1.0.1, 127.1.0.2, ... all of 127/8 is loopback).
    func clientAddress(_ index: Int) -> String { "127.1.\(index / 250).\(index % 250 + 1):0" }

    /// The counters in the relay's latest stats line satisfy `condition`.
    func waitForStats(_ relay: RunningRelay, timeout: Double = 10, _ condition: @escaping (String) -> Bool) throws {
        try relay.waitForLog(timeout: timeout) { _ in relay.latestStats().map(condition) ?? false }
    }

    /// 64 sessions fill the table; 4,000 more client addresses are refused and cost no memory: the
    /// relay's resident size stays where the 64 sessions put it.
    @Test func floodOfClientAddressesCannotGrowMemoryPastMaxSessions() throws {
        let upstream = try RunningRelay(["echo", "--listen", "127.0.0.1:0"])
        let relay = try RunningRelay(["relay", "--listen", "127.0.0.1:0", "--upstream", upstream.addresses[0].description,
                                      "--max-sessions", "64", "--stats-interval", "0.1"])
        let target = relay.addresses[0]
        try waitForStats(relay) { $0.hasSuffix("sessions 0") }
        let idle = relay.residentBytes
        for client in 0..<64 { try send([1], from: clientAddress(client), to: target) }
        try waitForStats(relay) { $0.hasSuffix("sessions 64") }
        let full = relay.residentBytes
        let flood = 4_000
        for client in 64..<(64 + flood) { try send([2], from: clientAddress(client), to: target) }
        try waitForStats(relay) { $0.contains("refused=\(flood) ") }
        let flooded = relay.residentBytes
        print("relay resident memory: idle \(idle >> 10) KiB, 64 sessions \(full >> 10) KiB, after \(flood) more client addresses \(flooded >> 10) KiB")
        #expect(relay.latestStats()?.hasSuffix("sessions 64") == true)
        // Without the limit the same flood grows the relay by about 100 MB. The AddressSanitizer pass runs an
        // instrumented echo-relay whose allocator keeps a few MiB of its own (stack depot, size-class caches).
        let slack = addressSanitizerIsOn ? 8 << 20 : 2 << 20
        #expect(flooded - full < slack, "the flood grew the relay from \(full >> 10) KiB to \(flooded >> 10) KiB")
        #expect(relay.stop() == 0)
    }

    /// Replies flow only as the upstream sends them: a client gets exactly what the upstream addressed to
    /// its session (never another client's, never a copy), and the upstream gets exactly what clients sent.
    @Test func clientReceivesExactlyWhatTheUpstreamSentIt() throws {
        let upstream = try Receiver()
        let relay = try RunningRelay(["relay", "--listen", "127.0.0.1:0", "--upstream", upstream.address.description])
        let clients = try (0..<2).map { _ in
            let client = try Receiver()
            try client.socket.connect(to: relay.addresses[0])
            return client
        }
        for (id, client) in clients.enumerated() {
            for request in 0..<5 {
                let bytes: [UInt8] = [UInt8(id), UInt8(request)]
                #expect(bytes.withUnsafeBytes { Glibc.send(client.socket.fileDescriptor, $0.baseAddress, $0.count, 0) } == 2)
            }
        }
        // The upstream sees each request once, from the client's session socket.
        var sessions: [UInt8: SocketAddress] = [:]
        var requests: [[UInt8]] = []
        for (bytes, sender) in upstream.receiveWithSenders(10, timeout: 3) {
            requests.append(bytes)
            sessions[bytes[0]] = sender
        }
        #expect(requests.sorted { $0.lexicographicallyPrecedes($1) } == (0..<2).flatMap { id in (0..<5).map { [UInt8(id), UInt8($0)] } })
        #expect(upstream.pending().isEmpty, "the relay sent the upstream more than the clients did")
        // Three replies to client 0's session, one to client 1's.
        for (id, count) in [(UInt8(0), 3), (UInt8(1), 1)] {
            let session = try #require(sessions[id])
            for reply in 0..<count {
                let bytes: [UInt8] = [0xEE, id, UInt8(reply)]
                session.withSockAddr { address, length in
                    #expect(bytes.withUnsafeBytes { sendto(upstream.socket.fileDescriptor, $0.baseAddress, $0.count, 0, address, length) } == 3)
                }
            }
        }
        #expect(clients[0].receive(3, timeout: 3) == [[0xEE, 0, 0], [0xEE, 0, 1], [0xEE, 0, 2]])
        #expect(clients[1].receive(1, timeout: 3) == [[0xEE, 1, 0]])
        #expect(clients[0].pending().isEmpty && clients[1].pending().isEmpty, "a client got more than the upstream sent it")
        #expect(relay.stop() == 0)
    }

    /// An upstream that reads but never answers: every session still closes after the idle timeout and
    /// the relay's descriptors return to where they were.
    @Test func silentUpstreamLeaksNoSessionsPastTheIdleTimeout() throws {
        let upstream = try Receiver()
        let relay = try RunningRelay(["relay", "--listen", "127.0.0.1:0", "--upstream", upstream.address.description,
                                      "--session-timeout", "0.3", "--stats-interval", "0.1"])
        try waitForStats(relay) { $0.hasSuffix("sessions 0") }
        let descriptorsBefore = relay.openDescriptors
        let clients = 100
        for client in 0..<clients { try send([3], from: clientAddress(client), to: relay.addresses[0]) }
        try waitForStats(relay) { $0.hasSuffix("sessions \(clients)") }
        #expect(relay.openDescriptors >= descriptorsBefore + clients, "a session socket per client")
        try waitForStats(relay) { $0.hasSuffix("sessions 0") }
        #expect(relay.openDescriptors == descriptorsBefore, "every session socket was closed")
        #expect(upstream.receive(clients, timeout: 3).count == clients)
        #expect(relay.stop() == 0)
    }

    /// The access list: with `--allow 127.0.0.2/32`, a client at 127.0.0.1 is denied (counted, never
    /// answered, no session) while one at 127.0.0.2 is served.
    @Test func clientsOutsideAllowAreDeniedAndNeverAnswered() throws {
        let upstream = try RunningRelay(["echo", "--listen", "127.0.0.1:0"])
        let relay = try RunningRelay(["relay", "--listen", "127.0.0.1:0", "--upstream", upstream.addresses[0].description,
                                      "--allow", "127.0.0.2/32", "--stats-interval", "0.1"])
        let outsider = try Receiver(try SocketAddress(parsing: "127.0.0.1:0"))
        let member = try Receiver(try SocketAddress(parsing: "127.0.0.2:0"))
        for client in [outsider, member] {
            try client.socket.connect(to: relay.addresses[0])
            for i in 0..<10 {
                let bytes = sequencePayload(i, size: 32)
                _ = bytes.withUnsafeBytes { Glibc.send(client.socket.fileDescriptor, $0.baseAddress, $0.count, 0) }
            }
        }
        #expect(member.receive(10, timeout: 2).count == 10)
        #expect(outsider.receive(1, timeout: 0.3).isEmpty, "a denied client got an answer")
        try waitForStats(relay) { $0.contains("denied=10") && $0.contains("sessions 1") }
        #expect(relay.stop() == 0)
        _ = upstream.stop()
    }

    /// Under a descriptor limit of 128 the relay lowers --max-sessions in one log line at start-up; a
    /// flood of 1,000 one-datagram clients then fills the sessions, the rest are refused and counted,
    /// and the log stays a few lines long (warnings a sender can provoke are rate limited).
    @Test func aSmallDescriptorLimitLowersMaxSessionsAndTheFloodStaysQuiet() throws {
        let upstream = try RunningRelay(["echo", "--listen", "127.0.0.1:0"])
        let relay = try RunningRelay(["relay", "--listen", "127.0.0.1:0", "--upstream", upstream.addresses[0].description,
                                      "--stats-interval", "0.2"], launcher: ["/usr/bin/prlimit", "--nofile=128:128"])
        #expect(relay.log.contains("the descriptor limit is 128; lowering --max-sessions from 10000 to"), "\(relay.log)")
        for index in 0..<1000 { try send([1, 2, 3], from: clientAddress(index), to: relay.addresses[0]) }
        try waitForStats(relay) { line in
            func count(_ label: String) -> Int? {
                line.split(separator: " ").first(where: { $0.hasPrefix(label) }).flatMap { Int($0.dropFirst(label.count)) }
            }
            // Without root the listener's buffer is capped at rmem_max: what it could not hold, the kernel counted.
            guard let refused = count("refused="), let dropped = count("kernel_drops="),
                  let sessions = line.split(separator: "| sessions ").last.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) else { return false }
            return refused + dropped + sessions == 1000
        }
        let warnings = relay.log.split(separator: "\n").filter { $0.contains(" warning ") }
        #expect(warnings.count <= 3, "\(warnings.count) warning lines:\n\(warnings.joined(separator: "\n"))")
        #expect(relay.stop() == 0)
        _ = upstream.stop()
    }
}
