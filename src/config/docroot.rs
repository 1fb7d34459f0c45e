//! Docroots: where each user of `ascp --server`, `ascmd` and `aspshell` on this host may go, and
//! what they may do there, from `<default>` and `<aaa>…<user>` (IBM's layout and precedence).
//!
//! A user's `<path>` overrides `<default>`'s field by field; a field neither sets takes IBM's
//! default (the whole file system; read, write and browse allowed). `$(name)` and `$(home)` in
//! `<absolute>` become the user's name and home directory, and the result is an absolute path
//! without `.` or `..` components.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::command::CommandShape;
use super::diagnostic::Pos;
use super::model::Config;

/// The docroot and permissions in force for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Docroot {
    /// The directory the user is confined to; `None` = the whole file system.
    pub root: Option<PathBuf>,
    /// The user may transfer files from the docroot.
    pub read_allowed: bool,
    /// The user may transfer files to the docroot.
    pub write_allowed: bool,
    /// The user may browse the docroot (list, stat, mkdir, rename, delete).
    pub dir_allowed: bool,
}

impl Docroot {
    /// IBM's default: the whole file system, read, write and browse allowed.
    pub fn unrestricted() -> Docroot {
        Docroot {
            root: None,
            read_allowed: true,
            write_allowed: true,
            dir_allowed: true,
        }
    }
}

/// One `<path>` as the file writes it, in `<default>` or in a `<user>`: each field `None` when
/// the tag is absent or blank (it then comes from the scope below).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathSettings {
    /// `<absolute>`: the docroot, may start with `$(home)` and hold `$(name)`; checked to be
    /// absolute, without `..`, and with no other variable.
    pub absolute: Option<String>,
    /// `<read_allowed>`.
    pub read_allowed: Option<bool>,
    /// `<write_allowed>`.
    pub write_allowed: Option<bool>,
    /// `<dir_allowed>`.
    pub dir_allowed: Option<bool>,
}

impl PathSettings {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == PathSettings::default()
    }

    /// These settings over `below`: each field set here wins, the others come from `below`.
    pub fn over(&self, below: &PathSettings) -> PathSettings {
        PathSettings {
            absolute: self.absolute.clone().or_else(|| below.absolute.clone()),
            read_allowed: self.read_allowed.or(below.read_allowed),
            write_allowed: self.write_allowed.or(below.write_allowed),
            dir_allowed: self.dir_allowed.or(below.dir_allowed),
        }
    }
}

/// `<default>`: what applies to every user unless their `<user>` says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DefaultSettings {
    /// `<file_system><access><paths><path>`.
    pub path: PathSettings,
    /// `<aspshell_commands><command>`: the shapes aspshell allows besides its own.
    pub aspshell_commands: Vec<CommandShape>,
}

/// One `<aaa><realms><realm><users><user>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSettings {
    /// `<name>`: the login name, exactly as written (trimmed).
    pub name: String,
    /// Where the `<user>` tag is.
    pub pos: Pos,
    /// `<file_system><access><paths><path>`.
    pub path: PathSettings,
}

impl Config {
    /// The `<user>` settings for `name`, if the file has them.
    pub fn user(&self, name: &str) -> Option<&UserSettings> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The settings in force for `user`: their `<user>`'s over `<default>`'s, field by field.
    pub fn path_settings_for(&self, user: &str) -> PathSettings {
        match self.user(user) {
            Some(u) => u.path.over(&self.default.path),
            None => self.default.path.clone(),
        }
    }

    /// The docroot of `user`, whose home directory is `home`: precedence applied, `$(name)` and
    /// `$(home)` substituted. Err (with the user and the setting's origin) for a user name
    /// that cannot be put in a path (`/`, `.`, `..`, empty) or a home directory that is not an
    /// absolute path without `..`.
    pub fn docroot_for(&self, user: &str, home: &Path) -> Result<Docroot, String> {
        check_user_name(user)?;
        let settings = self.path_settings_for(user);
        let root = match &settings.absolute {
            None => None,
            Some(template) => Some(substitute(template, user, home).map_err(|e| {
                let origin = match self.user(user) {
                    Some(u) if u.path.absolute.is_some() => {
                        format!("the <absolute> of <user> {user} (line {})", u.pos.line)
                    }
                    _ => "the <absolute> of <default>".to_string(),
                };
                format!("docroot of user {user}: {origin}, \"{template}\": {e}")
            })?),
        };
        Ok(Docroot {
            root,
            read_allowed: settings.read_allowed.unwrap_or(true),
            write_allowed: settings.write_allowed.unwrap_or(true),
            dir_allowed: settings.dir_allowed.unwrap_or(true),
        })
    }

    /// The command shapes `<default><aspshell_commands>` adds to aspshell's own.
    pub fn aspshell_commands(&self) -> &[CommandShape] {
        &self.default.aspshell_commands
    }
}

