@testable import BatchedUDP
import Glibc
import Libev
import Testing

@Suite struct UDPSocketTests {
    @Test func bindConnectAndAddresses() throws {
        let server = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        let address = try server.localAddress
        #expect(address.port != 0)
        let client = try UDPSocket(family: .ipv4)
        #expect(try client.remoteAddress == nil)
        try client.connect(to: address)
        #expect(try client.remoteAddress == address)
        #expect(try client.isNonBlocking)
    }

    @Test func portInUseNamesTheAddress() throws {
        let taken = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        let address = try taken.localAddress
        #expect {
            _ = try UDPSocket(bindingTo: address)
        } throws: { error in
            let error = error as! SocketError
            return error.errno == .EADDRINUSE && error.address == address
                && error.description.contains("bind(\(address)) failed: EADDRINUSE")
        }
    }

    @Test func buffersAndOptions() throws {
        let socket = try UDPSocket(family: .ipv6)
        try socket.setSendBufferSize(4096)
        #expect(try socket.sendBufferSize >= 4096)
        try socket.setIPv6Only(true)
        #expect(try socket.isIPv6Only)
        try socket.setReuseAddress(true)
        try socket.setReusePort(true)
        try socket.setNonBlocking(false)
        #expect(try !socket.isNonBlocking)
        #expect(throws: SocketError.self) { try UDPSocket(family: .ipv4).setIPv6Only(true) }
    }

    @Test func adoptRefusesWhatIsNotAUDPSocket() throws {
        let tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(tcp) }
        #expect { _ = try UDPSocket(adopting: tcp) } throws: { "\($0)".contains("stream (TCP) socket") }

        var fds: [Int32] = [-1, -1]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        #expect { _ = try UDPSocket(adopting: fds[0]) } throws: { ($0 as! SocketError).errno == .ENOTSOCK }

        #expect { _ = try UDPSocket(adopting: 60_000) } throws: { ($0 as! SocketError).errno == .EBADF }
        #expect { _ = try UDPSocket(adopting: -1) } throws: { ($0 as! SocketError).errno == .EBADF }
    }

    @Test func closedSocketSaysSo() throws {
        let socket = try UDPSocket(family: .ipv4)
        try socket.close()
        try socket.close()
        #expect { try socket.bind(to: .loopbackIPv4(port: 0)) } throws: { "\($0)".contains("the socket is closed") }
    }
}
