//! `aspshell`: the restricted login shell of transfer users.
//!
//! sshd runs it as `aspshell -c "COMMAND"` for every command a client sends, and as
//! `-aspshell` for an interactive login. It runs a command only if the command line has one of
//! the allowed shapes exactly ([`commands`]), by `exec`, with a clean environment
//! ([`launch`]); it refuses everything else with `Command not accepted: COMMAND` on stderr and
//! exit status 1, and says so in syslog ([`log`]). One job per step:
//!
//! 1. [`request`]: what sshd asked for (argv);
//! 2. [`caller`]: who asks (the real uid's passwd entry) and from where (sshd's
//!    `SSH_CONNECTION`);
//! 3. [`settings`] and [`commands`]: the allowed commands and their programs;
//! 4. [`decision`]: what to do (pure);
//! 5. [`act`]: do it (exec, message, log line).

pub mod caller;
pub mod commands;
pub mod decision;
pub mod escape;
pub mod launch;
pub mod log;
pub mod request;
pub mod settings;

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::Path;

use crate::config::DEFAULT_CONFIG_PATH;

use self::caller::Caller;
use self::commands::{Places, Table};
use self::decision::{decide, Decision, Why};
use self::escape::{escape, escape_capped};
use self::log::{Severity, Syslog};
use self::request::Request;

/// What an interactive login is told.
pub const NO_LOGIN: &str =
    "This account is for file transfers only; interactive logins are not available.";

/// The start of the line a refused command gets on stderr (then the escaped command).
pub const NOT_ACCEPTED: &str = "Command not accepted: ";

/// Commands are cut after this many bytes in log lines (stderr shows them whole).
const LOG_COMMAND_BYTES: usize = 1000;

/// Runs aspshell with `args` (`argv[0]` first) and returns its exit status; returns only when
/// no command was run (an accepted command replaces the process).
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Vec<OsString> = args.into_iter().skip(1).collect();
    let request = Request::from_args(&args);
    let log = Syslog::open();
    let caller = Caller::current();
    let context = Context {
        who: match &caller {
            Ok(caller) => caller.describe(),
            Err(e) => e.clone(),
        },
        client: caller::client(std::env::var_os("SSH_CONNECTION").as_deref()),
    };
    let settings = match (&caller, &request) {
        (Err(e), _) => Err(e.clone()),
        (Ok(_), Request::Command(_)) => settings::load(Path::new(DEFAULT_CONFIG_PATH)),
        // A login or odd arguments: nothing to look up.
        (Ok(_), _) => Ok(settings::Settings::default()),
    };
    let decision = match (&settings, &request) {
        // The proxy host in the OpenSSH mode: the daemon runs the sessions.
        (
            Ok(settings::Settings {
                handoff: Some(handoff),
                ..
            }),
            _,
        ) => decision::decide_handoff(&request, handoff),
        (Ok(s), Request::Command(_)) => {
            decide(&request, Ok(&Table::build(&Places::system(), &s.extra)))
        }
        (Ok(_), _) => decide(&request, Ok(&Table::empty())),
        (Err(e), _) => decide(&request, Err(e.as_str())),
    };
    act(decision, caller.as_ref().ok(), &context, &log)
}

/// Who asks and from where, as log lines show it.
struct Context {
    who: String,
    client: String,
}

impl Context {
    fn line(&self, verdict: &str, reason: &str, command: &[u8]) -> String {
        format!(
            "{verdict}: {}, {}, {reason}: {}",
            self.who,
            self.client,
            escape_capped(command, LOG_COMMAND_BYTES)
        )
    }
}

/// Writes lines to stderr; a closed stderr is no reason to fail.
fn say(lines: &[&str]) {
    let mut err = io::stderr().lock();
    for line in lines {
        let _ = writeln!(err, "{line}");
    }
}

/// Acts on a decision: exec, or message and log line. Returns the exit status when aspshell
/// is not replaced.
fn act(decision: Decision, caller: Option<&Caller>, context: &Context, log: &Syslog) -> i32 {
    match decision {
        Decision::Run {
            launch,
            command,
            shape,
            origin,
        } => {
            let Some(caller) = caller else {
                // `decide` only runs commands when the caller is known.
                say(&[&format!("{NOT_ACCEPTED}{}", escape(command.as_bytes()))]);
                return 1;
            };
            log.send(
                Severity::Info,
                &context.line(
                    "accepted",
                    &format!(
                        "{} shape \"{shape}\", runs {}",
                        origin.label(),
                        launch.program.display()
                    ),
                    command.as_bytes(),
                ),
            );
            let env = launch::clean_env(caller, |name| std::env::var_os(name));
            let error = launch::exec(&launch, &env);
            log.send(
                Severity::Err,
                &context.line(
                    "failed",
                    &format!("cannot run {} ({error})", launch.program.display()),
                    command.as_bytes(),
                ),
            );
            say(&[&format!(
                "aspshell: cannot run {}: {error}; please tell the server's administrator.",
                escape(command.as_bytes())
            )]);
            if error.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            }
        }
        Decision::Refuse { command, why } => {
            let refused = format!("{NOT_ACCEPTED}{}", escape(&command));
            let (severity, reason, hint) = match &why {
                Why::NotAllowed => (Severity::Warning, "not an allowed command".to_string(), None),
                Why::Unavailable(reason) => (
                    Severity::Err,
                    format!("allowed, but {reason}"),
                    Some("aspshell: this command is allowed but not installed on this server; please tell its administrator."),
                ),
                Why::Settings(reason) => (
                    Severity::Err,
                    format!("refusing every command: {reason}"),
                    Some("aspshell: this server's transfer settings cannot be used; please ask its administrator to check them."),
                ),
            };
            log.send(
                severity,
                &context.line("refused", &escape(reason.as_bytes()), &command),
            );
            match hint {
                Some(hint) => say(&[&refused, hint]),
                None => say(&[&refused]),
            }
            1
        }
        Decision::NoLogin { detail } => {
            log.send(
                Severity::Notice,
                &format!("refused: {}, {}, {detail}", context.who, context.client),
            );
            say(&[NO_LOGIN]);
            1
        }
        Decision::HandOff { command, socket } => {
            log.send(
                Severity::Info,
                &context.line(
                    "accepted",
                    &format!("handed to the fasp-proxy daemon at {}", socket.display()),
                    command.as_bytes(),
                ),
            );
            match crate::ssh::handoff::wire::hand_off(&socket, &command) {
                Ok(status) => i32::try_from(status).unwrap_or(1),
                Err(e) => {
                    log.send(
                        Severity::Err,
                        &context.line(
                            "failed",
                            &format!("hand-off to {}: {e}", socket.display()),
                            command.as_bytes(),
                        ),
                    );
                    say(&[&format!(
                        "aspshell: the transfer service is not available ({e}); please tell this server's administrator."
                    )]);
                    1
                }
            }
        }
    }
}
