//! The polkit actions as the policy file declares them, for the reference's table.

use super::contract::parse_options;

pub struct Action {
    pub id: String,
    pub description: String,
    /// allow_any, allow_inactive, allow_active.
    pub defaults: [String; 3],
}

pub fn parse(policy: &str) -> Vec<Action> {
    let doc = roxmltree::Document::parse_with_options(policy, parse_options())
        .expect("the polkit policy parses");
    let text_of = |n: roxmltree::Node, tag: &str| {
        n.descendants()
            .find(|c| c.has_tag_name(tag))
            .and_then(|c| c.text())
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    doc.descendants()
        .filter(|n| n.has_tag_name("action"))
        .map(|a| Action {
            id: a.attribute("id").unwrap_or_default().to_owned(),
            description: text_of(a, "description"),
            defaults: [
                text_of(a, "allow_any"),
                text_of(a, "allow_inactive"),
                text_of(a, "allow_active"),
            ],
        })
        .collect()
}
