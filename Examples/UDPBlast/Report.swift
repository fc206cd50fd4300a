/// An ordered list of named figures, printed for people or as one JSON object.
struct Report {
    enum Value {
        case int(Int)
        case seconds(Double)
        case rate(Double)
        case text(String)

        var json: String {
            switch self {
            case let .int(n): return String(n)
            case let .seconds(s): return Report.fixed(s, 6)
            case let .rate(r): return Report.fixed(r, 1)
            case let .text(t): return "\"" + t.replacingEscapes() + "\""
            }
        }

        var human: String {
            switch self {
            case let .int(n): return Report.grouped(n)
            case let .seconds(s): return Report.fixed(s, 3) + " s"
            case let .rate(r): return Report.fixed(r, 1)
            case let .text(t): return t
            }
        }
    }

    let fields: [(String, Value)]
    init(_ fields: [(String, Value)]) { self.fields = fields }

    var json: String { "{" + fields.map { "\"\($0.0)\": \($0.1.json)" }.joined(separator: ", ") + "}" }

    func human(title: String) -> String {
        let width = fields.map(\.0.count).max() ?? 0
        let lines = fields.map { name, value in "  " + name + String(repeating: " ", count: width - name.count) + "  " + value.human }
        return ([title] + lines).joined(separator: "\n")
    }

    static func seconds(_ duration: Duration) -> Double {
        let (s, attoseconds) = duration.components
        return Double(s) + Double(attoseconds) / 1e18
    }

    static func fixed(_ value: Double, _ digits: Int) -> String {
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (value * scale).rounded()
        let whole = Int(scaled / scale)
        let fraction = Int(abs(scaled) - abs(Double(whole)) * scale)
        guard digits > 0 else { return String(whole) }
        let text = String(fraction)
        return (value < 0 && whole == 0 ? "-" : "") + String(whole) + "." + String(repeating: "0", count: digits - text.count) + text
    }

    static func grouped(_ n: Int) -> String {
        let digits = String(n.magnitude)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (n < 0 ? "-" : "") + out
    }
}

extension String {
    func replacingEscapes() -> String {
        var out = ""
        for c in self {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            default: out.append(c)
            }
        }
        return out
    }
}
