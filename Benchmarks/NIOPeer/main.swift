// The SwiftNIO peer that Scripts/bench.sh measures beside udp-blast, echo-relay and the C references,
// written as a SwiftNIO user would write it.
//
//   nio-peer send HOST PORT COUNT SIZE [gso]
//       COUNT datagrams of SIZE bytes (first 8: the sequence number) from a connected DatagramChannel, a
//       flush every 1,024 datagrams, pausing while the channel is not writable. With `gso`, the channel's
//       datagramSegmentSize is SIZE and each write carries up to 64 datagrams (65,507 bytes at most).
//       Prints: "nio COUNT SECONDS PPS", timed from the first write to the completion of the last.
//   nio-peer echo HOST PORT
//       An echo server (vector reads of 64 datagrams, a flush per read burst). Prints "listening on
//       HOST:PORT" on stderr and serves until killed.
//   nio-peer async-echo HOST PORT
//       The same server written with NIOAsyncChannel, as async/await code would: for each inbound
//       envelope, write it back.
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

final class Pump: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = ByteBuffer

    let count: Int
    let size: Int
    let perWrite: Int
    let done: EventLoopPromise<Void>
    private var next = 0
    private var unflushed = 0

    init(count: Int, size: Int, perWrite: Int, done: EventLoopPromise<Void>) {
        self.count = count
        self.size = size
        self.perWrite = perWrite
        self.done = done
    }

    func pump(_ context: ChannelHandlerContext) {
        while next < count && context.channel.isWritable {
            let datagrams = min(perWrite, count - next)
            var buffer = context.channel.allocator.buffer(capacity: datagrams * size)
            for i in 0..<datagrams {
                buffer.writeInteger(UInt64(next + i), endianness: .little)
                buffer.writeRepeatingByte(0, count: size - 8)
            }
            next += datagrams
            context.write(wrapOutboundOut(buffer), promise: next == count ? done : nil)
            unflushed += datagrams
            if unflushed >= 1024 {
                context.flush()
                unflushed = 0
            }
        }
        context.flush()
        unflushed = 0
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { pump(context) }
        context.fireChannelWritabilityChanged()
    }
}

final class Echo: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }
}

func printError(_ text: String) {
    let line = text + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

func usage() -> Never {
    printError("usage: nio-peer send HOST PORT COUNT SIZE [gso] | nio-peer echo HOST PORT | nio-peer async-echo HOST PORT")
    exit(64)
}

let arguments = Array(CommandLine.arguments.dropFirst())
guard arguments.count >= 3, let port = Int(arguments[2]) else { usage() }
let host = arguments[1]
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

switch arguments[0] {
case "send":
    guard arguments.count >= 5, let count = Int(arguments[3]), let size = Int(arguments[4]), size >= 8 else { usage() }
    let gso = arguments.count > 5 && arguments[5] == "gso"
    let perWrite = gso ? min(64, 65_507 / size) : 1
    let loop = group.next()
    let done = loop.makePromise(of: Void.self)
    let pump = Pump(count: count, size: size, perWrite: perWrite, done: done)
    var bootstrap = DatagramBootstrap(group: group)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(pump) }
        }
    if gso { bootstrap = bootstrap.channelOption(.datagramSegmentSize, value: CInt(size)) }
    let channel = try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
    try await channel.connect(to: SocketAddress(ipAddress: host, port: port)).get()
    let start = NIODeadline.now()
    loop.execute { pump.pump(try! channel.pipeline.syncOperations.context(handler: pump)) }
    try await done.futureResult.get()
    let seconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
    print("nio \(count) \(seconds) \(Int(Double(count) / seconds))")
    try await channel.close().get()
case "echo":
    let channel = try await DatagramBootstrap(group: group)
        .channelOption(.datagramVectorReadMessageCount, value: 64)
        .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 64 * 2048))
        .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Echo()) }
        }
        .bind(host: host, port: port).get()
    printError("listening on \(host):\(channel.localAddress?.port ?? 0)")
    try await channel.closeFuture.get()
case "async-echo":
    let channel = try await DatagramBootstrap(group: group)
        .channelOption(.datagramVectorReadMessageCount, value: 64)
        .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 64 * 2048))
        .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
        .bind(host: host, port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
            }
        }
    printError("listening on \(host):\(channel.channel.localAddress?.port ?? 0)")
    try await channel.executeThenClose { inbound, outbound in
        for try await envelope in inbound {
            try await outbound.write(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: envelope.data))
        }
    }
default:
    usage()
}