/// Checks that `user` can stand for `$(name)` in a path: not empty, not `.` or `..`, no `/`
/// and no NUL.
pub fn check_user_name(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("the user name is empty".to_string());
    }
    if user == "." || user == ".." {
        return Err(format!("user name \"{user}\" cannot name a directory"));
    }
    if let Some(bad) = user.chars().find(|&c| c == '/' || c == '\0') {
        return Err(format!("user name \"{user}\" holds {bad:?}"));
    }
    Ok(())
}

/// `template` (a checked `<absolute>`) with `$(name)` = `user` and `$(home)` = `home`,
/// normalised: absolute, no empty or `.` components, no trailing `/`; a `..` anywhere is an
/// error, as is a home directory that is not absolute.
pub fn substitute(template: &str, user: &str, home: &Path) -> Result<PathBuf, String> {
    check_user_name(user)?;
    let mut out: Vec<u8> = Vec::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(i) = rest.find("$(") {
        out.extend_from_slice(&rest.as_bytes()[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find(')')
            .ok_or_else(|| "an unclosed $(".to_string())?;
        match &after[..end] {
            "name" => out.extend_from_slice(user.as_bytes()),
            "home" => {
                let h = home.as_os_str().as_bytes();
                if !h.starts_with(b"/") {
                    return Err(format!(
                        "the home directory \"{}\" of user {user} is not an absolute path",
                        home.display()
                    ));
                }
                if h.split(|&b| b == b'/').any(|c| c == b"..") {
                    return Err(format!(
                        "the home directory \"{}\" of user {user} holds \"..\"",
                        home.display()
                    ));
                }
                out.extend_from_slice(h);
            }
            other => return Err(format!("$({other}) is not $(name) or $(home)")),
        }
        rest = &after[end + 1..];
    }
    out.extend_from_slice(rest.as_bytes());
    normalise(&out)
}

/// `path` as an absolute path with no empty, `.` or `..` components.
fn normalise(path: &[u8]) -> Result<PathBuf, String> {
    if !path.starts_with(b"/") {
        return Err(format!(
            "\"{}\" is not an absolute path",
            String::from_utf8_lossy(path)
        ));
    }
    if path.contains(&0) {
        return Err("the path holds a NUL byte".to_string());
    }
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    for component in path.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                return Err(format!(
                    "\"{}\" holds \"..\"",
                    String::from_utf8_lossy(path)
                ))
            }
            c => {
                out.push(b'/');
                out.extend_from_slice(c);
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(PathBuf::from(OsString::from_vec(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_and_normalisation() {
        let home = Path::new("/home/alice");
        let s = |t: &str| substitute(t, "alice", home);
        assert_eq!(s("/data/$(name)"), Ok(PathBuf::from("/data/alice")));
        assert_eq!(s("$(home)/files/"), Ok(PathBuf::from("/home/alice/files")));
        assert_eq!(
            s("//data/./$(name)//x/"),
            Ok(PathBuf::from("/data/alice/x"))
        );
        assert_eq!(s("/"), Ok(PathBuf::from("/")));
        assert_eq!(s("/d/$(name)-$(name)"), Ok(PathBuf::from("/d/alice-alice")));
        // Substituted text is not scanned again.
        assert_eq!(
            substitute("/d/$(name)", "$(home)", home),
            Ok(PathBuf::from("/d/$(home)"))
        );
        assert!(s("/d/../etc").unwrap_err().contains("\"..\""));
        assert!(s("/d/$(user)").unwrap_err().contains("$(user)"));
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(substitute("/d/$(name)", bad, home).is_err(), "{bad:?}");
        }
        let e = substitute("$(home)/x", "bob", Path::new("home/bob")).unwrap_err();
        assert!(
            e.contains("not an absolute path") && e.contains("bob"),
            "{e}"
        );
        let e = substitute("$(home)/x", "bob", Path::new("/home/../etc")).unwrap_err();
        assert!(e.contains("\"..\""), "{e}");
        // A home of "/" is fine.
        assert_eq!(
            substitute("$(home)/x", "root", Path::new("/")),
            Ok(PathBuf::from("/x"))
        );
        // Non-UTF-8 home directories are kept byte for byte.
        let odd = PathBuf::from(OsString::from_vec(b"/home/\xff".to_vec()));
        assert_eq!(
            substitute("$(home)", "x", &odd).map(|p| p.into_os_string().into_vec()),
            Ok(b"/home/\xff".to_vec())
        );
    }

    #[test]
    fn precedence_is_field_by_field() {
        let global = PathSettings {
            absolute: Some("/data".into()),
            read_allowed: Some(false),
            write_allowed: None,
            dir_allowed: Some(false),
        };
        let user = PathSettings {
            absolute: None,
            read_allowed: Some(true),
            write_allowed: Some(false),
            dir_allowed: None,
        };
        assert_eq!(
            user.over(&global),
            PathSettings {
                absolute: Some("/data".into()),
                read_allowed: Some(true),
                write_allowed: Some(false),
                dir_allowed: Some(false),
            }
        );
        assert!(PathSettings::default().is_empty());
        assert!(!user.is_empty());
    }
}
