import BatchedUDP
import Foundation
import Glibc
import Libev
import Testing
import TestSupport

/// The daemons on wildcard addresses, as on a multi-homed host: every client gets its answer from the
/// address it contacted (loopback has all of 127.0.0.0/8, so three "host addresses" need no setup).
@Suite struct WildcardTests {
    /// A client connected to `host:port` (it accepts datagrams from that address only).
    func client(_ host: String, port: UInt16) throws -> Receiver {
        let client = try Receiver()
        try client.socket.connect(to: SocketAddress(ipv4: host, port: port))
        return client
    }

    func send(_ bytes: [UInt8], from client: Receiver) {
        #expect(bytes.withUnsafeBytes { Glibc.send(client.socket.fileDescriptor, $0.baseAddress, $0.count, 0) } == bytes.count)
    }

    /// The reproduction: `echo-relay echo --listen 0.0.0.0:P`, clients connected to 127.0.0.2
    /// and 127.0.0.3. Each gets its echo (before, only a client of 127.0.0.1 did).
    @Test func echoAnswersFromTheContactedAddress() throws {
        let echo = try RunningRelay(["echo", "--listen", "0.0.0.0:0"])
        let port = echo.addresses[0].port
        let clients = try ["127.0.0.1", "127.0.0.2", "127.0.0.3"].map { try client($0, port: port) }
        for (index, client) in clients.enumerated() { send([UInt8(index), 1, 2], from: client) }
        for (index, client) in clients.enumerated() {
            #expect(client.receive(1, timeout: 2) == [[UInt8(index), 1, 2]], "client of 127.0.0.\(index + 1)")
        }
        #expect(echo.stop() == 0)
    }

    /// The README's command: `--listen 0.0.0.0:P --listen [::]:P`, both wildcards on one port. With
    /// Linux's default (net.ipv6.bindv6only = 0) the IPv6 socket would take the port on IPv4 too and
    /// the second bind would fail (it did: EADDRINUSE, exit 1); the IPv6 listener now takes IPv6 only,
    /// and an IPv4 and an IPv6 client each get their answer, from either daemon, whichever is bound
    /// first. `[::]:P` alone still answers both families.
    @Test(arguments: ["echo-relay", "async-echo"])
    func bothWildcardsOnOnePortServeBothFamilies(executable: String) throws {
        let probe = try UDPSocket(bindingTo: SocketAddress(ipv4: 0, 0, 0, 0, port: 0))
        let port = try probe.localAddress.port
        try probe.close()
        // Both orders, and `[::]:P` alone, which stays dual-stack: its IPv4 client is answered too.
        for order in [["0.0.0.0:\(port)", "[::]:\(port)"], ["[::]:\(port)", "0.0.0.0:\(port)"], ["[::]:\(port)"]] {
            let daemon = try RunningRelay((executable == "echo-relay" ? ["echo"] : []) + order.flatMap { ["--listen", $0] },
                                          executable: executable, listeners: order.count)
            let v4 = try client("127.0.0.2", port: port)
            let v6 = try Receiver(SocketAddress(ipv6: "::1", port: 0))
            try v6.socket.connect(to: SocketAddress(ipv6: "::1", port: port))
            send([4], from: v4)
            send([6], from: v6)
            #expect(v4.receive(1, timeout: 3) == [[4]], "\(executable) \(order): IPv4 client")
            #expect(v6.receive(1, timeout: 3) == [[6]], "\(executable) \(order): IPv6 client")
            #expect(daemon.stop() == 0)
        }
    }

    /// `echo-relay relay --listen 0.0.0.0:P` in front of an echo upstream: clients of 127.0.0.2 and
    /// 127.0.0.3 get their answers from the address they contacted, and one client socket contacting two
    /// of the addresses gets two sessions, each answered from its own address.
    @Test func relayAnswersFromTheContactedAddressWithASessionPerPair() throws {
        let upstream = try RunningRelay(["echo", "--listen", "127.0.0.1:0"])
        let relay = try RunningRelay(["relay", "--listen", "0.0.0.0:0", "--upstream", upstream.addresses[0].description, "--log-level", "debug"])
        let port = relay.addresses[0].port
        let clients = try ["127.0.0.2", "127.0.0.3"].map { try client($0, port: port) }
        for round in 0..<5 {
            for (index, client) in clients.enumerated() { send([UInt8(index), UInt8(round)], from: client) }
        }
        for (index, client) in clients.enumerated() {
            #expect(client.receive(5, timeout: 3).map { $0[0] } == Array(repeating: UInt8(index), count: 5), "client of 127.0.0.\(index + 2)")
        }
        // One unconnected socket talking to two of the relay's addresses: two sessions.
        let roaming = try Receiver()
        for host in ["127.0.0.4", "127.0.0.5"] {
            _ = [UInt8](repeating: 9, count: 3).withUnsafeBytes { bytes in
                try! SocketAddress(ipv4: host, port: port).withSockAddr { sendto(roaming.socket.fileDescriptor, bytes.baseAddress, 3, 0, $0, $1) }
            }
        }
        let answers = roaming.receiveWithSenders(2, timeout: 3)
        #expect(Set(answers.map(\.sender.host)) == ["127.0.0.4", "127.0.0.5"], "\(answers.map(\.sender))")
        #expect(relay.stop() == 0)
        #expect(relay.log.contains("sessions 4"), "\(relay.log.suffix(400))")
    }

