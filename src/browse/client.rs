//! The client end of `ascmd`: commands written, replies decoded, over any pair of streams
//! ([`Session`]) or over our SSH client ([`Remote`]: `ascmd` run on the server).
//!
//! One command line is written and its one reply read before the next, as IBM's own clients
//! do; a server's `error` reply is a [`CallError::Server`].

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::command::{literal_pattern, quote};
use super::wire::{read_reply, ErrorReply, Info, Mount, Reply, Size, Stat};
use crate::ssh::client::{self as ssh, ClientConfig};

/// Why a call did not give the expected reply.
#[derive(Debug)]
pub enum CallError {
    /// The server answered with an `error`.
    Server(ErrorReply),
    /// The stream failed, ended, or carried something that is not a reply.
    Io(io::Error),
    /// A reply of the wrong kind for the command.
    Unexpected(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Server(e) => write!(f, "{} (errno {})", e.errstr, e.errno),
            CallError::Io(e) => write!(f, "{e}"),
            CallError::Unexpected(what) => write!(f, "unexpected reply from ascmd: {what}"),
        }
    }
}

impl std::error::Error for CallError {}

impl From<io::Error> for CallError {
    fn from(e: io::Error) -> CallError {
        CallError::Io(e)
    }
}

fn unexpected(r: &Reply) -> CallError {
    let kind = match r {
        Reply::File(_) => "file",
        Reply::Dir(_) => "dir",
        Reply::Size(_) => "size",
        Reply::Error(_) => "error",
        Reply::Info(_) => "info",
        Reply::Success => "success",
        Reply::Exit => "exit",
        Reply::Df(_) => "df",
        Reply::Md5sum(_) => "md5sum",
    };
    CallError::Unexpected(format!("a {kind} record"))
}

/// What `as_ls` gave: one file, or a directory's entries.
// One per call, moved once: the size of the `File` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// The path is not a directory.
    File(Stat),
    /// The path is a directory.
    Dir(Vec<Stat>),
}

/// An `ascmd` session over a reader and a writer.
pub struct Session<R: Read, W: Write> {
    reader: R,
    writer: W,
    /// The `info` the server sent first.
    pub info: Info,
}

