//! IBM tags fasp-proxy refuses instead of ignoring: settings that narrow what users may reach.
//! Ignored, they would give users more than the administrator allowed (a group docroot left out
//! gives its users `<default>`'s access), so each is an error with its line and tag path.
//!
//! Every other tag of IBM's schema is ignored with a warning ([`ibm::not_used`](super::ibm)).
//! The judgement is made on the whole element once it is read, so that a blank setting (IBM's
//! default, which narrows nothing) is not refused.

use super::diagnostic::Diagnostic;
use super::tree::Element;

/// Judges `element`, a tag only IBM's schema has, inside `parent`, a tag fasp-proxy knows: the
/// error when ignoring it would widen what users reach, `None` when it can be ignored.
pub fn judge(parent: &str, element: &Element) -> Option<Diagnostic> {
    let refuse = |at: &Element, message: String, hint: &str| {
        Some(
            Diagnostic::error(Some(at.pos), message)
                .at_path(at.path.clone())
                .with_hint(hint),
        )
    };
    match (parent, element.name.as_str()) {
        ("path", "show_as") if !element.text.is_empty() => refuse(
            element,
            "<show_as> is not supported: IBM's virtual docroot names (and several docroots per \
             user) are not; fasp-proxy confines each user to one docroot"
                .to_string(),
            "remove <show_as>; keep one <path> per <default> or <user>",
        ),
        ("path", "filter") if !element.text.is_empty() => refuse(
            element,
            format!(
                "<filter> \"{}\" is not supported: ignored, it would let users reach what it \
                 hides",
                element.text
            ),
            "remove it, and move what it hides out of the docroot",
        ),
        ("path", "restrictions") if has_text(element) => refuse(
            element,
            "<restrictions> are not supported: ignored, they would let users reach files they \
             keep from them"
                .to_string(),
            "remove them and confine users with <absolute> instead",
        ),
        ("file_system", "filters") if has_text(element) => refuse(
            element,
            "<filters> (IBM's include/exclude patterns for transfers) are not supported: \
             ignored, they would let users transfer files they exclude"
                .to_string(),
            "remove them, and move what they exclude out of the docroot",
        ),
        ("default" | "user", "authorization") => authorization(element),
        ("realm", "groups") if !element.children.is_empty() => refuse(
            element,
            "<groups> are not supported: ignored, their users would get <default>'s access \
             instead of the group's"
                .to_string(),
            "give each member a <user> of their own in <users>",
        ),
        _ => None,
    }
}

/// `<authorization>`: `allow` (IBM's default) may be ignored; `deny`, `token` or an external
/// provider may not, since fasp-proxy would let those transfers through.
fn authorization(element: &Element) -> Option<Diagnostic> {
    for direction in ["in", "out"] {
        let Some(d) = element.descend(&["transfer", direction]) else {
            continue;
        };
        if let Some(value) = d.child("value") {
            if !value.text.is_empty() && !value.text.eq_ignore_ascii_case("allow") {
                return Some(
                    Diagnostic::error(
                        Some(value.pos),
                        format!(
                            "<authorization><transfer><{direction}><value> {} is not supported: \
                             fasp-proxy would let those transfers through",
                            value.text
                        ),
                    )
                    .at_path(value.path.clone())
                    .with_hint("remove it (or set allow), and refuse such users another way"),
                );
            }
        }
        if let Some(url) = d.descend(&["external_provider", "url"]) {
            if !url.text.is_empty() {
                return Some(
                    Diagnostic::error(
                        Some(url.pos),
                        format!(
                            "<authorization><transfer><{direction}><external_provider> is not \
                             supported: fasp-proxy would not ask {} and let every transfer \
                             through",
                            url.text
                        ),
                    )
                    .at_path(url.path.clone())
                    .with_hint("remove the external provider"),
                );
            }
        }
    }
    None
}

/// Whether any element at or below `e` holds text.
fn has_text(e: &Element) -> bool {
    !e.text.is_empty() || e.children.iter().any(has_text)
}
