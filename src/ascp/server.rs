//! `ascp --server`: the side sshd starts. Reads `SessionInit` on stdin, opens a UDP port for the
//! session, answers `SessionAccept`, then sends or receives the files.
//!
//! Docroots: the user is the real uid's passwd entry (never the environment), their docroot and
//! permissions come from [`config::DEFAULT_CONFIG_PATH`] (a fixed path: no option or variable
//! changes it), and every path of the session is resolved and opened beneath the docroot by the
//! kernel ([`crate::fsroot`]). A configuration that cannot be read or is invalid refuses the
//! session (fail closed). Refusals known up front (a direction not allowed, a source or
//! destination outside the docroot) come before any UDP port opens; names inside a transfer
//! are refused per file by the receiver.

use std::io::{self, Write};
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{self, Docroot};
use crate::fsroot::{is_containment_violation, Root, Violation};
use crate::protocol::frame::write_frame;
use crate::protocol::reader::read_frame;
use crate::protocol::{
    Direction, ErrorCode, ErrorFrame, Frame, SessionAccept, SessionInit, KEY_LEN, VERSION,
};
use crate::transfer::{self, Control, Options, Role};

/// First UDP port tried when the client lets the server choose.
pub const FIRST_UDP_PORT: u16 = 33001;
/// How many ports above it are tried.
pub const UDP_PORT_SPAN: u16 = 1000;
/// How long the server waits for the client's first frame and first datagram.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the server side on stdin/stdout; returns the process exit status.
pub fn run() -> i32 {
    match serve() {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(message) => {
            let _ = writeln!(io::stderr(), "ascp server: {message}");
            1
        }
    }
}

fn refuse(out: &mut impl Write, code: ErrorCode, message: String) -> String {
    let _ = write_frame(
        out,
        &Frame::Error(ErrorFrame {
            code,
            message: message.clone(),
        }),
    );
    message
}

/// Serves one session; `Ok(true)` when every file arrived intact.
fn serve() -> Result<bool, String> {
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    // Nothing may hang: if the client never speaks, give up.
    std::thread::spawn(|| {
        std::thread::sleep(HANDSHAKE_TIMEOUT);
        if !HANDSHAKE_DONE.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = writeln!(
                io::stderr(),
                "ascp server: no session request within {}s",
                HANDSHAKE_TIMEOUT.as_secs()
            );
            std::process::exit(1);
        }
    });
    let init = match read_frame(&mut stdin) {
        Ok(Some(Frame::SessionInit(init))) => init,
        Ok(Some(other)) => {
            return Err(refuse(
                &mut stdout,
                ErrorCode::Protocol,
                format!("expected SessionInit, got {}", other.name()),
            ))
        }
        Ok(None) => return Err("the client closed the connection before starting a session".into()),
        Err(e) => {
            return Err(refuse(
                &mut stdout,
                ErrorCode::Protocol,
                format!("bad session request: {e}"),
            ))
        }
    };
    if init.min_version > VERSION || init.max_version < VERSION {
        return Err(refuse(
            &mut stdout,
            ErrorCode::Version,
            format!(
                "client speaks protocol versions {}..={}, this server speaks {VERSION}",
                init.min_version, init.max_version
            ),
        ));
    }
    let (user, docroot) = user_docroot().map_err(|m| refuse(&mut stdout, ErrorCode::Refused, m))?;
    check_allowed(&init, &user, &docroot)
        .map_err(|m| refuse(&mut stdout, ErrorCode::Permission, m))?;
    let root = match &docroot.root {
        None => Root::unconfined(),
        Some(dir) => Root::open(dir).map_err(|e| {
            refuse(
                &mut stdout,
                ErrorCode::Refused,
                format!("the docroot of user {user} is not usable: {e}"),
            )
        })?,
    };
    let paths = check_paths(&init, &root).map_err(|(code, m)| refuse(&mut stdout, code, m))?;
    let sock =
        bind_udp(init.server_udp_port).map_err(|m| refuse(&mut stdout, ErrorCode::Other, m))?;
    let port = sock.local_addr().map_err(|e| e.to_string())?.port();
    let token = random_u64()?;
    let key = if init.encrypt {
        Some(random_key()?)
    } else {
        None
    };
    let datagram_size = init.datagram_size.clamp(256, 8192);
    let accept = SessionAccept {
        version: VERSION,
        server_udp_port: port,
        token,
        key: key.unwrap_or([0; KEY_LEN]),
        datagram_size,
    };
    write_frame(&mut stdout, &Frame::SessionAccept(accept))
        .map_err(|e| format!("writing to the client: {e}"))?;
    let peer = transfer::udp_accept(&sock, token, HANDSHAKE_TIMEOUT).map_err(|e| e.to_string())?;
    HANDSHAKE_DONE.store(true, std::sync::atomic::Ordering::SeqCst);

    let opts = Options {
        role: Role::Server,
        token,
        key,
        target_rate: init.target_rate,
        min_rate: init.min_rate,
        datagram_size: usize::from(datagram_size),
        resume: init.resume,
        overwrite: init.overwrite,
        recursive: init.recursive,
        root,
    };
    drop(stdin);
    drop(stdout);
    let control = Control {
        reader: Box::new(io::stdin()),
        writer: Box::new(io::stdout()),
    };
    let mut quiet = |_: &transfer::Progress| {};
    let report = match paths {
        Paths::Destination(dest) => {
            transfer::receive(control, sock, peer, &dest, &opts, &mut quiet)
        }
        Paths::Sources(sources) => transfer::send(control, sock, peer, &sources, &opts, &mut quiet),
    }
    .map_err(|e| e.to_string())?;
    Ok(report.all_intact())
}

