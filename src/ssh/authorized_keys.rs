//! OpenSSH `authorized_keys` files for the proxy's SSH front end: where a user's file is
//! (`authorized_keys_file` patterns), reading it with a size bound, parsing its lines and
//! deciding which key lines may be used (options the front end cannot honour skip the line).

use std::io::Read;
use std::path::{Path, PathBuf};

use log::warn;
use russh::keys::PublicKey;

/// Largest authorized_keys file read; a bigger one is refused (logged) rather than read.
pub const AUTHORIZED_KEYS_MAX: u64 = 1024 * 1024;

/// Looks `user` up and checks `key` against their authorized keys file.
pub(super) fn check_user_key(pattern: &str, user: &str, key: &PublicKey) -> Result<(), String> {
    let account = nix::unistd::User::from_name(user)
        .map_err(|e| format!("looking up the user: {e}"))?
        .ok_or_else(|| "no such user".to_string())?;
    let path = expand_pattern(pattern, user, &account.dir)?;
    let text = read_bounded(&path)?;
    if authorized_key_matches(&text, key, &path) {
        Ok(())
    } else {
        Err(format!("not in {}", path.display()))
    }
}

/// Expands an `authorized_keys_file` pattern: `%u` user name, `%h` home, `%%` a `%`. A relative
/// result is relative to the home directory.
pub fn expand_pattern(pattern: &str, user: &str, home: &Path) -> Result<PathBuf, String> {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(user),
            Some('h') => out.push_str(&home.to_string_lossy()),
            Some('%') => out.push('%'),
            Some(other) => return Err(format!("%{other} in {pattern:?} is not known")),
            None => return Err(format!("{pattern:?} ends with a lone %")),
        }
    }
    let path = PathBuf::from(out);
    Ok(if path.is_absolute() {
        path
    } else {
        home.join(path)
    })
}

/// Reads `path`, refusing (with a log line) a file over [`AUTHORIZED_KEYS_MAX`] bytes.
fn read_bounded(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(AUTHORIZED_KEYS_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > AUTHORIZED_KEYS_MAX {
        warn!(
            "{} is larger than {AUTHORIZED_KEYS_MAX} bytes; not used",
            path.display()
        );
        return Err(format!("{}: too large", path.display()));
    }
    Ok(text)
}

/// `authorized_keys` options a key line may carry and still be used. They all deny or permit
/// things the front end never allows anyway (pty, forwarding, X11, agent, user rc, tunnels,
/// environment), so honouring "nothing else" is honouring them.
pub const HARMLESS_OPTIONS: &[&str] = &[
    "restrict",
    "no-agent-forwarding",
    "no-port-forwarding",
    "no-pty",
    "no-user-rc",
    "no-x11-forwarding",
    "agent-forwarding",
    "port-forwarding",
    "pty",
    "user-rc",
    "x11-forwarding",
    "permitopen",
    "permitlisten",
    "environment",
    "tunnel",
];

/// Whether `key` is listed in the authorized_keys `text` (from `path`, for log lines).
///
/// Lines are OpenSSH `authorized_keys` lines; blank lines, `#` comments and lines that do not
/// parse are skipped. A key line with options is used only if every option is one of those the
/// front end already enforces by refusing the feature ([`HARMLESS_OPTIONS`]: `restrict`,
/// `no-pty`, `no-port-forwarding`, `permitopen=...`, ...). A line with any other option —
/// `command="..."`, `from="..."`, `expiry-time=...`, `principals=...`, `cert-authority`,
/// `verify-required`, `no-touch-required`, or one not known — is skipped with a warning, because
/// the front end would not honour the restriction it asks for.
pub fn authorized_key_matches(text: &str, key: &PublicKey, path: &Path) -> bool {
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((options, listed)) = parse_key_line(line) else {
            continue;
        };
        if listed.key_data() != key.key_data() {
            continue;
        }
        let refused: Vec<&str> = options
            .iter()
            .map(String::as_str)
            .filter(|opt| {
                let name = opt.split('=').next().unwrap_or(opt).to_ascii_lowercase();
                !HARMLESS_OPTIONS.contains(&name.as_str())
            })
            .collect();
        if refused.is_empty() {
            return true;
        }
        warn!(
            "{} line {}: key skipped: option(s) {} not supported by fasp-proxy",
            path.display(),
            number + 1,
            refused.join(", ")
        );
    }
    false
}

