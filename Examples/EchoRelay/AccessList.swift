import ArgumentParser
import BatchedUDP
import Glibc

/// The client networks the relay serves (`--allow CIDR`, repeatable). By default the networks dnsdist
/// allows: loopback, RFC 1918, 100.64/10, link-local, ::1, fc00::/7 and fe80::/10, so a relay started on
/// a public address is not an open relay by accident; `--allow 0.0.0.0/0 --allow ::/0` opens it on purpose.
/// Checked once per new client (a session's later datagrams were allowed already).
struct AccessList: CustomStringConvertible {
    /// A network: the first `prefix` bits of an address. Addresses are compared as 128-bit values (an
    /// IPv4 address in the low 32 bits, with `isIPv4`), so a check allocates nothing.
    struct Network: CustomStringConvertible {
        let address: UInt128
        let mask: UInt128
        let isIPv4: Bool
        let text: String

        /// Parses `a.b.c.d/n` or `ipv6/n` (a bare address is a single host).
        init(parsing text: String) throws {
            let parts = text.split(separator: "/", omittingEmptySubsequences: false)
            guard (1...2).contains(parts.count), let host = parts.first.map(String.init), !host.isEmpty else {
                throw ValidationError("--allow: '\(text)' is not a network; use a.b.c.d/n or ipv6/n")
            }
            let parsed: SocketAddress
            do {
                parsed = host.contains(":") ? try SocketAddress(ipv6: host, port: 0) : try SocketAddress(ipv4: host, port: 0)
            } catch {
                throw ValidationError("--allow: '\(text)': \(error)")
            }
            let (value, isIPv4) = AccessList.value(of: parsed)
            let bits = isIPv4 ? 32 : 128
            let prefix = parts.count == 2 ? Int(parts[1]) : bits
            guard let prefix, (0...bits).contains(prefix) else {
                throw ValidationError("--allow: '\(text)': the prefix length must be 0...\(bits)")
            }
            let width: UInt128 = isIPv4 ? 0xFFFF_FFFF : ~0
            mask = prefix == 0 ? 0 : (width << UInt128(bits - prefix)) & width
            address = value & mask
            self.isIPv4 = isIPv4
            self.text = text
        }

        func contains(_ value: UInt128, isIPv4: Bool) -> Bool { isIPv4 == self.isIPv4 && value & mask == address }

        var description: String { text }
    }

    /// dnsdist's default ACL.
    static let defaults = ["127.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "192.168.0.0/16",
                           "172.16.0.0/12", "::1/128", "fc00::/7", "fe80::/10"]

    let networks: [Network]

    /// The networks in `texts`, or the defaults when there are none.
    init(_ texts: [String]) throws {
        networks = try (texts.isEmpty ? AccessList.defaults : texts).map(Network.init(parsing:))
    }

    /// Whether `client` is in an allowed network (an IPv4-mapped IPv6 client is checked as IPv4).
    func allows(_ client: SocketAddress) -> Bool {
        let (value, isIPv4) = AccessList.value(of: client)
        return networks.contains { $0.contains(value, isIPv4: isIPv4) }
    }

    var description: String { networks.map(\.text).joined(separator: " ") }

    /// The address as a number, most significant byte first, and whether it is IPv4 (also when
    /// IPv4-mapped in IPv6).
    static func value(of address: SocketAddress) -> (UInt128, isIPv4: Bool) {
        address.withSockAddr { pointer, _ in
            func number(_ bytes: UnsafeRawBufferPointer) -> UInt128 { bytes.reduce(0) { $0 << 8 | UInt128($1) } }
            if address.family == .ipv4 {
                return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { (withUnsafeBytes(of: $0.pointee.sin_addr, number), true) }
            }
            let value = pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { withUnsafeBytes(of: $0.pointee.sin6_addr, number) }
            return value >> 32 == 0xFFFF ? (value & 0xFFFF_FFFF, true) : (value, false)  // ::ffff:a.b.c.d
        }
    }
}
