import BatchedUDP
import Foundation
import Glibc
import Testing
import TestSupport

/// An `echo-relay` subprocess (the real executable, built next to this test bundle), its stderr in a file.
final class RunningRelay {
    let process = Process()
    let logURL: URL
    private(set) var addresses: [SocketAddress] = []

    static var productsDirectory: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    }

    /// Starts `echo-relay ARGUMENTS`, inside `namespace` if given, and waits for its listening lines.
    init(_ arguments: [String], executable: String = "echo-relay", namespace: NetworkNamespace? = nil, listeners: Int = 1) throws {
        let binary = RunningRelay.productsDirectory.appendingPathComponent(executable)
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw RelayError("\(binary.path) is missing: build the package (swift build) before the tests")
        }
        logURL = FileManager.default.temporaryDirectory.appendingPathComponent("echo-relay-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log")
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        if let namespace {
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = ["netns", "exec", namespace.name, binary.path] + arguments
        } else {
            process.executableURL = binary
            process.arguments = arguments
        }
        // Under the AddressSanitizer pass the executable is instrumented too: without a quarantine, freed
        // memory is reused as it would be normally, so resident-size checks mean the same thing.
        var environment = ProcessInfo.processInfo.environment
        environment["ASAN_OPTIONS"] = (environment["ASAN_OPTIONS"].map { $0 + ":" } ?? "") + "quarantine_size_mb=0"
        process.environment = environment
        process.standardError = try FileHandle(forWritingTo: logURL)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        guard listeners > 0 else { return }
        try waitForLog(timeout: 10) { log in
            let found = log.split(separator: "\n").compactMap { line -> SocketAddress? in
                guard let range = line.range(of: "listening on ") else { return nil }
                let rest = line[range.upperBound...].split(separator: ",")[0]
                return try? SocketAddress(parsing: String(rest))
            }
            self.addresses = found
            return found.count >= listeners
        }
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: logURL)
    }

    /// Resident memory of the process now (VmRSS), in bytes.
    var residentBytes: Int {
        let status = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    /// Descriptors the process has open now.
    var openDescriptors: Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.processIdentifier)/fd").count) ?? -1
    }

    /// The last stats line's counters (`name=value` and `queued N`, `sessions N`), once one is logged.
    func latestStats() -> String? { log.split(separator: "\n").last { $0.contains("stats:") }.map(String.init) }

    var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    /// Polls the log until `condition` holds.
    func waitForLog(timeout: Double, _ condition: (String) -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition(log) {
            guard Date() < deadline else { throw RelayError("echo-relay log did not show what was expected in \(timeout) s:\n\(log)") }
            guard process.isRunning else { throw RelayError("echo-relay exited (\(process.terminationStatus)):\n\(log)") }
            usleep(20_000)
        }
    }

    /// Sends `signal` and waits for the exit status.
    @discardableResult
    func stop(_ signal: Int32 = SIGTERM) -> Int32 {
        kill(process.processIdentifier, signal)
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Runs `executable` to completion; returns its exit status and stdout.
    static func runOutput(_ arguments: [String], executable: String) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = productsDirectory.appendingPathComponent(executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Runs `executable` (echo-relay or udp-blast) to completion; returns its exit status and stderr.
    static func runToExit(_ arguments: [String], executable: String = "echo-relay") throws -> (status: Int32, output: String) {
        let relay = try RunningRelay(arguments, executable: executable, listeners: 0)
        relay.process.waitUntilExit()
        return (relay.process.terminationStatus, relay.log)
    }
}

struct RelayError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
