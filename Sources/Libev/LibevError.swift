/// A misuse of the libev layer or a libev call that failed, with a sentence that says what to change.
///
/// Thrown instead of letting libev's own `assert` abort the process (Debian builds libev with asserts on).
public enum LibevError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `ev_loop_new` returned NULL: the backend is not available here or the flags are inconsistent.
    case loopCreationFailed(backend: EventLoop.Backend, flags: EventLoop.Flags)
    /// The libev the process linked is older than, or a different major version from, the ev.h it was built against.
    case versionMismatch(header: (major: Int32, minor: Int32), library: (major: Int32, minor: Int32))
    /// An `IOWatcher` was given a negative file descriptor.
    case negativeFileDescriptor(Int32)
    /// An `IOWatcher` was given a descriptor that is not open (`EBADF`); libev would abort on it.
    case closedFileDescriptor(Int32)
    /// The operation (named) changes a watcher that is active; stop it first.
    case watcherActive(operation: String)
    /// The signal number is outside 1...64.
    case invalidSignal(Int32)
    /// libev binds each signal to one loop per process; this signal is watched on another loop already.
    case signalBoundToAnotherLoop(signal: Int32)
    /// A ``ChildWatcher`` was made for a loop other than libev's default loop, the only one that reaps children.
    case childWatcherNeedsDefaultLoop
    /// The operation (named) re-configures a loop, and this one is borrowed: its owner decides that.
    case borrowedLoop(operation: String)

    public var description: String {
        switch self {
        case let .loopCreationFailed(backend, flags):
            return "ev_loop_new failed for backend \(backend) with flags \(flags): the backend is not available on this kernel or the flags conflict"
        case let .versionMismatch(header, library):
            return "libev version mismatch: built against ev.h \(header.major).\(header.minor) but running with libev \(library.major).\(library.minor); install a matching libev-dev and rebuild"
        case let .negativeFileDescriptor(fd):
            return "IOWatcher needs a file descriptor >= 0, got \(fd) (was the descriptor already closed?)"
        case let .closedFileDescriptor(fd):
            return "IOWatcher was given file descriptor \(fd), which is not open (EBADF); stop watchers before closing their descriptors"
        case let .watcherActive(operation):
            return "\(operation) needs a stopped watcher; call stop() first"
        case let .invalidSignal(signal):
            return "signal \(signal) is not a valid signal number (1...64)"
        case let .signalBoundToAnotherLoop(signal):
            return "signal \(signal) is already watched on another loop; libev delivers each signal to one loop per process"
        case .childWatcherNeedsDefaultLoop:
            return "ChildWatcher needs libev's default loop (EventLoop.default): only its SIGCHLD handler reaps children"
        case let .borrowedLoop(operation):
            return "\(operation) re-configures the loop, and this loop is borrowed: only the code that created it may do that"
        }
    }

    public static func == (lhs: LibevError, rhs: LibevError) -> Bool {
        switch (lhs, rhs) {
        case let (.loopCreationFailed(a, b), .loopCreationFailed(c, d)): return a == c && b == d
        case let (.versionMismatch(a, b), .versionMismatch(c, d)):
            return a.major == c.major && a.minor == c.minor && b.major == d.major && b.minor == d.minor
        case let (.negativeFileDescriptor(a), .negativeFileDescriptor(b)): return a == b
        case let (.closedFileDescriptor(a), .closedFileDescriptor(b)): return a == b
        case let (.watcherActive(a), .watcherActive(b)): return a == b
        case let (.invalidSignal(a), .invalidSignal(b)): return a == b
        case let (.signalBoundToAnotherLoop(a), .signalBoundToAnotherLoop(b)): return a == b
        case (.childWatcherNeedsDefaultLoop, .childWatcherNeedsDefaultLoop): return true
        case let (.borrowedLoop(a), .borrowedLoop(b)): return a == b
        default: return false
        }
    }
}
