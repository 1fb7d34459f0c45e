//! Host keys in an OpenSSH `known_hosts` file: which keys are recorded for a server (plain,
//! wildcard, negated and hashed names; `@revoked` lines), whether the key a server offers is
//! known, unknown or changed, and recording keys (`fasp-proxy trust-host`): the file is
//! rewritten atomically, mode 0644, every other line kept as it was.
//!
//! Pure file handling: the SSH side (fetching the keys a server offers) is in
//! [`super::client`].

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PublicKey};

/// The name a server is recorded under and looked up by: `host` on port 22, `[host]:port` on
/// any other (as OpenSSH does; an IPv6 address goes inside the brackets bare).
pub fn known_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// A key's SHA-256 fingerprint, `SHA256:…`, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// A key as `ssh-keygen -lf` prints a known_hosts line: `256 SHA256:… NAME (ED25519)`.
pub fn describe(key: &PublicKey, name: &str) -> String {
    let (bits, kind) = size_and_kind(key);
    format!("{bits} {} {name} ({kind})", fingerprint(key))
}

/// The key's size in bits and its kind as ssh-keygen names it (`ED25519`, `ECDSA`, `RSA`).
fn size_and_kind(key: &PublicKey) -> (u32, String) {
    match key.algorithm() {
        Algorithm::Ed25519 => (256, "ED25519".into()),
        Algorithm::Ecdsa { curve } => (
            match curve {
                EcdsaCurve::NistP256 => 256,
                EcdsaCurve::NistP384 => 384,
                EcdsaCurve::NistP521 => 521,
            },
            "ECDSA".into(),
        ),
        Algorithm::Rsa { .. } => (
            key.key_data().rsa().map_or(0, |k| k.key_size()),
            "RSA".into(),
        ),
        Algorithm::Dsa => (1024, "DSA".into()),
        Algorithm::SkEd25519 => (256, "ED25519-SK".into()),
        Algorithm::SkEcdsaSha2NistP256 => (256, "ECDSA-SK".into()),
        other => (0, other.as_str().to_ascii_uppercase()),
    }
}

/// The kind of a key for messages: `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`.
pub fn kind(key: &PublicKey) -> String {
    key.algorithm().as_str().to_string()
}

/// Why a known_hosts file could not be read or written, or a key not recorded.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The file exists but cannot be read.
    #[error("cannot read {}: {why}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The new file could not be written or put in place.
    #[error("cannot write {}: {why}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Another key of the same kind is recorded for the server.
    #[error(
        "{} line {line} records another key of this kind for {name} ({recorded}), the server \
         offers {offered}: if the server's key was changed on purpose, rerun with --replace",
        path.display()
    )]
    Conflict {
        /// The file.
        path: PathBuf,
        /// The line (from 1).
        line: usize,
        /// The server's known_hosts name.
        name: String,
        /// The recorded key's fingerprint.
        recorded: String,
        /// The offered key's fingerprint.
        offered: String,
    },
    /// The offered key is marked `@revoked`.
    #[error(
        "{} line {line} marks the key {fingerprint} as revoked: not recorded for {name}",
        path.display()
    )]
    Revoked {
        /// The file.
        path: PathBuf,
        /// The line (from 1).
        line: usize,
        /// The server's known_hosts name.
        name: String,
        /// The key's fingerprint.
        fingerprint: String,
    },
    /// A key to replace is recorded through a wildcard pattern, which cannot be narrowed.
    #[error(
        "{} line {line} names {name} through the pattern {pattern:?}, with another {kind} key: \
         edit that line by hand",
        path.display()
    )]
    Pattern {
        /// The file.
        path: PathBuf,
        /// The line (from 1).
        line: usize,
        /// The server's known_hosts name.
        name: String,
        /// The pattern.
        pattern: String,
        /// The key kind.
        kind: String,
    },
}

/// One key recorded for a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Its line in the file, from 1.
    pub line: usize,
    /// The key.
    pub key: PublicKey,
    /// Whether the line is `@revoked` (the key must never be accepted).
    pub revoked: bool,
}

