//! The accounts the audit looks at: the password database (through NSS, so LDAP or SSSD accounts
//! are included when they can be listed) or a passwd-format file, and what each login shell
//! means.

use std::collections::HashSet;
use std::ffi::CStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One account of the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The login name.
    pub name: String,
    /// The numeric user id.
    pub uid: u32,
    /// The home directory.
    pub home: PathBuf,
    /// The login shell as written; empty means `/bin/sh`.
    pub shell: PathBuf,
}

/// Where the accounts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The system's password database (`getpwent`, `getpwnam`: every NSS source).
    System,
    /// A file in the format of `/etc/passwd`.
    File(PathBuf),
}

/// What a login shell gives its user over SSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// `aspshell`: transfers only.
    Aspshell,
    /// A shell that refuses logins (`nologin`, `false`, …) or that does not exist (sshd refuses
    /// such an account).
    NoLogin,
    /// Any other program: an ordinary shell.
    Ordinary,
}

/// Shell names (the last path component) that refuse every login.
pub const NO_LOGIN_SHELLS: &[&str] = &["nologin", "false", "true", "sync", "shutdown", "halt"];

/// The name of the restricted shell.
pub const ASPSHELL: &str = "aspshell";

/// What `shell` gives its user; `exists` tells whether an absolute path names a file.
pub fn classify_shell(shell: &Path, exists: impl Fn(&Path) -> bool) -> Shell {
    if shell.as_os_str().is_empty() {
        return Shell::Ordinary; // passwd(5): an empty shell is /bin/sh
    }
    let name = shell.file_name().map(|n| n.as_bytes()).unwrap_or(b"");
    if name == ASPSHELL.as_bytes() {
        return Shell::Aspshell;
    }
    if NO_LOGIN_SHELLS.iter().any(|n| n.as_bytes() == name) {
        return Shell::NoLogin;
    }
    if shell.is_absolute() && !exists(shell) {
        return Shell::NoLogin;
    }
    Shell::Ordinary
}

/// Every account of `source`, each name once (the first entry wins, as for `getpwnam`).
pub fn all(source: &Source) -> Result<Vec<Account>, String> {
    let accounts = match source {
        Source::System => system_accounts(),
        Source::File(path) => {
            let text = std::fs::read(path)
                .map_err(|e| format!("password file {}: cannot read: {e}", path.display()))?;
            parse_passwd(&text, path)?
        }
    };
    let mut seen = HashSet::new();
    Ok(accounts
        .into_iter()
        .filter(|a| seen.insert(a.name.clone()))
        .collect())
}

/// The account named `name` in `source`, if there is one.
pub fn lookup(source: &Source, name: &str) -> Result<Option<Account>, String> {
    match source {
        Source::System => match nix::unistd::User::from_name(name) {
            Ok(user) => Ok(user.map(|u| Account {
                name: u.name,
                uid: u.uid.as_raw(),
                home: u.dir,
                shell: u.shell,
            })),
            Err(e) => Err(format!("looking up user {name}: {e}")),
        },
        Source::File(_) => Ok(all(source)?.into_iter().find(|a| a.name == name)),
    }
}

/// Reads a passwd-format text (`name:password:uid:gid:gecos:home:shell` a line; blank lines and
/// `#` comments skipped). A malformed line is an error naming `path` and the line.
pub fn parse_passwd(text: &[u8], path: &Path) -> Result<Vec<Account>, String> {
    let mut out = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        let bad = |why: &str| format!("{}:{}: {why}: {line:?}", path.display(), i + 1);
        if fields.len() != 7 {
            return Err(bad("not 7 colon-separated fields"));
        }
        let uid = fields[2]
            .parse()
            .map_err(|_| bad("the user id is not a number"))?;
        if fields[0].is_empty() {
            return Err(bad("the user name is empty"));
        }
        out.push(Account {
            name: fields[0].to_string(),
            uid,
            home: PathBuf::from(fields[5]),
            shell: PathBuf::from(fields[6]),
        });
    }
    Ok(out)
}

/// Every entry `getpwent` lists. Called before the audit starts threads (`getpwent` keeps
/// state in the C library).
fn system_accounts() -> Vec<Account> {
    let text = |p: *const libc::c_char| -> String {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: getpwent's fields are NUL-terminated strings valid until the next call.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let mut out = Vec::new();
    // SAFETY: setpwent/getpwent/endpwent are called from one thread; every field is copied out
    // before the next getpwent call.
    unsafe {
        libc::setpwent();
        loop {
            let entry = libc::getpwent();
            if entry.is_null() {
                break;
            }
            let entry = &*entry;
            out.push(Account {
                name: text(entry.pw_name),
                uid: entry.pw_uid,
                home: PathBuf::from(text(entry.pw_dir)),
                shell: PathBuf::from(text(entry.pw_shell)),
            });
        }
        libc::endpwent();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shells() {
        let exists = |p: &Path| p != Path::new("/bin/missing");
        let c = |s: &str| classify_shell(Path::new(s), exists);
        assert_eq!(c("/usr/local/bin/aspshell"), Shell::Aspshell);
        assert_eq!(c("/opt/aspera/bin/aspshell"), Shell::Aspshell);
        assert_eq!(c("/usr/sbin/nologin"), Shell::NoLogin);
        assert_eq!(c("/bin/false"), Shell::NoLogin);
        assert_eq!(c("/bin/sync"), Shell::NoLogin);
        assert_eq!(c("/bin/missing"), Shell::NoLogin);
        assert_eq!(c("/bin/bash"), Shell::Ordinary);
        assert_eq!(c(""), Shell::Ordinary);
        assert_eq!(c("/usr/bin/aspshell-not"), Shell::Ordinary);
    }

    #[test]
    fn passwd_file() {
        let text = b"root:x:0:0:root:/root:/bin/bash\n# comment\n\nbob:x:1001:1001::/home/bob:\n";
        let got = parse_passwd(text, Path::new("/p")).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].name, "bob");
        assert_eq!(got[1].uid, 1001);
        assert_eq!(got[1].home, PathBuf::from("/home/bob"));
        assert_eq!(got[1].shell, PathBuf::new());
        let e = parse_passwd(b"ok:x:1:1::/:/bin/sh\nbad:x:1:1\n", Path::new("/p")).unwrap_err();
        assert!(e.starts_with("/p:2: not 7"), "{e}");
        let e = parse_passwd(b"x:x:one:1::/:/bin/sh\n", Path::new("/p")).unwrap_err();
        assert!(e.contains("/p:1:") && e.contains("not a number"), "{e}");
    }

    #[test]
    fn system_database_has_root() {
        let all = all(&Source::System).unwrap();
        assert!(all.iter().any(|a| a.name == "root" && a.uid == 0));
        let root = lookup(&Source::System, "root").unwrap().unwrap();
        assert_eq!(root.uid, 0);
        assert_eq!(lookup(&Source::System, "no-such-user-fpa").unwrap(), None);
    }
}
