//! aspshell's syslog lines: facility `auth`, ident `aspshell`, sent to `/dev/log` without
//! ever blocking.
//!
//! The socket is a non-blocking datagram socket: a missing `/dev/log` means no line, a syslog
//! daemon that does not keep up means a lost line, never a shell that hangs or fails. (The
//! `syslog` crate's sockets block, hence these few lines of our own.)

use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Where the local syslog daemon listens.
pub const SOCKET: &str = "/dev/log";

/// The ident every line carries.
pub const IDENT: &str = "aspshell";

/// syslog's `auth` facility.
const FACILITY_AUTH: u8 = 4;

/// Longest message sent; longer ones are cut (syslog daemons cut at a few KiB anyway).
const MAX_MESSAGE: usize = 4000;

/// How serious a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Something the administrator must fix (an unusable configuration, a program that will
    /// not run).
    Err = 3,
    /// A refused request.
    Warning = 4,
    /// An interactive login attempt.
    Notice = 5,
    /// An accepted command.
    Info = 6,
}

/// A connection to the local syslog daemon, or nothing if there is none.
#[derive(Debug)]
pub struct Syslog {
    socket: Option<UnixDatagram>,
}

impl Syslog {
    /// Connects to [`SOCKET`]; without one, every [`Syslog::send`] does nothing.
    pub fn open() -> Syslog {
        Syslog::open_at(Path::new(SOCKET))
    }

    /// Connects to the datagram socket at `path`.
    pub fn open_at(path: &Path) -> Syslog {
        let socket = UnixDatagram::unbound().ok().and_then(|s| {
            s.set_nonblocking(true).ok()?;
            s.connect(path).ok()?;
            Some(s)
        });
        Syslog { socket }
    }

    /// Sends one line; errors (no daemon, a full queue) are ignored.
    pub fn send(&self, severity: Severity, message: &str) {
        if let Some(socket) = &self.socket {
            let line = format_line(severity, &timestamp(), std::process::id(), message);
            let _ = socket.send(line.as_bytes());
        }
    }
}

/// `<PRI>Mmm dd hh:mm:ss aspshell[PID]: MESSAGE` (RFC 3164, as glibc's `syslog(3)` sends it).
pub fn format_line(severity: Severity, timestamp: &str, pid: u32, message: &str) -> String {
    let mut cut = message.len().min(MAX_MESSAGE);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let priority = FACILITY_AUTH * 8 + severity as u8;
    format!(
        "<{priority}>{timestamp} {IDENT}[{pid}]: {}",
        &message[..cut]
    )
}

/// The local time as RFC 3164 writes it (`Dec  7 18:46:01`).
fn timestamp() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // SAFETY: time(NULL) has no preconditions; localtime_r writes only into `tm`, a plain C
    // struct for which all-zero bytes are a valid value.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return "Jan  1 00:00:00".to_string();
        }
        tm
    };
    let month = usize::try_from(tm.tm_mon)
        .ok()
        .and_then(|m| MONTHS.get(m))
        .unwrap_or(&"Jan");
    format!(
        "{month} {:>2} {:02}:{:02}:{:02}",
        tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn lines_have_the_auth_facility_and_the_ident() {
        assert_eq!(
            format_line(Severity::Warning, "Dec  7 18:46:01", 42, "refused"),
            "<36>Dec  7 18:46:01 aspshell[42]: refused"
        );
        assert!(format_line(Severity::Info, "t", 1, "x").starts_with("<38>"));
        assert!(format_line(Severity::Err, "t", 1, "x").starts_with("<35>"));
        let long = "é".repeat(MAX_MESSAGE);
        assert!(format_line(Severity::Info, "t", 1, &long).len() < MAX_MESSAGE + 40);
        let ts = timestamp();
        assert_eq!(ts.len(), 15, "{ts}");
    }

    #[test]
    fn a_line_reaches_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let daemon = UnixDatagram::bind(&path).unwrap();
        Syslog::open_at(&path).send(Severity::Info, "accepted: x");
        let mut buf = [0u8; 512];
        let n = daemon.recv(&mut buf).unwrap();
        let line = String::from_utf8_lossy(&buf[..n]);
        assert!(line.starts_with("<38>"), "{line}");
        assert!(
            line.ends_with(&format!(" aspshell[{}]: accepted: x", std::process::id())),
            "{line}"
        );
    }

    #[test]
    fn no_socket_or_a_full_one_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        Syslog::open_at(&dir.path().join("none")).send(Severity::Info, "nobody hears this");

        let path = dir.path().join("log");
        let _daemon = UnixDatagram::bind(&path).unwrap(); // never reads
        let log = Syslog::open_at(&path);
        let start = Instant::now();
        for _ in 0..5_000 {
            log.send(Severity::Info, &"x".repeat(1000));
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }
}
