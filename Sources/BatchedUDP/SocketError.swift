/// A socket operation that failed: which call, on which address, with which errno, and what to do about it.
public struct SocketError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The call that failed, for example `bind` or `setsockopt(SO_SNDBUF)`.
    public let operation: String
    /// The kernel's error, when there was one.
    public let errno: Errno?
    /// The address the call was about, when there was one.
    public let address: SocketAddress?
    /// The problem in words, when it was found by a check rather than by the kernel.
    public let problem: String?

    init(_ operation: String, errno: Errno? = nil, address: SocketAddress? = nil, problem: String? = nil) {
        self.operation = operation
        self.errno = errno
        self.address = address
        self.problem = problem
    }

    public var description: String {
        var text = operation
        if let address { text += "(\(address))" }
        text += " failed"
        if let errno { text += ": \(errno)" }
        if let problem { text += ": \(problem)" }
        if let hint { text += "; \(hint)" }
        return text
    }

    private var hint: String? {
        switch errno {
        case .EADDRINUSE?: return "another socket is bound to this address; choose another port or stop the other program"
        case .EACCES? where operation == "bind": return "ports below 1024 need root or CAP_NET_BIND_SERVICE"
        case .EADDRNOTAVAIL?: return "this machine has no interface with that address"
        case .EAFNOSUPPORT? where address != nil, .EINVAL? where address != nil: return "the address family may not match the socket's"
        case .EBADF?: return "the descriptor is not open"
        case .ENOTSOCK?: return "the descriptor is not a socket"
        default: return nil
        }
    }
}
