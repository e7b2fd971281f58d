import Foundation

/// `results.xml`: one testsuite per guest, one testcase per cell, in the JUnit dialect Jenkins,
/// GitLab and GitHub reporters read. Cells that differ from their expectation are failures;
/// skipped cells are skipped.
public enum JUnitReport {
    public static func xml(_ result: RunResult) -> String {
        let judged = result.cells.filter { $0.matches != nil }
        let failures = judged.filter { $0.matches == false }.count
        let skipped = result.cells.count - judged.count
        let total = result.cells.reduce(0) { $0 + $1.durationS }
        var xml = #"<?xml version="1.0" encoding="UTF-8"?>"# + "\n"
        xml += #"<testsuites name="kmatrix" tests="\#(result.cells.count)" failures="\#(failures)" skipped="\#(skipped)" time="\#(seconds(total))">"# + "\n"
        for guest in result.guests {
            let cells = result.cells(of: guest)
            let guestFailures = cells.filter { $0.matches == false }.count
            let guestSkipped = cells.filter { $0.matches == nil }.count
            let kernel = cells.compactMap(\.kernel).first ?? "unknown"
            xml += #"  <testsuite name="\#(XMLText.escape(guest))" tests="\#(cells.count)" failures="\#(guestFailures)" skipped="\#(guestSkipped)" time="\#(seconds(cells.reduce(0) { $0 + $1.durationS }))">"# + "\n"
            xml += #"    <properties><property name="kernel" value="\#(XMLText.escape(kernel))"/></properties>"# + "\n"
            for cell in cells {
                xml += #"    <testcase classname="kmatrix.\#(XMLText.escape(guest))" name="\#(XMLText.escape(cell.scenario))" time="\#(seconds(cell.durationS))">"# + "\n"
                switch cell.matches {
                case nil:
                    xml += #"      <skipped message="\#(XMLText.escape(cell.reason))"/>"# + "\n"
                case false?:
                    let message = "\(cell.outcome.rawValue), expected \(cell.expected?.rawValue ?? "a measurement")"
                    var body = cell.reason
                    body += "\nsent \(cell.sent), received \(cell.received), lost \(cell.lost), ENOBUFS \(cell.enobufs)"
                    if let counters = cell.counters {
                        body += "\nqueue_dropped +\(counters.queueDropped), queue_user_dropped +\(counters.queueUserDropped), id_sequence +\(counters.idSequence), netlink drops +\(counters.netlinkDrops)"
                    }
                    if let tail = cell.evidence?.consoleTail {
                        body += "\n--- console (\(cell.evidence?.consoleLog ?? "guest console")), last lines ---\n" + tail
                    }
                    xml += #"      <failure message="\#(XMLText.escape(message))" type="\#(cell.outcome.rawValue)">\#(XMLText.escape(body))</failure>"# + "\n"
                case true?:
                    xml += #"      <system-out>\#(XMLText.escape("\(cell.outcome.rawValue): \(cell.reason)"))</system-out>"# + "\n"
                }
                xml += "    </testcase>\n"
            }
            xml += "  </testsuite>\n"
        }
        xml += "</testsuites>\n"
        return xml
    }

    static func seconds(_ value: Double) -> String {
        guard value.isFinite, value >= 0, value < 1e12 else { return "0" }
        return String(Double(Int((value * 1000).rounded())) / 1000)
    }
}