    /// The relay carries each datagram's ECN codepoint across, both ways: a client marking ECT(0) reaches
    /// the upstream as ECT(0), and the upstream's CE reaches the client as CE.
    @Test func relayCarriesECNBothWays() throws {
        let loop = try EventLoop()
        // The upstream: a reader that records ECN and answers every datagram marked CE.
        let upstreamSocket = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        let upstreamWatcher = try BatchedUDPWatcher(loop: loop, socket: upstreamSocket)
        var upstreamSaw: [ECN?] = []
        var configuration = BatchedUDPReader.Configuration()
        configuration.metadata = [.ecn]
        let upstreamReader = try BatchedUDPReader(loop: loop, socket: upstreamSocket, configuration: configuration) { _, batch in
            for datagram in batch {
                upstreamSaw.append(datagram.ecn)
                _ = try? upstreamWatcher.enqueue(datagram.payload, to: datagram.sender, metadata: SendMetadata(ecn: .ce))
            }
        }
        upstreamReader.start()
        let relay = try RunningRelay(["relay", "--listen", "127.0.0.1:0", "--upstream", upstreamSocket.localAddress.description])
        // The client: a watcher marking ECT(0) and a reader recording what comes back.
        let clientSocket = try UDPSocket(family: .ipv4)
        try clientSocket.connect(to: relay.addresses[0])
        let clientWatcher = try BatchedUDPWatcher(loop: loop, socket: clientSocket)
        var clientSaw: [ECN?] = []
        let clientReader = try BatchedUDPReader(loop: loop, socket: clientSocket, configuration: configuration) { reader, batch in
            for datagram in batch { clientSaw.append(datagram.ecn) }
            if clientSaw.count == 5 { reader.loop.breakLoop() }
        }
        clientReader.start()
        for i in 0..<5 { try clientWatcher.enqueue([UInt8(i)], metadata: SendMetadata(ecn: .ect0)) }
        let guardTimer = TimerWatcher(loop: loop, after: 5) { timer in timer.loop.breakLoop() }
        guardTimer.keepsLoopAlive = false
        guardTimer.start()
        loop.run()
        upstreamReader.stop()
        clientReader.stop()
        #expect(upstreamSaw == Array(repeating: .ect0, count: 5))
        #expect(clientSaw == Array(repeating: .ce, count: 5))
        #expect(relay.stop() == 0)
    }

    /// `udp-blast --ecn` marks what it sends; a sink on a wildcard address reports the codepoints and the
    /// local address the datagrams were sent to; against the echo, the replies' codepoints are reported.
    @Test func udpBlastMarksECNAndTheSinkReportsWhatArrived() throws {
        let sink = Process()
        sink.executableURL = RunningRelay.productsDirectory.appendingPathComponent("udp-blast")
        sink.arguments = ["sink", "--listen", "0.0.0.0:0", "--count", "200", "--json"]
        let output = Pipe()
        sink.standardOutput = output
        sink.standardError = FileHandle.nullDevice
        try sink.run()
        var text = ""
        while !text.contains("\n") {
            let chunk = output.fileHandleForReading.availableData
            guard !chunk.isEmpty else { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        let port = try #require(text.split(separator: ":").last.flatMap { UInt16($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
        let (status, blast) = try RunningRelay.runOutput(["--to", "127.0.0.2:\(port)", "--count", "200", "--ecn", "ect1", "--json"], executable: "udp-blast")
        #expect(status == 0, "\(blast)")
        let report = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        sink.waitUntilExit()
        #expect(sink.terminationStatus == 0, "\(report)")
        #expect(report.contains("\"ecn\": \"ECT(1)=200\""), "\(report)")
        #expect(report.contains("\"destinations\": \"127.0.0.2:\(port)=200\""), "\(report)")

        let echo = try RunningRelay(["echo", "--listen", "127.0.0.1:0"])
        let (echoStatus, replies) = try RunningRelay.runOutput(
            ["--to", echo.addresses[0].description, "--count", "500", "--expect-replies", "--window", "64", "--ecn", "ce", "--json"], executable: "udp-blast")
        #expect(echoStatus == 0, "\(replies)")
        #expect(replies.contains("\"reply_ecn\": \"not-ECT=500\""), "echo-relay echo answers without ECN: \(replies)")
        #expect(replies.contains("\"received\": 500"), "\(replies)")
        #expect(echo.stop() == 0)
    }
}
