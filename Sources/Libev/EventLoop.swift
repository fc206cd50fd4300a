internal import CLibev

/// A libev event loop: one the package creates and owns, libev's default loop, or a loop borrowed from
/// C code or another library.
///
/// A borrowed loop is never destroyed, broken, forked, and its userdata and invoke-pending callback are
/// never touched by this type: the code that created it stays in charge. Watchers keep a strong reference
/// to their loop, so an owned loop is destroyed only after its last watcher is gone.
///
/// Thread confinement: an `EventLoop` and its watchers are used from the thread that runs the loop (or
/// under the host's lock, if the host runs libev callbacks on several threads). The type is not
/// `Sendable`; the one cross-thread door is ``AsyncWatcher/Sender``.
public final class EventLoop {
    /// Who created the loop, and so who destroys it.
    public enum Ownership: Sendable, Equatable {
        /// Created by `init(backend:flags:)`; `ev_loop_destroy` runs on deinit.
        case owned
        /// Libev's default loop (`EventLoop.default`); lives for the whole process.
        case defaultLoop
        /// Someone else's `struct ev_loop *` (`init(borrowing:)`); never destroyed here.
        case borrowed
    }

    /// The `struct ev_loop *` for C code that wants the same loop (hiredis-style adapters, C watchers).
    public let raw: OpaquePointer
    /// Whether this wrapper destroys the loop on deinit.
    public let ownership: Ownership
    /// The loop thread, as debug builds check it (see `assertOnLoopThread`).
    let confinement = _LoopConfinement()

    /// Creates and owns a new loop (`ev_loop_new`).
    ///
    /// - Parameters:
    ///   - backend: the polling backends libev may choose from; `.epoll` by default (the only Linux
    ///     backend that is both recommended and embeddable).
    ///   - flags: `EVFLAG_*` options, none by default.
    /// - Throws: ``LibevError/versionMismatch(header:library:)`` if the linked libev is not the one the
    ///   package was built against; ``LibevError/loopCreationFailed(backend:flags:)`` if libev refuses.
    /// - Cost: one `epoll_create` and a few small allocations inside libev.
    public init(backend: Backend = .epoll, flags: Flags = []) throws(LibevError) {
        try EventLoop.checkLibevVersion()
        guard let loop = ev_loop_new(backend.rawValue | flags.rawValue) else {
            throw .loopCreationFailed(backend: backend, flags: flags)
        }
        self.raw = loop
        self.ownership = .owned
    }

    /// Wraps a loop created and run by someone else, without taking it over.
    ///
    /// Swift watchers attached to it run when the host's `ev_run` dispatches them; set
    /// ``Watcher/keepsLoopAlive`` to `false` on helper watchers so they do not keep the host's `ev_run` going.
    /// The caller keeps the loop alive for as long as this wrapper and its watchers exist.
    /// - Precondition: the linked libev matches the headers (checked at once, with a message saying so).
    public init(borrowing raw: OpaquePointer) {
        do { try EventLoop.checkLibevVersion() } catch { preconditionFailure(error.description) }
        self.raw = raw
        self.ownership = .borrowed
    }

    /// Libev's default loop (`ev_default_loop(0)`), for applications.
    ///
    /// Creating the default loop installs a SIGCHLD handler, so libraries must not call this; they take the
    /// loop their host gives them. Each access returns a new wrapper of the same loop; none destroys it.
    /// - Throws: ``LibevError/versionMismatch(header:library:)``, or ``LibevError/loopCreationFailed(backend:flags:)``
    ///   if libev cannot create it.
    public static var `default`: EventLoop {
        get throws(LibevError) {
            try checkLibevVersion()
            guard let loop = ev_default_loop(0) else { throw .loopCreationFailed(backend: [], flags: []) }
            return EventLoop(raw: loop, ownership: .defaultLoop)
        }
    }

    private init(raw: OpaquePointer, ownership: Ownership) {
        self.raw = raw
        self.ownership = ownership
    }

    deinit {
        if ownership == .owned { ev_loop_destroy(raw) }
    }

    /// The libev the process runs with (`ev_version_major`/`ev_version_minor`).
    public static var libevVersion: (major: Int32, minor: Int32) { (ev_version_major(), ev_version_minor()) }

    /// Checks that the running libev has the header's major version and at least its minor version.
    /// - Throws: ``LibevError/versionMismatch(header:library:)``.
    public static func checkLibevVersion() throws(LibevError) {
        let header = (major: cev_header_version_major(), minor: cev_header_version_minor())
        let library = libevVersion
        guard library.major == header.major, library.minor >= header.minor else {
            throw .versionMismatch(header: header, library: library)
        }
    }

    /// Runs the loop (`ev_run`) on the calling thread.
    ///
    /// - Parameter mode: `.untilDone` returns when no referenced watcher is active or the loop is broken;
    ///   `.once` waits for and handles one batch of events; `.noWait` handles what is ready and returns.
    /// - Returns: `true` if watchers are still active (the loop was broken, or ran once).
    @discardableResult
    public func run(_ mode: RunMode = .untilDone) -> Bool {
        noteLoopThread()
        return ev_run(raw, mode.rawValue) != 0
    }

    /// Makes the innermost (`.one`) or every (`.all`) running `run()` return after the current iteration
    /// (`ev_break`). On a borrowed loop this ends the host's `ev_run` too: only call it when that is your decision.
    public func breakLoop(_ how: BreakMode = .all) {
        ev_break(raw, how.rawValue)
    }

    /// The loop's cached time (`ev_now`): seconds since the epoch at the start of this iteration.
    public var now: Double { ev_now(raw) }

    /// Refreshes ``now`` from the clock (`ev_now_update`); costs a `clock_gettime`.
    public func updateNow() { ev_now_update(raw) }

    /// How many times the loop has polled for events (`ev_iteration`); wraps at 2^32.
    public var iteration: UInt32 { ev_iteration(raw) }

    /// How many `run()` calls are on the stack for this loop (`ev_depth`).
    public var depth: UInt32 { ev_depth(raw) }

    /// The backend libev chose (`ev_backend`).
    public var backend: Backend { Backend(rawValue: ev_backend(raw)) }

    /// How many watchers are pending, waiting for their callback (`ev_pending_count`).
    public var pendingCount: UInt32 { ev_pending_count(raw) }
}

extension EventLoop: CustomStringConvertible {
    public var description: String { "EventLoop(\(ownership), backend: \(backend), iteration: \(iteration))" }
}
