import Glibc
import Libev
import Testing

@Suite struct ChildWatcherTests {
    /// On any loop but the default one a child watcher is refused with an error that says why (libev
    /// would abort the process).
    @Test func anOwnedLoopIsRefused() throws {
        let loop = try EventLoop()
        #expect(throws: LibevError.childWatcherNeedsDefaultLoop) { try ChildWatcher(loop: loop, pid: 0) { _ in } }
    }

    /// A real child that exits 7 and one killed by SIGKILL, each reported with its pid and status. In a
    /// process of its own: the default loop's SIGCHLD handler reaps any child of the process.
    @Test func realChildrenReportTheirExitAndTheirSignal() async {
        await #expect(processExitsWith: .exitCode(0)) {
            func spawn(_ script: String) -> pid_t {
                var pid = pid_t()
                let argv: [UnsafeMutablePointer<CChar>?] = ["/bin/sh", "-c", script].map { (word: String) in strdup(word) } + [nil]
                defer { argv.forEach { free($0) } }
                guard posix_spawn(&pid, "/bin/sh", nil, nil, argv, environ) == 0 else { exit(10) }
                return pid
            }
            let loop = try! EventLoop.default
            let exiting = spawn("exit 7"), killed = spawn("kill -9 $$")
            var results: [Int32: (Int32?, Int32?)] = [:]
            var watchers: [ChildWatcher] = []
            for pid in [exiting, killed] {
                let watcher = try! ChildWatcher(loop: loop, pid: pid) { watcher in
                    results[watcher.pid] = (watcher.exitCode, watcher.terminatingSignal)
                    watcher.stop()
                }
                watcher.start()
                watchers.append(watcher)
            }
            let guardTimer = TimerWatcher(loop: loop, after: 10) { _ in exit(11) }
            guardTimer.keepsLoopAlive = false
            guardTimer.start()
            loop.run()
            guard results[exiting]?.0 == 7, results[exiting]?.1 == nil else { exit(12) }
            guard results[killed]?.0 == nil, results[killed]?.1 == SIGKILL else { exit(13) }
            exit(0)
        }
    }
}
