import Foundation
import Glibc
import Libev
import Testing

@Suite struct StatWatcherTests {
    /// A path that does not exist yet: creating and filling it calls back, with the old status (absent)
    /// and the new one (5 bytes).
    @Test func creatingTheWatchedFileCallsBackWithBothStatuses() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("stat-watcher-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { unlink(path) }
        let loop = try EventLoop()
        var seen: [(previous: StatWatcher.FileStatus, current: StatWatcher.FileStatus)] = []
        let watcher = StatWatcher(loop: loop, path: path, interval: 0.05) { watcher in
            seen.append((watcher.previous, watcher.current))
            if watcher.current.size == 5 { watcher.stop() }
        }
        watcher.start()
        #expect(!watcher.current.exists)
        #expect(watcher.watchedPath == path)
        let writer = TimerWatcher(loop: loop, after: 0.01) { _ in
            let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
            _ = write(fd, "hello", 5)
            close(fd)
        }
        writer.start()
        let guardTimer = failsafe(loop, seconds: 20)
        loop.run()
        guardTimer.stop()
        let last = try #require(seen.last)
        #expect(last.current.exists && last.current.size == 5)
        #expect(seen.first.map { !$0.previous.exists } == true, "the first change was the file appearing")
    }
}
