import BatchedUDP
import Foundation
import Glibc
import Libev
import Testing
import TestSupport

/// `echo-relay relay` in front of an `echo-relay echo` upstream, driven by in-process clients.
@Suite struct RelayTests {
    /// A client socket connected to the relay, read synchronously.
    func client(of relay: RunningRelay) throws -> Receiver {
        let client = try Receiver()
        try client.socket.connect(to: relay.addresses[0])
        return client
    }

    func send(_ bytes: [UInt8], from client: Receiver) {
        #expect(bytes.withUnsafeBytes { Glibc.send(client.socket.fileDescriptor, $0.baseAddress, $0.count, 0) } == bytes.count)
    }

    @Test(.needsLargeReceiveBuffers) func repliesReachTheRightClientAmongMany() throws {
        let upstream = try RunningRelay(["echo", "--listen", "127.0.0.1:0"])
        let relay = try RunningRelay(["relay", "--listen", "127.0.0.1:0", "--upstream", upstream.addresses[0].description])
        let clients = try (0..<20).map { _ in try client(of: relay) }
        for round in 0..<50 {
            for (id, client) in clients.enumerated() { send([UInt8(id), UInt8(round), 0xAB], from: client) }
        }
        for (id, client) in clients.enumerated() {
            let replies = client.receive(50, timeout: 3)
            #expect(replies.count == 50, "client \(id) got \(replies.count) replies")
            #expect(replies.allSatisfy { $0.count == 3 && $0[0] == UInt8(id) }, "client \(id) got another client's reply")
            #expect(client.pending().isEmpty)
        }
        #expect(relay.stop() == 0)
        #expect(relay.log.contains("sessions 20"))
    }

    /// An upstream that is down answers with ICMP port unreachable, which leaves a pending error on the
    /// session socket: its reader meets it (receive_errors) or, if a send comes first, its watcher does
    /// (socket_errors) and still sends the datagram. Either way no client datagram is dropped for
    /// another datagram's error.
    @Test func deadUpstreamCostsNoClientDatagram() throws {
        let placeholder = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        let dead = try placeholder.localAddress
        try placeholder.close()
        let relay = try RunningRelay(["relay", "--listen", "127.0.0.1:0", "--upstream", dead.description, "--log-level", "debug"])
        let client = try client(of: relay)
        for i in 0..<4 {
            send([UInt8(i)], from: client)
            usleep(30_000)  // the ICMP error comes back before the next datagram
        }
        #expect(relay.stop() == 0)
        let totals = relay.log.components(separatedBy: "final totals").last ?? ""
        func figure(_ name: String) -> Int? {
            guard let range = totals.range(of: "\(name)=") else { return nil }
            return Int(totals[range.upperBound...].prefix { $0.isNumber })
        }
        #expect(figure("send_failed") == 0, "\(totals)")
        #expect((figure("receive_errors") ?? 0) + (figure("socket_errors") ?? 0) == 4, "one ICMP error per datagram: \(totals)")
    }

