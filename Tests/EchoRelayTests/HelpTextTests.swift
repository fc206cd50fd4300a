import Foundation
import Testing

/// --help of both tools reads as prose at any terminal width: the argument parser wraps every paragraph
/// to the terminal, so the strings behind it must not carry line breaks of their own. At 1,000 columns no
/// sentence may be broken across lines.
@Suite struct HelpTextTests {
    static let commands: [[String]] = [
        ["echo-relay", "--help"], ["echo-relay", "echo", "--help"], ["echo-relay", "relay", "--help"],
        ["udp-blast", "--help"], ["udp-blast", "send", "--help"], ["udp-blast", "sink", "--help"],
        ["async-echo", "--help"],
    ]

    @Test(arguments: commands)
    func noSentenceIsBrokenAcrossLines(command: [String]) throws {
        let process = Process()
        process.executableURL = RunningRelay.productsDirectory.appendingPathComponent(command[0])
        process.arguments = Array(command.dropFirst())
        var environment = ProcessInfo.processInfo.environment
        environment["COLUMNS"] = "1000"
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.count > 5, "\(text)")
        // A line that stops mid-sentence (a word or a comma) followed by one that goes on in lower case.
        for (line, next) in zip(lines, lines.dropFirst()) {
            guard let last = line.last, last.isLetter || last == ",",
                  let first = next.trimmingCharacters(in: .whitespaces).first, first.isLowercase else { continue }
            Issue.record("\(command.joined(separator: " ")) breaks a sentence:\n\(line)\n\(next)")
        }
    }
}
