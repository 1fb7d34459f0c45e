//! What sshd asks aspshell for, read from its arguments.
//!
//! sshd runs a login shell as `-aspshell` (no arguments) for an interactive login, and as
//! `aspshell -c "COMMAND"` for every command, subsystem and `~/.ssh/rc` it runs.

use std::ffi::OsString;

/// One invocation of aspshell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// An interactive login: no arguments, or `-c` with an empty command.
    Login,
    /// `-c COMMAND`: run one command line (not yet checked).
    Command(OsString),
    /// Any other arguments (sshd never sends these).
    Unexpected(Vec<OsString>),
}

impl Request {
    /// Reads the arguments after `argv[0]` (whose value, `-aspshell` or `aspshell`, says
    /// nothing aspshell needs).
    pub fn from_args(args: &[OsString]) -> Request {
        match args {
            [] => Request::Login,
            [flag, command] if flag == "-c" && command.is_empty() => Request::Login,
            [flag, command] if flag == "-c" => Request::Command(command.clone()),
            other => Request::Unexpected(other.to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn sshd_shapes_and_everything_else() {
        assert_eq!(Request::from_args(&[]), Request::Login);
        assert_eq!(Request::from_args(&args(&["-c", ""])), Request::Login);
        assert_eq!(
            Request::from_args(&args(&["-c", "ascp --server"])),
            Request::Command("ascp --server".into())
        );
        for other in [
            &["-c"][..],
            &["-c", "id", "x"],
            &["-l"],
            &["--login"],
            &["ascp", "--server"],
            &["-i", "-c", "id"],
        ] {
            assert_eq!(
                Request::from_args(&args(other)),
                Request::Unexpected(args(other)),
                "{other:?}"
            );
        }
    }
}
