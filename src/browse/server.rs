//! `ascmd`'s server side: who the user is, what the configuration lets them do, and the loop
//! that reads command lines on stdin and writes one reply record per command on stdout.
//!
//! The user is the real uid's passwd entry (never the environment); the docroot and the
//! allowed flags come from [`config::DEFAULT_CONFIG_PATH`] only ([`config::load_docroot`]): no
//! option or variable can point elsewhere. A missing file means no restriction (IBM's
//! default); an unreadable or invalid one, an unknown user or a docroot that cannot be opened
//! make every command answer an `error` with the reason (fail closed).
//!
//! Session: `ascmd` writes `info` at once; `ascmd -V2` waits for the client's first line,
//! `as_session_init --protocol=2 [--host=H]`, which answers nothing, and then writes `info`
//! (with the protocol). Each command then gets exactly one record, flushed at once, so a client
//! may send a line and wait for its answer. `as_exit` and the end of input end the session
//! without writing anything.

use std::ffi::OsString;
use std::io::{self, BufRead, Write};
use std::path::Path;

use super::command::{self, Command, Line, MAX_LINE};
use super::ops::{Answer, Failure, Ops, Permissions};
use super::wire::{Info, Reply};
use crate::config;
use crate::fsroot::Root;

/// Which session the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `ascmd`: `info` first, then commands.
    V1,
    /// `ascmd -V2`: `as_session_init` first, then `info`, then commands.
    V2,
}

const USAGE: &str = "usage: ascmd [-V2]\n\
Answers IBM's ascmd commands (as_ls, as_du, as_mkdir, as_mv, as_cp, as_rm, as_md5sum, as_df,\n\
as_info, as_exit) read on stdin, one binary reply each on stdout, confined to the user's\n\
docroot in /etc/fasp-proxy/aspera.conf. Run by sshd or aspshell for a client such as\n\
`ascp --ls` or IBM's `ascli server browse`.\n";

/// The `ascmd` program: arguments (without the program name) to exit status.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Vec<OsString> = args.into_iter().collect();
    let version = match args
        .iter()
        .map(|a| a.to_str())
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | [Some("-V1")] => Version::V1,
        [Some("-V2")] => Version::V2,
        [Some("-h" | "--help")] => {
            print!("{USAGE}");
            return 0;
        }
        [Some("--version")] => {
            println!("ascmd (fasp-proxy) {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        _ => {
            eprint!("ascmd: unknown arguments {args:?}\n{USAGE}");
            return 1;
        }
    };
    let ops = setup(Path::new(config::DEFAULT_CONFIG_PATH));
    let stdin = io::stdin().lock();
    let stdout = io::stdout().lock();
    match serve(ops, version, stdin, stdout) {
        Ok(()) => 0,
        // The client went away: nobody to tell.
        Err(_) => 1,
    }
}

/// The operations for the user running this process, under the configuration at
/// `config_path`; Err with the reason every command will answer.
pub fn setup(config_path: &Path) -> Result<Ops, String> {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .map_err(|e| format!("cannot read the passwd entry of uid {uid}: {e}"))?
        .ok_or_else(|| format!("uid {uid} has no passwd entry"))?;
    let docroot = config::load_docroot(config_path, &user.name, &user.dir)?;
    let root = match &docroot.root {
        None => Root::unconfined(),
        Some(dir) => Root::open(dir).map_err(|e| {
            // The errno's text only: the error's own message names the docroot's place.
            let why = nix::errno::Errno::from_raw(Failure::io(&e).errno).desc();
            format!(
                "the docroot configured for user {} cannot be opened ({why}); the administrator can check <absolute> in {}",
                user.name,
                config_path.display()
            )
        })?,
    };
    let perms = Permissions {
        read: docroot.read_allowed,
        write: docroot.write_allowed,
        browse: docroot.dir_allowed,
    };
    Ok(Ops::new(root, perms, user.name))
}

