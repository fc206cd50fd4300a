import BatchedUDP
import Foundation
import Glibc
import Libev
import Testing
import TestSupport

/// udp-blast as a measuring client facing a lossy path.
@Suite struct UDPBlastTests {
    /// An echo server on its own thread that drops every `dropEvery`-th datagram, until `stop()`.
    final class LossyEcho {
        let socket: UDPSocket
        let address: SocketAddress
        private let running = Locked(true)
        private let done = DispatchSemaphore(value: 0)

        init(dropEvery: Int) throws {
            let socket = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
            try socket.setTestReceiveBuffer(4 << 20)
            self.socket = socket
            address = try socket.localAddress
            let fd = socket.fileDescriptor
            Thread.detachNewThread { [running, done] in
                var buffer = [UInt8](repeating: 0, count: 65_536)
                var peer = sockaddr_storage(), length = socklen_t(0), seen = 0
                var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                while running.withLock({ $0 }) {
                    guard poll(&pollfd, 1, 20) > 0 else { continue }
                    length = socklen_t(MemoryLayout<sockaddr_storage>.size)
                    let n = withUnsafeMutablePointer(to: &peer) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT), $0, &length) }
                    }
                    guard n >= 0 else { continue }
                    seen += 1
                    if seen % dropEvery == 0 { continue }
                    _ = withUnsafePointer(to: &peer) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, buffer, n, 0, $0, length) }
                    }
                }
                done.signal()
            }
        }

        func stop() {
            running.withLock { $0 = false }
            done.wait()
        }
    }

    /// Runs udp-blast with `arguments`, sending SIGINT after `interruptAfter` seconds if given; kills it
    /// if it is still running after `deadline` seconds (`hung`). Returns its status and output.
    static func blast(_ arguments: [String], interruptAfter: Double? = nil, deadline: Double = 20,
                      meanwhile: ((pid_t) -> Void)? = nil) throws
        -> (status: Int32, hung: Bool, stdout: String, stderr: String) {
        let blast = Process()
        blast.executableURL = RunningRelay.productsDirectory.appendingPathComponent("udp-blast")
        blast.arguments = arguments
        let output = Pipe(), errors = Pipe()
        blast.standardOutput = output
        blast.standardError = errors
        try blast.run()
        meanwhile?(blast.processIdentifier)
        if let interruptAfter {
            usleep(UInt32(interruptAfter * 1e6))
            kill(blast.processIdentifier, SIGINT)
        }
        let end = Date().addingTimeInterval(deadline)
        while blast.isRunning && Date() < end { usleep(20_000) }
        let hung = blast.isRunning
        if hung { kill(blast.processIdentifier, SIGKILL) }
        blast.waitUntilExit()
        return (blast.terminationStatus, hung,
                String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self),
                String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    /// SIGINT in the middle of a paced run: the report so far (valid JSON whose totals add up), then
    /// status 130, as a shell reports an interrupted command.
    @Test func interruptPrintsTheReportSoFarAndExits130() throws {
        let echo = try RunningRelay(["echo", "--listen", "127.0.0.1:0"])
        defer { _ = echo.stop() }
        let run = try UDPBlastTests.blast(["--to", echo.addresses[0].description, "--expect-replies", "--rate", "2000",
                                           "--duration", "30", "--json"], interruptAfter: 0.5)
        #expect(!run.hung && run.status == 130, "status \(run.status); \(run.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(run.stdout)")
        let sent = report["sent"] as? Int ?? 0, failed = report["failed"] as? Int ?? 0, count = report["count"] as? Int ?? -1
        #expect(sent > 0 && sent + failed == count, "\(report)")
        #expect((report["received"] as? Int ?? 0) > 0, "\(report)")
    }

    /// A paced run spreads its datagrams and never makes up for a stall with a burst: stopped (SIGSTOP) for
    /// 300 ms in a 2 s run at 2,000/s, it catches up at most 2 ms of the schedule (4 datagrams) in
    /// one tick and counts the rest of the missed schedule as skipped.
    @Test func aPacedRunCatchesUpAStallWithoutABurst() throws {
        let sink = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        defer { _ = try? sink.close() }
        let run = try UDPBlastTests.blast(["--to", try sink.localAddress.description, "--rate", "2000", "--duration", "2",
                                           "--json"]) { pid in
            usleep(300_000)
            kill(pid, SIGSTOP)
            usleep(300_000)
            kill(pid, SIGCONT)
        }
        #expect(!run.hung && run.status == 0, "status \(run.status); \(run.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(run.stdout)")
        let burst = report["largest_burst"] as? Int ?? -1, skipped = report["pace_skipped"] as? Int ?? -1
        #expect((1...4).contains(burst), "one pacer tick sent \(burst) datagrams: \(report)")
        #expect(skipped >= 400, "a 300 ms stall at 2,000/s skips about 600 datagrams, not \(skipped): \(report)")
        let sent = report["sent"] as? Int ?? 0
        #expect(sent + skipped == 4000, "2,000/s for 2 s schedules 4,000 datagrams, each sent or skipped: \(report)")
    }

    /// A paced run sends its whole schedule, rate × duration: the last datagrams fall due just before
    /// the end and went unsent before (99,998 of 100,000 at 100,000/s for 1 s).
    @Test func aPacedRunSendsItsWholeSchedule() throws {
        let sink = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        defer { _ = try? sink.close() }
        let run = try UDPBlastTests.blast(["--to", try sink.localAddress.description, "--rate", "20000", "--duration", "0.5", "--json"])
        #expect(!run.hung && run.status == 0, "status \(run.status); \(run.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(run.stdout)")
        let sent = report["sent"] as? Int ?? -1, skipped = report["pace_skipped"] as? Int ?? -1
        #expect(sent + skipped == 10_000, "\(report)")
    }

    /// --max-loss decides the exit status: about 10% of replies lost passes --max-loss 0.5 and fails
    /// --max-loss 0.05, naming the loss; without --max-loss, a run where nothing came back exits 1.
    @Test func maxLossDecidesTheExitStatus() throws {
        let echo = try LossyEcho(dropEvery: 10)
        defer { echo.stop() }
        let common = ["--to", echo.address.description, "--expect-replies", "--count", "2000", "--window", "64", "--timeout", "0.2"]
        let lenient = try UDPBlastTests.blast(common + ["--max-loss", "0.5"])
        #expect(!lenient.hung && lenient.status == 0, "\(lenient.stderr)")
        let strict = try UDPBlastTests.blast(common + ["--max-loss", "0.05"])
        #expect(!strict.hung && strict.status == 1 && strict.stderr.contains("more than --max-loss 0.05"), "\(strict.status): \(strict.stderr)")
        let dead = try UDPBlastTests.blast(["--to", "127.0.0.1:9", "--expect-replies", "--count", "100", "--timeout", "0.2"])
        #expect(!dead.hung && dead.status == 1 && dead.stderr.contains("none of 100 datagrams came back"), "\(dead.status): \(dead.stderr)")
    }

    /// The reproduction: `--window 8 --duration 1` against an echo that loses 1 reply in 100.
    /// Without write-offs the window shut after 8 lost replies and the run never ended; now it ends
    /// within a few seconds, counts the lost replies, and kept measuring after them.
    @Test func lostRepliesDoNotStallTheWindow() throws {
        let echo = try LossyEcho(dropEvery: 100)
        defer { echo.stop() }
        let blast = Process()
        blast.executableURL = RunningRelay.productsDirectory.appendingPathComponent("udp-blast")
        blast.arguments = ["--to", echo.address.description, "--expect-replies", "--window", "8", "--duration", "1",
                           "--timeout", "0.2", "--json"]
        let output = Pipe()
        blast.standardOutput = output
        try blast.run()
        let deadline = Date().addingTimeInterval(20)
        while blast.isRunning && Date() < deadline { usleep(20_000) }
        let hung = blast.isRunning
        if hung { kill(blast.processIdentifier, SIGKILL) }
        blast.waitUntilExit()
        #expect(!hung, "udp-blast --window 8 --duration 1 was still running after 20 s")
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let report = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any], "\(String(decoding: data, as: UTF8.self))")
        let sent = report["sent"] as? Int ?? 0, received = report["received"] as? Int ?? 0, lost = report["lost"] as? Int ?? -1
        #expect(blast.terminationStatus == 0)
        #expect(lost > 0 && lost == sent - received, "\(report)")
        #expect(received > 8 * 100, "the window kept moving after replies were lost: \(report)")
    }
}
