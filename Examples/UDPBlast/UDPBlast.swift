import ArgumentParser

/// `udp-blast`: the package's load generator (`send`, the default) and a receiver that checks order and
/// loss (`sink`). Built only from the public API of BatchedUDP and Libev.
@main
struct UDPBlast: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "udp-blast",
        abstract: "Send UDP datagrams as fast as a BatchedUDPWatcher allows, or receive and check them.",
        discussion: """
            Every datagram carries its sequence number in its first 8 bytes (little endian), so a receiver \
            can check order and loss. Exit codes: 0 every datagram sent or reported (send) / all expected \
            received (sink); 1 a runtime failure, datagrams unaccounted for, more loss than --max-loss, or \
            no reply at all; 64 bad arguments; 130 SIGINT (after the report so far).
            """,
        subcommands: [Send.self, Sink.self],
        defaultSubcommand: Send.self)
}
