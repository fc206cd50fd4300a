@testable import BatchedUDP
import CTestSupport
import Foundation
import Glibc
import Libev
import Testing

/// A bound receiving socket read synchronously by the test (nonblocking, with a deadline).
final class Receiver {
    let socket: UDPSocket
    let address: SocketAddress

    init(_ bind: SocketAddress = .loopbackIPv4(port: 0), receiveBuffer: Int = 32 << 20) throws {
        socket = try UDPSocket(bindingTo: bind)
        try socket.setReceiveBufferSize(receiveBuffer, force: true)
        address = try socket.localAddress
    }

    /// Reads datagrams until `count` arrived or `timeout` seconds passed with nothing new.
    func receive(_ count: Int, timeout: Double = 2) -> [[UInt8]] {
        var datagrams: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var idleSince = Date()
        while datagrams.count < count {
            let n = recv(socket.fileDescriptor, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if n >= 0 {
                datagrams.append(Array(buffer[0..<n]))
                idleSince = Date()
            } else if Date().timeIntervalSince(idleSince) > timeout {
                break
            } else {
                usleep(200)
            }
        }
        return datagrams
    }

    /// Whatever is waiting now, without blocking.
    func pending() -> [[UInt8]] { receive(Int.max, timeout: 0.05) }
}

/// Little-endian sequence number in the first 8 bytes, as udp-blast writes it.
func sequencePayload(_ sequence: Int, size: Int = 16) -> [UInt8] {
    var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: sequence), count: max(size, 8))
    withUnsafeBytes(of: UInt64(sequence).littleEndian) { for i in 0..<8 { bytes[i] = $0[i] } }
    return Array(bytes.prefix(size))
}

func sequence(of datagram: [UInt8]) -> Int {
    var value: UInt64 = 0
    for i in (0..<8).reversed() { value = value << 8 | UInt64(datagram[i]) }
    return Int(value)
}

/// A connected sender socket and its watcher, plus a receiver, on loopback.
func connectedPair(_ configuration: BatchedUDPWatcher.Configuration = .init(), loop: EventLoop) throws -> (BatchedUDPWatcher, Receiver) {
    let receiver = try Receiver()
    let socket = try UDPSocket(family: .ipv4)
    try socket.connect(to: receiver.address)
    return (try BatchedUDPWatcher(loop: loop, socket: socket, configuration: configuration), receiver)
}

/// Runs the loop until the watcher's ring is empty (or `seconds` pass, which records a failure).
func runUntilDrained(_ watcher: BatchedUDPWatcher, seconds: Double = 10, sourceLocation: SourceLocation = #_sourceLocation) {
    let loop = watcher.loop
    let guardTimer = TimerWatcher(loop: loop, after: seconds) { timer in
        Issue.record("still \(watcher.counters.queued) queued after \(seconds) s", sourceLocation: sourceLocation)
        timer.loop.breakLoop()
    }
    guardTimer.keepsLoopAlive = false
    guardTimer.start()
    while watcher.counters.queued > 0 && guardTimer.isActive { loop.run(.once) }
    guardTimer.stop()
}

/// The package's promise, checked after every step: every datagram is sent, failed or still queued.
func expectAccounted(_ watcher: BatchedUDPWatcher, sourceLocation: SourceLocation = #_sourceLocation) {
    let c = watcher.counters
    #expect(c.enqueued == c.sent + c.failed + c.queued, "\(c)", sourceLocation: sourceLocation)
    #expect(c.failed == c.failedByErrno.values.reduce(0, +), sourceLocation: sourceLocation)
    #expect(watcher.isWaitingForWritable == false || c.queued > 0, "EV_WRITE armed with nothing queued", sourceLocation: sourceLocation)
}

/// A private network namespace whose `lo` the test may shape (MTU, qdisc) without touching the machine's.
///
/// Needs root and iproute2, as CI has (`make test` installs iproute2). Without them, the test fails with
/// the reason: a skipped backpressure test would hide exactly what it exists to show.
final class NetworkNamespace {
    let name: String

    init(mtu: Int? = nil, rate: String? = nil) throws {
        name = "budp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try NetworkNamespace.ip(["netns", "add", name])
        do {
            try NetworkNamespace.ip(["-n", name, "link", "set", "lo", "up"])
            if let mtu { try NetworkNamespace.ip(["-n", name, "link", "set", "lo", "mtu", "\(mtu)"]) }
            if let rate {
                try NetworkNamespace.run("/usr/sbin/tc", ["-n", name, "qdisc", "add", "dev", "lo", "root", "tbf",
                                                          "rate", rate, "burst", "10kb", "latency", "50ms"])
            }
        } catch {
            try? NetworkNamespace.ip(["netns", "del", name])
            throw error
        }
    }

    deinit { try? NetworkNamespace.ip(["netns", "del", name]) }

    /// Runs `body` on this thread inside the namespace; sockets made there stay in it afterwards.
    func inside<R>(_ body: () throws -> R) throws -> R {
        let home = open("/proc/thread-self/ns/net", O_RDONLY)
        let target = open("/run/netns/\(name)", O_RDONLY)
        defer { close(home); close(target) }
        guard home >= 0, target >= 0, ctest_setns_net(target) == 0 else {
            throw NamespaceError("setns into \(name) failed: \(Errno(rawValue: errno))")
        }
        defer { precondition(ctest_setns_net(home) == 0, "could not return to the original network namespace") }
        return try body()
    }

    private static func ip(_ arguments: [String]) throws { try run("/usr/sbin/ip", arguments) }

    private static func run(_ tool: String, _ arguments: [String]) throws {
        guard FileManager.default.isExecutableFile(atPath: tool) else {
            throw NamespaceError("\(tool) is missing: install iproute2 (make test does)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw NamespaceError("\(tool) \(arguments.joined(separator: " ")) failed (needs root): \(text)")
        }
    }
}

struct NamespaceError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
