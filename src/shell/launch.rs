//! Running an accepted command: `exec` (aspshell is replaced) with a clean environment.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use super::caller::Caller;

/// The `PATH` every command gets.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The variables passed on from aspshell's own environment when their values look right;
/// everything else (`LD_PRELOAD`, `LD_LIBRARY_PATH`, whatever a client sent) is dropped.
pub const PASSED_ON: &[&str] = &["LANG", "LC_ALL", "SSH_CONNECTION", "SSH_CLIENT"];

/// A program to run in aspshell's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Its absolute path.
    pub program: PathBuf,
    /// `argv[0]`: the command's first word, as a shell would pass it.
    pub argv0: String,
    /// The other words.
    pub args: Vec<String>,
}

/// Whether `value` is a plausible value of the variable `name`: a locale name for `LANG` and
/// `LC_ALL` (letters, digits, `_.@-`, no `/`, so no locale file is read from a path the client
/// chose); addresses and ports for `SSH_CONNECTION` and `SSH_CLIENT`.
fn plausible(name: &str, value: &[u8]) -> bool {
    let allowed = |b: u8| match name {
        "LANG" | "LC_ALL" => b.is_ascii_alphanumeric() || b"_.@-".contains(&b),
        _ => b.is_ascii_alphanumeric() || b".:% ".contains(&b),
    };
    (1..=128).contains(&value.len()) && value.iter().all(|&b| allowed(b))
}

/// The environment a command gets: `HOME`, `USER`, `LOGNAME` and `SHELL` from the passwd
/// entry, [`PATH`], and the [`PASSED_ON`] variables that `get` (aspshell's environment) has
/// with plausible values. Nothing else.
pub fn clean_env(
    caller: &Caller,
    get: impl Fn(&str) -> Option<OsString>,
) -> Vec<(String, OsString)> {
    let mut env = vec![
        ("HOME".to_string(), caller.home.clone().into_os_string()),
        ("USER".to_string(), caller.name.clone().into()),
        ("LOGNAME".to_string(), caller.name.clone().into()),
        ("SHELL".to_string(), caller.shell.clone().into_os_string()),
        ("PATH".to_string(), PATH.into()),
    ];
    for name in PASSED_ON {
        if let Some(value) = get(name).filter(|v| plausible(name, v.as_bytes())) {
            env.push((name.to_string(), value));
        }
    }
    env
}

/// Replaces aspshell with `launch` (same working directory, same standard streams, `env` as
/// the whole environment). Returns only if that fails.
pub fn exec(launch: &Launch, env: &[(String, OsString)]) -> io::Error {
    Command::new(&launch.program)
        .arg0(&launch.argv0)
        .args(&launch.args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .exec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn alice() -> Caller {
        Caller {
            uid: 1001,
            name: "alice".into(),
            home: "/home/alice".into(),
            shell: "/usr/local/bin/aspshell".into(),
        }
    }

    #[test]
    fn only_the_listed_variables_pass() {
        let outside: HashMap<&str, &str> = [
            ("HOME", "/tmp/evil"),
            ("USER", "root"),
            ("PATH", "/tmp/evil"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("LD_LIBRARY_PATH", "/tmp"),
            ("BASH_ENV", "/tmp/x"),
            ("LANG", "en_US.UTF-8"),
            ("LC_ALL", "C.UTF-8"),
            ("SSH_CONNECTION", "192.0.2.2 41234 198.51.100.2 22"),
            ("SSH_CLIENT", "192.0.2.2 41234 22"),
            ("SSH_ORIGINAL_COMMAND", "id"),
        ]
        .into_iter()
        .collect();
        let env = clean_env(&alice(), |k| outside.get(k).map(OsString::from));
        let got: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string_lossy().into_owned()))
            .collect();
        let want: Vec<(String, String)> = [
            ("HOME", "/home/alice"),
            ("USER", "alice"),
            ("LOGNAME", "alice"),
            ("SHELL", "/usr/local/bin/aspshell"),
            ("PATH", PATH),
            ("LANG", "en_US.UTF-8"),
            ("LC_ALL", "C.UTF-8"),
            ("SSH_CONNECTION", "192.0.2.2 41234 198.51.100.2 22"),
            ("SSH_CLIENT", "192.0.2.2 41234 22"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn implausible_values_are_dropped() {
        let outside: HashMap<&str, &str> = [
            ("LANG", "../../tmp/locale"),
            ("LC_ALL", ""),
            ("SSH_CONNECTION", "1.2.3.4 1\n2"),
        ]
        .into_iter()
        .collect();
        let env = clean_env(&alice(), |k| outside.get(k).map(OsString::from));
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["HOME", "USER", "LOGNAME", "SHELL", "PATH"]);
        assert!(plausible("LANG", b"de_DE@euro"));
        assert!(plausible("SSH_CLIENT", b"fe80::1%eth0 5000 22"));
    }

    #[test]
    fn a_failed_exec_comes_back_as_an_error() {
        let launch = Launch {
            program: "/nonexistent/aspshell-test".into(),
            argv0: "x".into(),
            args: vec![],
        };
        let e = exec(&launch, &[]);
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
