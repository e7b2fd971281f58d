import Foundation
import Plot

// What report.html and the history page share: escaping, the outcome palette, dates.

extension Node {
    /// Text content, escaped here rather than by Plot: Plot 0.14 leaves anything that looks like
    /// an entity (`&lt;`, `&#60;`) as it is, so a reason quoting one would not read back as typed.
    static func escapedText(_ text: String) -> Node {
        .raw(XMLText.escape(text))
    }

    /// An attribute whose value is escaped: Plot 0.14 writes attribute values verbatim, so a
    /// kernel release or reason holding `"` would otherwise end the attribute.
    static func escapedAttribute(_ name: String, _ value: String) -> Node {
        .attribute(named: name, value: XMLText.escape(value), ignoreIfValueIsEmpty: false)
    }

    static func classes(_ names: String...) -> Node {
        .escapedAttribute("class", names.filter { !$0.isEmpty }.joined(separator: " "))
    }
}

enum HTMLPage {
    /// A whole document: inline CSS only, no script, nothing fetched, so it opens from file://
    /// and from a CI artifact store alike.
    static func document(title: String, css: String, body: [Node<HTML.BodyContext>], indented: Bool) -> String {
        let html = HTML(
            .lang(.english),
            .head(
                .encoding(.utf8),
                .viewport(.accordingToDevice),
                .element(named: "title", nodes: [Node<HTML.HeadContext>.escapedText(title)]),
                .style(css)),
            .body(.group(body)))
        return html.render(indentedBy: indented ? .spaces(1) : nil) + "\n"
    }

    /// UTC, to the second: the same text on every machine.
    static func date(_ date: Date) -> String {
        date.formatted(.iso8601)
    }

    /// Styles both pages share: type, the outcome colours, print rules. In print, closed details
    /// hide their content in a shadow slot that only `::details-content` reaches; that rule has a
    /// block of its own so a browser that does not know the pseudo-element drops only it.
    static let baseCSS = """
    :root { color-scheme: light; --line: #c4c9d0; --ink: #1b1f24; --muted: #59616b;
      --reinjected: #c8eac8; --dropped: #f5c2c0; --mixed: #fbd9a8; --delivered: #c6ddf4; --not-triggered: #e1daf0;
      --error: #e7b3dd; --skipped: #eceff1; --flaky: #fff0a0; }
    * { box-sizing: border-box; }
    body { margin: 0 auto; padding: 16px 20px; max-width: 1600px; color: var(--ink); background: #fff;
      font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
    h1 { font-size: 1.5rem; margin: 0 0 .6rem; }
    h2 { font-size: 1.15rem; margin: 1.4rem 0 .5rem; }
    code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .85em; }
    dl.meta { display: grid; grid-template-columns: repeat(auto-fill, minmax(17rem, 1fr)); gap: 2px 18px; margin: 0 0 1rem; }
    dl.meta div { display: flex; gap: .5em; min-width: 0; }
    dl.meta dt { font-weight: 600; white-space: nowrap; }
    dl.meta dt::after { content: ":"; }
    dl.meta dd { margin: 0; overflow-wrap: anywhere; }
    ul.legend { list-style: none; padding: 0; margin: 0 0 1rem; display: flex; flex-wrap: wrap; gap: 6px 18px; font-size: .9rem; }
    .swatch { display: inline-block; width: 1.1em; height: 1.1em; margin-right: .4em; vertical-align: -.2em;
      border: 1px solid #0004; border-radius: 3px; text-align: center; line-height: 1; font-size: .85em; }
    .scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; border: 1px solid var(--line); border-radius: 6px; }
    table { border-collapse: collapse; min-width: 100%; font-size: .9rem; }
    th, td { border: 1px solid var(--line); padding: 6px 8px; text-align: left; vertical-align: top; }
    thead th { background: #eef0f3; }
    .outcome-reinjected { background: var(--reinjected); }
    .outcome-dropped { background: var(--dropped); }
    .outcome-mixed { background: var(--mixed); }
    .outcome-delivered { background: var(--delivered); }
    .outcome-not-triggered { background: var(--not-triggered); }
    .outcome-error { background: var(--error); }
    .outcome-skipped { background: var(--skipped); color: var(--muted); }
    .outcome-flaky { background: var(--flaky) repeating-linear-gradient(135deg, #0000 0 6px, #ffffff80 6px 12px); }
    @media (max-width: 640px) {
      body { padding: 10px; font-size: 14px; }
      dl.meta { grid-template-columns: 1fr; gap: 1px; }
      th, td { padding: 5px 6px; }
    }
    @media print {
      * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
      body { max-width: none; padding: 0; font-size: 9.5pt; }
      .scroll { overflow: visible; border: 0; }
      @page { size: landscape; margin: 10mm; }
    }
    @media print {
      details::details-content { content-visibility: visible; display: contents; }
    }
    """

    static let outcomeMeaning: [(Outcome, String)] = [
        (.reinjected, "overflow proven, every overflowed packet delivered"),
        (.dropped, "overflow proven, every overflowed packet lost"),
        (.mixed, "overflow proven, some packets lost"),
        (.delivered, "no overflow, every packet got a verdict"),
        (.notTriggered, "no overflow happened: proves nothing"),
        (.error, "the measurement failed or disagrees with itself"),
        (.skipped, "not run"),
        (.flaky, "runs disagreed"),
    ]

    static func legend(extra: [Node<HTML.ListContext>] = []) -> Node<HTML.BodyContext> {
        .ul(.classes("legend"), .group(outcomeMeaning.map { outcome, meaning in
            .li(.span(.classes("swatch", "outcome-\(outcome.rawValue)")), .strong(.escapedText(outcome.rawValue)), .escapedText(" \(meaning)"))
        } + extra))
    }
}
