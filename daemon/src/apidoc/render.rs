//! The Markdown of docs/api.md, from the contract, the authorization table and the policy.

use std::fmt::Write;

use pib_dbus_interfaces::names::{BUS_NAME, ERROR_PREFIX, JOBS_PATH, MANAGER_PATH};

use super::contract::{self, Arg, Interface, Method, Property, Signal};
use super::policy::Action;
use crate::auth::table::{self, Requirement};

/// What the reference is made of.
pub struct Sources<'a> {
    pub interfaces: &'a [Interface],
    pub actions: &'a [Action],
}

pub fn render(src: &Sources) -> String {
    let mut md = String::new();
    header(&mut md, src.interfaces);
    for iface in src.interfaces {
        interface(&mut md, iface);
    }
    errors(&mut md, src.interfaces);
    actions(&mut md, src);
    md
}

fn header(md: &mut String, interfaces: &[Interface]) {
    md.push_str("# pi-builder D-Bus API reference\n\n");
    md.push_str(
        "<!-- Generated from dbus-interfaces/xml/, the daemon's authorization table and \
         polkit/org.pibuilder.policy by `make api-docs`. Do not edit by hand: a test fails \
         when this file and its sources disagree. -->\n\n",
    );
    let _ = writeln!(
        md,
        "Bus name `{BUS_NAME}` on the system bus. The Manager is `{MANAGER_PATH}`; jobs are \
         `{JOBS_PATH}/N`. Every method names the polkit action the daemon asks for (from its \
         central authorization table); errors are `{ERROR_PREFIX}.*`. Worked examples: \
         [busctl, gdbus and Python](api-examples.md).\n"
    );
    for iface in interfaces {
        let _ = writeln!(md, "- [`{}`](#{})", iface.name, anchor(&iface.name));
        let names = iface
            .methods
            .iter()
            .map(|m| format!("`{}()`", m.name))
            .chain(iface.properties.iter().map(|p| format!("`{}`", p.name)))
            .chain(iface.signals.iter().map(|s| format!("`{}!`", s.name)))
            .collect::<Vec<_>>();
        let _ = writeln!(md, "  {}", names.join(", "));
    }
    md.push_str("- [Errors](#errors)\n- [polkit actions](#polkit-actions)\n\n");
}

fn interface(md: &mut String, iface: &Interface) {
    let _ = writeln!(md, "## {}\n", iface.name);
    let intro = contract::without_errors(&iface.file_doc);
    if !intro.is_empty() {
        // Written as aligned plain text in the XML; a text block keeps its columns.
        let _ = writeln!(md, "```text\n{intro}\n```\n");
    }
    if !iface.methods.is_empty() {
        md.push_str("### Methods\n\n");
        for m in &iface.methods {
            method(md, &iface.name, m);
        }
    }
    if !iface.properties.is_empty() {
        md.push_str("### Properties\n\n");
        for p in &iface.properties {
            property(md, p);
        }
    }
    if !iface.signals.is_empty() {
        md.push_str("### Signals\n\n");
        for s in &iface.signals {
            signal(md, s);
        }
    }
}

fn method(md: &mut String, iface: &str, m: &Method) {
    let ins: Vec<&Arg> = m.args.iter().filter(|a| a.direction == "in").collect();
    let outs: Vec<&Arg> = m.args.iter().filter(|a| a.direction == "out").collect();
    let _ = writeln!(md, "#### {}\n", m.name);
    let _ = writeln!(
        md,
        "```\n{} ({}) → ({})\n```\n",
        m.name,
        arg_list(&ins),
        arg_list(&outs)
    );
    let needs = match table::requirement(iface, &m.name) {
        Some(Requirement::Action(a)) => format!("`{a}`"),
        Some(Requirement::JobOwnerOr(a)) => {
            format!("none for the job's starter; anyone else needs `{a}`")
        }
        None => "no entry in the authorization table: every call is denied".to_owned(),
    };
    let _ = writeln!(md, "polkit action: {needs}\n");
    arg_table(md, &m.args);
    paragraph(md, &m.doc);
}

fn property(md: &mut String, p: &Property) {
    let _ = writeln!(md, "#### {}\n", p.name);
    let changes = match p.emits_changed.as_deref() {
        Some("const") => "never changes",
        Some("false") => "changes are not signalled",
        Some("invalidates") => "changes are signalled without the value",
        _ => "changes are signalled (PropertiesChanged)",
    };
    let _ = writeln!(md, "Type `{}`, {}; {changes}.\n", p.ty, p.access);
    paragraph(md, &p.doc);
}

fn signal(md: &mut String, s: &Signal) {
    let args: Vec<&Arg> = s.args.iter().collect();
    let _ = writeln!(md, "#### {}\n", s.name);
    let _ = writeln!(md, "```\n{} ({})\n```\n", s.name, arg_list(&args));
    arg_table(md, &s.args);
    paragraph(md, &s.doc);
}

fn arg_list(args: &[&Arg]) -> String {
    args.iter()
        .map(|a| format!("{} {}", a.ty, a.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn arg_table(md: &mut String, args: &[Arg]) {
    if args.is_empty() {
        return;
    }
    md.push_str("| argument | direction | type |\n|---|---|---|\n");
    for a in args {
        let _ = writeln!(md, "| `{}` | {} | `{}` |", a.name, a.direction, a.ty);
    }
    md.push('\n');
}

fn paragraph(md: &mut String, doc: &str) {
    if !doc.is_empty() {
        let _ = writeln!(md, "{doc}\n");
    }
}

fn errors(md: &mut String, interfaces: &[Interface]) {
    md.push_str("## Errors\n\n");
    let _ = writeln!(
        md,
        "Every error the service returns is named `{ERROR_PREFIX}.NAME` and carries a message \
         in plain words. A call whose arguments do not match the method's signature is refused \
         by the bus library with the standard `org.freedesktop.DBus.Error.InvalidArgs`.\n"
    );
    md.push_str("| error | meaning |\n|---|---|\n");
    let mut seen = Vec::new();
    for iface in interfaces {
        for (name, text) in contract::errors(&iface.file_doc) {
            if !seen.contains(&name) {
                let _ = writeln!(md, "| `{name}` | {text} |");
                seen.push(name);
            }
        }
    }
    md.push('\n');
}

fn actions(md: &mut String, src: &Sources) {
    md.push_str("## polkit actions\n\n");
    md.push_str(
        "Defaults from `polkit/org.pibuilder.policy` (any session, inactive session, active \
         local session); administrators change them with rules. The methods are those whose \
         table entry names the action.\n\n",
    );
    md.push_str(
        "| action | what it allows | any | inactive | active | methods |\n\
         |---|---|---|---|---|---|\n",
    );
    for a in src.actions {
        let methods: Vec<String> = table::TABLE
            .iter()
            .filter(|(_, _, r)| r.action() == a.id)
            .map(|(i, m, _)| format!("{}.{m}", short(i)))
            .collect();
        let methods = if methods.is_empty() {
            "(asked for per device or per owner, see the methods)".to_owned()
        } else {
            methods.join(", ")
        };
        let [any, inactive, active] = &a.defaults;
        let _ = writeln!(
            md,
            "| `{}` | {} | {any} | {inactive} | {active} | {methods} |",
            a.id, a.description
        );
    }
}

fn short(interface: &str) -> &str {
    interface.rsplit('.').next().unwrap_or(interface)
}

/// GitHub's anchor for a heading: lower case, dots dropped.
fn anchor(heading: &str) -> String {
    heading.to_lowercase().replace('.', "")
}
