import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// `results.xml`: one testsuite per guest, one testcase per cell, in the JUnit dialect Jenkins,
/// GitLab and GitHub reporters read. Cells that differ from their expectation are failures;
/// skipped cells are skipped. Built as an element tree with FoundationXML, which escapes every
/// value; XML 1.0 cannot carry most control characters, so those are dropped first.
public enum JUnitReport {
    public static func xml(_ result: RunResult) -> String {
        let judged = result.cells.filter { $0.matches != nil }
        let root = element("testsuites", [
            ("name", "kmatrix"), ("tests", String(result.cells.count)), ("failures", String(judged.filter { $0.matches == false }.count)),
            ("skipped", String(result.cells.count - judged.count)), ("time", seconds(result.cells.reduce(0) { $0 + $1.durationS })),
        ])
        for guest in result.guests {
            let cells = result.cells(of: guest)
            let suite = element("testsuite", [
                ("name", guest), ("tests", String(cells.count)), ("failures", String(cells.filter { $0.matches == false }.count)),
                ("skipped", String(cells.filter { $0.matches == nil }.count)), ("time", seconds(cells.reduce(0) { $0 + $1.durationS })),
            ])
            let properties = element("properties")
            properties.addChild(element("property", [("name", "kernel"), ("value", cells.compactMap(\.kernel).first ?? "unknown")]))
            suite.addChild(properties)
            for cell in cells {
                let testcase = element("testcase", [("classname", "kmatrix.\(guest)"), ("name", cell.scenario), ("time", seconds(cell.durationS))])
                switch cell.matches {
                case nil:
                    testcase.addChild(element("skipped", [("message", cell.reason)]))
                case false?:
                    var body = cell.reason
                    body += "\nsent \(cell.sent), received \(cell.received), lost \(cell.lost), ENOBUFS \(cell.enobufs)"
                    if let counters = cell.counters {
                        body += "\nqueue_dropped +\(counters.queueDropped), queue_user_dropped +\(counters.queueUserDropped), "
                            + "id_sequence +\(counters.idSequence), netlink drops +\(counters.netlinkDrops)"
                    }
                    if let tail = cell.evidence?.consoleTail {
                        body += "\n--- console (\(cell.evidence?.consoleLog ?? "guest console")), last lines ---\n" + tail
                    }
                    let message = "\(cell.outcome.rawValue), expected \(cell.expected?.rawValue ?? "a measurement")"
                    testcase.addChild(element("failure", [("message", message), ("type", cell.outcome.rawValue)], text: body))
                case true?:
                    testcase.addChild(element("system-out", text: "\(cell.outcome.rawValue): \(cell.reason)"))
                }
                suite.addChild(testcase)
            }
            root.addChild(suite)
        }
        let document = XMLDocument(rootElement: root)
        document.version = "1.0"
        document.characterEncoding = "UTF-8"
        return document.xmlString(options: [.nodePrettyPrint, .nodeCompactEmptyElement]) + "\n"
    }

    static func element(_ name: String, _ attributes: [(String, String)] = [], text: String? = nil) -> XMLElement {
        let element = XMLElement(name: name, stringValue: text.map(xmlSafe))
        for (key, value) in attributes {
            let attribute = XMLNode(kind: .attribute)
            attribute.name = key
            attribute.stringValue = xmlSafe(value)
            element.addAttribute(attribute)
        }
        return element
    }

    /// What XML 1.0 can carry: tab and line breaks, never the other C0 controls.
    static func xmlSafe(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.filter { $0.value >= 0x20 || $0 == "\n" || $0 == "\t" }))
    }

    static func seconds(_ value: Double) -> String {
        guard value.isFinite, value >= 0, value < 1e12 else { return "0" }
        return String(Double(Int((value * 1000).rounded())) / 1000)
    }
}
