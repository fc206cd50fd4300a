/// A watcher or reader that uses a ``UDPSocket``'s descriptor and must stop before it is closed.
protocol SocketUser: AnyObject {
    /// The socket is about to close its descriptor: stop using it, for good.
    func socketWillClose()
    /// Whether it reads the socket's error queue now (a reader that is reading).
    var readsErrorQueue: Bool { get }
}

/// A weak reference to a ``SocketUser``.
struct WeakSocketUser {
    weak var user: (any SocketUser)?
}

extension UDPSocket {
    /// Registers `user` to be told before the descriptor closes. Cost: one array append (at registration).
    func register(_ user: any SocketUser) {
        users.removeAll { $0.user == nil }
        users.append(WeakSocketUser(user: user))
    }

    /// Whether a reader registered on this socket reads its error queue now: then it reports the entries,
    /// and a watcher on the same socket leaves them to it.
    var errorQueueHasReader: Bool {
        users.contains { $0.user?.readsErrorQueue == true }
    }
}
