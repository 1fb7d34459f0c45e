//! Command shapes: which remote commands a client may run as an opaque session (IBM's own
//! `ascp -S. -V1` and its kin, bridged byte for byte to the internal server).
//!
//! A shape is a list of words. A literal word matches itself; `{n}` matches one decimal number
//! (1–10 digits) and `{arg}` one argument made of letters, digits and `._:/@=+,-` that does
//! not start with `-`. A command matches when it splits (on single spaces, no quoting, no
//! shell) into exactly as many words, each matching. Only the characters above (and spaces)
//! can ever pass, so an accepted command holds nothing a shell on the internal server would
//! read as syntax.

use std::fmt;

/// IBM's command shapes, as IBM's own `aspshell` allows them in restricted mode.
pub const IBM_COMMANDS: &[&str] = &[
    "ascp -S. -V1",
    "ascp4 -S.",
    "ascp --no-mgmt-port-files -M {n} -S. -V1 {arg}",
    "async -q -S -s-",
    "ascmd",
];

/// One word of a [`CommandShape`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    Literal(String),
    Number,
    Arg,
}

/// An allowed command, parsed from its text form (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandShape {
    text: String,
    words: Vec<Word>,
}

fn safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._:/@=+,-".contains(c)
}

fn is_arg(word: &str) -> bool {
    !word.is_empty() && !word.starts_with('-') && word.chars().all(safe_char)
}

fn is_number(word: &str) -> bool {
    (1..=10).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_digit())
}

impl CommandShape {
    /// Parses a shape; the error says which word is wrong and why.
    pub fn parse(text: &str) -> Result<CommandShape, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("the command is empty".into());
        }
        let mut words = Vec::new();
        for word in trimmed.split_ascii_whitespace() {
            words.push(match word {
                "{n}" => Word::Number,
                "{arg}" => Word::Arg,
                w if w.contains('{') || w.contains('}') => {
                    return Err(format!(
                        "\"{w}\": the only placeholders are {{n}} (a number) and {{arg}} (one argument)"
                    ))
                }
                w => match w.chars().find(|&c| !safe_char(c)) {
                    Some(bad) => {
                        return Err(format!(
                            "\"{w}\": {bad:?} is not allowed; words hold only letters, digits and ._:/@=+,-"
                        ))
                    }
                    None => Word::Literal(w.to_string()),
                },
            });
        }
        if !matches!(words.first(), Some(Word::Literal(_))) {
            return Err("the first word must be the program's name".into());
        }
        Ok(CommandShape {
            text: words
                .iter()
                .map(|w| match w {
                    Word::Literal(l) => l.as_str(),
                    Word::Number => "{n}",
                    Word::Arg => "{arg}",
                })
                .collect::<Vec<_>>()
                .join(" "),
            words,
        })
    }

    /// IBM's shapes ([`IBM_COMMANDS`]).
    pub fn ibm() -> Vec<CommandShape> {
        IBM_COMMANDS
            .iter()
            .filter_map(|c| CommandShape::parse(c).ok())
            .collect()
    }

    /// Whether `command` (exactly as the client sent it) has this shape.
    pub fn matches(&self, command: &str) -> bool {
        let words: Vec<&str> = command.split(' ').collect();
        words.len() == self.words.len()
            && words.iter().zip(&self.words).all(|(got, want)| match want {
                Word::Literal(l) => got == l,
                Word::Number => is_number(got),
                Word::Arg => is_arg(got),
            })
    }

    /// The program the command runs (its first word).
    pub fn program(&self) -> &str {
        match self.words.first() {
            Some(Word::Literal(l)) => l,
            _ => "",
        }
    }
}

impl fmt::Display for CommandShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibm_shapes_match_what_ibm_clients_send_and_nothing_else() {
        let shapes = CommandShape::ibm();
        assert_eq!(shapes.len(), IBM_COMMANDS.len());
        let any = |c: &str| shapes.iter().any(|s| s.matches(c));
        for ok in [
            "ascp -S. -V1",
            "ascp4 -S.",
            "ascp --no-mgmt-port-files -M 4 -S. -V1 x",
            "ascp --no-mgmt-port-files -M 33001 -S. -V1 a.b/c",
            "async -q -S -s-",
            "ascmd",
        ] {
            assert!(any(ok), "{ok}");
        }
        for bad in [
            "ascp -S. -V1 ",
            " ascp -S. -V1",
            "ascp  -S. -V1",
            "ascp -S. -V1; id",
            "ascp -S. -V1 && id",
            "ascp -S.\t-V1",
            "ascp --no-mgmt-port-files -M x -S. -V1 y",
            "ascp --no-mgmt-port-files -M 4 -S. -V1 -e",
            "ascp --no-mgmt-port-files -M 4 -S. -V1 $(id)",
            "ascp --no-mgmt-port-files -M 12345678901 -S. -V1 x",
            "ascp --server",
            "ascmd -x",
            "",
        ] {
            assert!(!any(bad), "{bad:?}");
        }
    }

    #[test]
    fn bad_shapes_are_refused_with_the_word() {
        assert!(CommandShape::parse("").is_err());
        let e = CommandShape::parse("ascp -S. ; id").unwrap_err();
        assert!(e.contains("\";\""), "{e}");
        let e = CommandShape::parse("ascp {x}").unwrap_err();
        assert!(e.contains("{n}"), "{e}");
        assert!(CommandShape::parse("{arg} x").is_err());
        let s = CommandShape::parse("  myxfer   -q {n} ").unwrap();
        assert_eq!(s.to_string(), "myxfer -q {n}");
        assert_eq!(s.program(), "myxfer");
        assert!(s.matches("myxfer -q 7"));
    }
}
