// The workloads Scripts/instructions.sh counts user-space instructions of (valgrind's callgrind), next to
// the C references in CReferences/. Each runs one phase, a function of its own that callgrind is told to
// count (`--toggle-collect`), so start-up and allocation stay out; the script takes the slope between two
// counts so what is left of fixed costs cancels.
//
//   instruction-counts send COUNT single|copy|batch|batch-copy|single-source|wildcard|wildcard-source gso|no-gso [SIZE]
//     COUNT datagrams of SIZE bytes (default 64), each carrying its 8-byte sequence number, through a
//     BatchedUDPWatcher on a socket connected to a loopback receiver that never reads (loopback drops what
//     does not fit, the sender never waits). single: enqueue(writingWith:) per datagram; copy:
//     enqueue(_:) of a buffer per datagram; batch: enqueue(count:writingWith:), as many as fit per call;
//     batch-copy: enqueue(contentsOf:) of 64 buffers at a time; single-source: enqueue(metadata:writingWith:)
//     with a source address per datagram; wildcard: enqueue(to:writingWith:) from a socket bound to 0.0.0.0;
//     wildcard-source: the same with a source address per datagram. Each fills the ring, then lets the loop
//     drain it.
//   instruction-counts echo COUNT explicit|wildcard
//     COUNT 64-byte datagrams queued on an echo server's socket first, then read by a BatchedUDPReader
//     whose callback answers each through a BatchedUDPWatcher: explicit, a socket bound to 127.0.0.1
//     answering with enqueue(_:to: sender); wildcard, one bound to 0.0.0.0 whose reader reports each
//     datagram's destination, answering with enqueue(_:replyingTo:) (the reply's source per datagram).
//   instruction-counts receive COUNT gro|no-gro
//     COUNT 64-byte datagrams (sent with GSO for gro) queued on a socket first, then read by a
//     BatchedUDPReader of 64 slots.
//
// Prints: the mode, then what was sent or received, so the script can check nothing was lost.
import BatchedUDP
import Glibc
import Libev

@main
struct InstructionCounts {
    static func main() throws {
        let arguments = CommandLine.arguments
        guard arguments.count >= 4, let count = Int(arguments[2]), count > 0 else { usage() }
        switch arguments[1] {
        case "send":
            guard arguments.count >= 5, let api = SendAPI(rawValue: arguments[3]), ["gso", "no-gso"].contains(arguments[4]) else { usage() }
            let size = arguments.count > 5 ? Int(arguments[5]) ?? 0 : 64
            guard (8...1472).contains(size) else { usage() }
            try send(count: count, api: api, gso: arguments[4] == "gso", size: size)
        case "receive":
            guard ["gro", "no-gro"].contains(arguments[3]) else { usage() }
            try receive(count: count, gro: arguments[3] == "gro")
        case "echo":
            guard ["explicit", "wildcard"].contains(arguments[3]) else { usage() }
            try echo(count: count, wildcard: arguments[3] == "wildcard")
        default:
            usage()
        }
    }

    static func usage() -> Never {
        let text = "usage: instruction-counts send COUNT single|copy|batch|batch-copy|single-source|wildcard|wildcard-source gso|no-gso [SIZE]\n"
            + "       instruction-counts receive COUNT gro|no-gro\n"
            + "       instruction-counts echo COUNT explicit|wildcard\n"
        _ = text.withCString { write(2, $0, strlen($0)) }
        exit(64)
    }

    enum SendAPI: String {
        case single, copy, batch, batchCopy = "batch-copy", singleSource = "single-source"
        case wildcard, wildcardSource = "wildcard-source"
        /// The wildcard workloads send from a socket bound to 0.0.0.0, naming each datagram's destination.
        var isWildcard: Bool { self == .wildcard || self == .wildcardSource }
    }

