// Sends 1,000 datagrams through a BatchedUDPWatcher to a BatchedUDPReader on loopback, 100 at a time (so
// default socket buffers hold them), echoes them back from the address they were sent to, and exits 0
// only if every one came back, in order.
import BatchedUDP
import Glibc
import Libev

/// The round trip; true if every datagram came back in order.
func roundTrip() throws -> Bool {
    let count = 1_000, window = 100
    let loop = try EventLoop()

    // The server: a wildcard socket that answers from the address each datagram arrived on.
    let server = try UDPSocket(bindingTo: SocketAddress(parsing: "0.0.0.0:0"))
    let replies = try BatchedUDPWatcher(loop: loop, socket: server)
    var serverConfiguration = BatchedUDPReader.Configuration()
    serverConfiguration.metadata = [.destination]
    let echo = try BatchedUDPReader(loop: loop, socket: server, configuration: serverConfiguration) { _, batch in
        for datagram in batch { _ = try? replies.enqueue(datagram.payload, replyingTo: datagram) }
    }
    echo.start()

    // The client: connected to 127.0.0.1, so it only accepts answers from that address.
    let client = try UDPSocket(family: .ipv4)
    try client.setReceiveBufferSize(1 << 20)
    try client.connect(to: SocketAddress(parsing: "127.0.0.1:\(try server.localAddress.port)"))
    let sender = try BatchedUDPWatcher(loop: loop, socket: client)
    var failures: [SendFailure] = []
    sender.onError = { _, failure in failures.append(failure) }
    replies.onError = { _, failure in failures.append(failure) }

    var received: [Int] = [], queued = 0
    func sendWindow() throws {   // the next `window` sequence numbers, in one call
        let first = queued
        queued += try sender.enqueue(count: min(window, count - queued)) { index, slot in
            slot.storeBytes(of: UInt64(first + index).littleEndian, as: UInt64.self)
            return 64
        }.count
    }
    let reader = try BatchedUDPReader(loop: loop, socket: client) { reader, batch in
        for datagram in batch {
            received.append(Int(datagram.payload.loadUnaligned(as: UInt64.self).littleEndian))
        }
        if received.count == count {
            reader.stop()
            echo.stop()
        } else if received.count == queued {
            do { try sendWindow() } catch { print("consumer: enqueue failed: \(error)") }
        }
    }
    reader.start()
    try sendWindow()
    let deadline = TimerWatcher(loop: loop, after: 10) { timer in timer.loop.breakLoop() }
    deadline.keepsLoopAlive = false
    deadline.start()
    loop.run()

    guard failures.isEmpty, received == Array(0..<count) else {
        print("consumer: FAILED: \(received.count) of \(count) came back; failures: \(failures)")
        return false
    }
    print("consumer: \(count) datagrams sent with \(sender.counters.sendmmsgCalls) sendmmsg call(s), all echoed back in order")
    return true
}

let callbacks = try roundTrip()
let async = try await asyncRoundTrip()
exit(callbacks && async ? 0 : 1)
