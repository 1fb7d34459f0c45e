//! Showing untrusted text (a command line, an account name) on one printable line.

use std::fmt::Write;

/// Escapes everything but printable ASCII: `\n`, `\r`, `\t`, `\\` for a backslash, `\xNN` for
/// other ASCII control bytes and bytes that are not UTF-8, `\u{…}` for other characters. The
/// result is one line holding only printable ASCII, so it cannot break a log line or move a
/// terminal's cursor, and different inputs never look alike.
pub fn escape(bytes: &[u8]) -> String {
    escape_capped(bytes, usize::MAX)
}

/// Like [`escape`], but stops after `max` input bytes and then says how long the input was.
pub fn escape_capped(bytes: &[u8], max: usize) -> String {
    let shown = &bytes[..bytes.len().min(max)];
    let mut out = String::with_capacity(shown.len());
    for chunk in shown.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                ' '..='~' => out.push(c),
                c if c.is_ascii() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    if shown.len() < bytes.len() {
        let _ = write!(out, "… ({} bytes)", bytes.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_passes_and_the_rest_is_escaped() {
        assert_eq!(escape(b"ascp --server"), "ascp --server");
        assert_eq!(escape(b"a $(id) `x` | > ; &"), "a $(id) `x` | > ; &");
        assert_eq!(escape(b"a\nb\r\tc\\d"), "a\\nb\\r\\tc\\\\d");
        assert_eq!(escape(b"\x1b[2J\x00\x7f"), "\\x1b[2J\\x00\\x7f");
        assert_eq!(escape("é\u{202e}".as_bytes()), "\\u{e9}\\u{202e}");
        assert_eq!(escape(b"\xff\xfeok"), "\\xff\\xfeok");
        // The escaped form of a backslash sequence differs from the escaped control character.
        assert_ne!(escape(b"\\n"), escape(b"\n"));
    }

    #[test]
    fn capped_says_how_long_the_input_was() {
        assert_eq!(escape_capped(b"abcdef", 3), "abc… (6 bytes)");
        assert_eq!(escape_capped(b"abc", 3), "abc");
        // A cut inside a multi-byte character shows the cut bytes, never panics.
        assert_eq!(escape_capped("é".as_bytes(), 1), "\\xc3… (2 bytes)");
    }
}
