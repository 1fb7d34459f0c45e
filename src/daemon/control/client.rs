//! The client side of the control socket, for `fasp-proxy sessions` and `fasp-proxy reload`:
//! one request line, then the daemon's text until it closes.

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::time::Duration;

use super::{ERROR_PREFIX, SOCKET_NAME};

/// How long the client waits for the daemon's answer (a reload may take a while: the daemon
/// bounds its own wait below this).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

/// The daemon's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The text, as the daemon wrote it.
    pub text: String,
}

impl Answer {
    /// Whether the daemon refused or failed the request (its text starts with `error:`).
    pub fn is_error(&self) -> bool {
        self.text.starts_with(ERROR_PREFIX)
    }
}

/// Sends `request` (`list`, `close ID`, `reload`) to the daemon of this network namespace and
/// returns its answer; an error says why the daemon could not be asked.
pub fn request(request: &str) -> Result<Answer, String> {
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(SOCKET_NAME.as_bytes())
        .map_err(|e| e.to_string())?;
    let stream = std::os::unix::net::UnixStream::connect_addr(&addr)
        .map_err(|e| format!("no running fasp-proxy daemon here ({e})"))?;
    exchange(stream, request)
}

/// Writes `request` and a newline on `stream`, then reads the answer to its end.
pub fn exchange(
    mut stream: std::os::unix::net::UnixStream,
    request: &str,
) -> Result<Answer, String> {
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(5))))
        .map_err(|e| e.to_string())?;
    // A daemon that answered at once and closed (a refusal) makes the write fail; its answer
    // is still there to read.
    let _ = stream
        .write_all(format!("{request}\n").as_bytes())
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write));
    let mut text = String::new();
    let read = match stream.read_to_string(&mut text) {
        // A daemon that answered without reading all of the request (a refusal) resets the
        // connection after its answer, which was read.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !text.is_empty() => Ok(0),
        other => other,
    };
    read.map_err(|e| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            format!(
                "the daemon did not answer within {} s",
                ANSWER_TIMEOUT.as_secs()
            )
        } else {
            format!("reading from the daemon: {e}")
        }
    })?;
    if text.is_empty() {
        return Err("the daemon closed the connection without an answer".into());
    }
    Ok(Answer { text })
}