/// What the file says about the key a server offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded for the server.
    Known,
    /// No key of its kind is recorded for the server.
    Unknown,
    /// Another key of the same kind is recorded at `line`.
    Changed {
        /// The line, from 1.
        line: usize,
        /// The recorded key.
        recorded: PublicKey,
    },
    /// The key is marked `@revoked` at `line`.
    Revoked {
        /// The line, from 1.
        line: usize,
    },
}

/// Whether `a` and `b` are the same key (their comments aside).
pub fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

/// Decides on `offered` from the keys recorded for its server: a revoked key is refused
/// whatever else is recorded; a key recorded is known; another key of the same kind recorded
/// means it changed; otherwise it is unknown. Comments do not count.
pub fn check(recorded: &[Recorded], offered: &PublicKey) -> Verdict {
    if let Some(r) = recorded
        .iter()
        .find(|r| r.revoked && same_key(&r.key, offered))
    {
        return Verdict::Revoked { line: r.line };
    }
    let live = || recorded.iter().filter(|r| !r.revoked);
    if live().any(|r| same_key(&r.key, offered)) {
        return Verdict::Known;
    }
    match live().find(|r| r.key.algorithm() == offered.algorithm()) {
        Some(r) => Verdict::Changed {
            line: r.line,
            recorded: r.key.clone(),
        },
        None => Verdict::Unknown,
    }
}

/// What recording one key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recording {
    /// It was recorded already; nothing changed.
    AlreadyKnown,
    /// A new line was added.
    Added,
    /// A new line was added and the conflicting key(s) of the same kind at these lines removed
    /// for this name.
    Replaced(Vec<usize>),
}

/// One line of the file: its text as read, and the entry parsed from it (`None` for blank
/// lines, comments, and lines that are not a valid entry, all kept as they are).
#[derive(Debug, Clone)]
struct Line {
    text: String,
    entry: Option<Entry>,
    /// Taken out by a replacement: left out when written (kept until then, so line numbers
    /// stay what messages said).
    removed: bool,
}

/// How a line's host patterns name a server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Named {
    /// Not at all (or excluded by a `!` pattern).
    No,
    /// By the plain pattern at this index of the list.
    Exactly(usize),
    /// By a wildcard pattern.
    Pattern(String),
    /// By a hashed name (`|1|salt|hash`).
    Hashed,
}

/// A known_hosts file as read, to look keys up in and record keys into.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
    lines: Vec<Line>,
}

