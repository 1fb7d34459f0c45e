//! One `ascmd` command line: read with a bound, split into words, checked into a [`Command`].
//!
//! A line is `as_NAME` and its arguments, separated by spaces or tabs. An argument may be
//! quoted with `"` or `'` (the quote marks are removed; quoted and unquoted parts next to each
//! other make one word, as in a shell), and `\` takes the next byte literally anywhere, inside
//! quotes too (`"a \"b\" \\ c"` is `a "b" \ c`). Bad input (an unclosed quote, a trailing `\`,
//! too many words, a line over [`MAX_LINE`] bytes, an unknown command, the wrong number of
//! arguments) is an error message for an `error` reply, never a panic, and memory never grows
//! past [`MAX_LINE`] however long the line.

use std::io::{self, BufRead};

/// Longest command line kept, in bytes (a longer one is read to its end and refused).
pub const MAX_LINE: usize = 64 * 1024;

/// Most words on one line (the command included).
pub const MAX_WORDS: usize = 64;

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `as_session_init [--protocol=N] [--host=H]`: the first line of an `ascmd -V2` session.
    SessionInit {
        /// `--protocol=N`.
        protocol: Option<u64>,
        /// `--host=H` (the host the client meant, for proxies).
        host: Option<String>,
    },
    /// `as_ls [-f PATTERN]... PATH`: a directory's entries, or one file's attributes.
    Ls {
        /// Only names matching one of these (`*`, `?`, `[...]`, `\` escapes); all if empty.
        filters: Vec<String>,
        /// The path.
        path: String,
    },
    /// `as_du PATH`: bytes, files and directories beneath a path.
    Du(String),
    /// `as_mkdir PATH`: one directory.
    Mkdir(String),
    /// `as_mv FROM TO`: rename.
    Mv(String, String),
    /// `as_cp FROM TO`: copy a file or a directory tree.
    Cp(String, String),
    /// `as_rm PATH`: a file, or a directory and everything in it.
    Rm(String),
    /// `as_md5sum PATH`: a file's MD5 digest.
    Md5sum(String),
    /// `as_df [PATH]`: space on the file system holding PATH, or on every mount.
    Df(Option<String>),
    /// `as_info`: the server's `info` again.
    Info,
    /// `as_exit`: end the session (nothing is written).
    Exit,
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line (without its `\n` or `\r\n`) is in the buffer.
    Line,
    /// The line was longer than [`MAX_LINE`]; it was read to its end and dropped.
    TooLong,
    /// End of input, nothing read.
    Eof,
}

/// Reads one line into `buf` (cleared first), keeping at most [`MAX_LINE`] bytes. A last line
/// without `\n` counts as a line.
pub fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > MAX_LINE {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        r.consume(if done { take + 1 } else { take });
        if done {
            break;
        }
    }
    if too_long {
        return Ok(Line::TooLong);
    }
    if !any {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Line::Line)
}

/// Splits a line into words (quotes and `\` as the module says).
pub fn split_words(line: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut words: Vec<Vec<u8>> = Vec::new();
    let mut word: Option<Vec<u8>> = None;
    let mut quote: Option<u8> = None;
    let mut bytes = line.iter().copied();
    while let Some(b) = bytes.next() {
        match (b, quote) {
            (b'\\', _) => {
                let next = bytes
                    .next()
                    .ok_or_else(|| "the line ends with a lone \\".to_string())?;
                word.get_or_insert_with(Vec::new).push(next);
            }
            (q, Some(open)) if q == open => quote = None,
            (_, Some(_)) => word.get_or_insert_with(Vec::new).push(b),
            (b'"' | b'\'', None) => {
                quote = Some(b);
                word.get_or_insert_with(Vec::new);
            }
            (b' ' | b'\t', None) => {
                if let Some(w) = word.take() {
                    if words.len() == MAX_WORDS {
                        return Err(format!("more than {MAX_WORDS} words on one line"));
                    }
                    words.push(w);
                }
            }
            (_, None) => word.get_or_insert_with(Vec::new).push(b),
        }
    }
    if let Some(q) = quote {
        return Err(format!("unclosed {} quote", q as char));
    }
    if let Some(w) = word {
        if words.len() == MAX_WORDS {
            return Err(format!("more than {MAX_WORDS} words on one line"));
        }
        words.push(w);
    }
    Ok(words)
}