/// The `info` record this server writes; `protocol` in `-V2` sessions.
pub fn info(protocol: Option<u64>) -> Info {
    Info {
        platform: Some("Linux".into()),
        version: Some(format!("fasp-proxy ascmd {}", env!("CARGO_PKG_VERSION"))),
        lang: Some("C".into()),
        territory: Some(String::new()),
        codeset: Some("UTF-8".into()),
        lc_ctype: Some("C".into()),
        lc_numeric: Some("C".into()),
        lc_time: Some("C".into()),
        lc_all: Some(String::new()),
        dev: Vec::new(),
        browse_caps: None,
        protocol,
    }
}

fn write_reply(out: &mut impl Write, reply: &Reply) -> io::Result<()> {
    let bytes = reply
        .encode()
        .or_else(|e| Reply::error(libc::EIO, e.to_string()).encode())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    out.write_all(&bytes)?;
    out.flush()
}

fn answer(ops: &mut Ops, cmd: &Command) -> Result<Answer, Failure> {
    match cmd {
        Command::Ls { filters, path } => ops.ls(filters, path),
        Command::Du(p) => ops.du(p),
        Command::Mkdir(p) => ops.mkdir(p),
        Command::Mv(a, b) => ops.mv(a, b),
        Command::Cp(a, b) => ops.cp(a, b),
        Command::Rm(p) => ops.rm(p),
        Command::Md5sum(p) => ops.md5sum(p),
        Command::Df(p) => ops.df(p.as_deref()),
        Command::Info | Command::Exit | Command::SessionInit { .. } => {
            Err(Failure::invalid("not an operation"))
        }
    }
}

