import BatchedUDP
import Foundation
import Glibc
import Testing
import TestSupport

/// Stop requests as supervisors and impatient users send them, to both daemons: SIGTERM and SIGINT at
/// once (a supervisor's stop and a Ctrl-C), and one signal twice in a row. Every stop request stops
/// reading; the daemon exits 0 with its final totals, within seconds, never waiting for SIGKILL.
@Suite struct StopTests {
    struct Signals: CustomTestStringConvertible, Sendable {
        let first: Int32, second: Int32
        var testDescription: String { "\(Signals.name(first)) then \(Signals.name(second))" }
        static func name(_ signal: Int32) -> String { signal == SIGTERM ? "SIGTERM" : "SIGINT" }
    }

    static let modes = ["echo", "relay"]
    static let pairs = [Signals(first: SIGTERM, second: SIGINT), Signals(first: SIGINT, second: SIGTERM),
                        Signals(first: SIGTERM, second: SIGTERM)]

    /// While a client keeps sending (so the readers are busy and the relay has a session), two signals
    /// back to back: the daemon must stop reading and exit 0.
    @Test(arguments: modes, pairs)
    func twoStopRequestsAtOnceEndTheProcess(mode: String, signals: Signals) throws {
        let upstream = try RunningRelay(["echo", "--listen", "127.0.0.1:0"])
        defer { _ = upstream.stop() }
        let arguments = mode == "echo"
            ? ["echo", "--listen", "127.0.0.1:0"]
            : ["relay", "--listen", "127.0.0.1:0", "--upstream", upstream.addresses[0].description]
        let daemon = try RunningRelay(arguments + ["--drain-timeout", "30"])
        let client = try Receiver()
        try client.socket.connect(to: daemon.addresses[0])
        for i in 0..<200 {
            let bytes = sequencePayload(i, size: 64)
            _ = bytes.withUnsafeBytes { send(client.socket.fileDescriptor, $0.baseAddress, $0.count, 0) }
        }
        #expect(client.receive(200, timeout: 2).count > 0, "the daemon answers before it is stopped")
        let status = daemon.stop([signals.first, signals.second], within: 10)
        #expect(status == 0, "exit status \(status.map(String.init) ?? "none: still running after 10 s, killed"); log:\n\(daemon.log.suffix(800))")
        #expect(daemon.log.contains("final totals:"))
    }

    /// A stop request sent before the daemon has set up its signal handling (here: while the parent has
    /// SIGTERM blocked, so it is pending from the first instruction) is honoured: a clean exit 0, not
    /// death by the default action (status 143) or a daemon that keeps running.
    @Test(arguments: modes)
    func aStopRequestDuringStartUpIsHonoured(mode: String) throws {
        let arguments = mode == "echo" ? ["echo", "--listen", "127.0.0.1:0"] : ["relay", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"]
        let (status, log) = try RunningRelay.runWithSignalPending(SIGTERM, arguments)
        #expect(status == 0, "exit status \(status.map(String.init) ?? "none: still running after 10 s, killed"); log:\n\(log.suffix(800))")
        #expect(log.contains("final totals:"), "\(log.suffix(800))")
    }
}
