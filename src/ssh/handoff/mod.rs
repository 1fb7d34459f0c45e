//! The OpenSSH deployment mode's front end: OpenSSH's `sshd` authenticates the proxy's users,
//! whose login shell `aspshell` hands its stdin, stdout and stderr to the daemon over a Unix
//! socket ([`wire`]); this module turns each hand-off into the same [`ExecRequest`] the SSH
//! front end makes, so the session that follows is the same: rules, accounts, balancing,
//! kernel entries, logs.
//!
//! Nothing the shell says about identity is believed. The user is the socket peer's uid (the
//! kernel's), and must have `aspshell` as login shell in the password database; the client's
//! address and the proxy address it connected to are read by the daemon from the sshd process
//! that serves the connection ([`origin`]). Users get no rights on the kernel: only the daemon
//! programs it.

pub mod origin;
pub mod wire;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};

use super::access::Access;
use super::server::{ExecFinish, ExecHandler, ExecRequest, Finish};
use crate::config::CommandShape;
use ipnet::IpNet;

/// The login shell a user must have for the daemon to accept their hand-off (its file name).
pub const SHELL_NAME: &str = "aspshell";
/// How long a connected shell has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Hand-offs being checked at once; more wait (sessions themselves are limited by
/// `<max_sessions>`).
const MAX_PENDING: usize = 32;

/// What the hand-off front end accepts.
#[derive(Debug, Clone)]
pub struct HandoffConfig {
    /// `<allowed_clients>`: empty allows all.
    pub allowed_clients: Vec<IpNet>,
    /// Exact command lines run as parsed sessions (`ascp --server`).
    pub allowed_commands: Vec<String>,
    /// Shapes run as opaque sessions (IBM's commands).
    pub opaque_commands: Vec<CommandShape>,
}

/// Why a hand-off was refused (told to the user on stderr, logged).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{0}")]
    Request(#[from] wire::RequestError),
    #[error("no request within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
    #[error("uid {0} is not in the password database")]
    UnknownUid(u32),
    #[error("user {user}'s login shell is {shell}, not {SHELL_NAME}: the hand-off serves only {SHELL_NAME} users")]
    NotAspshell { user: String, shell: String },
    #[error("cannot find the SSH connection of process {pid}: {why}")]
    NoOrigin { pid: u32, why: String },
    #[error("the peer's process id is unknown")]
    NoPid,
    #[error("client {0} is not in <allowed_clients>")]
    ClientNotAllowed(std::net::IpAddr),
    #[error("Command not accepted: {0}")]
    Command(String),
    #[error("too many sessions, try again later")]
    TooMany,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What a hand-off is checked against, from its settings.
fn access_of(config: &HandoffConfig) -> Arc<Access> {
    Arc::new(
        Access::new(
            String::new(),
            None,
            config.allowed_clients.clone(),
            config.allowed_commands.clone(),
        )
        .with_opaque_commands(config.opaque_commands.clone()),
    )
}

/// Serves hand-offs on `listener` until `stop` turns true, then removes the socket file. A new
/// value in `config` (a reload) applies to the hand-offs accepted from then on.
pub async fn serve(
    mut config: watch::Receiver<HandoffConfig>,
    listener: UnixListener,
    handler: Arc<dyn ExecHandler>,
    mut stop: watch::Receiver<bool>,
) {
    let mut access = access_of(&config.borrow_and_update());
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!("hand-off socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => {
                // The socket file goes with the daemon: nothing stale is left in /run.
                if let Some(path) = listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf)) {
                    let _ = std::fs::remove_file(path);
                }
                return;
            }
        };
        let Ok(permit) = Arc::clone(&pending).acquire_owned().await else {
            return;
        };
        if config.has_changed().unwrap_or(false) {
            access = access_of(&config.borrow_and_update());
        }
        let access = Arc::clone(&access);
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            handle(stream, &access, handler, permit).await;
        });
    }
}

/// A request that passed every check, ready to run.
struct Accepted {
    user: String,
    origin: origin::Origin,
    command: String,
    kind: super::access::CommandKind,
    stdin: OwnedFd,
    stdout: OwnedFd,
}

