import BatchedUDP
import Foundation
import Glibc
import Testing
import TestSupport

/// `async-echo`, the echo server written with the async APIs, as a user runs it.
@Suite struct AsyncEchoTests {
    /// Paced udp-blast traffic comes back complete and in order; SIGTERM then stops it cleanly (exit 0,
    /// final totals that add up). Lossless needs the 4 MiB receive buffers async-echo and udp-blast ask
    /// for: with an ordinary user's default (net.core.rmem_max 208 KiB) a sanitizer-slowed server
    /// overflowed its buffer (kernel_drops 242 of 19,767 in a TSan pass).
    @Test(.needsLargeReceiveBuffers) func servesAPacedBlastLosslesslyAndStopsOnSIGTERM() throws {
        let echo = try RunningRelay(["--listen", "127.0.0.1:0"], executable: "async-echo")
        let run = try UDPBlastTests.blast(["--to", echo.addresses[0].description, "--expect-replies", "--rate", "20000",
                                           "--duration", "1", "--json"])
        #expect(!run.hung && run.status == 0, "\(run.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(run.stdout)")
        let sent = report["sent"] as? Int ?? 0
        #expect(sent > 10_000 && report["lost"] as? Int == 0 && report["reordered"] as? Int == 0, "\(report)")
        #expect(echo.stop() == 0, "\(echo.log)")
        #expect(echo.log.contains("final totals: received \(sent) sent \(sent) queued 0"), "\(echo.log)")
    }

    /// Two stop requests at once (a supervisor's SIGTERM and a Ctrl-C) while a client keeps it busy: it
    /// still exits 0 with its totals, within seconds.
    @Test(arguments: [(SIGTERM, SIGINT), (SIGINT, SIGINT)])
    func twoStopRequestsEndTheProcess(first: Int32, second: Int32) throws {
        let echo = try RunningRelay(["--listen", "127.0.0.1:0", "--drain-timeout", "30"], executable: "async-echo")
        let client = try Receiver()
        try client.socket.connect(to: echo.addresses[0])
        for i in 0..<200 {
            let bytes = sequencePayload(i, size: 64)
            _ = bytes.withUnsafeBytes { send(client.socket.fileDescriptor, $0.baseAddress, $0.count, 0) }
        }
        #expect(client.receive(200, timeout: 2).count > 0)
        let status = echo.stop([first, second], within: 10)
        #expect(status == 0, "exit status \(status.map(String.init) ?? "none: still running after 10 s"); \(echo.log)")
        #expect(echo.log.contains("final totals:"))
    }

    /// A wildcard listener answers each client from the address it contacted.
    @Test func aWildcardListenerAnswersFromTheContactedAddress() throws {
        let echo = try RunningRelay(["--listen", "0.0.0.0:0"], executable: "async-echo")
        let port = echo.addresses[0].port
        let client = try Receiver()
        try client.socket.connect(to: try SocketAddress(parsing: "127.0.0.2:\(port)"))
        _ = [UInt8(5)].withUnsafeBytes { send(client.socket.fileDescriptor, $0.baseAddress, 1, 0) }
        #expect(client.receive(1, timeout: 3) == [[5]], "a connected client only hears the address it contacted")
        #expect(echo.stop() == 0)
    }

    /// Bad arguments exit 64 naming the problem; an address in use exits 1 naming the address.
    @Test func badInputExits64AndAnAddressInUseExits1() throws {
        for (arguments, message) in [([String](), "give at least one --listen"), (["--listen", "nowhere"], "--listen"),
                                     (["--listen", "127.0.0.1:0", "--read-batch", "0"], "--read-batch must be 1...1024")] {
            let run = try AsyncEchoTests.run(arguments)
            #expect(run.status == 64 && run.stderr.contains(message), "\(arguments): \(run.status) \(run.stderr)")
        }
        let taken = try UDPSocket(bindingTo: .loopbackIPv4(port: 0))
        let address = try taken.localAddress
        let run = try AsyncEchoTests.run(["--listen", address.description])
        #expect(run.status == 1 && run.stderr.contains("cannot listen on \(address)"), "\(run.status) \(run.stderr)")
    }

    static func run(_ arguments: [String]) throws -> (status: Int32, stderr: String) {
        let process = Process()
        process.executableURL = RunningRelay.productsDirectory.appendingPathComponent("async-echo")
        process.arguments = arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }
}