/// Runs one session: commands from `input`, replies to `output`. Err only when `output`
/// fails (the client is gone).
pub fn serve(
    mut ops: Result<Ops, String>,
    version: Version,
    mut input: impl BufRead,
    mut output: impl Write,
) -> io::Result<()> {
    let mut protocol = None;
    let mut info_sent = false;
    if version == Version::V1 {
        write_reply(&mut output, &Reply::Info(info(None)))?;
        info_sent = true;
    }
    let mut line = Vec::with_capacity(256);
    loop {
        let parsed = match command::read_line(&mut input, &mut line) {
            Ok(Line::Eof) | Err(_) => break,
            Ok(Line::TooLong) => Err(format!(
                "command line longer than {MAX_LINE} bytes, ignored"
            )),
            Ok(Line::Line) => command::parse(&line),
        };
        if let Ok(Some(Command::SessionInit {
            protocol: asked, ..
        })) = &parsed
        {
            if !info_sent {
                protocol = Some(asked.unwrap_or(2).min(2));
                write_reply(&mut output, &Reply::Info(info(protocol)))?;
                info_sent = true;
            }
            continue;
        }
        if matches!(parsed, Ok(None)) {
            continue;
        }
        if !info_sent {
            // A -V2 client that did not start with as_session_init.
            protocol = Some(2);
            write_reply(&mut output, &Reply::Info(info(protocol)))?;
            info_sent = true;
        }
        let cmd = match parsed {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(msg) => {
                write_reply(&mut output, &Reply::error(libc::EINVAL, msg))?;
                continue;
            }
        };
        let result = match (&cmd, &mut ops) {
            (Command::Exit, _) => break,
            (Command::Info, _) => Ok(Answer::Reply(Reply::Info(info(protocol)))),
            (_, Err(reason)) => Err(Failure::refused(reason.clone())),
            (cmd, Ok(ops)) => answer(ops, cmd),
        };
        match result {
            Ok(Answer::Reply(r)) => write_reply(&mut output, &r)?,
            Ok(Answer::Encoded(bytes)) => {
                output.write_all(&bytes)?;
                output.flush()?;
            }
            Err(f) => write_reply(&mut output, &f.reply())?,
        }
    }
    output.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::browse::wire::{decode_all, Reply};

    fn run(ops: Result<Ops, String>, version: Version, input: &[u8]) -> Vec<Reply> {
        let mut out = Vec::new();
        serve(ops, version, input, &mut out).unwrap();
        decode_all(&out).unwrap()
    }

    fn unconfined() -> Ops {
        Ops::new(Root::unconfined(), Permissions::all(), "test")
    }

    #[test]
    fn v1_info_first_one_reply_per_command_nothing_for_exit() {
        let r = run(
            Ok(unconfined()),
            Version::V1,
            b"as_info\n\nas_mkdir\nas_bogus x\nas_exit\nas_info\n",
        );
        assert_eq!(r.len(), 4, "{r:?}");
        assert_eq!(r[0], Reply::Info(info(None)));
        assert_eq!(r[1], Reply::Info(info(None)));
        assert_eq!(
            r[2],
            Reply::error(libc::EINVAL, "as_mkdir takes 1 path, 0 given")
        );
        assert_eq!(
            r[3],
            Reply::error(libc::EINVAL, "unknown command \"as_bogus\"")
        );
        // End of input without as_exit: the same, nothing more.
        assert_eq!(run(Ok(unconfined()), Version::V1, b"").len(), 1);
    }

    #[test]
    fn v2_waits_for_session_init() {
        let r = run(
            Ok(unconfined()),
            Version::V2,
            b"as_session_init --protocol=2 --host=files.example.com\nas_info\nas_exit\n",
        );
        assert_eq!(r, [Reply::Info(info(Some(2))), Reply::Info(info(Some(2)))]);
        // A client that skips it still gets info first.
        let r = run(Ok(unconfined()), Version::V2, b"as_bogus\n");
        assert_eq!(r[0], Reply::Info(info(Some(2))));
        assert!(matches!(r[1], Reply::Error(_)));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn failed_setup_answers_every_command_with_the_reason() {
        let r = run(
            Err("aspera.conf:3:1: error: bad".into()),
            Version::V1,
            b"as_ls /\nas_df\nas_info\nas_exit\n",
        );
        assert_eq!(r.len(), 4);
        for e in &r[1..3] {
            assert_eq!(
                *e,
                Reply::error(libc::EACCES, "aspera.conf:3:1: error: bad")
            );
        }
        assert!(matches!(r[3], Reply::Info(_)));
    }

    #[test]
    fn a_1_mib_line_is_refused_and_the_session_goes_on() {
        let mut input = b"as_ls ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 1024 * 1024));
        input.extend_from_slice(b"\nas_info\n");
        let r = run(Ok(unconfined()), Version::V1, &input);
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[1],
            Reply::error(
                libc::EINVAL,
                format!("command line longer than {MAX_LINE} bytes, ignored")
            )
        );
        assert!(matches!(r[2], Reply::Info(_)));
    }

    #[test]
    fn setup_of_a_missing_configuration_is_unrestricted() {
        let t = tempfile::tempdir().unwrap();
        let ops = setup(&t.path().join("aspera.conf")).unwrap();
        let r = run(Ok(ops), Version::V1, b"as_ls /\n");
        assert!(matches!(r[1], Reply::Dir(_)), "{r:?}");
    }

    #[test]
    fn setup_of_an_invalid_configuration_fails_closed() {
        let t = tempfile::tempdir().unwrap();
        let conf = t.path().join("aspera.conf");
        std::fs::write(&conf, "<CONF version=\"2\"><default><file_system>").unwrap();
        let e = setup(&conf).unwrap_err();
        assert!(e.contains("aspera.conf"), "{e}");
        let conf_dir = t.path().join("missing-docroot.conf");
        std::fs::write(
            &conf_dir,
            format!(
                "<CONF version=\"2\"><default><file_system><access><paths><path><absolute>{}/nowhere/$(name)</absolute></path></paths></access></file_system></default></CONF>",
                t.path().display()
            ),
        )
        .unwrap();
        let e = setup(&conf_dir).unwrap_err();
        assert!(
            e.contains("cannot be opened (No such file or directory)"),
            "{e}"
        );
        assert!(
            !e.contains("nowhere"),
            "the docroot's place is not shown: {e}"
        );
    }
}
