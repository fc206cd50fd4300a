import Glibc

/// A value behind a `pthread_mutex_t`, for the few places where threads meet (signal bindings, a daemon's
/// hand-offs between its threads).
///
/// Why not `Synchronization.Mutex`: on Linux it locks with a bare futex, which ThreadSanitizer cannot see,
/// so every access to its value from two threads is reported as a race and a `--sanitize=thread` run
/// fails. A pthread mutex is intercepted by the sanitizer, and costs the same uncontended (a few atomic
/// instructions, no syscall). Package-internal: the package's targets share it; it is not API.
package final class Locked<Value: Sendable>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    /// Wraps `value`.
    package init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let rc = pthread_mutex_init(mutex, nil)
        precondition(rc == 0, "pthread_mutex_init failed: \(rc)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the value, holding the lock; never call it again from inside `body`.
    package func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
