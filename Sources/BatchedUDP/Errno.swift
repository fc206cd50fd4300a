internal import CUDPShims
internal import Glibc

/// A POSIX error number, as a kernel call reported it, with its C name and message.
///
/// `Errno.EMSGSIZE` reads like the C constant it stands for; `description` gives both, for example
/// `EMSGSIZE (Message too long)`.
public struct Errno: RawRepresentable, Hashable, Sendable, Error, CustomStringConvertible {
    /// The C `errno` value.
    public let rawValue: Int32
    /// The error with C `errno` value `rawValue`.
    public init(rawValue: Int32) { self.rawValue = rawValue }

    // The errors the package reports or handles by name; any other value works through `init(rawValue:)`.

    /// `EPERM`.
    public static let EPERM = Errno(rawValue: Glibc.EPERM)
    /// `EINTR`.
    public static let EINTR = Errno(rawValue: Glibc.EINTR)
    /// `EIO`.
    public static let EIO = Errno(rawValue: Glibc.EIO)
    /// `EBADF`.
    public static let EBADF = Errno(rawValue: Glibc.EBADF)
    /// `EAGAIN`.
    public static let EAGAIN = Errno(rawValue: Glibc.EAGAIN)
    /// `ENOMEM`.
    public static let ENOMEM = Errno(rawValue: Glibc.ENOMEM)
    /// `EACCES`.
    public static let EACCES = Errno(rawValue: Glibc.EACCES)
    /// `EFAULT`.
    public static let EFAULT = Errno(rawValue: Glibc.EFAULT)
    /// `EINVAL`.
    public static let EINVAL = Errno(rawValue: Glibc.EINVAL)
    /// `ENOTSOCK`.
    public static let ENOTSOCK = Errno(rawValue: Glibc.ENOTSOCK)
    /// `EDESTADDRREQ`.
    public static let EDESTADDRREQ = Errno(rawValue: Glibc.EDESTADDRREQ)
    /// `EMSGSIZE`.
    public static let EMSGSIZE = Errno(rawValue: Glibc.EMSGSIZE)
    /// `EPROTO`.
    public static let EPROTO = Errno(rawValue: Glibc.EPROTO)
    /// `ENOPROTOOPT`.
    public static let ENOPROTOOPT = Errno(rawValue: Glibc.ENOPROTOOPT)
    /// `EOPNOTSUPP`.
    public static let EOPNOTSUPP = Errno(rawValue: Glibc.EOPNOTSUPP)
    /// `ENETDOWN`.
    public static let ENETDOWN = Errno(rawValue: Glibc.ENETDOWN)
    /// `EHOSTDOWN`.
    public static let EHOSTDOWN = Errno(rawValue: Glibc.EHOSTDOWN)
    /// `ENONET`.
    public static let ENONET = Errno(rawValue: Glibc.ENONET)
    /// `EAFNOSUPPORT`.
    public static let EAFNOSUPPORT = Errno(rawValue: Glibc.EAFNOSUPPORT)
    /// `EADDRINUSE`.
    public static let EADDRINUSE = Errno(rawValue: Glibc.EADDRINUSE)
    /// `EADDRNOTAVAIL`.
    public static let EADDRNOTAVAIL = Errno(rawValue: Glibc.EADDRNOTAVAIL)
    /// `ENETUNREACH`.
    public static let ENETUNREACH = Errno(rawValue: Glibc.ENETUNREACH)
    /// `ENOBUFS`.
    public static let ENOBUFS = Errno(rawValue: Glibc.ENOBUFS)
    /// `ENOTCONN`.
    public static let ENOTCONN = Errno(rawValue: Glibc.ENOTCONN)
    /// `ECONNREFUSED`.
    public static let ECONNREFUSED = Errno(rawValue: Glibc.ECONNREFUSED)
    /// `EHOSTUNREACH`.
    public static let EHOSTUNREACH = Errno(rawValue: Glibc.EHOSTUNREACH)
    /// `ETIMEDOUT`.
    public static let ETIMEDOUT = Errno(rawValue: Glibc.ETIMEDOUT)
    /// `ECANCELED`.
    public static let ECANCELED = Errno(rawValue: Glibc.ECANCELED)

    /// The errno the calling thread holds now. Read it right after the failing call.
    static var current: Errno { Errno(rawValue: errno) }

    /// The C name (`EAGAIN`), or `errno N` for a number without one here.
    public var name: String {
        Errno.names[rawValue] ?? "errno \(rawValue)"
    }

    /// The C library's message for this error (`strerror_r`).
    public var message: String {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 128) { buffer in
            String(cString: cudp_strerror(rawValue, buffer.baseAddress, buffer.count))
        }
    }

    public var description: String { "\(name) (\(message))" }

    private static let names: [Int32: String] = [
        Glibc.EPERM: "EPERM", Glibc.ENOENT: "ENOENT", Glibc.EINTR: "EINTR", Glibc.EIO: "EIO",
        Glibc.EBADF: "EBADF", Glibc.EAGAIN: "EAGAIN", Glibc.ENOMEM: "ENOMEM", Glibc.EACCES: "EACCES",
        Glibc.EFAULT: "EFAULT", Glibc.EINVAL: "EINVAL", Glibc.EMFILE: "EMFILE", Glibc.EPIPE: "EPIPE",
        Glibc.ENOTSOCK: "ENOTSOCK", Glibc.EDESTADDRREQ: "EDESTADDRREQ", Glibc.EMSGSIZE: "EMSGSIZE",
        Glibc.EPROTOTYPE: "EPROTOTYPE", Glibc.ENOPROTOOPT: "ENOPROTOOPT", Glibc.EOPNOTSUPP: "EOPNOTSUPP",
        Glibc.EAFNOSUPPORT: "EAFNOSUPPORT", Glibc.EADDRINUSE: "EADDRINUSE", Glibc.EADDRNOTAVAIL: "EADDRNOTAVAIL",
        Glibc.ENETDOWN: "ENETDOWN", Glibc.ENETUNREACH: "ENETUNREACH", Glibc.ECONNRESET: "ECONNRESET",
        Glibc.ENOBUFS: "ENOBUFS", Glibc.EISCONN: "EISCONN", Glibc.ENOTCONN: "ENOTCONN",
        Glibc.ETIMEDOUT: "ETIMEDOUT", Glibc.ECONNREFUSED: "ECONNREFUSED", Glibc.EHOSTUNREACH: "EHOSTUNREACH",
        Glibc.ECANCELED: "ECANCELED", Glibc.EPROTO: "EPROTO", Glibc.EHOSTDOWN: "EHOSTDOWN", Glibc.ENONET: "ENONET",
    ]
}
