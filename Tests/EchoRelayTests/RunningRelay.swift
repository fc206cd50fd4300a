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

    /// Starts `echo-relay ARGUMENTS`, inside `namespace` if given, or through `launcher` (a command and its
    /// arguments, the executable's path appended: `prlimit --nofile=128:128`), and waits for its
    /// listening lines.
    init(_ arguments: [String], executable: String = "echo-relay", namespace: NetworkNamespace? = nil,
         launcher: [String] = [], listeners: Int = 1) throws {
        let binary = RunningRelay.productsDirectory.appendingPathComponent(executable)
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw RelayError("\(binary.path) is missing: build the package (swift build) before the tests")
        }
        logURL = FileManager.default.temporaryDirectory.appendingPathComponent("echo-relay-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log")
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        if let namespace {
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = ["netns", "exec", namespace.name, binary.path] + arguments
        } else if let command = launcher.first {
            process.executableURL = URL(fileURLWithPath: command)
            process.arguments = Array(launcher.dropFirst()) + [binary.path] + arguments
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

    /// Sends `signals` one right after the other and waits up to `seconds` for the process to end.
    /// Returns its exit status (128 + the signal's number if a signal ended it), or nil if it was still
    /// running at the deadline (it is then killed).
    func stop(_ signals: [Int32], within seconds: Double) -> Int32? {
        for signal in signals { kill(process.processIdentifier, signal) }
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        guard !process.isRunning else {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationReason == .exit ? process.terminationStatus : 128 + process.terminationStatus
    }

    /// Starts `echo-relay ARGUMENTS` with `signal` blocked (as a parent that blocks it would leave it) and
    /// sends it `signal` at once, so the request is pending before the daemon runs a single instruction of
    /// its own. Waits up to 10 s; returns the exit status (128 + signal if one ended it; nil if it was still
    /// running, then killed) and the log.
    static func runWithSignalPending(_ signal: Int32, _ arguments: [String]) throws -> (status: Int32?, log: String) {
        let binary = productsDirectory.appendingPathComponent("echo-relay").path
        let logPath = FileManager.default.temporaryDirectory.appendingPathComponent("echo-relay-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log").path
        defer { unlink(logPath) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var mask = sigset_t()
        sigemptyset(&mask)
        sigaddset(&mask, signal)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let argv: [UnsafeMutablePointer<CChar>?] = ([binary] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        let rc = posix_spawn(&pid, binary, &actions, &attributes, argv, environ)
        guard rc == 0 else { throw RelayError("posix_spawn \(binary) failed: \(Errno(rawValue: rc))") }
        kill(pid, signal)
        var status: Int32 = 0
        let deadline = Date().addingTimeInterval(10)
        while waitpid(pid, &status, WNOHANG) == 0 {
            guard Date() < deadline else {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                return (nil, (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")
            }
            usleep(10_000)
        }
        let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import.
        return (status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f), log)
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
