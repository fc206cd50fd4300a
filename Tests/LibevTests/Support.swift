import Glibc
import Libev
import Testing

/// A connected AF_UNIX stream socket pair, closed on deinit.
final class SocketPair {
    let left: Int32
    let right: Int32

    init() {
        var fds: [Int32] = [-1, -1]
        let rc = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds)
        precondition(rc == 0, "socketpair failed: errno \(errno)")
        left = fds[0]
        right = fds[1]
    }

    deinit {
        close(left)
        close(right)
    }

    func write(_ byte: UInt8, to fd: Int32) {
        var value = byte
        let n = Glibc.write(fd, &value, 1)
        precondition(n == 1, "write failed: errno \(errno)")
    }

    @discardableResult
    func drain(_ fd: Int32) -> Int {
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = read(fd, &buffer, buffer.count)
        return max(n, 0)
    }
}

/// Breaks the loop and records a failure if it is still running after `seconds`, so a broken behaviour
/// fails the test instead of hanging it. The guard never keeps the loop alive on its own.
func failsafe(_ loop: EventLoop, seconds: Double = 5, sourceLocation: SourceLocation = #_sourceLocation) -> TimerWatcher {
    let timer = TimerWatcher(loop: loop, after: seconds) { watcher in
        Issue.record("loop still running after \(seconds) s", sourceLocation: sourceLocation)
        watcher.loop.breakLoop()
    }
    timer.keepsLoopAlive = false
    timer.start()
    return timer
}
