internal import CLibev
internal import Glibc

/// Readiness a file descriptor is watched for, or was reported with (`EV_READ`, `EV_WRITE`, `EV_ERROR`).
public struct IOEvents: OptionSet, Sendable, Hashable, CustomStringConvertible {
    /// The libev bits (`EV_READ | EV_WRITE | EV_ERROR`).
    public let rawValue: Int32
    /// The events whose libev bits are `rawValue`.
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The descriptor is readable (`EV_READ`).
    public static let read = IOEvents(rawValue: Int32(EV_READ))
    /// The descriptor is writable (`EV_WRITE`).
    public static let write = IOEvents(rawValue: Int32(EV_WRITE))
    /// Only ever reported: libev found the descriptor invalid and stopped the watcher.
    public static let error = IOEvents(rawValue: Int32(bitPattern: UInt32(truncatingIfNeeded: EV_ERROR)))

    public var description: String {
        var names: [String] = []
        if contains(.read) { names.append("read") }
        if contains(.write) { names.append("write") }
        if contains(.error) { names.append("error") }
        return "[" + names.joined(separator: ", ") + "]"
    }
}

/// Calls back when a file descriptor is readable and/or writable (`ev_io`).
///
/// libev's io watchers are level-triggered: a write watcher on an idle socket fires every iteration, so
/// start it only while there is something to write. Stop the watcher before closing its descriptor.
/// Loop thread only; not `Sendable`.
public final class IOWatcher: Watcher {
    /// Called on the loop thread with the watcher and the events that are ready.
    public typealias Callback = (IOWatcher, IOEvents) -> Void

    private let callback: Callback
    private var raw: UnsafeMutablePointer<ev_io> { memory.typed(ev_io.self) }

    /// Creates a stopped watcher for `fileDescriptor`.
    /// - Throws: ``LibevError/negativeFileDescriptor(_:)`` or ``LibevError/closedFileDescriptor(_:)``
    ///   (libev, built with asserts as Debian ships it, would abort the process on either).
    /// - Cost: one small allocation and one `fcntl(F_GETFD)` to check the descriptor.
    public init(loop: EventLoop, fileDescriptor: Int32, events: IOEvents, callback: @escaping Callback) throws(LibevError) {
        try IOWatcher.validate(fileDescriptor)
        self.callback = callback
        let memory = _WatcherMemory(ev_io())
        cev_io_init(memory.typed(ev_io.self), watcherTrampoline, fileDescriptor, IOEvents.valid(events))
        super.init(loop: loop, memory: memory,
                   start: { ev_io_start($0, $1!.assumingMemoryBound(to: ev_io.self)) },
                   stop: { ev_io_stop($0, $1!.assumingMemoryBound(to: ev_io.self)) })
    }

    /// The descriptor being watched.
    public var fileDescriptor: Int32 { cev_io_fd(raw) }

    /// The events being watched for.
    public var events: IOEvents { IOEvents(rawValue: cev_io_events(raw)) }

    /// Changes what is watched (`ev_io_set`).
    ///
    /// Changing the events of the same descriptor is cheap; a new descriptor makes libev re-register it.
    /// - Throws: ``LibevError/watcherActive(operation:)`` if the watcher is active (libev would abort);
    ///   ``LibevError/negativeFileDescriptor(_:)`` or ``LibevError/closedFileDescriptor(_:)`` for a new descriptor.
    public func set(fileDescriptor: Int32? = nil, events: IOEvents) throws(LibevError) {
        guard !isActive else { throw .watcherActive(operation: "IOWatcher.set(fileDescriptor:events:)") }
        let fd = fileDescriptor ?? self.fileDescriptor
        if fd == self.fileDescriptor {
            cev_io_modify(raw, IOEvents.valid(events))
        } else {
            try IOWatcher.validate(fd)
            cev_io_set(raw, fd, IOEvents.valid(events))
        }
    }

    private static func validate(_ fd: Int32) throws(LibevError) {
        guard fd >= 0 else { throw .negativeFileDescriptor(fd) }
        guard fcntl(fd, F_GETFD) != -1 || errno != EBADF else { throw .closedFileDescriptor(fd) }
    }

    override func fire(_ revents: Int32) {
        callback(self, IOEvents(rawValue: revents))
    }
}

extension IOEvents {
    /// The bits libev accepts in a watcher's event mask.
    static func valid(_ events: IOEvents) -> Int32 { events.intersection([.read, .write]).rawValue }
}
