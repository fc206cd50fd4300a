@testable import BatchedUDP
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
}