    /// Session sockets are connected to the upstream, so a datagram from anyone else is never relayed.
    @Test func strangerAtASessionSocketNeverReachesTheClient() throws {
        let upstream = try RunningRelay(["echo", "--listen", "127.0.0.1:0"])
        let relay = try RunningRelay(["relay", "--listen", "127.0.0.1:0", "--upstream", upstream.addresses[0].description,
                                      "--log-level", "debug"])
        let client = try client(of: relay)
        send([1], from: client)
        #expect(client.receive(1, timeout: 3) == [[1]])
        var sessionAddress: SocketAddress?
        try relay.waitForLog(timeout: 5) { log in
            guard let range = log.range(of: "opened on local ") else { return false }
            let text = log[range.upperBound...].prefix { !$0.isWhitespace }
            sessionAddress = try? SocketAddress(parsing: String(text))
            return sessionAddress != nil
        }
        let stranger = try Receiver()
        try stranger.socket.connect(to: #require(sessionAddress))
        send([66, 66], from: stranger)
        send([2], from: client)
        #expect(client.receive(1, timeout: 3) == [[2]])
        #expect(client.pending().isEmpty, "the stranger's datagram must not be relayed")
        #expect(relay.stop() == 0)
        #expect(relay.log.contains("final totals: received 4 datagrams"), "2 from the client, 2 echoes; the stranger's never read")
    }

    @Test func clientsPastMaxSessionsAreRefused() throws {
        let upstream = try RunningRelay(["echo", "--listen", "127.0.0.1:0"])
        let relay = try RunningRelay(["relay", "--listen", "127.0.0.1:0", "--upstream", upstream.addresses[0].description,
                                      "--max-sessions", "2"])
        let clients = try (0..<3).map { _ in try client(of: relay) }
        for client in clients.prefix(2) {
            // Two exchanges: a client that sends again after an answer is assured, and never evicted.
            for byte: UInt8 in [6, 7] {
                send([byte], from: client)
                #expect(client.receive(1, timeout: 3) == [[byte]])
            }
        }
        for _ in 0..<5 { send([8], from: clients[2]) }
        #expect(clients[2].receive(1, timeout: 0.5).isEmpty)
        send([9], from: clients[0])
        #expect(clients[0].receive(1, timeout: 3) == [[9]], "existing sessions keep working")
        #expect(relay.stop() == 0)
        #expect(relay.log.contains("refused=5"))
        #expect(relay.log.contains("sessions 2"))
    }

    @Test func idleSessionsAreClosed() throws {
        let upstream = try RunningRelay(["echo", "--listen", "127.0.0.1:0"])
        let relay = try RunningRelay(["relay", "--listen", "127.0.0.1:0", "--upstream", upstream.addresses[0].description,
                                      "--session-timeout", "0.2", "--stats-interval", "0.1"])
        let client = try client(of: relay)
        send([1], from: client)
        #expect(client.receive(1, timeout: 3) == [[1]])
        try relay.waitForLog(timeout: 5) { $0.contains("sessions 1") }
        try relay.waitForLog(timeout: 5) { log in log.split(separator: "\n").last { $0.contains("stats:") }?.hasSuffix("sessions 0") == true }
        send([2], from: client)
        #expect(client.receive(1, timeout: 3) == [[2]], "a new session serves the client again")
        #expect(relay.stop() == 0)
    }

    @Test(arguments: [
        (["relay", "--listen", "127.0.0.1:0"], "--upstream"),
        (["relay", "--listen", "127.0.0.1:0", "--upstream", "nonsense"], "--upstream: invalid address 'nonsense'"),
        (["echo", "--listen", "127.0.0.1:99999"], "--listen: invalid address '127.0.0.1:99999'"),
        (["echo", "--listen", "127.0.0.1:0", "--max-datagram", "0"], "--max-datagram must be 1...65527"),
        (["echo"], "give at least one --listen"),
        (["relay", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:53", "--max-sessions", "0"], "--max-sessions must be at least 1"),
        (["echo", "--listen", "127.0.0.1:0", "--threads", "0"], "--threads must be 1...64, got 0"),
        (["relay", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:53", "--allow", "nonsense"], "--allow: 'nonsense'"),
        (["relay", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:53", "--allow", "10.0.0.0/33"], "the prefix length must be 0...32"),
    ])
    func badOptionsExit64NamingThem(arguments: [String], message: String) throws {
        let (status, output) = try RunningRelay.runToExit(arguments)
        #expect(status == 64)
        #expect(output.contains(message), "\(output)")
    }

    @Test(arguments: [
        (["--to", "nowhere"], "invalid address 'nowhere'"),
        (["--to", "127.0.0.1:9", "--size", "70000"], "--size must be 8...65507 bytes, got 70000"),
        (["--to", "127.0.0.1:9", "--size", "8", "--expect-replies"], "--size must be 16...65507 bytes, got 8"),
        (["--to", "127.0.0.1:9", "--batch", "2000"], "--batch must be 1...1024, got 2000"),
        (["--to", "127.0.0.1:9", "--rate", "0"], "--rate must be a positive number"),
        (["--to", "127.0.0.1:9", "--count", "0"], "--count must be at least 1, got 0"),
        (["sink", "--listen", "localhost"], "invalid address 'localhost'"),
        (["--to", "127.0.0.1:9", "--window", "10"], "--window needs --expect-replies"),
        (["--to", "127.0.0.1:9", "--segmentation", "sometimes"], "--segmentation"),
        (["--to", "127.0.0.1:9", "--ecn", "maybe"], "--ecn"),
        (["--to", "127.0.0.1:9", "--max-loss", "0.1"], "--max-loss needs --expect-replies"),
        (["--to", "127.0.0.1:9", "--expect-replies", "--max-loss", "1.5"], "--max-loss must be a fraction 0...1, got 1.5"),
    ])
    func udpBlastBadOptionsExit64NamingThem(arguments: [String], message: String) throws {
        let (status, output) = try RunningRelay.runToExit(arguments, executable: "udp-blast")
        #expect(status == 64)
        #expect(output.contains(message), "\(output)")
    }

    @Test func portInUseExits1NamingTheAddress() throws {
        let taken = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        let address = try taken.localAddress
        let (status, output) = try RunningRelay.runToExit(["echo", "--listen", address.description])
        #expect(status == 1)
        #expect(output.contains("cannot listen on \(address)"))
        #expect(output.contains("EADDRINUSE"))
    }
}
