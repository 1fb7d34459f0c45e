//! The decision step: what to do with a request, given the allowed commands. Pure: acting on
//! the decision (exec, messages, log lines) is `shell::act`'s job, so another way of acting
//! (see [`Decision::HandOff`]) slots in here without touching the rest.

use std::os::unix::ffi::OsStrExt;

use super::commands::{words, Origin, Table};
use super::launch::Launch;
use super::request::Request;

/// What aspshell does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run an allowed command in aspshell's place.
    Run {
        /// The program and its arguments.
        launch: Launch,
        /// The command line as sent.
        command: String,
        /// The shape it matched.
        shape: String,
        /// Where the shape comes from.
        origin: Origin,
    },
    /// Refuse a command.
    Refuse {
        /// The command line as sent (raw bytes: it may be anything).
        command: Vec<u8>,
        /// Why.
        why: Why,
    },
    /// An interactive login (or arguments sshd never sends): one line, no shell.
    NoLogin {
        /// For the log line: `interactive login`, or the unexpected arguments.
        detail: String,
    },
    /// The OpenSSH deployment mode (docs/deployment.md): on the proxy host, aspshell hands its
    /// stdin/stdout/stderr to the running daemon over the hand-off socket (SCM_RIGHTS) instead
    /// of exec'ing, and the daemon, which identifies the user by the socket's peer credentials,
    /// runs the session ([`decide_handoff`]).
    HandOff {
        /// The accepted command line.
        command: String,
        /// `<handoff_socket>`.
        socket: std::path::PathBuf,
    },
}

/// Why a command is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// It has none of the allowed shapes.
    NotAllowed,
    /// It has an allowed shape, but its program is missing (the reason says where it was
    /// looked for).
    Unavailable(String),
    /// The configuration exists but cannot be used, so nothing is allowed (the reason names
    /// the file and the problem).
    Settings(String),
}

/// Decides what to do with `request`. `commands` is the table of allowed commands, or why there
/// is none (an unusable configuration: every command is refused).
pub fn decide(request: &Request, commands: Result<&Table, &str>) -> Decision {
    let raw = match request {
        Request::Login => {
            return Decision::NoLogin {
                detail: "interactive login".into(),
            }
        }
        Request::Unexpected(args) => {
            let shown: Vec<String> = args
                .iter()
                .map(|a| super::escape::escape_capped(a.as_bytes(), 200))
                .collect();
            return Decision::NoLogin {
                detail: format!("unexpected arguments: {}", shown.join(" ")),
            };
        }
        Request::Command(raw) => raw.as_bytes(),
    };
    let refuse = |why| Decision::Refuse {
        command: raw.to_vec(),
        why,
    };
    let table = match commands {
        Ok(table) => table,
        Err(reason) => return refuse(Why::Settings(reason.to_string())),
    };
    // Shapes are ASCII: a command that is not UTF-8 has none of them.
    let Some(allowed) = std::str::from_utf8(raw).ok().and_then(|c| table.find(c)) else {
        return refuse(Why::NotAllowed);
    };
    let program = match &allowed.program {
        Ok(program) => program.clone(),
        Err(reason) => return refuse(Why::Unavailable(reason.clone())),
    };
    // `find` matched, so `raw` is UTF-8 made of the shape's words.
    let command = String::from_utf8_lossy(raw).into_owned();
    let mut parts = words(&command).into_iter().map(str::to_string);
    let argv0 = parts.next().unwrap_or_default();
    Decision::Run {
        launch: Launch {
            program,
            argv0,
            args: parts.collect(),
        },
        command: command.clone(),
        shape: allowed.shape.to_string(),
        origin: allowed.origin,
    }
}

/// Decides on the proxy host in the OpenSSH mode: a command the daemon runs (`ascp --server`
/// or one of `<opaque_commands>`) is handed over; nothing is ever run here.
pub fn decide_handoff(request: &Request, handoff: &super::settings::Handoff) -> Decision {
    let Request::Command(raw) = request else {
        return decide(request, Err(""));
    };
    let raw = raw.as_bytes();
    match std::str::from_utf8(raw) {
        Ok(command) if handoff.accepts(command) => Decision::HandOff {
            command: command.to_string(),
            socket: handoff.socket.clone(),
        },
        _ => Decision::Refuse {
            command: raw.to_vec(),
            why: Why::NotAllowed,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::command::CommandShape;
    use crate::shell::commands::Places;
    use std::ffi::OsString;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn executable(dir: &Path, name: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn command(c: &str) -> Request {
        Request::Command(OsString::from(c))
    }

    #[test]
    fn allowed_commands_run_their_program_with_their_words() {
        let own = tempfile::tempdir().unwrap();
        let ascp = executable(own.path(), "ascp");
        let places = Places {
            own_dir: Some(own.path().to_path_buf()),
            ibm_dir: own.path().join("no-ibm"),
            search: vec![],
        };
        let extra = [CommandShape::parse("gone {n}").unwrap()];
        let table = Table::build(&places, &extra);
        assert_eq!(
            decide(&command("ascp --server"), Ok(&table)),
            Decision::Run {
                launch: Launch {
                    program: ascp,
                    argv0: "ascp".into(),
                    args: vec!["--server".into()],
                },
                command: "ascp --server".into(),
                shape: "ascp --server".into(),
                origin: Origin::Own,
            }
        );
        assert_eq!(
            decide(&command("ascp --server; id"), Ok(&table)),
            Decision::Refuse {
                command: b"ascp --server; id".to_vec(),
                why: Why::NotAllowed
            }
        );
        match decide(&command("gone 7"), Ok(&table)) {
            Decision::Refuse {
                why: Why::Unavailable(reason),
                ..
            } => assert!(reason.contains("gone is in none of"), "{reason}"),
            other => panic!("{other:?}"),
        }
        match decide(&command("ascmd"), Ok(&table)) {
            Decision::Refuse {
                why: Why::Unavailable(reason),
                ..
            } => assert!(reason.contains("ascmd is not installed"), "{reason}"),
            other => panic!("{other:?}"),
        }
        use std::os::unix::ffi::OsStringExt;
        let not_utf8 = Request::Command(OsString::from_vec(b"ascp --server\xff".to_vec()));
        assert!(matches!(
            decide(&not_utf8, Ok(&table)),
            Decision::Refuse {
                why: Why::NotAllowed,
                ..
            }
        ));
    }

    #[test]
    fn a_broken_configuration_refuses_everything_but_logins_stay_logins() {
        let broken: Result<&Table, &str> = Err("aspera.conf:3:1: error: x");
        assert_eq!(
            decide(&command("ascp --server"), broken),
            Decision::Refuse {
                command: b"ascp --server".to_vec(),
                why: Why::Settings("aspera.conf:3:1: error: x".into())
            }
        );
        assert_eq!(
            decide(&Request::Login, broken),
            Decision::NoLogin {
                detail: "interactive login".into()
            }
        );
        let odd = Request::Unexpected(vec!["-x".into(), "a\nb".into()]);
        assert_eq!(
            decide(&odd, broken),
            Decision::NoLogin {
                detail: "unexpected arguments: -x a\\nb".into()
            }
        );
    }
}