static HANDSHAKE_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Who runs this server (the real uid's passwd entry: its name and home, never the
/// environment's) and their docroot from the fixed configuration path.
fn user_docroot() -> Result<(String, Docroot), String> {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .map_err(|e| format!("looking up uid {uid} in the passwd database: {e}"))?
        .ok_or_else(|| format!("uid {uid} has no passwd entry"))?;
    let docroot = config::load_docroot(
        Path::new(config::DEFAULT_CONFIG_PATH),
        &user.name,
        &user.dir,
    )
    .map_err(|m| format!("cannot tell the docroot of user {}: {m}", user.name))?;
    Ok((user.name, docroot))
}

/// The direction must be allowed by the docroot's `read_allowed` / `write_allowed`.
fn check_allowed(init: &SessionInit, user: &str, docroot: &Docroot) -> Result<(), String> {
    match init.direction {
        Direction::Download if !docroot.read_allowed => Err(format!(
            "downloads are not allowed for user {user} on this server (read_allowed is false)"
        )),
        Direction::Upload if !docroot.write_allowed => Err(format!(
            "uploads are not allowed for user {user} on this server (write_allowed is false)"
        )),
        _ => Ok(()),
    }
}

/// The session's paths in its [`Root`].
enum Paths {
    /// A download's sources.
    Sources(Vec<PathBuf>),
    /// An upload's destination.
    Destination(PathBuf),
}

/// A client path in `root`, or the refusal to send.
fn resolve(root: &Root, client_path: &str) -> Result<PathBuf, (ErrorCode, String)> {
    root.resolve(client_path).map_err(|v| match v {
        Violation::Containment(_) => (ErrorCode::Refused, v.to_string()),
        Violation::Empty | Violation::Nul(_) => (ErrorCode::Protocol, v.to_string()),
    })
}

/// Resolves the session's paths in `root` before any UDP port is opened: sources must exist
/// (so a typo fails fast and cleanly), and neither a source nor the destination may lead out of
/// the docroot (`..`, or a symbolic link on the way).
fn check_paths(init: &SessionInit, root: &Root) -> Result<Paths, (ErrorCode, String)> {
    let escape = |s: &str| {
        (
            ErrorCode::Refused,
            Violation::Containment(s.into()).to_string(),
        )
    };
    match init.direction {
        Direction::Download => {
            if init.sources.is_empty() {
                return Err((ErrorCode::Protocol, "no source path given".into()));
            }
            let mut out = Vec::new();
            for s in &init.sources {
                let p = resolve(root, s)?;
                match root.metadata(&p) {
                    Ok(m) if m.is_dir() && !init.recursive => {
                        return Err((
                            ErrorCode::Refused,
                            format!("{s} is a directory; use -r to send directories"),
                        ))
                    }
                    Ok(_) => {}
                    Err(e) if is_containment_violation(&e) => return Err(escape(s)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err((
                            ErrorCode::NotFound,
                            format!("{s}: no such file or directory on the server"),
                        ))
                    }
                    Err(e) => return Err((ErrorCode::Permission, format!("{s}: {e}"))),
                }
                out.push(p);
            }
            Ok(Paths::Sources(out))
        }
        Direction::Upload => {
            if init.destination.is_empty() {
                return Err((ErrorCode::Protocol, "no destination path given".into()));
            }
            let dest = resolve(root, &init.destination)?;
            // A destination that does not exist yet is fine (it is the new name); one reached
            // through a link out of the docroot is not.
            match root.metadata(&dest) {
                Err(e) if is_containment_violation(&e) => Err(escape(&init.destination)),
                _ => Ok(Paths::Destination(dest)),
            }
        }
    }
}

/// Binds the requested UDP port, or the first free one from [`FIRST_UDP_PORT`], on all
/// addresses (IPv6 socket accepting IPv4 too).
fn bind_udp(requested: u16) -> Result<UdpSocket, String> {
    let bind = |port: u16| UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)));
    if requested != 0 {
        return bind(requested).map_err(|e| format!("cannot open UDP port {requested}: {e}"));
    }
    for port in FIRST_UDP_PORT..FIRST_UDP_PORT.saturating_add(UDP_PORT_SPAN) {
        if let Ok(sock) = bind(port) {
            return Ok(sock);
        }
    }
    Err(format!(
        "no free UDP port in {FIRST_UDP_PORT}..{}",
        FIRST_UDP_PORT.saturating_add(UDP_PORT_SPAN)
    ))
}

fn random_u64() -> Result<u64, String> {
    let mut b = [0u8; 8];
    getrandom(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn random_key() -> Result<[u8; KEY_LEN], String> {
    let mut k = [0u8; KEY_LEN];
    getrandom(&mut k)?;
    Ok(k)
}

fn getrandom(buf: &mut [u8]) -> Result<(), String> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| "the system random generator failed".to_string())
}
