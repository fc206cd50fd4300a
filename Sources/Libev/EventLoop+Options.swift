internal import CLibev

extension EventLoop {
    /// Libev's polling backends (`EVBACKEND_*`); an owned loop may name several and libev picks one.
    public struct Backend: OptionSet, Sendable, Hashable, CustomStringConvertible {
        /// The `EVBACKEND_*` bits.
        public let rawValue: UInt32
        /// The backends whose `EVBACKEND_*` bits are `rawValue`.
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        /// `select(2)`: portable, slow with many descriptors.
        public static let select = Backend(rawValue: UInt32(EVBACKEND_SELECT))
        /// `poll(2)`: portable, O(n) per iteration.
        public static let poll = Backend(rawValue: UInt32(EVBACKEND_POLL))
        /// The default: level-triggered epoll, recommended and embeddable on Linux.
        public static let epoll = Backend(rawValue: UInt32(EVBACKEND_EPOLL))
        /// Linux AIO polling (libev 4.27+); experimental in libev.
        public static let linuxAIO = Backend(rawValue: UInt32(EVBACKEND_LINUXAIO))
        /// io_uring polling (libev 4.31+); experimental in libev.
        public static let ioUring = Backend(rawValue: UInt32(EVBACKEND_IOURING))

        public var description: String {
            let names: [(Backend, String)] = [(.select, "select"), (.poll, "poll"), (.epoll, "epoll"),
                                               (.linuxAIO, "linuxaio"), (.ioUring, "io_uring")]
            let set = names.filter { contains($0.0) }.map(\.1)
            return set.isEmpty ? "any" : set.joined(separator: "|")
        }
    }

    /// Loop creation flags (`EVFLAG_*`).
    public struct Flags: OptionSet, Sendable, Hashable, CustomStringConvertible {
        /// The `EVFLAG_*` bits.
        public let rawValue: UInt32
        /// The flags whose `EVFLAG_*` bits are `rawValue`.
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        /// Ignore the `LIBEV_FLAGS` environment variable.
        public static let noEnvironment = Flags(rawValue: UInt32(EVFLAG_NOENV))
        /// Check for a fork on every iteration (a `getpid` per iteration).
        public static let forkCheck = Flags(rawValue: UInt32(EVFLAG_FORKCHECK))
        /// Do not use inotify for stat watchers.
        public static let noInotify = Flags(rawValue: UInt32(EVFLAG_NOINOTIFY))
        /// Use signalfd for signal watchers (the signals must be blocked in every thread).
        public static let signalFD = Flags(rawValue: UInt32(EVFLAG_SIGNALFD))
        /// Do not change the signal mask (recommended in threaded programs).
        public static let noSignalMask = Flags(rawValue: UInt32(EVFLAG_NOSIGMASK))
        /// Do not use timerfd to detect clock jumps.
        public static let noTimerFD = Flags(rawValue: UInt32(EVFLAG_NOTIMERFD))

        public var description: String { "0x" + String(rawValue, radix: 16) }
    }

    /// How `run(_:)` runs (`EVRUN_*`).
    public enum RunMode: Int32, Sendable {
        /// Until no referenced watcher is active, or the loop is broken.
        case untilDone = 0
        /// Wait for events once, handle them, return.
        case once = 2
        /// Handle what is ready without waiting, return.
        case noWait = 1
    }

    /// Which `run()` calls `breakLoop(_:)` ends (`EVBREAK_*`).
    public enum BreakMode: Int32, Sendable {
        /// Undo an earlier break.
        case cancel = 0
        /// The innermost `run()`.
        case one = 1
        /// Every nested `run()`.
        case all = 2
    }
}
