@testable import BatchedUDP
import Libev
import Testing
import TestSupport

/// Metadata cases that need more addresses than loopback has: a private network namespace whose `lo`
/// gets two more IPv6 addresses. Root only (see `Privileges`); the helpers are `MetadataTests`'.
@Suite("Needs root: wildcard IPv6 and dual-stack servers in a namespace", .needsRoot)
struct MetadataRootTests {
    /// IPv6 and dual-stack wildcards, in a namespace whose `lo` has two more IPv6 addresses: clients of
    /// every address get their answers; IPv4 clients of a dual-stack socket are reported as IPv4.
    @Test func wildcardIPv6AndDualStackServersAnswerFromTheContactedAddress() throws {
        let namespace = try NetworkNamespace()
        try namespace.addAddress("fd00::2/128")
        try namespace.addAddress("fd00::3/128")
        try namespace.inside {
            let loop = try EventLoop()
            let helpers = MetadataTests()
            let v6only = try MetadataTests.Server(loop: loop, bind: .loopbackIPv6(port: 0).withAnyAddress, ipv6Only: true, metadata: [.destination])
            let v6hosts = ["::1", "fd00::2", "fd00::3"]
            #expect(try helpers.roundTrip(loop, to: v6hosts, port: v6only.port, family: .ipv6).map(\.count) == [1, 1, 1])
            #expect(v6only.received.map { $0.destination?.host } == v6hosts)

            let dual = try MetadataTests.Server(loop: loop, bind: .loopbackIPv6(port: 0).withAnyAddress, ipv6Only: false, metadata: [.destination, .ecn])
            #expect(try helpers.roundTrip(loop, to: ["127.0.0.1", "127.0.0.2"], port: dual.port, family: .ipv4).map(\.count) == [1, 1])
            #expect(try helpers.roundTrip(loop, to: ["fd00::2"], port: dual.port, family: .ipv6).map(\.count) == [1])
            #expect(dual.received.map { $0.destination?.description } == ["127.0.0.1:\(dual.port)", "127.0.0.2:\(dual.port)", "[fd00::2]:\(dual.port)"])
            #expect(dual.received.map { $0.destination?.family } == [.ipv4, .ipv4, .ipv6])
            #expect(dual.received.allSatisfy { $0.ecn == .notECT }, "ECN reported for both families on a dual-stack socket")
        }
    }
}
