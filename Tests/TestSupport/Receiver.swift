public import BatchedUDP
import CTestSupport
import Foundation
import Glibc

/// A bound receiving socket read synchronously by the test (nonblocking, with a deadline).
public final class Receiver {
    public let socket: UDPSocket
    public let address: SocketAddress

    public init(_ bind: SocketAddress = .loopbackIPv4(port: 0), receiveBuffer: Int = 32 << 20) throws {
        socket = try UDPSocket(bindingTo: bind)
        try socket.setTestReceiveBuffer(receiveBuffer)
        address = try socket.localAddress
    }

    /// Reads datagrams until `count` arrived or `timeout` seconds passed with nothing new.
    public func receive(_ count: Int, timeout: Double = 2) -> [[UInt8]] {
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

    /// Like `receive`, with each datagram's sender.
    public func receiveWithSenders(_ count: Int, timeout: Double = 2) -> [(bytes: [UInt8], sender: SocketAddress)] {
        var datagrams: [(bytes: [UInt8], sender: SocketAddress)] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var idleSince = Date()
        while datagrams.count < count {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(socket.fileDescriptor, &buffer, buffer.count, Int32(MSG_DONTWAIT), $0, &length)
                }
            }
            if n >= 0, let sender = withUnsafeBytes(of: &storage, { SocketAddress($0.baseAddress!, length: length) }) {
                datagrams.append((Array(buffer[0..<n]), sender))
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
    public func pending() -> [[UInt8]] { receive(Int.max, timeout: 0.05) }
}

/// Little-endian sequence number in the first 8 bytes, as udp-blast writes it.
public func sequencePayload(_ sequence: Int, size: Int = 16) -> [UInt8] {
    var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: sequence), count: max(size, 8))
    withUnsafeBytes(of: UInt64(sequence).littleEndian) { for i in 0..<8 { bytes[i] = $0[i] } }
    return Array(bytes.prefix(size))
}

public func sequence(of datagram: [UInt8]) -> Int {
    var value: UInt64 = 0
    for i in (0..<8).reversed() { value = value << 8 | UInt64(datagram[i]) }
    return Int(value)
}
