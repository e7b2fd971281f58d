import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// libvirt's XML, written and read through FoundationXML (libxml2): values are escaped by the
/// library when written, and what libvirt hands back is parsed, never searched as text.
enum LibvirtXML {
    /// An element with attributes (in the order given), text, and children.
    static func element(_ name: String, _ attributes: KeyValuePairs<String, String> = [:], text: String? = nil,
                        children: [XMLElement] = []) -> XMLElement {
        let element = XMLElement(name: name, stringValue: text)
        for (key, value) in attributes {
            let attribute = XMLNode(kind: .attribute)
            attribute.name = key
            attribute.stringValue = value
            element.addAttribute(attribute)
        }
        for child in children { element.addChild(child) }
        return element
    }

    /// The document as libvirt reads it: indented, no XML declaration.
    static func document(_ root: XMLElement) -> String {
        root.xmlString(options: [.nodePrettyPrint, .nodeCompactEmptyElement]) + "\n"
    }

    /// An attribute's value. FoundationXML's `attribute(forName:)` finds nothing on an element
    /// in a default namespace (libvirt hands metadata back that way), so the list is searched.
    static func attribute(_ element: XMLElement, _ name: String) -> String? {
        element.attributes?.first { $0.name == name }?.stringValue
    }

    /// The root element of `text`, or nil when it is not XML.
    static func parse(_ text: String) -> XMLElement? {
        (try? XMLDocument(xmlString: text, options: []))?.rootElement()
    }
}