/// One hand-off, from the request to the exit status sent back.
async fn handle(
    mut stream: UnixStream,
    access: &Access,
    handler: Arc<dyn ExecHandler>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut stderr_fd = None;
    let accepted = check(&mut stream, access, &*handler, &mut stderr_fd).await;
    drop(permit);
    let accepted = match accepted {
        Ok(a) => a,
        Err((who, refusal)) => {
            warn!("hand-off refused{who}: {refusal}");
            if let Some(fd) = stderr_fd.take() {
                let text = format!("fasp-proxy: {refusal}\n");
                let _ = write_fd(fd, text.into_bytes()).await;
            }
            let _ = stream.write_all(&wire::status_bytes(1)).await;
            return;
        }
    };
    let Some(stderr) = stderr_fd else {
        return;
    };
    let status = run(&mut stream, accepted, stderr, &*handler).await;
    let _ = stream.write_all(&wire::status_bytes(status)).await;
}

/// Reads and checks the request; on refusal returns who asked (for the log) and why.
async fn check(
    stream: &mut UnixStream,
    access: &Access,
    handler: &dyn ExecHandler,
    stderr_fd: &mut Option<OwnedFd>,
) -> Result<Accepted, (String, Refused)> {
    let cred = stream
        .peer_cred()
        .map_err(|e| (String::new(), Refused::Io(e)))?;
    let uid = cred.uid();
    let pid = cred.pid().and_then(|p| u32::try_from(p).ok());
    let request = tokio::time::timeout(REQUEST_TIMEOUT, read(stream))
        .await
        .map_err(|_| (format!(" (uid {uid})"), Refused::Timeout))?
        .map_err(|e| (format!(" (uid {uid})"), Refused::Request(e)))?;
    let wire::Request {
        command,
        stdin,
        stdout,
        stderr,
    } = request;
    *stderr_fd = Some(stderr);
    let pid = pid.ok_or((format!(" (uid {uid})"), Refused::NoPid))?;
    let (user, origin) = tokio::task::spawn_blocking(move || identify(uid, pid))
        .await
        .map_err(|e| (format!(" (uid {uid})"), Refused::Io(io::Error::other(e))))?
        .map_err(|r| (format!(" (uid {uid})"), r))?;
    let who = format!(" ({user} from {})", origin.client);
    if !access.client_allowed(origin.client.ip()) {
        return Err((who, Refused::ClientNotAllowed(origin.client.ip())));
    }
    let Some(kind) = access.classify(&command) else {
        return Err((who, Refused::Command(escape(&command))));
    };
    if !handler.admit() {
        return Err((who, Refused::TooMany));
    }
    Ok(Accepted {
        user,
        origin,
        command,
        kind,
        stdin,
        stdout,
    })
}

/// The user (by uid, with `aspshell` as login shell) and the SSH connection (by pid).
fn identify(uid: u32, pid: u32) -> Result<(String, origin::Origin), Refused> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .ok_or(Refused::UnknownUid(uid))?;
    let shell_ok = user
        .shell
        .file_name()
        .is_some_and(|n| n == std::ffi::OsStr::new(SHELL_NAME));
    if !shell_ok {
        return Err(Refused::NotAspshell {
            user: user.name,
            shell: user.shell.display().to_string(),
        });
    }
    let origin =
        origin::find(Path::new("/proc"), pid, uid).map_err(|why| Refused::NoOrigin { pid, why })?;
    Ok((user.name, origin))
}