    static func send(count: Int, api: SendAPI, gso: Bool, size: Int) throws {
        let loop = try EventLoop()
        let receiver = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        let socket: UDPSocket
        if api.isWildcard {
            socket = try UDPSocket(bindingTo: SocketAddress(ipv4: 0, 0, 0, 0, port: 0))
        } else {
            socket = try UDPSocket(family: .ipv4)
            try socket.connect(to: receiver.localAddress)
        }
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.segmentation = gso ? .automatic : .off
        let watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration)
        var failed = 0
        watcher.onError = { _, _ in failed += 1 }
        let buffers = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * size, alignment: 8)
        defer { buffers.deallocate() }
        buffers.initializeMemory(as: UInt8.self, repeating: 0)
        try sendPhase(loop, watcher, count: count, api: api, size: size, buffers: buffers, destination: try receiver.localAddress)
        let counters = watcher.counters
        print("send \(api.rawValue) \(gso ? "gso" : "no-gso") sent \(counters.sent) failed \(failed) gso \(counters.gsoSends)")
        if counters.sent != count { exit(1) }
    }

    /// What is counted: the enqueues and the drains that send them.
    @inline(never)
    static func sendPhase(_ loop: EventLoop, _ watcher: BatchedUDPWatcher, count: Int, api: SendAPI, size: Int,
                          buffers: UnsafeMutableRawBufferPointer, destination: SocketAddress) throws {
        // The copying batch form's buffers: 64 datagrams side by side in `buffers`.
        let datagrams = UnsafeMutableBufferPointer<UnsafeRawBufferPointer>.allocate(capacity: 64)
        defer { datagrams.deallocate() }
        for i in 0..<64 { datagrams[i] = UnsafeRawBufferPointer(rebasing: buffers[i * size..<(i + 1) * size]) }
        var next = 0
        while next < count {
            switch api {
            case .single:
                while next < count && watcher.isWritable {
                    try watcher.enqueue { slot in
                        slot.storeBytes(of: UInt64(next).littleEndian, as: UInt64.self)
                        return size
                    }
                    next += 1
                }
            case .singleSource:
                // The general form: a source address per datagram (an IP_PKTINFO message in each slot).
                let metadata = SendMetadata(source: .loopbackIPv4(port: 0))
                while next < count && watcher.isWritable {
                    try watcher.enqueue(metadata: metadata) { slot in
                        slot.storeBytes(of: UInt64(next).littleEndian, as: UInt64.self)
                        return size
                    }
                    next += 1
                }
            case .wildcard, .wildcardSource:
                // What a server on a wildcard address sends: a destination per datagram, and with
                // wildcard-source the local address to send from.
                let metadata = api == .wildcardSource ? SendMetadata(source: .loopbackIPv4(port: 0)) : nil
                while next < count && watcher.isWritable {
                    try watcher.enqueue(to: destination, metadata: metadata) { slot in
                        slot.storeBytes(of: UInt64(next).littleEndian, as: UInt64.self)
                        return size
                    }
                    next += 1
                }
            case .copy:
                while next < count && watcher.isWritable {
                    buffers.storeBytes(of: UInt64(next).littleEndian, as: UInt64.self)
                    try watcher.enqueue(datagrams[0])
                    next += 1
                }
            case .batch:
                let first = next
                let queued = try watcher.enqueue(count: count - next, partially: true) { index, slot in
                    slot.storeBytes(of: UInt64(first + index).littleEndian, as: UInt64.self)
                    return size
                }
                next += queued.count
            case .batchCopy:
                // 64 datagrams at a time, as a producer with its own buffers has them, until the ring is full.
                while next < count {
                    let n = min(64, count - next)
                    for i in 0..<n {
                        buffers.storeBytes(of: UInt64(next + i).littleEndian, toByteOffset: i * size, as: UInt64.self)
                    }
                    let queued = try watcher.enqueue(contentsOf: UnsafeBufferPointer(rebasing: datagrams[0..<n]), partially: true)
                    next += queued.count
                    if queued.count < n { break }
                }
            }
            loop.run(.once)
        }
        while watcher.counters.queued > 0 { loop.run(.once) }
    }

    static func receive(count: Int, gro: Bool) throws {
        let loop = try EventLoop()
        let socket = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        // Room for every datagram at once (about 1 KiB of kernel memory each): nothing is dropped.
        try socket.setReceiveBufferSize(min(count * 1_024 + (1 << 20), Int(Int32.max / 2)), force: true)
        var configuration = BatchedUDPReader.Configuration()
        configuration.gro = gro
        var received = 0, bytes = 0
        let reader = try BatchedUDPReader(loop: loop, socket: socket, configuration: configuration) { reader, batch in
            for datagram in batch {
                received += 1
                bytes += datagram.payload.count
            }
            if received >= count { reader.stop() }
        }
        try fill(socket.localAddress, count: count, gso: gro)
        receivePhase(loop, reader)
        print("receive \(gro ? "gro" : "no-gro") received \(received) bytes \(bytes) calls \(reader.counters.recvmmsgCalls)")
        if received != count || bytes != count * 64 { exit(1) }
    }

    /// What is counted: the reads, from the first wakeup until the last datagram.
    @inline(never)
    static func receivePhase(_ loop: EventLoop, _ reader: BatchedUDPReader) {
        reader.start()
        loop.run()
    }

    static func echo(count: Int, wildcard: Bool) throws {
        let loop = try EventLoop()
        let server = try UDPSocket(bindingTo: wildcard ? SocketAddress(ipv4: 0, 0, 0, 0, port: 0) : .loopbackIPv4(port: 0))
        try server.setReceiveBufferSize(min(count * 1_024 + (1 << 20), Int(Int32.max / 2)), force: true)
        var watcherConfiguration = BatchedUDPWatcher.Configuration()
        watcherConfiguration.segmentation = .off
        watcherConfiguration.capacity = 1024
        let replies = try BatchedUDPWatcher(loop: loop, socket: server, configuration: watcherConfiguration)
        var readerConfiguration = BatchedUDPReader.Configuration()
        readerConfiguration.metadata = wildcard ? [.destination] : []
        var answered = 0, failed = 0
        replies.onError = { _, _ in failed += 1 }
        let reader = try BatchedUDPReader(loop: loop, socket: server, configuration: readerConfiguration) { reader, batch in
            for datagram in batch {
                if wildcard {
                    _ = try? replies.enqueue(datagram.payload, replyingTo: datagram)
                } else {
                    _ = try? replies.enqueue(datagram.payload, to: datagram.sender)
                }
            }
            answered += batch.count
            if answered >= count { reader.stop() }
        }
        try fill(.loopbackIPv4(port: server.localAddress.port), count: count, gso: false)
        echoPhase(loop, reader, replies)
        print("echo \(wildcard ? "wildcard" : "explicit") answered \(answered) sent \(replies.counters.sent) failed \(failed)")
        if answered != count || replies.counters.sent != count { exit(1) }
    }

    /// What is counted: the reads and the answers, until the last answer is sent.
    @inline(never)
    static func echoPhase(_ loop: EventLoop, _ reader: BatchedUDPReader, _ replies: BatchedUDPWatcher) {
        reader.start()
        loop.run()
        while replies.counters.queued > 0 { loop.run(.once) }
    }

    /// Queues `count` 64-byte datagrams on the receiving socket (not counted), in super-datagrams of 64
    /// when the reader merges them.
    static func fill(_ address: SocketAddress, count: Int, gso: Bool) throws {
        let loop = try EventLoop()
        let socket = try UDPSocket(family: .ipv4)
        try socket.connect(to: address)
        var configuration = BatchedUDPWatcher.Configuration()
        configuration.segmentation = gso ? .automatic : .off
        let watcher = try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration)
        var next = 0
        while next < count {
            while next < count && watcher.isWritable {
                try watcher.enqueue { slot in
                    slot.storeBytes(of: UInt64(next).littleEndian, as: UInt64.self)
                    return 64
                }
                next += 1
            }
            loop.run(.once)
        }
        while watcher.counters.queued > 0 { loop.run(.once) }
    }
}