impl KnownHosts {
    /// Reads `path`; a file that does not exist is empty.
    pub fn read(path: &Path) -> Result<KnownHosts, TrustError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(TrustError::Read {
                    path: path.to_path_buf(),
                    why: e.to_string(),
                })
            }
        };
        Ok(KnownHosts::parse(path, &text))
    }

    /// The file `path` with contents `text`.
    pub fn parse(path: &Path, text: &str) -> KnownHosts {
        let lines = text
            .lines()
            .map(|l| Line {
                text: l.to_string(),
                entry: parse_entry(l),
                removed: false,
            })
            .collect();
        KnownHosts {
            path: path.to_path_buf(),
            lines,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every key recorded for `name` ([`known_name`]), in file order; `@cert-authority` lines
    /// are left out (the proxy checks plain host keys only).
    pub fn recorded(&self, name: &str) -> Vec<Recorded> {
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(i, line)| {
                let entry = line.entry.as_ref()?;
                if entry.marker() == Some(&Marker::CertAuthority) {
                    return None;
                }
                (names(entry.host_patterns(), name) != Named::No).then(|| Recorded {
                    line: i + 1,
                    key: entry.public_key().clone(),
                    revoked: entry.marker() == Some(&Marker::Revoked),
                })
            })
            .collect()
    }

    /// [`check`] of `offered` against the keys recorded for `name`.
    pub fn check(&self, name: &str, offered: &PublicKey) -> Verdict {
        check(&self.recorded(name), offered)
    }

    /// Records `key` for `name` (in memory; [`KnownHosts::write`] saves). A key recorded
    /// already changes nothing; a revoked one is refused; another key of the same kind is a
    /// conflict, unless `replace`, which takes `name` off those lines (the whole line when
    /// it names nothing else) before the new line is added.
    pub fn record(
        &mut self,
        name: &str,
        key: &PublicKey,
        replace: bool,
    ) -> Result<Recording, TrustError> {
        let recorded = self.recorded(name);
        match check(&recorded, key) {
            Verdict::Known => return Ok(Recording::AlreadyKnown),
            Verdict::Revoked { line } => {
                return Err(TrustError::Revoked {
                    path: self.path.clone(),
                    line,
                    name: name.to_string(),
                    fingerprint: fingerprint(key),
                })
            }
            Verdict::Changed { line, recorded } if !replace => {
                return Err(TrustError::Conflict {
                    path: self.path.clone(),
                    line,
                    name: name.to_string(),
                    recorded: fingerprint(&recorded),
                    offered: fingerprint(key),
                })
            }
            Verdict::Changed { .. } | Verdict::Unknown => {}
        }
        let conflicting: Vec<usize> = recorded
            .iter()
            .filter(|r| !r.revoked && r.key.algorithm() == key.algorithm())
            .map(|r| r.line)
            .collect();
        // Every conflicting line must be narrowable before any is changed.
        for &line in &conflicting {
            if let Some(Named::Pattern(pattern)) = self.lines[line - 1]
                .entry
                .as_ref()
                .map(|e| names(e.host_patterns(), name))
            {
                return Err(TrustError::Pattern {
                    path: self.path.clone(),
                    line,
                    name: name.to_string(),
                    pattern,
                    kind: kind(key),
                });
            }
        }
        for &line in &conflicting {
            self.take_name_off(line - 1, name);
        }
        let openssh = key.to_openssh().map_err(|e| TrustError::Write {
            path: self.path.clone(),
            why: format!("encoding the key: {e}"),
        })?;
        let text = format!("{name} {}", openssh.trim_end());
        self.lines.push(Line {
            entry: parse_entry(&text),
            text,
            removed: false,
        });
        Ok(if conflicting.is_empty() {
            Recording::Added
        } else {
            Recording::Replaced(conflicting)
        })
    }

    /// Takes `name` off line `index`: a plain pattern from its list, or the whole line when it
    /// names nothing else or names it by hash.
    fn take_name_off(&mut self, index: usize, name: &str) {
        let line = &mut self.lines[index];
        let Some(entry) = &line.entry else {
            return;
        };
        let rest: Option<Vec<String>> =
            match (entry.host_patterns(), names(entry.host_patterns(), name)) {
                (HostPatterns::Patterns(list), Named::Exactly(_)) => Some(
                    list.iter()
                        .filter(|p| !p.eq_ignore_ascii_case(name))
                        .cloned()
                        .collect(),
                ),
                _ => None,
            };
        match rest {
            Some(rest) if rest.iter().any(|p| !p.starts_with('!')) => {
                let marker = entry.marker().map(|m| format!("{m} ")).unwrap_or_default();
                let key = entry
                    .public_key()
                    .to_openssh()
                    .unwrap_or_default()
                    .trim_end()
                    .to_string();
                line.text = format!("{marker}{} {key}", rest.join(","));
                line.entry = parse_entry(&line.text);
            }
            _ => {
                line.removed = true;
                line.entry = None;
            }
        }
    }

    /// The file's text: every line as read (or changed), a newline after each.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for line in self.lines.iter().filter(|l| !l.removed) {
            out.push_str(&line.text);
            out.push('\n');
        }
        out
    }

    /// Writes the file atomically: a new file beside it (mode 0644), synced, then renamed over
    /// it, so a reader sees the old file or the new one, never half of one.
    pub fn write(&self) -> Result<(), TrustError> {
        let fail = |why: String| TrustError::Write {
            path: self.path.clone(),
            why,
        };
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| fail("not a file name".into()))?;
        let temp = dir.join(format!(".{file_name}.{}.new", std::process::id()));
        let written = (|| -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&temp)?;
            // The umask may have taken bits off.
            file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            file.write_all(self.text().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.path)?;
            // The rename itself reaches the disk with the directory.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            fail(e.to_string())
        })
    }
}

