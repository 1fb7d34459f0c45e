//! Node-API users: who may ask the forward proxy for a forwarding (IBM's `asnodeadmin -au`).
//!
//! The file `node-users` lives beside `aspera.conf`, mode 0600, one user per line:
//! `NAME:$argon2id$v=19$m=…` (a PHC string). It is rewritten atomically (a private temporary
//! file in the same directory, fsync, rename), so a crash leaves the old file or the new one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use argon2::{Argon2, PasswordHasher};

/// The longest user name accepted.
pub const MAX_NAME: usize = 64;
/// The longest password accepted, in bytes (argon2 would take more; nobody types more).
pub const MAX_PASSWORD: usize = 1024;
/// The users file's name, beside `aspera.conf`.
pub const FILE_NAME: &str = "node-users";

/// Where the node-API users are kept for a configuration file.
pub fn users_path(config_path: &Path) -> PathBuf {
    crate::config::beside(config_path, FILE_NAME)
}

/// Why the users file could not be read, written or changed.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file could not be read or written.
    #[error("{path}: {why}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        why: String,
    },
    /// A line of the file is not `NAME:HASH`.
    #[error("{path} line {line}: {why}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// A user name or password that cannot be stored.
    #[error("{0}")]
    Invalid(String),
}

/// The node-API users, as read from their file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeUsers {
    entries: Vec<(String, String)>,
}

/// Checks a user name: 1–64 of `A-Z a-z 0-9 . _ -`, not starting with `-`.
pub fn check_name(name: &str) -> Result<(), UsersError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name.len() > MAX_NAME || !ok_chars || name.starts_with('-') {
        return Err(UsersError::Invalid(format!(
            "user name {name:?} is not 1-{MAX_NAME} of A-Z a-z 0-9 . _ - (not starting with -)"
        )));
    }
    Ok(())
}

/// Checks a password: 1–1024 bytes, no line break or NUL.
pub fn check_password(password: &str) -> Result<(), UsersError> {
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err(UsersError::Invalid(format!(
            "the password must be 1-{MAX_PASSWORD} bytes"
        )));
    }
    if password.contains(['\n', '\r', '\0']) {
        return Err(UsersError::Invalid(
            "the password may not hold a line break or NUL".into(),
        ));
    }
    Ok(())
}

