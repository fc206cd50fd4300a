import ArgumentParser
import BatchedUDP
import Glibc

/// The client networks the relay serves (`--allow CIDR`, repeatable). By default the networks dnsdist
/// allows: loopback, RFC 1918, 100.64/10, link-local, ::1, fc00::/7 and fe80::/10, so a relay started on
/// a public address is not an open relay by accident; `--allow 0.0.0.0/0 --allow ::/0` opens it on purpose.
/// Checked once per new client (a session's later datagrams were allowed already).
struct AccessList: CustomStringConvertible {
    /// A network: the first `prefix` bits of `address` (4 bytes for IPv4, 16 for IPv6).
    struct Network: CustomStringConvertible {
        let address: [UInt8]
        let prefix: Int
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
            let bytes = AccessList.bytes(of: parsed)
            let bits = bytes.count * 8
            let prefix = parts.count == 2 ? Int(parts[1]) : bits
            guard let prefix, (0...bits).contains(prefix) else {
                throw ValidationError("--allow: '\(text)': the prefix length must be 0...\(bits)")
            }
            self.address = bytes
            self.prefix = prefix
            self.text = text
        }

        func contains(_ bytes: [UInt8]) -> Bool {
            guard bytes.count == address.count else { return false }
            var remaining = prefix
            for (mine, theirs) in zip(address, bytes) where remaining > 0 {
                let mask: UInt8 = remaining >= 8 ? 0xFF : ~(0xFF >> UInt8(remaining))
                if mine & mask != theirs & mask { return false }
                remaining -= 8
            }
            return true
        }

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
        let bytes = AccessList.bytes(of: client)
        return networks.contains { $0.contains(bytes) }
    }

    var description: String { networks.map(\.text).joined(separator: " ") }

    /// The address's bytes: 4 for IPv4 (also when IPv4-mapped in IPv6), 16 for IPv6.
    static func bytes(of address: SocketAddress) -> [UInt8] {
        address.withSockAddr { pointer, _ in
            if address.family == .ipv4 {
                return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { withUnsafeBytes(of: $0.pointee.sin_addr) { Array($0) } }
            }
            let bytes = pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { withUnsafeBytes(of: $0.pointee.sin6_addr) { Array($0) } }
            let mapped = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF
            return mapped ? Array(bytes[12...]) : bytes
        }
    }
}