/// Reads the request once the socket is readable.
async fn read(stream: &UnixStream) -> Result<wire::Request, wire::RequestError> {
    loop {
        stream.readable().await?;
        let fd = stream.as_raw_fd();
        let attempt = stream.try_io(Interest::READABLE, || match wire::read_request(fd) {
            Err(wire::RequestError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            other => Ok(other),
        });
        match attempt {
            Ok(result) => return result,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs an accepted hand-off as a session: the shell's stdin and stdout bridged to the session's
/// socket, its stderr given the session's closing text. Returns the exit status. The session
/// ends early if the shell goes away (its socket closes).
async fn run(
    stream: &mut UnixStream,
    accepted: Accepted,
    stderr: OwnedFd,
    handler: &dyn ExecHandler,
) -> u32 {
    let Accepted {
        user,
        origin,
        command,
        kind,
        stdin,
        stdout,
    } = accepted;
    let bridge = match (reader(stdin), writer(stdout), UnixStream::pair()) {
        (Ok(r), Ok(w), Ok(pair)) => Ok((r, w, pair)),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
    };
    let (mut input, mut output, (session_io, bridge_io)) = match bridge {
        Ok(b) => b,
        Err(e) => {
            warn!("hand-off refused ({user} from {}): {e}", origin.client);
            let _ = write_fd(stderr, format!("fasp-proxy: {e}\n").into_bytes()).await;
            return 1;
        }
    };
    info!(
        "hand-off: {user} from {} (sshd process {}) runs '{command}'",
        origin.client, origin.sshd_pid
    );
    let (finish, finished) = ExecFinish::channel();
    handler.exec(ExecRequest {
        user,
        peer: origin.client,
        local: origin.local,
        command,
        kind,
        io: session_io,
        finish,
    });
    let (mut from_session, mut to_session) = bridge_io.into_split();
    let inbound = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut input, &mut to_session).await;
        let _ = to_session.shutdown().await;
    });
    let outbound = async {
        let _ = tokio::io::copy(&mut from_session, &mut output).await;
        drop(output);
    };
    let ended = async { tokio::join!(outbound, finished).1 };
    let end = tokio::select! {
        end = ended => end,
        () = shell_gone(stream) => {
            inbound.abort();
            return 1;
        }
    };
    inbound.abort();
    let Finish {
        exit_status,
        stderr: text,
    } = end.unwrap_or(Finish {
        exit_status: 1,
        stderr: String::new(),
    });
    if !text.is_empty() {
        let _ = write_fd(stderr, text.into_bytes()).await;
    }
    exit_status
}

/// Resolves when the shell's end of the socket closes (it sends nothing after its request).
async fn shell_gone(stream: &UnixStream) {
    let mut byte = [0u8; 1];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut byte) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            _ => return,
        }
    }
}

/// What a descriptor the shell sent is.
fn kind_of(fd: &OwnedFd) -> io::Result<nix::sys::stat::SFlag> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(io::Error::from)?;
    Ok(nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT)
}

/// The shell's stdin as an async reader (sshd gives a pipe or a socket).
fn reader(fd: OwnedFd) -> io::Result<Box<dyn AsyncRead + Send + Unpin>> {
    use nix::sys::stat::SFlag;
    match kind_of(&fd)? {
        SFlag::S_IFIFO => Ok(Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(
            fd,
        )?)),
        SFlag::S_IFSOCK => Ok(Box::new(socket(fd)?)),
        _ => Err(io::Error::other(
            "stdin is neither a pipe nor a socket (a terminal is not supported; connect without -t)",
        )),
    }
}

/// The shell's stdout or stderr as an async writer.
fn writer(fd: OwnedFd) -> io::Result<Box<dyn AsyncWrite + Send + Unpin>> {
    use nix::sys::stat::SFlag;
    match kind_of(&fd)? {
        SFlag::S_IFIFO => Ok(Box::new(tokio::net::unix::pipe::Sender::from_owned_fd(fd)?)),
        SFlag::S_IFSOCK => Ok(Box::new(socket(fd)?)),
        _ => Err(io::Error::other(
            "stdout is neither a pipe nor a socket (a terminal is not supported; connect without -t)",
        )),
    }
}

fn socket(fd: OwnedFd) -> io::Result<UnixStream> {
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true)?;
    UnixStream::from_std(std)
}

/// Writes `bytes` to a descriptor the shell sent, then closes it.
async fn write_fd(fd: OwnedFd, bytes: Vec<u8>) -> io::Result<()> {
    let mut w = writer(fd)?;
    let written = tokio::time::timeout(REQUEST_TIMEOUT, w.write_all(&bytes)).await;
    written.map_err(|_| io::Error::other("stderr write timed out"))?
}

/// A command for a log line or message: control characters escaped, at most 200 characters.
fn escape(command: &str) -> String {
    let mut out: String = command
        .chars()
        .take(200)
        .flat_map(char::escape_default)
        .collect();
    if command.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Binds the hand-off socket at `path`: its directory is created (0755) if missing, a stale
/// socket from an earlier run is replaced, and the socket is made connectable by every local
/// user (0666), since the daemon checks each peer itself.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let describe =
        |what: &str, e: io::Error| format!("hand-off socket {}: {what}: {e}", path.display());
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| describe("creating its directory", e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| describe("setting its directory's mode", e))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| describe("removing the old socket", e))?
        }
        Ok(_) => {
            return Err(format!(
                "hand-off socket {}: something other than a socket is there; remove it",
                path.display()
            ))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| describe("binding", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| describe("setting its mode", e))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_escaped_and_cut() {
        assert_eq!(escape("ascp --server; id\n"), "ascp --server; id\\n");
        let long = "x".repeat(300);
        assert_eq!(escape(&long).chars().count(), 201);
    }
}