/// A hash to verify against when the user is unknown, so that an unknown name costs the same
/// time as a wrong password (no user enumeration by timing).
/// Whether `password` hashes to the PHC string `phc` (argon2, its own parameters and salt), with
/// the working memory in `memory`; the comparison is constant-time.
fn verify_phc(password: &[u8], phc: &str, memory: &mut Vec<argon2::Block>) -> bool {
    let Ok(parsed) = argon2::PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(params) = argon2::Params::try_from(&parsed) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(argon2::Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt,
        &mut out,
        &mut memory[..blocks],
    );
    // `Output`'s equality is constant-time.
    hashed.is_ok()
        && argon2::password_hash::phc::Output::new(&out).is_ok_and(|computed| computed == *expected)
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        Argon2::default()
            .hash_password_with_salt(b"not a password", b"fasp-proxy-dummy-salt")
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

impl NodeUsers {
    /// Reads the users file; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<NodeUsers, UsersError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(NodeUsers::default()),
            Err(e) => {
                return Err(UsersError::Io {
                    path: path.into(),
                    why: e.to_string(),
                })
            }
        };
        NodeUsers::parse(&text, path)
    }

    /// Parses the file's text; `path` is for the messages.
    pub fn parse(text: &str, path: &Path) -> Result<NodeUsers, UsersError> {
        let mut users = NodeUsers::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = |why: String| UsersError::Malformed {
                path: path.into(),
                line: i + 1,
                why,
            };
            let Some((name, hash)) = line.split_once(':') else {
                return Err(malformed("expected NAME:HASH".into()));
            };
            check_name(name).map_err(|e| malformed(e.to_string()))?;
            if argon2::PasswordHash::new(hash).is_err() {
                return Err(malformed(format!(
                    "the hash of user {name} is not a PHC string"
                )));
            }
            if users.contains(name) {
                return Err(malformed(format!("user {name} appears twice")));
            }
            users.entries.push((name.to_string(), hash.to_string()));
        }
        Ok(users)
    }

    /// The user names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// Whether the user exists.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|(n, _)| n == name)
    }

    /// Adds the user, or sets a new password for an existing one; returns true if it was new.
    pub fn set(&mut self, name: &str, password: &str) -> Result<bool, UsersError> {
        check_name(name)?;
        check_password(password)?;
        let hash = Argon2::default()
            .hash_password(password.as_bytes())
            .map_err(|e| UsersError::Invalid(format!("hashing the password failed: {e}")))?
            .to_string();
        if let Some(entry) = self.entries.iter_mut().find(|(n, _)| n == name) {
            entry.1 = hash;
            Ok(false)
        } else {
            self.entries.push((name.to_string(), hash));
            Ok(true)
        }
    }

    /// Removes the user; false if there was none.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| n != name);
        self.entries.len() != before
    }

    /// Whether `name` and `password` are a valid user (argon2id, constant in the unknown-user
    /// case too).
    pub fn verify(&self, name: &str, password: &str) -> bool {
        self.verify_in(name, password, &mut Vec::new())
    }

    /// [`NodeUsers::verify`] with argon2id's working memory in `memory`, grown as needed and
    /// kept by the caller: a verifying thread that keeps one buffer never allocates the 19 MiB
    /// again.
    pub fn verify_in(&self, name: &str, password: &str, memory: &mut Vec<argon2::Block>) -> bool {
        let hash: Option<&str> = self
            .entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h.as_str());
        let too_long = password.len() > MAX_PASSWORD;
        let against: &str = match hash {
            Some(h) if !too_long => h,
            _ => dummy_hash(),
        };
        // An over-long password is not hashed whole: the dummy check keeps the cost the same.
        let checked = if too_long {
            &b""[..]
        } else {
            password.as_bytes()
        };
        let ok = verify_phc(checked, against, memory);
        ok && hash.is_some() && !too_long
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::from("# fasp-proxy node-API users (fasp-proxy node-user add NAME)\n");
        for (n, h) in &self.entries {
            out.push_str(&format!("{n}:{h}\n"));
        }
        out
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        let io = |why: std::io::Error| UsersError::Io {
            path: path.into(),
            why: why.to_string(),
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        let tmp = dir.join(format!(".{FILE_NAME}.tmp.{}", std::process::id()));
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(self.render().as_bytes())?;
            f.sync_all()?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_remove_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut users = NodeUsers::load(&path).unwrap();
        assert!(users.set("alice", "s3cret").unwrap());
        assert!(!users.set("alice", "n3w").unwrap());
        assert!(users.set("bob", "pw").unwrap());
        users.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("alice:$argon2id$"), "{text}");
        assert!(!text.contains("n3w"));
        let mut read = NodeUsers::load(&path).unwrap();
        assert!(read.verify("alice", "n3w"));
        assert!(!read.verify("alice", "s3cret"));
        assert!(!read.verify("carol", "n3w"));
        assert!(!read.verify("bob", ""));
        assert!(!read.verify("bob", &"pw".repeat(MAX_PASSWORD)));
        assert_eq!(read.names().collect::<Vec<_>>(), ["alice", "bob"]);
        assert!(read.remove("bob"));
        assert!(!read.remove("bob"));
        read.save(&path).unwrap();
        assert!(!NodeUsers::load(&path).unwrap().contains("bob"));
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn bad_names_passwords_and_lines_are_refused_with_the_line() {
        for bad in ["", "-x", "a b", "a:b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_password("").is_err());
        assert!(check_password("a\nb").is_err());
        assert!(check_password(&"x".repeat(MAX_PASSWORD + 1)).is_err());
        let p = Path::new("/etc/fasp-proxy/node-users");
        let e = NodeUsers::parse("# c\n\nalice\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("node-users line 3"), "{e}");
        let e = NodeUsers::parse("alice:plain\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a PHC string"), "{e}");
    }

    #[test]
    fn the_file_sits_beside_the_configuration() {
        assert_eq!(
            users_path(Path::new("/etc/fasp-proxy/aspera.conf")),
            Path::new("/etc/fasp-proxy/node-users")
        );
        assert_eq!(
            users_path(Path::new("aspera.conf")),
            Path::new("./node-users")
        );
    }

    #[test]
    fn verifying_in_kept_memory_agrees_with_the_argon2_crate() {
        use argon2::PasswordVerifier;
        let mut users = NodeUsers::default();
        users.set("alice", "right").unwrap();
        let hash = users.entries[0].1.clone();
        let mut memory = Vec::new();
        for (password, want) in [("right", true), ("wrong", false), ("", false)] {
            assert_eq!(users.verify_in("alice", password, &mut memory), want);
            let crate_says = Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok();
            assert_eq!(crate_says, want);
        }
        assert!(!users.verify_in("bob", "right", &mut memory));
        // The same buffer served every check.
        assert!(memory.capacity() > 0);
        assert!(!verify_phc(b"right", "$argon2id$v=19$garbage", &mut memory));
    }
}
