@testable import BatchedUDP
import Glibc
import Testing

@Suite struct SocketAddressTests {
    @Test(arguments: [
        ("1.2.3.4:53", "1.2.3.4:53", SocketAddress.Family.ipv4),
        ("[::1]:53", "[::1]:53", .ipv6),
        ("[2001:db8::17]:443", "[2001:db8::17]:443", .ipv6),
        ("localhost:5353", "127.0.0.1:5353", .ipv4),
        ("0.0.0.0:0", "0.0.0.0:0", .ipv4),
    ])
    func parsesAndPrints(input: String, printed: String, family: SocketAddress.Family) throws {
        let address = try SocketAddress(parsing: input)
        #expect(address.description == printed)
        #expect(address.family == family)
        #expect(try SocketAddress(parsing: printed) == address)
    }

    @Test(arguments: [
        ("example.com:53", "is not an IPv4 address"),
        ("1.2.3.4", "expected HOST:PORT"),
        ("1.2.3.4:70000", "not a number in 0...65535"),
        ("1.2.3.4:-1", "not a number"),
        ("::1:53", "needs brackets"),
        ("[::1:53", "closing ']'"),
        ("[::1]53", "expected ':PORT'"),
        ("[1.2.3.4]:53", "is not an IPv6 address"),
        ("256.1.1.1:53", "is not an IPv4 address"),
        (":53", "is not an IPv4 address"),
    ])
    func refusesWithAReason(input: String, reason: String) {
        #expect {
            _ = try SocketAddress(parsing: input)
        } throws: { error in
            let error = error as! AddressError
            return error.input == input && error.description.contains(reason)
        }
    }

    @Test func ipv4MappedKeepsPortAndAddress() throws {
        let mapped = try SocketAddress(parsing: "10.1.2.3:99").ipv4Mapped
        #expect(mapped.description == "[::ffff:10.1.2.3]:99")
    }

    @Test func roundTripsThroughSockaddr() throws {
        for text in ["9.8.7.6:1", "[fe80::1]:2"] {
            let address = try SocketAddress(parsing: text)
            let copy = address.withSockAddr { SocketAddress(UnsafeRawPointer($0), length: $1) }
            #expect(copy == address)
            #expect(copy?.hashValue == address.hashValue)
        }
    }

    /// Found by the fuzzer (Fuzz/Crashes): a sockaddr shorter than its header, or at an odd address, was
    /// read as a whole aligned `sockaddr` (16 bytes) whatever its length.
    @Test func readsOnlyTheBytesItIsGivenAtAnyAlignment() throws {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 16)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: 64)
        buffer.storeBytes(of: UInt8(AF_INET6), toByteOffset: 3, as: UInt8.self)
        #expect(SocketAddress(UnsafeRawPointer(buffer + 3), length: 1) == nil)
        #expect(SocketAddress(UnsafeRawPointer(buffer + 3), length: 0) == nil)
        let address = try SocketAddress(parsing: "[2001:db8::5]:443")
        address.withSockAddr { sockaddr, length in (buffer + 3).copyMemory(from: sockaddr, byteCount: Int(length)) }
        #expect(SocketAddress(UnsafeRawPointer(buffer + 3), length: socklen_t(MemoryLayout<sockaddr_in6>.size)) == address)
        #expect(SocketAddress(UnsafeRawPointer(buffer + 3), length: socklen_t(MemoryLayout<sockaddr_in6>.size - 1)) == nil)
    }

    /// Equality compares the flat sockaddr word by word: it must still mean family, port, address and
    /// (IPv6) scope, whatever C code left in `sin_zero` or the flow label, and hashing must agree.
    @Test func equalityIsFamilyPortAddressAndScope() throws {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = UInt16(53).bigEndian
        sin.sin_addr.s_addr = UInt32(0x0A01_0203).bigEndian
        sin.sin_zero = (1, 2, 3, 4, 5, 6, 7, 8)  // garbage a C caller may leave
        let fromC = try #require(withUnsafeBytes(of: &sin) { SocketAddress($0.baseAddress!, length: socklen_t($0.count)) })
        let parsed = try SocketAddress(parsing: "10.1.2.3:53")
        #expect(fromC == parsed)
        #expect(fromC.hashValue == parsed.hashValue)
        #expect(parsed != (try SocketAddress(parsing: "10.1.2.3:54")))
        #expect(parsed != (try SocketAddress(parsing: "10.1.2.4:53")))
        // An IPv4 address is not the IPv6 address whose flow label has its bits.
        #expect(parsed != parsed.ipv4Mapped)

        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = UInt16(443).bigEndian
        _ = inet_pton(AF_INET6, "fe80::1", &sin6.sin6_addr)
        let plain = try #require(withUnsafeBytes(of: &sin6) { SocketAddress($0.baseAddress!, length: socklen_t($0.count)) })
        sin6.sin6_flowinfo = UInt32(0x12345).bigEndian
        let labelled = try #require(withUnsafeBytes(of: &sin6) { SocketAddress($0.baseAddress!, length: socklen_t($0.count)) })
        #expect(plain == labelled)
        #expect(plain.hashValue == labelled.hashValue)
        sin6.sin6_scope_id = 2
        let scoped = try #require(withUnsafeBytes(of: &sin6) { SocketAddress($0.baseAddress!, length: socklen_t($0.count)) })
        #expect(plain != scoped)
        #expect(plain != (try SocketAddress(parsing: "[fe80::2]:443")))
        #expect(plain == (try SocketAddress(parsing: "[fe80::1]:443")))
        #expect(plain.withPort(1) != plain)
        #expect(plain.withPort(1).withPort(443) == plain)
    }
}