/// Splits an authorized_keys line into its options and its key: `[options ]type base64
/// [comment]`, where options are comma-separated and may hold quoted text with spaces and
/// commas. `None` if no key can be read.
fn parse_key_line(line: &str) -> Option<(Vec<String>, PublicKey)> {
    if let Ok(key) = line.parse::<PublicKey>() {
        return Some((Vec::new(), key));
    }
    let mut options = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut rest = None;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            current.push(c);
            continue;
        }
        match c {
            '\\' if quoted => {
                escaped = true;
                current.push(c);
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => options.push(std::mem::take(&mut current)),
            c if c.is_whitespace() && !quoted => {
                rest = Some(&line[i..]);
                break;
            }
            c => current.push(c),
        }
    }
    options.push(current);
    let key = rest?.trim_start().parse::<PublicKey>().ok()?;
    if options.iter().any(String::is_empty) {
        return None;
    }
    Some((options, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIM8OrbWNety+QMjGcOgPT8OsHjjEOD0IaJlsKRJqUhPR";
    const K2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIDQ7xwkWbcMd4TvQBOHU3CeL81HjPgqNEhw23bS549tj";

    fn key(b64: &str) -> PublicKey {
        format!("ssh-ed25519 {b64}").parse().unwrap()
    }

    fn matches(text: &str, b64: &str) -> bool {
        authorized_key_matches(text, &key(b64), Path::new("test"))
    }

    #[test]
    fn plain_lines_comments_and_garbage() {
        let text =
            format!("# comment\n\n   \nnot a key\nssh-rsa AAAA broken\nssh-ed25519 {K1} me@host\n");
        assert!(matches(&text, K1));
        assert!(!matches(&text, K2));
        assert!(!matches("", K1));
        // A comment line holding the key does not count.
        assert!(!matches(&format!("# ssh-ed25519 {K1}\n"), K1));
        // A comment with spaces after the key.
        assert!(matches(&format!("ssh-ed25519 {K1} my laptop key\n"), K1));
    }

    #[test]
    fn harmless_options_are_accepted() {
        for opts in [
            "restrict",
            "no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-user-rc",
            "restrict,permitopen=\"localhost:1\",environment=\"A=b c\"",
        ] {
            assert!(
                matches(&format!("{opts} ssh-ed25519 {K1} c\n"), K1),
                "{opts}"
            );
        }
    }

    #[test]
    fn options_not_honoured_skip_the_key() {
        for opts in [
            "command=\"/bin/true\"",
            "restrict,command=\"ascp --server\"",
            "from=\"192.0.2.0/24\"",
            "expiry-time=\"20300101\"",
            "cert-authority",
            "principals=\"a\"",
            "verify-required",
            "made-up-option",
        ] {
            assert!(
                !matches(&format!("{opts} ssh-ed25519 {K1}\n"), K1),
                "{opts}"
            );
        }
        // A later line for the same key without options still counts.
        let text = format!("command=\"/bin/true\" ssh-ed25519 {K1}\nssh-ed25519 {K1}\n");
        assert!(matches(&text, K1));
    }

    #[test]
    fn options_with_quoted_spaces_and_commas() {
        let line = format!("from=\"a,b\",command=\"echo \\\"x y\\\"\" ssh-ed25519 {K1} c d");
        let (options, listed) = parse_key_line(&line).unwrap();
        assert_eq!(
            options,
            vec![
                "from=\"a,b\"".to_string(),
                "command=\"echo \\\"x y\\\"\"".to_string()
            ]
        );
        assert_eq!(listed.key_data(), key(K1).key_data());
        assert!(parse_key_line("restrict").is_none());
        assert!(parse_key_line(&format!("restrict,,pty ssh-ed25519 {K1}")).is_none());
    }

    #[test]
    fn pattern_expansion() {
        let home = Path::new("/home/alice");
        let p = |pattern: &str| expand_pattern(pattern, "alice", home);
        assert_eq!(
            p("%h/.ssh/authorized_keys").unwrap(),
            PathBuf::from("/home/alice/.ssh/authorized_keys")
        );
        assert_eq!(p("/etc/keys/%u").unwrap(), PathBuf::from("/etc/keys/alice"));
        assert_eq!(
            p("/etc/100%%/%u").unwrap(),
            PathBuf::from("/etc/100%/alice")
        );
        assert_eq!(
            p(".ssh/keys").unwrap(),
            PathBuf::from("/home/alice/.ssh/keys")
        );
        assert!(p("/etc/%x").is_err());
        assert!(p("/etc/%").is_err());
    }

    #[test]
    fn oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'#'; AUTHORIZED_KEYS_MAX as usize + 1]).unwrap();
        assert!(read_bounded(&path).is_err());
        std::fs::write(&path, b"# small\n").unwrap();
        assert_eq!(read_bounded(&path).unwrap(), "# small\n");
    }
}
