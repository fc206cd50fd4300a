import Glibc
import Libev
import Testing

@Suite struct IOWatcherTests {
    @Test func readReadinessOnASocketPair() throws {
        let loop = try EventLoop()
        let pair = SocketPair()
        var seen: [IOEvents] = []
        let watcher = try IOWatcher(loop: loop, fileDescriptor: pair.left, events: .read) { watcher, events in
            seen.append(events)
            #expect(pair.drain(watcher.fileDescriptor) == 1)
            watcher.stop()
        }
        watcher.start()
        let guardTimer = failsafe(loop)
        loop.run(.noWait)
        #expect(seen.isEmpty, "nothing to read yet")
        pair.write(42, to: pair.right)
        loop.run()
        #expect(seen == [.read])
        #expect(!watcher.isActive)
        _ = guardTimer
    }

    @Test func writeReadinessFiresOnAnEmptySocket() throws {
        let loop = try EventLoop()
        let pair = SocketPair()
        var writes = 0
        let watcher = try IOWatcher(loop: loop, fileDescriptor: pair.left, events: [.read, .write]) { watcher, events in
            #expect(events == .write)
            writes += 1
            watcher.stop()
        }
        #expect(watcher.events == [.read, .write])
        watcher.start()
        loop.run()
        #expect(writes == 1)
    }

    @Test func negativeDescriptorIsRefused() throws {
        let loop = try EventLoop()
        #expect(throws: LibevError.negativeFileDescriptor(-1)) {
            _ = try IOWatcher(loop: loop, fileDescriptor: -1, events: .read) { _, _ in }
        }
    }

    @Test func changingAnActiveWatcherIsRefusedAndAStoppedOneIsAllowed() throws {
        let loop = try EventLoop()
        let pair = SocketPair()
        let watcher = try IOWatcher(loop: loop, fileDescriptor: pair.left, events: .read) { _, _ in }
        watcher.start()
        #expect(throws: LibevError.watcherActive(operation: "IOWatcher.set(fileDescriptor:events:)")) {
            try watcher.set(fileDescriptor: pair.right, events: .read)
        }
        #expect(watcher.fileDescriptor == pair.left)
        watcher.stop()
        try watcher.set(fileDescriptor: pair.right, events: .write)
        #expect(watcher.fileDescriptor == pair.right)
        #expect(watcher.events == .write)
        #expect(throws: LibevError.negativeFileDescriptor(-3)) { try watcher.set(fileDescriptor: -3, events: .read) }
    }

    @Test func closedDescriptorIsRefusedBeforeLibevSeesIt() throws {
        let loop = try EventLoop()
        // A descriptor number far above anything the test process opens, so no parallel test can reuse it.
        let closed: Int32 = 60_000
        #expect(throws: LibevError.closedFileDescriptor(closed)) {
            _ = try IOWatcher(loop: loop, fileDescriptor: closed, events: .read) { _, _ in }
        }
        let pair = SocketPair()
        let watcher = try IOWatcher(loop: loop, fileDescriptor: pair.left, events: .read) { _, _ in }
        #expect(throws: LibevError.closedFileDescriptor(closed)) { try watcher.set(fileDescriptor: closed, events: .read) }
    }
}
