// The README's async echo server, as written there, and a blocking client: 100 datagrams must come back.
import BatchedUDP
import Glibc
import Libev

actor Echo {
    let executor: LoopExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    var replies: BatchedUDPWatcher!, datagrams: DatagramStream!
    init(executor: LoopExecutor) { self.executor = executor }
    isolated deinit {}                                     // its watcher and stream go on the loop thread

    func serve(_ address: SocketAddress) async throws {   // isolated: runs on the loop thread
        let socket = try UDPSocket(bindingTo: address)
        replies = try BatchedUDPWatcher(loop: executor.loop, socket: socket)
        datagrams = try DatagramStream(loop: executor.loop, socket: socket)
        for await batch in datagrams {                     // owned, Sendable batches; reading pauses when behind
            for datagram in batch { try await replies.send(datagram, to: datagram.sender) }  // waits when full
        }
    }
}

/// Runs the README's server on a loop thread, sends it 100 datagrams and checks that all come back.
func asyncRoundTrip() async throws -> Bool {
    let port = try UDPSocket(bindingTo: .loopbackIPv4(port: 0)).localAddress.port  // a free port, released
    return try await EventLoopThread.run { executor in
        let echo = Echo(executor: executor)
        let server = Task { try await echo.serve(.loopbackIPv4(port: port)) }
        let client = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(client) }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var back = 0
        for attempt in 0..<100 {  // until the server is bound and answers
            SocketAddress.loopbackIPv4(port: port).withSockAddr { address, length in
                var byte = UInt8(attempt)
                _ = sendto(client, &byte, 1, 0, address, length)
            }
            var reply = UInt8(0)
            if recv(client, &reply, 1, 0) == 1 { back += 1 }
            if back == 1 { break }
        }
        for n in 0..<99 {
            SocketAddress.loopbackIPv4(port: port).withSockAddr { address, length in
                var byte = UInt8(n)
                _ = sendto(client, &byte, 1, 0, address, length)
            }
            var reply = UInt8(0)
            if recv(client, &reply, 1, 0) == 1 { back += 1 }
        }
        server.cancel()   // the stream ends, serve returns
        _ = try? await server.value
        print("consumer: async echo answered \(back) of 100")
        return back == 100
    }
}
