internal import CLibev
internal import Glibc

/// Calls back when a path's `stat` data changes: created, deleted, written, renamed over, its mode or
/// owner changed (`ev_stat`). libev uses inotify where it can and polls every `interval` seconds as well
/// (0: libev's default, 5 s); changes within the same second may be seen once.
///
/// Loop thread only; not `Sendable`.
public final class StatWatcher: Watcher {
    /// Called on the loop thread with the watcher; ``current`` and ``previous`` say what changed.
    public typealias Callback = (StatWatcher) -> Void

    /// A file's `stat` data as the watcher saw it.
    public struct FileStatus: Sendable, Equatable {
        /// False when the path does not exist (or cannot be stat'ed); then the other fields are 0.
        public var exists: Bool
        public var size: Int64
        /// `st_mode`: type and permission bits.
        public var mode: UInt32
        public var inode: UInt64
        public var linkCount: UInt64
        /// Last modification, in seconds since the epoch (`st_mtim`).
        public var modified: Double
    }

    private let callback: Callback
    /// The path, which libev keeps a pointer to while the watcher exists.
    private let path: UnsafeMutablePointer<CChar>
    private var raw: UnsafeMutablePointer<ev_stat> { memory.typed(ev_stat.self) }

    /// Watches `path` (which need not exist yet).
    /// - Parameters:
    ///   - loop: the loop that runs it.
    ///   - path: the path to watch; it need not exist.
    ///   - interval: seconds between polls where inotify cannot tell (0: libev's default).
    ///   - callback: called on the loop thread after each change.
    /// - Precondition: `interval` is finite and not negative.
    /// - Cost: one small allocation and a copy of the path; starting it costs a `stat` and an inotify watch.
    public init(loop: EventLoop, path: String, interval: Double = 0, callback: @escaping Callback) {
        precondition(interval.isFinite && interval >= 0, "StatWatcher needs a finite interval >= 0, got \(interval)")
        self.callback = callback
        self.path = strdup(path)
        let memory = _WatcherMemory(ev_stat())
        cev_stat_init(memory.typed(ev_stat.self), watcherTrampoline, self.path, interval)
        super.init(loop: loop, memory: memory,
                   start: { ev_stat_start($0, $1!.assumingMemoryBound(to: ev_stat.self)) },
                   stop: { ev_stat_stop($0, $1!.assumingMemoryBound(to: ev_stat.self)) })
    }

    deinit {
        // Stopped before the path goes (the base class would stop it after this deinit).
        if isActive { ev_stat_stop(loop.raw, raw) }
        free(path)
    }

    /// The path watched.
    public var watchedPath: String { String(cString: path) }

    /// The status seen at the last change, or when the watcher started (or by ``refresh()``).
    public var current: FileStatus { FileStatus(cev_stat_attr(raw).pointee) }

    /// The status before the last change.
    public var previous: FileStatus { FileStatus(cev_stat_prev(raw).pointee) }

    /// Stats the path now and updates ``current`` (`ev_stat_stat`), without calling back.
    public func refresh() {
        loop.assertOnLoopThread("StatWatcher.refresh()")
        ev_stat_stat(loop.raw, raw)
    }

    override func fire(_ revents: Int32) {
        callback(self)
    }
}

extension StatWatcher.FileStatus {
    init(_ data: ev_statdata) {
        exists = data.st_nlink != 0
        size = Int64(data.st_size)
        mode = UInt32(data.st_mode)
        inode = UInt64(data.st_ino)
        linkCount = UInt64(data.st_nlink)
        modified = Double(data.st_mtim.tv_sec) + Double(data.st_mtim.tv_nsec) / 1e9
    }
}
