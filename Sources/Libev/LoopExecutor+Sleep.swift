extension LoopExecutor {
    /// Suspends the calling task for `seconds` on an `ev_timer` of this executor's loop (the loop's
    /// monotonic clock), then resumes it on its own executor. `Task.sleep` cannot do this: it always
    /// sleeps on the global executor's clock.
    ///
    /// - Throws: `CancellationError` as soon as the task is cancelled (the timer is stopped on the loop
    ///   thread); at once if it already was.
    /// - Cost: one timer watcher and a continuation; two hops to the loop thread (start, and stop if
    ///   cancelled). Any task, any executor.
    /// - Precondition: `seconds` is finite and not negative; the executor is not shut down.
    public func sleep(for seconds: Double) async throws {
        precondition(seconds.isFinite && seconds >= 0, "LoopExecutor.sleep(for:) needs a finite delay >= 0, got \(seconds)")
        let sleeper = Sleeper()
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                guard sleeper.begin(continuation) else { return }  // cancelled before it began
                execute { [self] in sleeper.startTimer(loop: self.loop, after: seconds) }
            }
        } onCancel: {
            guard sleeper.cancel() else { return }
            execute { sleeper.stopTimer() }
        }
    }
}

/// One sleep: the continuation (resumed exactly once, by whoever takes it out first: the timer or a
/// cancellation) and the timer, which only the loop thread touches.
private final class Sleeper: @unchecked Sendable {
    private enum State {
        case idle
        case sleeping(CheckedContinuation<Void, Error>)
        case cancelled
        case done
    }

    private let state = Locked<StateBox>(StateBox())
    /// Loop thread only.
    private var timer: TimerWatcher?

    private struct StateBox: @unchecked Sendable {
        var value = State.idle
    }

    /// Stores the continuation; false (and resumes it with `CancellationError`) if cancelled already.
    func begin(_ continuation: CheckedContinuation<Void, Error>) -> Bool {
        let cancelled = state.withLock { box -> Bool in
            if case .cancelled = box.value { return true }
            box.value = .sleeping(continuation)
            return false
        }
        if cancelled { continuation.resume(throwing: CancellationError()) }
        return !cancelled
    }

    /// Resumes with `CancellationError` unless the timer fired first; true if a timer may need stopping.
    func cancel() -> Bool {
        let taken = state.withLock { box -> CheckedContinuation<Void, Error>? in
            switch box.value {
            case .sleeping(let continuation):
                box.value = .cancelled
                return continuation
            case .idle:
                box.value = .cancelled
                return nil
            case .cancelled, .done:
                return nil
            }
        }
        taken?.resume(throwing: CancellationError())
        return taken != nil
    }

    /// Loop thread: starts the one-shot timer, unless the sleep was cancelled in the meantime.
    func startTimer(loop: EventLoop, after seconds: Double) {
        guard state.withLock({ if case .sleeping = $0.value { return true } else { return false } }) else { return }
        let timer = TimerWatcher(loop: loop, after: seconds) { [self] _ in fire() }
        timer.start()
        self.timer = timer
    }

    /// Loop thread: the cancelled sleep's timer, if it started, stops.
    func stopTimer() {
        timer?.stop()
        timer = nil
    }

    private func fire() {
        timer = nil
        let taken = state.withLock { box -> CheckedContinuation<Void, Error>? in
            guard case .sleeping(let continuation) = box.value else { return nil }
            box.value = .done
            return continuation
        }
        taken?.resume()
    }
}