fn utf8(word: Vec<u8>) -> Result<String, String> {
    String::from_utf8(word).map_err(|e| {
        format!(
            "argument {:?} is not UTF-8",
            String::from_utf8_lossy(e.as_bytes())
        )
    })
}

fn arity(name: &str, args: &[String], want: usize) -> Result<(), String> {
    if args.len() == want {
        return Ok(());
    }
    let what = if want == 1 { "path" } else { "paths" };
    Err(format!("{name} takes {want} {what}, {} given", args.len()))
}

/// Parses one line; `Ok(None)` for a blank line (nothing to answer).
pub fn parse(line: &[u8]) -> Result<Option<Command>, String> {
    let mut words = split_words(line)?.into_iter();
    let Some(name) = words.next() else {
        return Ok(None);
    };
    let name = String::from_utf8_lossy(&name).into_owned();
    let args: Vec<String> = words.map(utf8).collect::<Result<_, _>>()?;
    let one = |args: Vec<String>| -> Result<String, String> {
        arity(&name, &args, 1)?;
        Ok(args.into_iter().next().unwrap_or_default())
    };
    let two = |args: Vec<String>| -> Result<(String, String), String> {
        arity(&name, &args, 2)?;
        let mut it = args.into_iter();
        Ok((it.next().unwrap_or_default(), it.next().unwrap_or_default()))
    };
    let command = match name.as_str() {
        "as_ls" => {
            let mut filters = Vec::new();
            let mut paths = Vec::new();
            let mut it = args.into_iter();
            while let Some(a) = it.next() {
                if a == "-f" {
                    filters.push(
                        it.next()
                            .ok_or_else(|| "as_ls: -f needs a pattern".to_string())?,
                    );
                } else {
                    paths.push(a);
                }
            }
            Command::Ls {
                filters,
                path: one(paths)?,
            }
        }
        "as_du" => Command::Du(one(args)?),
        "as_mkdir" => Command::Mkdir(one(args)?),
        "as_rm" => Command::Rm(one(args)?),
        "as_md5sum" => Command::Md5sum(one(args)?),
        "as_mv" => {
            let (a, b) = two(args)?;
            Command::Mv(a, b)
        }
        "as_cp" => {
            let (a, b) = two(args)?;
            Command::Cp(a, b)
        }
        "as_df" => {
            if args.len() > 1 {
                return Err(format!("as_df takes at most 1 path, {} given", args.len()));
            }
            Command::Df(args.into_iter().next())
        }
        "as_info" => Command::Info,
        "as_exit" => Command::Exit,
        "as_session_init" => {
            let (mut protocol, mut host) = (None, None);
            for a in args {
                if let Some(v) = a.strip_prefix("--protocol=") {
                    protocol = Some(
                        v.parse()
                            .map_err(|_| format!("as_session_init: bad --protocol={v}"))?,
                    );
                } else if let Some(v) = a.strip_prefix("--host=") {
                    host = Some(v.to_string());
                }
                // Other options are IBM's and change nothing here.
            }
            Command::SessionInit { protocol, host }
        }
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(format!("unknown command {shown:?}"));
        }
    };
    Ok(Some(command))
}

