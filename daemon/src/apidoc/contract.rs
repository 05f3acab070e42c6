//! The contract XML read into a model the reference is rendered from: interfaces with their
//! members, each with the comment written above it in the XML.

use pib_dbus_interfaces::actions;

pub struct Interface {
    pub name: String,
    /// The comment at the top of the file the interface comes from.
    pub file_doc: String,
    pub methods: Vec<Method>,
    pub properties: Vec<Property>,
    pub signals: Vec<Signal>,
}

pub struct Arg {
    pub name: String,
    pub ty: String,
    /// "in" or "out"; signals' arguments are "out".
    pub direction: String,
}

pub struct Method {
    pub name: String,
    pub doc: String,
    pub args: Vec<Arg>,
    /// The value of the org.pibuilder.PiBuilder1.Action annotation, if any.
    pub action: Option<String>,
}

pub struct Property {
    pub name: String,
    pub doc: String,
    pub ty: String,
    pub access: String,
    pub emits_changed: Option<String>,
}

pub struct Signal {
    pub name: String,
    pub doc: String,
    pub args: Vec<Arg>,
}

pub fn parse_options() -> roxmltree::ParsingOptions {
    roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    }
}

/// Every interface in one introspection XML file.
pub fn parse(xml: &str) -> Vec<Interface> {
    let doc = roxmltree::Document::parse_with_options(xml, parse_options())
        .expect("the contract XML parses");
    let file_doc = doc
        .root()
        .children()
        .find(|n| n.is_comment())
        .and_then(|n| n.text())
        .map(dedent)
        .unwrap_or_default();
    doc.descendants()
        .filter(|n| n.has_tag_name("interface"))
        .map(|iface| Interface {
            name: attr(iface, "name"),
            file_doc: file_doc.clone(),
            methods: members(iface, "method")
                .map(|m| Method {
                    name: attr(m, "name"),
                    doc: doc_of(m),
                    args: args(m, "in"),
                    action: annotation(m, actions::ANNOTATION),
                })
                .collect(),
            properties: members(iface, "property")
                .map(|p| Property {
                    name: attr(p, "name"),
                    doc: doc_of(p),
                    ty: attr(p, "type"),
                    access: attr(p, "access"),
                    emits_changed: annotation(
                        p,
                        "org.freedesktop.DBus.Property.EmitsChangedSignal",
                    ),
                })
                .collect(),
            signals: members(iface, "signal")
                .map(|s| Signal {
                    name: attr(s, "name"),
                    doc: doc_of(s),
                    args: args(s, "out"),
                })
                .collect(),
        })
        .collect()
}

fn members<'a, 'i>(
    iface: roxmltree::Node<'a, 'i>,
    tag: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    iface.children().filter(move |n| n.has_tag_name(tag))
}

fn attr(n: roxmltree::Node, name: &str) -> String {
    n.attribute(name).unwrap_or_default().to_owned()
}

fn args(member: roxmltree::Node, default_direction: &str) -> Vec<Arg> {
    members(member, "arg")
        .map(|a| Arg {
            name: attr(a, "name"),
            ty: attr(a, "type"),
            direction: a
                .attribute("direction")
                .unwrap_or(default_direction)
                .to_owned(),
        })
        .collect()
}

fn annotation(member: roxmltree::Node, name: &str) -> Option<String> {
    members(member, "annotation")
        .find(|a| a.attribute("name") == Some(name))
        .and_then(|a| a.attribute("value"))
        .map(str::to_owned)
}

/// The comment right above an element (only whitespace between them), dedented.
fn doc_of(n: roxmltree::Node) -> String {
    let mut prev = n.prev_sibling();
    while let Some(p) = prev {
        if p.is_comment() {
            return p.text().map(dedent).unwrap_or_default();
        }
        if !(p.is_text() && p.text().is_some_and(|t| t.trim().is_empty())) {
            break;
        }
        prev = p.prev_sibling();
    }
    String::new()
}

/// The text without its blank first and last lines and without the indentation all its lines
/// share, so lists and paragraphs keep their shape in Markdown.
pub fn dedent(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let indent = lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let body: Vec<&str> = lines
        .iter()
        .map(|l| if l.is_empty() { "" } else { &l[indent..] })
        .collect();
    let start = body
        .iter()
        .position(|l| !l.is_empty())
        .unwrap_or(body.len());
    let end = body
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(start, |e| e + 1);
    body[start..end].join("\n")
}

/// The error list of a file comment ("Errors (...)" then "- Name  description" items with
/// continuation lines), as (short name, description).
pub fn errors(file_doc: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut inside = false;
    for line in file_doc.lines() {
        if line.starts_with("Errors") {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(item) = line.strip_prefix("- ") {
            let (name, text) = item.split_once(char::is_whitespace).unwrap_or((item, ""));
            out.push((name.to_owned(), text.trim().to_owned()));
        } else if line.starts_with(' ') {
            if let Some((_, text)) = out.last_mut() {
                text.push(' ');
                text.push_str(line.trim());
            }
        } else {
            inside = false;
        }
    }
    out
}

/// The file comment without its error list (which the reference renders as a table).
pub fn without_errors(file_doc: &str) -> String {
    let mut out = Vec::new();
    let mut inside = false;
    for line in file_doc.lines() {
        if line.starts_with("Errors") {
            inside = true;
        } else if inside && !(line.starts_with("- ") || line.starts_with(' ')) {
            inside = false;
        }
        if !inside {
            out.push(line);
        }
    }
    dedent(&out.join("\n"))
}
