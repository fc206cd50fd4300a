/// An Explicit Congestion Notification codepoint (RFC 3168): the two low bits of the IPv4 TOS byte or
/// the IPv6 traffic class.
public enum ECN: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Not-ECT (00): the sender does not do ECN.
    case notECT = 0
    /// ECT(1) (01): ECN-capable transport (L4S uses this one).
    case ect1 = 1
    /// ECT(0) (10): ECN-capable transport.
    case ect0 = 2
    /// CE (11): congestion experienced, set by a router instead of dropping.
    case ce = 3

    public var description: String {
        switch self {
        case .notECT: return "not-ECT"
        case .ect1: return "ECT(1)"
        case .ect0: return "ECT(0)"
        case .ce: return "CE"
        }
    }
}