/// Quotes `arg` for a command line (`"…"`, with `"` and `\` escaped), as clients write them.
pub fn quote(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Whether `name` matches a `-f` pattern: `*` any run of bytes, `?` one byte, `[abc]`,
/// `[a-z]` and `[!abc]` a set, `\` the next byte literally. Iterative, linear in practice.
pub fn matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    // Where to go back to after the last `*`: (pattern index after it, name index).
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p + 1, n));
                    p += 1;
                    continue;
                }
                b'?' => Some(p + 1),
                b'[' => match set(pattern, p, name[n]) {
                    Some((true, end)) => Some(end),
                    Some((false, _)) => None,
                    // An unclosed `[` is a plain byte.
                    None => (name[n] == b'[').then_some(p + 1),
                },
                b'\\' if p + 1 < pattern.len() => (name[n] == pattern[p + 1]).then_some(p + 2),
                c => (name[n] == c).then_some(p + 1),
            }
        } else {
            None
        };
        match step {
            Some(next) => {
                p = next;
                n += 1;
            }
            None => match star {
                Some((sp, sn)) => {
                    p = sp;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The set starting at `pattern[start] == b'['`: whether `c` is in it and the index after
/// its `]`; `None` when it is not closed.
fn set(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut found = false;
    let mut first = true;
    loop {
        let b = *pattern.get(i)?;
        if b == b']' && !first {
            return Some((found != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&e| e != b']') {
            let hi = pattern[i + 2];
            found |= (b..=hi).contains(&c);
            i += 3;
        } else {
            found |= b == c;
            i += 1;
        }
    }
}

/// `name` as a `-f` pattern that matches only itself.
pub fn literal_pattern(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        split_words(s.as_bytes())
            .unwrap()
            .into_iter()
            .map(|w| String::from_utf8(w).unwrap())
            .collect()
    }

    #[test]
    fn words_quotes_and_escapes() {
        assert_eq!(words("as_ls /a"), ["as_ls", "/a"]);
        assert_eq!(words("  as_mv\t\"a b\"   'c d'  "), ["as_mv", "a b", "c d"]);
        assert_eq!(words(r#"as_ls "a \"b\" \\ c""#), ["as_ls", r#"a "b" \ c"#]);
        assert_eq!(words(r"as_ls a\ b"), ["as_ls", "a b"]);
        assert_eq!(words(r#"as_ls 'it"s'"#), ["as_ls", "it\"s"]);
        assert_eq!(words(r"as_ls 'a\'b'"), ["as_ls", "a'b"]);
        assert_eq!(words(r#"as_ls a"b c"d"#), ["as_ls", "ab cd"]);
        assert_eq!(words(r#"as_ls """#), ["as_ls", ""]);
        assert_eq!(words(""), Vec::<String>::new());
        assert!(split_words(br#"as_ls "a"#)
            .unwrap_err()
            .contains("unclosed"));
        assert!(split_words(b"as_ls 'a").unwrap_err().contains("unclosed"));
        assert!(split_words(b"as_ls a\\").unwrap_err().contains("lone"));
        let many = format!("as_ls{}", " x".repeat(MAX_WORDS));
        assert!(split_words(many.as_bytes())
            .unwrap_err()
            .contains("more than"));
        let just = format!("as_ls{}", " x".repeat(MAX_WORDS - 1));
        assert_eq!(split_words(just.as_bytes()).unwrap().len(), MAX_WORDS);
    }

    #[test]
    fn commands() {
        let p = |s: &str| parse(s.as_bytes());
        assert_eq!(
            p(r#"as_ls "/a b""#),
            Ok(Some(Command::Ls {
                filters: vec![],
                path: "/a b".into()
            }))
        );
        assert_eq!(
            p("as_ls -f *.txt -f *.bin /"),
            Ok(Some(Command::Ls {
                filters: vec!["*.txt".into(), "*.bin".into()],
                path: "/".into()
            }))
        );
        assert_eq!(
            p("as_mv a b"),
            Ok(Some(Command::Mv("a".into(), "b".into())))
        );
        assert_eq!(
            p("as_cp a b"),
            Ok(Some(Command::Cp("a".into(), "b".into())))
        );
        assert_eq!(p("as_rm x"), Ok(Some(Command::Rm("x".into()))));
        assert_eq!(p("as_du x"), Ok(Some(Command::Du("x".into()))));
        assert_eq!(p("as_mkdir x"), Ok(Some(Command::Mkdir("x".into()))));
        assert_eq!(p("as_md5sum x"), Ok(Some(Command::Md5sum("x".into()))));
        assert_eq!(p("as_df"), Ok(Some(Command::Df(None))));
        assert_eq!(p("as_df /"), Ok(Some(Command::Df(Some("/".into())))));
        assert_eq!(p("as_info"), Ok(Some(Command::Info)));
        assert_eq!(p("as_exit"), Ok(Some(Command::Exit)));
        assert_eq!(p("   "), Ok(None));
        assert_eq!(
            p("as_session_init --protocol=2 --host=files.example.com"),
            Ok(Some(Command::SessionInit {
                protocol: Some(2),
                host: Some("files.example.com".into())
            }))
        );
        assert!(p("as_session_init --protocol=x").is_err());
        assert_eq!(p("as_mv a").unwrap_err(), "as_mv takes 2 paths, 1 given");
        assert_eq!(p("as_rm").unwrap_err(), "as_rm takes 1 path, 0 given");
        assert_eq!(p("as_ls a b").unwrap_err(), "as_ls takes 1 path, 2 given");
        assert!(p("as_ls -f").unwrap_err().contains("pattern"));
        assert!(p("as_df a b").is_err());
        assert_eq!(p("rm -rf /").unwrap_err(), "unknown command \"rm\"");
        assert!(parse(b"as_ls \xff").unwrap_err().contains("UTF-8"));
        assert!(parse(b"\xff\xfe").unwrap_err().contains("unknown command"));
    }

    #[test]
    fn quote_round_trips() {
        for s in ["plain", "a b", r#"q"uote"#, r"back\slash", "", "'single'"] {
            let line = format!("as_rm {}", quote(s));
            assert_eq!(
                parse(line.as_bytes()),
                Ok(Some(Command::Rm(s.into()))),
                "{line}"
            );
        }
    }

    #[test]
    fn reading_lines_is_bounded() {
        let input = b"as_ls /\r\nas_exit\nlast".to_vec();
        let mut r = io::BufReader::with_capacity(3, &input[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), Line::Line);
        assert_eq!(buf, b"as_ls /");
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), Line::Line);
        assert_eq!(buf, b"as_exit");
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), Line::Line);
        assert_eq!(buf, b"last");
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), Line::Eof);

        // A 1 MiB line: refused, never held, and the next line still reads.
        let mut input = b"as_ls ".to_vec();
        input.extend(std::iter::repeat_n(b'a', 1024 * 1024));
        input.extend_from_slice(b"\nas_info\n");
        let mut r = io::BufReader::new(&input[..]);
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), Line::TooLong);
        assert!(
            buf.capacity() <= 2 * MAX_LINE,
            "held {} bytes",
            buf.capacity()
        );
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), Line::Line);
        assert_eq!(buf, b"as_info");
        // Exactly MAX_LINE is fine.
        let input = vec![b'x'; MAX_LINE];
        let mut r = io::BufReader::new(&input[..]);
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), Line::Line);
        assert_eq!(buf.len(), MAX_LINE);
    }

    #[test]
    fn junk_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5000 {
            let len = (seed % 40) as usize;
            let mut line = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                line.push(b" \t\"'\\as_lmvrf-x\xff"[(seed % 16) as usize]);
            }
            let _ = parse(&line);
        }
    }

    #[test]
    fn patterns() {
        assert!(matches(b"*.txt", b"a.txt"));
        assert!(matches(b"*.txt", b".txt"));
        assert!(!matches(b"*.txt", b"a.txt.gz"));
        assert!(matches(b"a?c", b"abc"));
        assert!(!matches(b"a?c", b"ac"));
        assert!(matches(b"*", b""));
        assert!(matches(b"[ab]*", b"beta"));
        assert!(!matches(b"[!ab]*", b"beta"));
        assert!(matches(b"[a-c]x", b"bx"));
        assert!(matches(b"[]]", b"]"));
        assert!(matches(b"[", b"["));
        assert!(matches(b"a*b*c", b"aXXbYYc"));
        assert!(!matches(b"a*b*c", b"aXXbYY"));
        assert!(matches(br"\*", b"*"));
        assert!(!matches(br"\*", b"x"));
        for name in ["a*b", "[x]", "q?", r"back\slash", "plain"] {
            let p = literal_pattern(name);
            assert!(matches(p.as_bytes(), name.as_bytes()), "{p}");
        }
        assert!(!matches(literal_pattern("a*").as_bytes(), b"ab"));
        // Many stars on a long name stay fast.
        let name = vec![b'a'; 4096];
        assert!(!matches(b"*a*a*a*a*a*a*b", &name));
    }
}
