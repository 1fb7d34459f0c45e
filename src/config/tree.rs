//! First pass over `aspera.conf`: reads the XML with quick-xml into a tree that remembers where
//! every tag is, and checks it against the [schema](super::schema): syntax errors, unknown tags
//! and attributes, misplaced text and duplicates, each with line, column and tag path.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::diagnostic::{Diagnostic, LineIndex, Pos};
use super::ibm;
use super::refused;
use super::schema::{self, Tag};
use super::suggest;

/// One element of the document, with its position.
#[derive(Debug, Clone)]
pub struct Element {
    /// The tag name.
    pub name: String,
    /// Where the start tag begins.
    pub pos: Pos,
    /// The path from the root, with 1-based indexes on repeated tags: `CONF/server/rproxy/rules/rule[2]`.
    pub path: String,
    /// Attributes in document order.
    pub attributes: Vec<(String, String)>,
    /// The text content, unescaped and trimmed.
    pub text: String,
    /// Child elements in document order.
    pub children: Vec<Element>,
}

impl Element {
    /// The first child called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child called `name`, in order.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The element reached by following `names` down from this one (first match at each step).
    pub fn descend(&self, names: &[&str]) -> Option<&Element> {
        names.iter().try_fold(self, |e, name| e.child(name))
    }

    /// The value of attribute `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The result of the first pass: the tree (if the XML could be read) and what was found wrong.
#[derive(Debug)]
pub struct Parsed {
    /// The root element, present unless the document had no root at all.
    pub root: Option<Element>,
    /// Syntax and structure diagnostics.
    pub diagnostics: Vec<Diagnostic>,
    /// Whether an XML syntax error stopped the reading (the tree is then incomplete).
    pub syntax_failed: bool,
}

struct Open {
    element: Element,
    /// The schema tag this element matched; `None` inside an unknown tag.
    tag: Option<&'static Tag>,
    /// The element of IBM's schema at the same place; with `tag` `None`, a tag only IBM has.
    ibm: Option<&'static ibm::Node>,
    /// For a tag only IBM has, at a place fasp-proxy knows: the index of its "not used" warning.
    ignored: Option<usize>,
    /// Names of the children seen so far, with where each first appeared.
    seen: Vec<(String, Pos, usize)>,
    /// The "not used" warnings of the children that are ignored whole.
    ignored_children: Vec<usize>,
    /// Whether a child is used, or holds an error: the element is then not ignored whole.
    uses: bool,
}

/// Sections of fasp-proxy's schema that hold far more of IBM's tags than of fasp-proxy's: an
/// unknown tag in one is said to be in neither schema, rather than listing fasp-proxy's few.
const MOSTLY_IBM: &[&str] = &["default", "file_system", "path", "user"];

/// Sections of fasp-proxy's schema that IBM's files fill with IBM's own settings: when one holds
/// nothing fasp-proxy uses, it gets one "not used" warning instead of one per tag inside.
const IGNORED_WHOLE_WHEN_UNUSED: &[&str] = &["CONF/default", "CONF/default/file_system"];

/// Reads `text` into a tree and checks it against the schema.
pub fn parse(text: &str) -> Parsed {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut diagnostics = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Element> = None;
    let mut syntax_failed = false;
    let lines = LineIndex::new(text);
    let mut labelled = 0;
    // Warnings replaced by one for the section that holds them (see `close`).
    let mut dropped = Vec::new();

    loop {
        // Diagnostics found from here on are labelled with the rule they are in, if any.
        label_rule(&mut diagnostics, labelled, &stack);
        labelled = diagnostics.len();
        let start = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(err) => {
                let at = usize::try_from(reader.error_position()).unwrap_or(start);
                diagnostics.push(syntax_error(text, &lines, at, &err, &stack));
                syntax_failed = true;
                break;
            }
        };
        let pos = lines.pos(start);
        match event {
            Event::Start(e) | Event::Empty(e) if root.is_some() => {
                let _ = e;
                diagnostics.push(Diagnostic::error(
                    Some(pos),
                    "content after the closing </CONF>: the file must have one root <CONF>",
                ));
                break;
            }
            Event::Start(e) => match open(&e, pos, &stack, &mut diagnostics) {
                Ok(o) => stack.push(o),
                Err(d) => {
                    diagnostics.push(d);
                    syntax_failed = true;
                    break;
                }
            },
            Event::Empty(e) => {
                let o = match open(&e, pos, &stack, &mut diagnostics) {
                    Ok(o) => o,
                    Err(d) => {
                        diagnostics.push(d);
                        syntax_failed = true;
                        break;
                    }
                };
                // Label while the element is open, as for a start tag.
                stack.push(o);
                label_rule(&mut diagnostics, labelled, &stack);
                labelled = diagnostics.len();
                if let Some(o) = stack.pop() {
                    close(o, &mut stack, &mut root, &mut diagnostics, &mut dropped);
                }
            }
            Event::End(_) => {
                // quick-xml has already checked that the name matches.
                if let Some(o) = stack.pop() {
                    close(o, &mut stack, &mut root, &mut diagnostics, &mut dropped);
                }
            }
            Event::Text(t) => {
                let value = match t.unescape() {
                    Ok(v) => v.into_owned(),
                    Err(err) => {
                        diagnostics.push(
                            Diagnostic::error(Some(pos), format!("bad text: {err}"))
                                .with_hint("write & as &amp; and < as &lt;"),
                        );
                        continue;
                    }
                };
                text_content(&value, pos, &mut stack, root.is_some(), &mut diagnostics);
            }
            Event::CData(t) => {
                let value = String::from_utf8_lossy(&t.into_inner()).into_owned();
                text_content(&value, pos, &mut stack, root.is_some(), &mut diagnostics);
            }
            Event::Eof => {
                if let Some(o) = stack.last() {
                    diagnostics.push(
                        Diagnostic::error(
                            Some(lines.pos(text.len())),
                            format!(
                                "the file ends before <{}> (opened at line {}, column {}) is closed",
                                o.element.name, o.element.pos.line, o.element.pos.column
                            ),
                        )
                        .at_path(o.element.path.clone()),
                    );
                    syntax_failed = true;
                } else if root.is_none() {
                    diagnostics.push(Diagnostic::error(
                        Some(pos),
                        "the file holds no <CONF> element",
                    ));
                }
                break;
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    label_rule(&mut diagnostics, labelled, &stack);
    if !dropped.is_empty() {
        let mut index = 0;
        diagnostics.retain(|_| {
            index += 1;
            !dropped.contains(&(index - 1))
        });
    }
    // An incomplete tree is still useful to locate things; keep what was built.
    if root.is_none() {
        if let Some(first) = stack.into_iter().next() {
            root = Some(first.element);
        }
    }
    Parsed {
        root,
        diagnostics,
        syntax_failed,
    }
}

fn open(
    e: &BytesStart<'_>,
    pos: Pos,
    stack: &[Open],
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Open, Diagnostic> {
    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    let mut attributes = Vec::new();
    for attr in e.attributes().with_checks(true) {
        let attr = attr.map_err(|err| {
            let raw = String::from_utf8_lossy(e.as_ref()).into_owned();
            let mut d = Diagnostic::error(Some(pos), format!("bad attribute in <{name}>: {err}"));
            if suggest::has_typographic_chars(&raw) {
                d = d.with_hint(format!(
                    "the tag holds typographic quotes or ligatures (pasted from a PDF?); write <{}>",
                    suggest::unligature(&raw)
                ));
            }
            d
        })?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        let value = attr
            .unescape_value()
            .map_err(|err| {
                Diagnostic::error(
                    Some(pos),
                    format!("bad value of attribute {key} in <{name}>: {err}"),
                )
            })?
            .into_owned();
        attributes.push((key, value));
    }

    let mut ibm_node = None;
    let mut ignored = None;
    let (path, tag) = match stack.last() {
        None => {
            if name != schema::ROOT.name {
                let mut d = Diagnostic::error(
                    Some(pos),
                    format!("the root tag must be <CONF>, found <{name}>"),
                );
                if suggest::closest(&name, [schema::ROOT.name]).is_some() {
                    d = d.with_hint("did you mean <CONF>? (tag names are case-sensitive)");
                }
                diagnostics.push(d);
                (name.clone(), None)
            } else {
                ibm_node = Some(&ibm::ROOT);
                (name.clone(), Some(&schema::ROOT))
            }
        }
        Some(parent) => {
            let count = parent
                .element
                .children
                .iter()
                .filter(|c| c.name == name)
                .count()
                + 1;
            let tag = parent.tag.and_then(|t| t.child(&name));
            ibm_node = parent.ibm.and_then(|n| n.child(&name));
            let repeated = tag.map_or(ibm_node.is_some_and(|n| n.repeated), |t| t.repeated);
            let path = if repeated {
                format!("{}/{}[{}]", parent.element.path, name, count)
            } else {
                format!("{}/{}", parent.element.path, name)
            };
            match (parent.tag, parent.ibm) {
                // A tag only IBM's schema has, where fasp-proxy's has tags: accepted, ignored.
                (Some(parent_tag), _)
                    if tag.is_none() && ibm_node.is_some() && !parent_tag.is_leaf() =>
                {
                    ignored = Some(diagnostics.len());
                    diagnostics.push(ibm::not_used(&name, pos, &path));
                }
                (Some(parent_tag), _) => {
                    check_child(parent, parent_tag, &name, tag, pos, &path, diagnostics);
                }
                // Inside a tag only IBM has: IBM's schema says what may be there.
                (None, Some(parent_node)) => {
                    if let Err(d) = ibm::check_child(parent_node, &name, pos, &path) {
                        diagnostics.push(d);
                    }
                }
                (None, None) => {}
            }
            (path, tag)
        }
    };
    if let Some(tag) = tag {
        for (key, _) in &attributes {
            if !tag.attributes().iter().any(|a| a.name == key)
                && !ibm::allows_attribute(ibm_node, key)
            {
                let mut d =
                    Diagnostic::error(Some(pos), format!("unknown attribute {key} on <{name}>"))
                        .at_path(path.clone());
                let ibm_known = ibm_node.map_or(&[][..], |n| n.attributes);
                let known: Vec<&str> = tag
                    .attributes()
                    .iter()
                    .map(|a| a.name)
                    .chain(ibm_known.iter().copied())
                    .collect();
                if name == "absolute" && key == "peer_ip" {
                    d = d.with_hint(
                        "IBM's conditional docroots (by the client's address) are not \
                         supported: give each user one docroot",
                    );
                } else if let Some(near) = suggest::closest(key, known.iter().copied()) {
                    d = d.with_hint(format!("did you mean {near}?"));
                } else if known.is_empty() {
                    d = d.with_hint(format!("<{name}> takes no attributes"));
                } else {
                    d = d.with_hint(format!("<{name}> takes {}", known.join(", ")));
                }
                diagnostics.push(d);
            }
        }
    }
    diagnostics.extend(ibm::check_attributes(
        ibm_node,
        tag.is_none(),
        &name,
        &attributes,
        pos,
        &path,
    ));
    Ok(Open {
        element: Element {
            name,
            pos,
            path,
            attributes,
            text: String::new(),
            children: Vec::new(),
        },
        tag,
        ibm: ibm_node,
        ignored,
        seen: Vec::new(),
        ignored_children: Vec::new(),
        uses: false,
    })
}

/// Adds the rule label to `diagnostics[from..]` when an open element is inside a `<rule>`.
fn label_rule(diagnostics: &mut [Diagnostic], from: usize, stack: &[Open]) {
    let Some(new) = diagnostics.get_mut(from..) else {
        return;
    };
    if new.is_empty() {
        return;
    }
    let rule = stack.iter().find_map(|o| {
        let last = o.element.path.rsplit('/').next()?;
        let n: usize = last
            .strip_prefix("rule[")?
            .strip_suffix(']')?
            .parse()
            .ok()?;
        o.element.path.contains("/rproxy/rules/").then(|| {
            super::model::rule_label(
                n,
                o.element.attribute("host_ip"),
                o.element.attribute("host_domain"),
            )
        })
    });
    if let Some(rule) = rule {
        for d in new.iter_mut().filter(|d| d.rule.is_none()) {
            d.rule = Some(rule.clone());
        }
    }
}

fn check_child(
    parent: &Open,
    parent_tag: &'static Tag,
    name: &str,
    tag: Option<&'static Tag>,
    pos: Pos,
    path: &str,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if parent_tag.is_leaf() {
        diagnostics.push(
            Diagnostic::error(
                Some(pos),
                format!(
                    "<{}> holds a value, not tags; found <{name}> inside",
                    parent_tag.name
                ),
            )
            .at_path(path.to_string()),
        );
        return;
    }
    let Some(tag) = tag else {
        diagnostics.push(unknown_tag(parent_tag, parent.ibm, name, pos, path));
        return;
    };
    if !tag.repeated {
        if let Some((_, first, _)) = parent.seen.iter().find(|(n, _, _)| n == name) {
            diagnostics.push(
                Diagnostic::error(
                    Some(pos),
                    format!(
                        "<{name}> appears twice in <{}>; the first is at line {}, column {}",
                        parent_tag.name, first.line, first.column
                    ),
                )
                .at_path(path.to_string())
                .with_hint_if(duplicate_hint(name)),
            );
        }
    }
}

/// What to do about a second `<name>` where fasp-proxy reads one, when IBM's files may have
/// more.
fn duplicate_hint(name: &str) -> Option<&'static str> {
    match name {
        "path" => Some(
            "fasp-proxy enforces one docroot per user; IBM's several docroots (told apart by \
             <show_as>) are not supported: keep one <path>",
        ),
        "realm" => Some("fasp-proxy reads one <realm>: put every <user> in it"),
        _ => None,
    }
}

fn unknown_tag(
    parent_tag: &Tag,
    parent_ibm: Option<&'static ibm::Node>,
    name: &str,
    pos: Pos,
    path: &str,
) -> Diagnostic {
    let mut d = Diagnostic::error(
        Some(pos),
        format!("unknown tag <{name}> in <{}>", parent_tag.name),
    )
    .at_path(path.to_string());
    if std::ptr::eq(parent_tag, &schema::ROOT) && name == "file_system" {
        return d.with_hint(
            "docroots are now read where IBM's files have them: <default><file_system><access>\
             <paths><path> for every user, <aaa><realms><realm><users><user><file_system>… for \
             one (the top-level <file_system> of earlier fasp-proxy versions was never enforced)",
        );
    }
    let known = parent_tag.children().iter().map(|t| t.name);
    if let Some(near) = suggest::closest(name, known) {
        return d.with_hint(format!("did you mean <{near}>?"));
    }
    if let Some(near) = ibm::suggestion(parent_ibm, name) {
        return d.with_hint(format!(
            "did you mean <{near}>? (a tag of IBM's aspera.conf schema, not used by fasp-proxy)"
        ));
    }
    let elsewhere = schema::paths_of(name);
    if !elsewhere.is_empty() {
        d = d.with_hint(format!("<{name}> belongs in {}", elsewhere.join(" or ")));
    } else if parent_ibm.is_some() && MOSTLY_IBM.contains(&parent_tag.name) {
        d = d.with_hint(format!(
            "neither fasp-proxy nor IBM's aspera.conf schema has <{name}> in <{}>",
            parent_tag.name
        ));
    } else {
        let names: Vec<String> = parent_tag
            .children()
            .iter()
            .map(|t| format!("<{}>", t.name))
            .collect();
        d = d.with_hint(format!("<{}> allows {}", parent_tag.name, names.join(", ")));
    }
    d
}

fn text_content(
    value: &str,
    pos: Pos,
    stack: &mut [Open],
    after_root: bool,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return;
    }
    let Some(top) = stack.last_mut() else {
        let place = if after_root {
            "after </CONF>"
        } else {
            "before <CONF>"
        };
        diagnostics.push(Diagnostic::error(
            Some(pos),
            format!("text {place}: {}", shorten(trimmed)),
        ));
        return;
    };
    match top.tag {
        Some(tag) if !tag.is_leaf() => {
            diagnostics.push(
                Diagnostic::error(
                    Some(pos),
                    format!(
                        "<{}> holds tags, not text; found \"{}\"",
                        tag.name,
                        shorten(trimmed)
                    ),
                )
                .at_path(top.element.path.clone()),
            );
        }
        _ => {
            if !top.element.text.is_empty() {
                top.element.text.push(' ');
            }
            top.element.text.push_str(trimmed);
        }
    }
}

/// Ends element `o`: judges a tag only IBM has (ignored with its warning, or refused, see
/// [`refused`]), folds the warnings of a section that holds nothing fasp-proxy uses into one
/// (adding the folded ones' indexes to `dropped`), and hangs the element on its parent.
fn close(
    o: Open,
    stack: &mut [Open],
    root: &mut Option<Element>,
    d: &mut [Diagnostic],
    dropped: &mut Vec<usize>,
) {
    // `Some(i)`: the element is ignored whole, with warning `i`.
    let mut ignored = None;
    if let Some(i) = o.ignored {
        let parent = stack.last().map_or("", |p| p.element.name.as_str());
        match (refused::judge(parent, &o.element), d.get_mut(i)) {
            (Some(error), Some(slot)) => *slot = error,
            (None, Some(warning)) => {
                ibm::note_inside(warning, descendants(&o.element));
                ignored = Some(i);
            }
            (_, None) => {}
        }
    } else if o.tag.is_some()
        && o.ibm.is_some()
        && !o.uses
        && IGNORED_WHOLE_WHEN_UNUSED.contains(&o.element.path.as_str())
    {
        if let Some((&first, rest)) = o.ignored_children.split_first() {
            if let Some(slot) = d.get_mut(first) {
                let mut warning = ibm::not_used(&o.element.name, o.element.pos, &o.element.path);
                ibm::note_inside(&mut warning, descendants(&o.element));
                *slot = warning;
                dropped.extend_from_slice(rest);
                ignored = Some(first);
            }
        }
    }
    match stack.last_mut() {
        Some(parent) => {
            match ignored {
                Some(i) => parent.ignored_children.push(i),
                None => parent.uses = true,
            }
            let index = parent.element.children.len();
            parent
                .seen
                .push((o.element.name.clone(), o.element.pos, index));
            parent.element.children.push(o.element);
        }
        None => *root = Some(o.element),
    }
}

/// How many elements are inside `e`, at any depth.
fn descendants(e: &Element) -> usize {
    e.children.iter().map(|c| 1 + descendants(c)).sum()
}

fn syntax_error(
    text: &str,
    lines: &LineIndex<'_>,
    at: usize,
    err: &quick_xml::Error,
    stack: &[Open],
) -> Diagnostic {
    use quick_xml::errors::IllFormedError;
    let pos = lines.pos(at);
    let path = stack.last().map(|o| o.element.path.clone());
    let mut d = match err {
        quick_xml::Error::IllFormed(IllFormedError::MismatchedEndTag { expected, found }) => {
            let opened = stack.last().map(|o| o.element.pos).unwrap_or_default();
            let mut d = Diagnostic::error(
                Some(pos),
                format!(
                    "closing tag </{found}> does not match <{expected}> opened at line {}, column {}",
                    opened.line, opened.column
                ),
            );
            if suggest::unligature(found) == *expected {
                d = d.with_hint(format!(
                    "did you mean </{expected}>? (\"{found}\" holds a typographic ligature, as text copied from a PDF does)"
                ));
            } else {
                d = d.with_hint(format!("did you mean </{expected}>?"));
            }
            d
        }
        quick_xml::Error::IllFormed(IllFormedError::UnmatchedEndTag(name)) => Diagnostic::error(
            Some(pos),
            format!("closing tag </{name}> without an opening tag"),
        ),
        other => {
            let mut d = Diagnostic::error(Some(pos), format!("XML syntax error: {other}"));
            let line = text[at.min(text.len())..].lines().next().unwrap_or("");
            let line_before = text[..at.min(text.len())].lines().last().unwrap_or("");
            if suggest::has_typographic_chars(line) || suggest::has_typographic_chars(line_before) {
                d = d.with_hint(
                    "the line holds typographic quotes or ligatures (pasted from a PDF?); use plain ASCII quotes and letters",
                );
            }
            d
        }
    };
    if let Some(path) = path {
        d = d.at_path(path);
    }
    d
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse(text)
            .diagnostics
            .iter()
            .map(|d| {
                let p = d.pos.unwrap_or_default();
                format!(
                    "{}:{} {} | {}",
                    p.line,
                    p.column,
                    d.message,
                    d.hint.clone().unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn builds_tree_with_positions_and_indexed_paths() {
        let text = "<CONF>\n <server><rproxy><rules>\n  <rule host_ip=\"192.0.2.1\"><host>198.51.100.2</host></rule>\n  <rule><host>198.51.100.3</host></rule>\n </rules></rproxy></server>\n</CONF>\n";
        let parsed = parse(text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let root = parsed.root.unwrap();
        let rules = root.descend(&["server", "rproxy", "rules"]).unwrap();
        let rules: Vec<_> = rules.children_named("rule").collect();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].path, "CONF/server/rproxy/rules/rule[2]");
        assert_eq!(rules[1].pos, Pos { line: 4, column: 3 });
        assert_eq!(rules[0].attribute("host_ip"), Some("192.0.2.1"));
        assert_eq!(rules[1].child("host").unwrap().text, "198.51.100.3");
    }

    #[test]
    fn unknown_tag_with_ligature_gets_did_you_mean() {
        let text = "<CONF><server><rproxy><rules><rule>\n<keyﬁle>/k</keyﬁle>\n</rule></rules></rproxy></server></CONF>";
        let e = errors(text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("2:1 unknown tag <keyﬁle> in <rule>"),
            "{e:?}"
        );
        assert!(e[0].ends_with("did you mean <keyfile>?"), "{e:?}");
        let parsed = parse("<CONF><server><rproxy><rules><rule host_ip=\"192.0.2.1\"><keyﬁle/><hosts><hots/></hosts></rule></rules></rproxy></server></CONF>");
        for d in &parsed.diagnostics {
            assert_eq!(
                d.rule.as_deref(),
                Some("rule 1 (host_ip=\"192.0.2.1\")"),
                "{d:?}"
            );
        }
        assert_eq!(parsed.diagnostics.len(), 2);
    }

    #[test]
    fn mismatched_closing_ligature_is_a_syntax_error_with_hint() {
        // As in the product guide: <keyfile>…</keyﬁle>.
        let text = "<CONF><server><rproxy><rules><rule>\n<keyfile>/k</keyﬁle>\n</rule></rules></rproxy></server></CONF>";
        let parsed = parse(text);
        assert!(parsed.syntax_failed);
        let d = &parsed.diagnostics[0];
        assert_eq!(d.pos.unwrap().line, 2);
        assert!(
            d.message.contains("</keyﬁle> does not match <keyfile>"),
            "{d:?}"
        );
        assert!(d
            .hint
            .as_ref()
            .unwrap()
            .starts_with("did you mean </keyfile>?"));
    }

    #[test]
    fn typographic_quotes_in_attribute() {
        let text = "<CONF><server><rproxy><rules>\n<rule host_ip=”7.7.7.7”><host>1.2.3.4</host></rule></rules></rproxy></server></CONF>";
        let parsed = parse(text);
        assert!(parsed.syntax_failed);
        let d = &parsed.diagnostics[0];
        assert_eq!(d.pos.unwrap().line, 2);
        assert!(d.hint.as_ref().unwrap().contains("typographic"), "{d:?}");
    }

    #[test]
    fn structure_errors() {
        let e = errors("<conf></conf>");
        assert!(e[0].contains("root tag must be <CONF>") && e[0].contains("did you mean <CONF>?"));
        let e = errors("<CONF><server><rproxy>hello</rproxy></server></CONF>");
        assert!(e[0].contains("<rproxy> holds tags, not text"), "{e:?}");
        let e = errors("<CONF><server><http_port><x/></http_port></server></CONF>");
        assert!(
            e[0].contains("<http_port> holds a value, not tags"),
            "{e:?}"
        );
        let e = errors(
            "<CONF><server><http_port>1</http_port>\n<http_port>2</http_port></server></CONF>",
        );
        assert!(e[0].starts_with("2:1 <http_port> appears twice"), "{e:?}");
        let e = errors("<CONF><server><rproxy><host>1.2.3.4</host></rproxy></server></CONF>");
        assert!(
            e[0].contains("belongs in CONF/server/rproxy/rules/rule/host"),
            "{e:?}"
        );
        let e = errors("<CONF><server><rproxy><rules><rule host-ip=\"1.2.3.4\"/></rules></rproxy></server></CONF>");
        assert!(
            e[0].contains("unknown attribute host-ip") && e[0].contains("did you mean host_ip?"),
            "{e:?}"
        );
        let e = errors("<CONF><server>");
        assert!(e[0].contains("ends before <server>"), "{e:?}");
        let e = errors("<CONF></CONF><CONF></CONF>");
        assert!(e[0].contains("content after the closing </CONF>"), "{e:?}");
        let e = errors("");
        assert!(e[0].contains("no <CONF>"), "{e:?}");
        let e = errors("<CONF><server><http_port>1 &bogus; 2</http_port></server></CONF>");
        assert!(e[0].contains("bad text"), "{e:?}");
        let e = errors("<CONF><server><database/></server></CONF>");
        assert!(
            e[0].contains("unknown tag <database>") && e[0].contains("allows <rproxy>"),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_subtree_is_reported_once() {
        let e = errors("<CONF><server><foo><bar/><baz/></foo></server></CONF>");
        assert_eq!(e.len(), 1, "{e:?}");
    }
}
