public import BatchedUDP
import Foundation
import Glibc
public import Testing

/// What the test process may do, and what `make test` requires of it.
///
/// Tests that build network namespaces (`ip netns`, `tc`) need root. They live in suites whose names end
/// in `RootTests` and carry ``Testing/Trait/needsRoot``: without root they are skipped with a printed
/// reason, so a contributor gets a green `swift test`; with `CI=true` in the environment they always run,
/// so CI cannot pass by skipping them.
public enum Privileges {
    /// Whether the process runs as root (effective uid 0).
    public static let isRoot = geteuid() == 0
    /// Whether the environment demands every test run (`CI=true`, as `.ci/run` sets it).
    public static let everythingMustRun = ProcessInfo.processInfo.environment["CI"] == "true"
    /// `net.core.rmem_max`: the largest receive buffer an ordinary process may ask for (SO_RCVBUF).
    public static let receiveBufferLimit: Int = {
        guard let text = try? String(contentsOfFile: "/proc/sys/net/core/rmem_max", encoding: .utf8) else { return 0 }
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }()
    /// What the burst tests need without root: their receivers hold thousands of datagrams before they read.
    public static let largeReceiveBuffer = 4 << 20
}

extension Trait where Self == ConditionTrait {
    /// Runs the test or suite only as root, or when `CI=true` demands it (then it fails without root, saying why).
    public static var needsRoot: Self {
        .enabled(if: Privileges.isRoot || Privileges.everythingMustRun,
                 "needs root (private network namespaces, tc); runs as root or with CI=true, as `make test` in CI does")
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs the test only where its receivers can get a buffer of several MiB: as root (SO_RCVBUFFORCE),
    /// with `net.core.rmem_max` of 4 MiB or more, or when `CI=true` demands it. These tests send bursts of
    /// thousands of datagrams that the receivers read afterwards; with Debian's default `rmem_max` (208 KiB)
    /// the kernel would drop some, and the test would report loss that is not the code's.
    public static var needsLargeReceiveBuffers: Self {
        .enabled(if: Privileges.isRoot || Privileges.everythingMustRun || Privileges.receiveBufferLimit >= Privileges.largeReceiveBuffer,
                 "needs receive buffers of 4 MiB: net.core.rmem_max is \(Privileges.receiveBufferLimit); run as root, or `sysctl -w net.core.rmem_max=4194304`")
    }
}

extension UDPSocket {
    /// Sets a large receive buffer for a test's receiving socket: past `net.core.rmem_max` as root
    /// (SO_RCVBUFFORCE), up to it otherwise (SO_RCVBUF; the kernel caps it there).
    public func setTestReceiveBuffer(_ bytes: Int) throws {
        do {
            try setReceiveBufferSize(bytes, force: true)
        } catch where error.errno == .EPERM {
            try setReceiveBufferSize(bytes)
        }
    }
}