impl<R: Read, W: Write> Session<R, W> {
    /// Starts a session on an `ascmd` already running: with `v2`, sends `as_session_init`
    /// (`--host=` the value given, if any) first; then reads the server's `info`.
    pub fn start(
        mut reader: R,
        mut writer: W,
        v2: Option<Option<&str>>,
    ) -> Result<Self, CallError> {
        if let Some(host) = v2 {
            let mut line = "as_session_init --protocol=2".to_string();
            if let Some(h) = host {
                line.push_str(&format!(" --host={h}"));
            }
            line.push('\n');
            writer.write_all(line.as_bytes())?;
            writer.flush()?;
        }
        match read_reply(&mut reader)? {
            Some(Reply::Info(info)) => Ok(Session {
                reader,
                writer,
                info,
            }),
            Some(Reply::Error(e)) => Err(CallError::Server(e)),
            Some(other) => Err(unexpected(&other)),
            None => Err(CallError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "ascmd ended before its first reply",
            ))),
        }
    }

    /// Sends one command line (without its newline) and reads its reply; an `error` reply is
    /// returned as a reply here.
    pub fn call(&mut self, line: &str) -> Result<Reply, CallError> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")?;
        self.writer.flush()?;
        match read_reply(&mut self.reader)? {
            Some(r) => Ok(r),
            None => Err(CallError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "ascmd ended without answering",
            ))),
        }
    }

    fn checked(&mut self, line: &str) -> Result<Reply, CallError> {
        match self.call(line)? {
            Reply::Error(e) => Err(CallError::Server(e)),
            r => Ok(r),
        }
    }

    fn success(&mut self, line: &str) -> Result<(), CallError> {
        match self.checked(line)? {
            Reply::Success => Ok(()),
            r => Err(unexpected(&r)),
        }
    }

    /// `as_ls PATH`, with `-f` filters.
    pub fn ls(&mut self, path: &str, filters: &[&str]) -> Result<Listing, CallError> {
        let mut line = "as_ls".to_string();
        for f in filters {
            line.push_str(" -f ");
            line.push_str(&quote(f));
        }
        line.push(' ');
        line.push_str(&quote(path));
        match self.checked(&line)? {
            Reply::File(s) => Ok(Listing::File(s)),
            Reply::Dir(d) => Ok(Listing::Dir(d)),
            r => Err(unexpected(&r)),
        }
    }

    /// The attributes of `path` itself: `as_ls` of it, and for a directory `as_ls` of its
    /// parent filtered to its name. `None` for a directory whose parent cannot be listed
    /// (the docroot itself).
    pub fn stat(&mut self, path: &str) -> Result<Option<Stat>, CallError> {
        let trimmed = path.trim_end_matches('/');
        match self.ls(path, &[])? {
            Listing::File(s) => Ok(Some(s)),
            Listing::Dir(_) => {
                let (parent, name) = match trimmed.rsplit_once('/') {
                    Some((p, n)) => (if p.is_empty() { "/" } else { p }, n),
                    None => (".", trimmed),
                };
                if name.is_empty() || name == "." || name == ".." || name == "~" {
                    return Ok(None);
                }
                let pattern = literal_pattern(name);
                match self.ls(parent, &[&pattern]) {
                    Ok(Listing::Dir(entries)) => {
                        Ok(entries.into_iter().find(|e| e.name == name.as_bytes()))
                    }
                    Ok(Listing::File(_)) => Ok(None),
                    // The parent is above the docroot or not browsable: only the type is known.
                    Err(CallError::Server(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// `as_du PATH`.
    pub fn du(&mut self, path: &str) -> Result<Size, CallError> {
        match self.checked(&format!("as_du {}", quote(path)))? {
            Reply::Size(s) => Ok(s),
            r => Err(unexpected(&r)),
        }
    }

    /// `as_df [PATH]`.
    pub fn df(&mut self, path: Option<&str>) -> Result<Vec<Mount>, CallError> {
        let line = match path {
            Some(p) => format!("as_df {}", quote(p)),
            None => "as_df".to_string(),
        };
        match self.checked(&line)? {
            Reply::Df(m) => Ok(m),
            r => Err(unexpected(&r)),
        }
    }

    /// `as_md5sum PATH`.
    pub fn md5sum(&mut self, path: &str) -> Result<String, CallError> {
        match self.checked(&format!("as_md5sum {}", quote(path)))? {
            Reply::Md5sum(h) => Ok(h),
            r => Err(unexpected(&r)),
        }
    }

    /// `as_mkdir PATH`.
    pub fn mkdir(&mut self, path: &str) -> Result<(), CallError> {
        self.success(&format!("as_mkdir {}", quote(path)))
    }

    /// `as_mv FROM TO`.
    pub fn mv(&mut self, from: &str, to: &str) -> Result<(), CallError> {
        self.success(&format!("as_mv {} {}", quote(from), quote(to)))
    }

    /// `as_cp FROM TO`.
    pub fn cp(&mut self, from: &str, to: &str) -> Result<(), CallError> {
        self.success(&format!("as_cp {} {}", quote(from), quote(to)))
    }

    /// `as_rm PATH`.
    pub fn rm(&mut self, path: &str) -> Result<(), CallError> {
        self.success(&format!("as_rm {}", quote(path)))
    }

    /// Sends `as_exit` (the server answers nothing) and returns the streams.
    pub fn exit(mut self) -> io::Result<(R, W)> {
        self.writer.write_all(b"as_exit\n")?;
        self.writer.flush()?;
        Ok((self.reader, self.writer))
    }
}

/// How long the server may take to send its first reply after login.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// `ascmd` running on a server over our SSH client.
pub struct Remote {
    client: ssh::Client,
    outcome: tokio::task::JoinHandle<ssh::ExecOutcome>,
    /// The session; its streams are the SSH channel.
    pub session: Session<UnixStream, UnixStream>,
}

/// How a remote `ascmd` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Its exit status, if the server sent one.
    pub exit_status: Option<u32>,
    /// What it wrote on stderr.
    pub stderr: String,
}

impl Remote {
    /// Logs in as `config` says and runs `command` (`ascmd`, or `ascmd -V2` with `v2`);
    /// Err with what went wrong, the server's stderr included when it said something.
    pub fn connect(
        runtime: &tokio::runtime::Runtime,
        config: &ClientConfig,
        command: &str,
        v2: bool,
    ) -> Result<Remote, String> {
        let client = runtime
            .block_on(ssh::connect(config))
            .map_err(|e| e.to_string())?;
        let exec = match runtime.block_on(client.exec(command)) {
            Ok(e) => e,
            Err(e) => {
                runtime.block_on(client.close());
                return Err(e.to_string());
            }
        };
        let started = (|| {
            let reader = exec.stream.try_clone()?;
            reader.set_read_timeout(Some(START_TIMEOUT))?;
            Ok::<_, io::Error>(reader)
        })()
        .map_err(CallError::Io)
        .and_then(|reader| {
            let host = config.host.clone();
            Session::start(reader, exec.stream, v2.then_some(Some(host.as_str())))
        });
        match started {
            Ok(session) => {
                session
                    .reader_stream()
                    .set_read_timeout(None)
                    .map_err(|e| e.to_string())?;
                Ok(Remote {
                    client,
                    outcome: exec.outcome,
                    session,
                })
            }
            Err(e) => {
                let ended = finish(runtime, &client, exec.outcome);
                let mut msg = format!("`{command}` on {}: {e}", config.host);
                if !ended.stderr.is_empty() {
                    msg.push_str(&format!("; the server said: {}", ended.stderr));
                }
                if let Some(s) = ended.exit_status {
                    msg.push_str(&format!(" (exit status {s})"));
                }
                Err(msg)
            }
        }
    }

    /// Ends the session (`as_exit`), waits a little for the exit status, logs out.
    pub fn close(self, runtime: &tokio::runtime::Runtime) -> Ended {
        let Remote {
            client,
            outcome,
            session,
        } = self;
        if let Ok((_, writer)) = session.exit() {
            let _ = writer.shutdown(std::net::Shutdown::Write);
        }
        finish(runtime, &client, outcome)
    }
}

impl Session<UnixStream, UnixStream> {
    fn reader_stream(&self) -> &UnixStream {
        &self.reader
    }
}

fn finish(
    runtime: &tokio::runtime::Runtime,
    client: &ssh::Client,
    outcome: tokio::task::JoinHandle<ssh::ExecOutcome>,
) -> Ended {
    let outcome =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), outcome).await });
    runtime.block_on(client.close());
    match outcome {
        Ok(Ok(o)) => Ended {
            exit_status: o.exit_status,
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        },
        _ => Ended {
            exit_status: None,
            stderr: String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::browse::ops::{Ops, Permissions};
    use crate::browse::server::{serve, Version};
    use crate::fsroot::Root;

    /// A client against our server in a thread, over a socket pair.
    fn pair(root: Root) -> (Session<UnixStream, UnixStream>, std::thread::JoinHandle<()>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let input = std::io::BufReader::new(theirs.try_clone().unwrap());
            let ops = Ops::new(root, Permissions::all(), "t");
            serve(Ok(ops), Version::V2, input, theirs).unwrap();
        });
        let s = Session::start(ours.try_clone().unwrap(), ours, Some(Some("h"))).unwrap();
        (s, server)
    }

    #[test]
    fn every_call_against_our_server() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"abc").unwrap();
        let (mut s, server) = pair(Root::open(t.path()).unwrap());
        assert_eq!(s.info.protocol, Some(2));
        s.mkdir("/d").unwrap();
        s.cp("/f", "/d").unwrap();
        s.mv("/d/f", "/d/g").unwrap();
        match s.ls("/d", &[]).unwrap() {
            Listing::Dir(e) => assert_eq!(e.len(), 1),
            other => panic!("{other:?}"),
        }
        let st = s.stat("/d").unwrap().unwrap();
        assert_eq!(st.name, b"d");
        assert_eq!(st.zmode.as_deref().map(|m| &m[..1]), Some("d"));
        assert_eq!(s.stat("/").unwrap(), None);
        assert_eq!(s.stat("/f").unwrap().unwrap().size, Some(3));
        assert_eq!(s.du("/").unwrap().fcount, 2);
        assert_eq!(s.md5sum("/f").unwrap(), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(s.df(None).unwrap()[0].dir.as_deref(), Some(&b"/"[..]));
        s.rm("/d").unwrap();
        match s.rm("/d").unwrap_err() {
            CallError::Server(e) => assert_eq!(e.errno, libc::ENOENT as u32),
            other => panic!("{other:?}"),
        }
        let e = s.ls("/../x", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Path violates docroot containment: /../x (errno 13)"
        );
        let (_r, w) = s.exit().unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
        server.join().unwrap();
    }
}
