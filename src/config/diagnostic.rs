//! Diagnostics: what is wrong with a configuration, and exactly where.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in the configuration text, 1-based, columns counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line number, starting at 1.
    pub line: u32,
    /// Column number in characters, starting at 1.
    pub column: u32,
}

impl Pos {
    /// Converts a byte offset in `text` into a line and a character column.
    pub fn from_offset(text: &str, offset: usize) -> Pos {
        let offset = offset.min(text.len());
        // Step back to a character boundary so slicing cannot panic.
        let mut end = offset;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &text[..end];
        let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Pos {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        }
    }
}

/// Converts byte offsets of one text into positions in O(log lines), for texts with many tags.
#[derive(Debug, Clone)]
pub struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
    /// The last answer (offset, position): queries in increasing order on one long line
    /// (a minified file) count on from there instead of from the line start.
    last: std::cell::Cell<(usize, Pos)>,
}

impl<'a> LineIndex<'a> {
    /// Indexes the line starts of `text`.
    pub fn new(text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex {
            text,
            line_starts,
            last: std::cell::Cell::new((0, Pos { line: 1, column: 1 })),
        }
    }

    /// The position of byte `offset` (clamped to the text, stepped back to a character boundary).
    pub fn pos(&self, offset: usize) -> Pos {
        let mut end = offset.min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= end);
        let start = self.line_starts[line.saturating_sub(1)];
        let line = u32::try_from(line).unwrap_or(u32::MAX);
        let (last_offset, last_pos) = self.last.get();
        let (from, base) = if last_pos.line == line && (start..=end).contains(&last_offset) {
            (last_offset, last_pos.column)
        } else {
            (start, 1)
        };
        let counted = u32::try_from(self.text[from..end].chars().count()).unwrap_or(u32::MAX);
        let pos = Pos {
            line,
            column: base.saturating_add(counted),
        };
        self.last.set((end, pos));
        pos
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The configuration is refused.
    Error,
    /// The configuration is accepted, but probably not what was meant.
    Warning,
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where in the file, when known.
    pub pos: Option<Pos>,
    /// The tag path, e.g. `CONF/server/rproxy/rules/rule[2]/host`.
    pub tag_path: Option<String>,
    /// The rule the problem is in, e.g. `rule 2 (host_ip="192.0.2.0/24")`.
    pub rule: Option<String>,
    /// What is wrong.
    pub message: String,
    /// A suggestion, e.g. `did you mean <keyfile>?`.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at a position.
    pub fn error(pos: Option<Pos>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            pos,
            tag_path: None,
            rule: None,
            message: message.into(),
            hint: None,
        }
    }

    /// A warning at a position.
    pub fn warning(pos: Option<Pos>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(pos, message)
        }
    }

    /// Adds the tag path.
    pub fn at_path(mut self, path: impl Into<String>) -> Self {
        self.tag_path = Some(path.into());
        self
    }

    /// Adds the rule the problem is in.
    pub fn in_rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    /// Adds a suggestion.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a suggestion, if there is one.
    pub fn with_hint_if(self, hint: Option<impl Into<String>>) -> Self {
        match hint {
            Some(hint) => self.with_hint(hint),
            None => self,
        }
    }

    /// Whether this diagnostic refuses the configuration.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Formats the diagnostic as `file:line:column: error: message (in rule; at path) hint`.
    pub fn display_in<'a>(&'a self, file: &'a Path) -> impl fmt::Display + 'a {
        DisplayIn { diag: self, file }
    }
}

struct DisplayIn<'a> {
    diag: &'a Diagnostic,
    file: &'a Path,
}

impl fmt::Display for DisplayIn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.diag;
        write!(f, "{}", self.file.display())?;
        if let Some(pos) = d.pos {
            write!(f, ":{}:{}", pos.line, pos.column)?;
        }
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {level}: ")?;
        if let Some(rule) = &d.rule {
            write!(f, "{rule}: ")?;
        }
        write!(f, "{}", d.message)?;
        if let Some(path) = &d.tag_path {
            write!(f, " [at {path}]")?;
        }
        if let Some(hint) = &d.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

/// A configuration that could not be loaded: every problem found, errors and warnings.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// All diagnostics, in file order; at least one is an error.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.diagnostics.iter().filter(|d| d.is_error()).count();
        writeln!(
            f,
            "{}: {} error{} in configuration",
            self.file.display(),
            errors,
            if errors == 1 { "" } else { "s" }
        )?;
        for d in &self.diagnostics {
            writeln!(f, "{}", d.display_in(&self.file))?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_to_line_and_character_column() {
        let text = "ab\ncﬁd\nx";
        assert_eq!(Pos::from_offset(text, 0), Pos { line: 1, column: 1 });
        assert_eq!(Pos::from_offset(text, 3), Pos { line: 2, column: 1 });
        // 'ﬁ' is 3 bytes, one character: 'd' is column 3.
        let d = text.find('d').unwrap();
        assert_eq!(Pos::from_offset(text, d), Pos { line: 2, column: 3 });
        // An offset inside a multi-byte character does not panic.
        assert_eq!(Pos::from_offset(text, 5).line, 2);
        assert_eq!(Pos::from_offset(text, 1000).line, 3);
    }

    #[test]
    fn line_index_agrees_with_from_offset() {
        let text = "<CONF>\n  <ﬁ>\n\n x\n";
        let index = LineIndex::new(text);
        for offset in (0..=text.len() + 2).chain((0..=text.len()).rev()) {
            assert_eq!(
                index.pos(offset),
                Pos::from_offset(text, offset),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn display_names_file_position_rule_path_and_hint() {
        let d = Diagnostic::error(Some(Pos { line: 4, column: 7 }), "unknown tag <keyﬁle>")
            .at_path("CONF/server/rproxy/rules/rule[1]")
            .in_rule("rule 1 (host_ip=\"192.0.2.10\")")
            .with_hint("did you mean <keyfile>?");
        let s = d.display_in(Path::new("/etc/a.conf")).to_string();
        assert_eq!(
            s,
            "/etc/a.conf:4:7: error: rule 1 (host_ip=\"192.0.2.10\"): unknown tag <keyﬁle> \
             [at CONF/server/rproxy/rules/rule[1]]; did you mean <keyfile>?"
        );
    }
}