impl fmt::Display for KnownHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Parses one line; `None` for blank lines, comments and lines that are not a valid entry
/// (OpenSSH skips those too). Runs of spaces and tabs between fields count as one space.
fn parse_entry(line: &str) -> Option<Entry> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let normal = trimmed.split_whitespace().collect::<Vec<_>>().join(" ");
    normal.parse().ok()
}

/// How `patterns` name `name` (OpenSSH's rules: a matching `!pattern` excludes the name
/// whatever else matches; patterns and names compare without regard to case).
fn names(patterns: &HostPatterns, name: &str) -> Named {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
            if ring::hmac::verify(&key, name.as_bytes(), hash).is_ok() {
                Named::Hashed
            } else {
                Named::No
            }
        }
        HostPatterns::Patterns(list) => {
            let name = name.to_ascii_lowercase();
            let mut found = Named::No;
            for (i, pattern) in list.iter().enumerate() {
                let lower = pattern.to_ascii_lowercase();
                if let Some(negated) = lower.strip_prefix('!') {
                    if glob(negated.as_bytes(), name.as_bytes()) {
                        return Named::No;
                    }
                } else if found == Named::No && glob(lower.as_bytes(), name.as_bytes()) {
                    found = if lower.contains(['*', '?']) {
                        Named::Pattern(pattern.clone())
                    } else {
                        Named::Exactly(i)
                    };
                }
            }
            found
        }
    }
}

