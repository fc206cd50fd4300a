/// Round-trip times in a fixed log-linear histogram: 64 buckets per power of two (about 1.6% precision),
/// allocated once, so recording costs no allocation.
struct LatencyHistogram {
    private var buckets = [Int](repeating: 0, count: 128 + 57 * 64)
    private(set) var count = 0
    private(set) var max: UInt64 = 0

    mutating func record(nanoseconds value: UInt64) {
        buckets[LatencyHistogram.index(value)] += 1
        count += 1
        if value > max { max = value }
    }

    /// The value at or below which `fraction` (0...1) of the recorded values lie (bucket's upper edge).
    func percentile(_ fraction: Double) -> UInt64 {
        guard count > 0 else { return 0 }
        let rank = Swift.max(1, Int((fraction * Double(count)).rounded(.up)))
        var seen = 0
        for (index, n) in buckets.enumerated() where n > 0 {
            seen += n
            if seen >= rank { return Swift.min(LatencyHistogram.upperEdge(index), max) }
        }
        return max
    }

    private static func index(_ value: UInt64) -> Int {
        let exponent = Swift.max(0, (64 - value.leadingZeroBitCount) - 7)
        let sub = Int(value >> UInt64(exponent))
        return exponent == 0 ? sub : 128 + (exponent - 1) * 64 + (sub - 64)
    }

    private static func upperEdge(_ index: Int) -> UInt64 {
        if index < 128 { return UInt64(index) }
        let exponent = (index - 128) / 64 + 1
        let sub = UInt64((index - 128) % 64 + 64)
        return ((sub + 1) << UInt64(exponent)) - 1
    }
}
