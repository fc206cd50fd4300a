import BatchedUDP
import CTestSupport
import Foundation
import Glibc

/// A private network namespace whose `lo` the test may shape (MTU, qdisc) without touching the machine's.
///
/// Needs root and iproute2, as CI has (`make test` installs iproute2). Tests that use it live in
/// `…RootTests` suites marked `.needsRoot`: skipped with a printed reason without root, run (and failing
/// with the reason) when `CI=true`, so a skipped backpressure test can never pass CI.
public final class NetworkNamespace {
    public let name: String

    public init(mtu: Int? = nil, rate: String? = nil, queueLatency: String = "50ms") throws {
        name = "budp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try NetworkNamespace.ip(["netns", "add", name])
        do {
            try NetworkNamespace.ip(["-n", name, "link", "set", "lo", "up"])
            if let mtu { try NetworkNamespace.ip(["-n", name, "link", "set", "lo", "mtu", "\(mtu)"]) }
            if let rate {
                try NetworkNamespace.run("/usr/sbin/tc", ["-n", name, "qdisc", "add", "dev", "lo", "root", "tbf",
                                                          "rate", rate, "burst", "10kb", "latency", queueLatency])
            }
        } catch {
            try? NetworkNamespace.ip(["netns", "del", name])
            throw error
        }
    }

    deinit { try? NetworkNamespace.ip(["netns", "del", name]) }

    /// Adds an address (`fd00::2/128`, `10.0.0.2/32`) to a device of the namespace, `lo` by default.
    public func addAddress(_ cidr: String, device: String = "lo") throws {
        try NetworkNamespace.ip(["-n", name, "addr", "add", cidr, "dev", device] + (cidr.contains(":") ? ["nodad"] : []))
    }

    /// Runs `body` on this thread inside the namespace; sockets made there stay in it afterwards.
    public func inside<R>(_ body: () throws -> R) throws -> R {
        let home = open("/proc/thread-self/ns/net", O_RDONLY)
        let target = open("/run/netns/\(name)", O_RDONLY)
        defer { close(home); close(target) }
        guard home >= 0, target >= 0, ctest_setns_net(target) == 0 else {
            throw NamespaceError("setns into \(name) failed: \(Errno(rawValue: errno))")
        }
        defer { precondition(ctest_setns_net(home) == 0, "could not return to the original network namespace") }
        return try body()
    }

    /// Two namespaces joined by a veth pair: `sender` has 10.99.0.1/24 on its end, with a `tbf` qdisc
    /// (`rate`, 10 kB burst, a queue of `limit` bytes) when `rate` is given; `receiver` has 10.99.0.2/24.
    /// Both ends get `mtu` if given.
    /// Deleting the namespaces (deinit, also when a test fails) deletes the veth pair with them.
    public static func linkedPair(rate: String?, limit: String = "64kb", mtu: Int? = nil) throws -> (sender: NetworkNamespace, receiver: NetworkNamespace) {
        let sender = try NetworkNamespace(), receiver = try NetworkNamespace()
        try ip(["-n", sender.name, "link", "add", "veth-s", "type", "veth", "peer", "name", "veth-r", "netns", receiver.name])
        try ip(["-n", sender.name, "addr", "add", "10.99.0.1/24", "dev", "veth-s"])
        try ip(["-n", receiver.name, "addr", "add", "10.99.0.2/24", "dev", "veth-r"])
        try ip(["-n", sender.name, "link", "set", "veth-s", "up"] + (mtu.map { ["mtu", "\($0)"] } ?? []))
        try ip(["-n", receiver.name, "link", "set", "veth-r", "up"] + (mtu.map { ["mtu", "\($0)"] } ?? []))
        if let rate {
            try run("/usr/sbin/tc", ["-n", sender.name, "qdisc", "add", "dev", "veth-s", "root", "tbf",
                                     "rate", rate, "burst", "10kb", "limit", limit])
        }
        return (sender, receiver)
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

public struct NamespaceError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
