import Glibc

/// Datagrams the kernel dropped on arrival at the daemon's own sockets (receive buffer full, which is
/// where backpressure leaves them): the `drops` column of `/proc/net/udp` and `/proc/net/udp6` for the
/// sockets' inodes. Read when stats are printed, never per datagram.
enum KernelDrops {
    /// The drops counted on `descriptors`' sockets, which must be open.
    static func count(_ descriptors: [Int32]) -> Int {
        var inodes = Set<UInt64>()
        for fd in descriptors {
            var status = stat()
            if fstat(fd, &status) == 0 { inodes.insert(UInt64(status.st_ino)) }
        }
        guard !inodes.isEmpty else { return 0 }
        return ["/proc/net/udp", "/proc/net/udp6"].reduce(0) { $0 + drops(in: $1, inodes: inodes) }
    }

    /// Sums the last column of the rows of `table` whose inode (the tenth column) is in `inodes`.
    private static func drops(in table: String, inodes: Set<UInt64>) -> Int {
        guard let file = fopen(table, "r") else { return 0 }
        defer { fclose(file) }
        var total = 0
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let fields = String(cString: line).split(whereSeparator: { $0 == " " || $0 == "\n" })
            guard fields.count >= 13, let inode = UInt64(fields[9]), inodes.contains(inode),
                  let drops = Int(fields[fields.count - 1]) else { continue }
            total += drops
        }
        return total
    }
}
