extension RelayService {
    /// Sessions in order of last activity, least recent first: an intrusive doubly linked list through
    /// `Session.older`/`newer`, so touching, removing and finding the least recent are O(1), and the idle
    /// sweep looks only at the sessions that expire. It owns nothing (the session table does): every
    /// link is weak.
    struct SessionList {
        private(set) weak var oldest: Session?
        private weak var newest: Session?

        /// Adds `session` as the most recently active.
        mutating func append(_ session: Session) {
            session.older = newest
            session.newer = nil
            if let newest { newest.newer = session } else { oldest = session }
            newest = session
        }

        /// Takes `session` out of the list.
        mutating func remove(_ session: Session) {
            if let older = session.older { older.newer = session.newer } else { oldest = session.newer }
            if let newer = session.newer { newer.older = session.older } else { newest = session.older }
            session.older = nil
            session.newer = nil
        }

        /// Makes `session` the most recently active.
        mutating func touch(_ session: Session) {
            guard newest !== session else { return }
            remove(session)
            append(session)
        }
    }
}
