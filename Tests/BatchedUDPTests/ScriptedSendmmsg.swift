@testable import BatchedUDP
import CUDPShims
import TestSupport

/// Scripts the watcher's sendmmsg seam for what loopback cannot produce on demand. Each call takes the
/// next step; when the script runs out, calls go to the kernel.
final class ScriptedSendmmsg {
    enum Step {
        /// The real call.
        case kernel
        /// The real call with at most this many messages: a genuine short count.
        case sendOnly(Int)
        /// Fail with this errno without sending.
        case fail(Errno)
    }

    var steps: [Step]
    /// Every call the watcher made: how many messages it offered and the sequence number of the first.
    private(set) var calls: [(offered: Int, first: Int)] = []

    init(_ steps: [Step] = []) { self.steps = steps }

    func install(on watcher: BatchedUDPWatcher) {
        watcher.sendSeam = { fd, messages, count in self.call(fd, messages, count) }
    }

    private func call(_ fd: Int32, _ messages: UnsafeMutablePointer<cudp_mmsghdr>, _ count: Int) -> IOResult {
        let head = messages.pointee.msg_hdr.msg_iov.pointee
        let first = head.iov_len >= 8 ? Int(UInt64(littleEndian: head.iov_base!.loadUnaligned(as: UInt64.self))) : -1
        calls.append((count, first))
        let step = steps.isEmpty ? .kernel : steps.removeFirst()
        switch step {
        case .kernel: return Syscall.sendmmsgOnce(fd, messages, count)
        case let .sendOnly(limit): return Syscall.sendmmsgOnce(fd, messages, min(limit, count))
        case let .fail(error): return .failed(error)
        }
    }
}