/// Whether `text` matches the wildcard `pattern` (`*` any run, `?` any one byte).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";
    const ED_C: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJkU9Q3T2iByynUD9+4ys5JsDND4obQJF7n1EsVAVfrJm+rHhK0gXsNCkxfbaDZFK/lyclLJHWqvxrVXIh/1EGE=";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn names_and_fingerprints_are_openssh_s() {
        assert_eq!(known_name("198.51.100.10", 22), "198.51.100.10");
        assert_eq!(known_name("198.51.100.10", 2222), "[198.51.100.10]:2222");
        assert_eq!(known_name("2001:db8::10", 2222), "[2001:db8::10]:2222");
        let d = describe(&key(ED_A), "198.51.100.10");
        assert!(d.starts_with("256 SHA256:"), "{d}");
        assert!(d.ends_with(" 198.51.100.10 (ED25519)"), "{d}");
        assert!(describe(&key(ECDSA), "h").ends_with(" h (ECDSA)"));
    }

    #[test]
    fn plain_wildcard_negated_and_hashed_names_are_found_with_their_line_numbers() {
        // The hashed line is OpenSSH's own (russh's test vector) for example.com.
        let text = format!(
            "# comment\n\n[198.51.100.10]:2222 {ED_A}\n198.51.100.*,!198.51.100.99 {ED_B}\n\
             not a valid line\n|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= {ED_C}\n\
             @cert-authority 198.51.100.10 {ED_C}\n@revoked 198.51.100.10   {ED_C}\n"
        );
        let kh = KnownHosts::parse(Path::new("kh"), &text);
        let lines = |name: &str| -> Vec<(usize, bool)> {
            kh.recorded(name)
                .iter()
                .map(|r| (r.line, r.revoked))
                .collect()
        };
        assert_eq!(lines("[198.51.100.10]:2222"), vec![(3, false)]);
        assert_eq!(lines("198.51.100.10"), vec![(4, false), (8, true)]);
        assert_eq!(lines("198.51.100.99"), vec![], "negated");
        assert_eq!(lines("EXAMPLE.com"), vec![], "hashed names are exact");
        assert_eq!(lines("example.com"), vec![(6, false)]);
        // Verdicts (a key's comment does not count).
        assert_eq!(kh.check("198.51.100.10", &key(ED_B)), Verdict::Known);
        let commented = key(&format!("{ED_B} root@elsewhere"));
        assert_eq!(kh.check("198.51.100.10", &commented), Verdict::Known);
        assert_eq!(
            kh.check("198.51.100.10", &key(ED_C)),
            Verdict::Revoked { line: 8 }
        );
        assert_eq!(
            kh.check("198.51.100.11", &key(ED_A)),
            Verdict::Changed {
                line: 4,
                recorded: key(ED_B)
            }
        );
        assert_eq!(kh.check("198.51.100.11", &key(ECDSA)), Verdict::Unknown);
        assert_eq!(kh.check("192.0.2.1", &key(ED_A)), Verdict::Unknown);
    }

    #[test]
    fn glob_matches_as_openssh_does() {
        assert!(glob(b"*", b""));
        assert!(glob(b"198.51.100.*", b"198.51.100.7"));
        assert!(glob(b"[198.51.100.?]:22*", b"[198.51.100.7]:2222"));
        assert!(glob(b"*a*b", b"xxaxxab"));
        assert!(!glob(b"198.51.100.?", b"198.51.100.70"));
        assert!(!glob(b"a*b", b"ac"));
    }

    #[test]
    fn recording_adds_keeps_refuses_conflicts_and_replaces_only_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(
            &path,
            format!("# kept\n198.51.100.10,198.51.100.11 {ED_A}\n198.51.100.12 {ED_B}\n"),
        )
        .unwrap();
        let mut kh = KnownHosts::read(&path).unwrap();
        assert_eq!(
            kh.record("198.51.100.12", &key(ED_B), false).unwrap(),
            Recording::AlreadyKnown
        );
        assert_eq!(
            kh.record("198.51.100.12", &key(ECDSA), false).unwrap(),
            Recording::Added,
            "another kind is added beside"
        );
        let err = kh
            .record("198.51.100.10", &key(ED_C), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("--replace"), "{err}");
        assert_eq!(
            kh.record("198.51.100.10", &key(ED_C), true).unwrap(),
            Recording::Replaced(vec![2])
        );
        kh.write().unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        let ecdsa = key(ECDSA).to_openssh().unwrap();
        let ed_c = key(ED_C).to_openssh().unwrap();
        assert_eq!(
            written,
            format!(
                "# kept\n198.51.100.11 {ED_A}\n198.51.100.12 {ED_B}\n198.51.100.12 {ecdsa}\n\
                 198.51.100.10 {ed_c}\n"
            )
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let again = KnownHosts::read(&path).unwrap();
        assert_eq!(again.check("198.51.100.10", &key(ED_C)), Verdict::Known);
        assert_eq!(again.check("198.51.100.11", &key(ED_A)), Verdict::Known);
        // Nothing else is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_wildcard_or_revoked_entry_is_not_overwritten() {
        let path = Path::new("kh");
        let mut kh = KnownHosts::parse(path, &format!("198.51.100.* {ED_A}\n@revoked * {ED_B}\n"));
        let err = kh.record("198.51.100.10", &key(ED_C), true).unwrap_err();
        assert!(matches!(&err, TrustError::Pattern { line: 1, .. }), "{err}");
        let err = kh.record("198.51.100.10", &key(ED_B), true).unwrap_err();
        assert!(matches!(&err, TrustError::Revoked { line: 2, .. }), "{err}");
        // A missing file is empty; a line naming only the replaced name goes whole.
        let mut kh = KnownHosts::read(Path::new("/nonexistent/known_hosts")).unwrap();
        assert!(kh.recorded("x").is_empty());
        kh.record("[198.51.100.10]:2222", &key(ED_A), false)
            .unwrap();
        kh.record("[198.51.100.10]:2222", &key(ED_B), true).unwrap();
        let ed_b = key(ED_B).to_openssh().unwrap();
        assert_eq!(kh.text(), format!("[198.51.100.10]:2222 {ed_b}\n"));
    }
}
