//! The hand-off socket's messages, both ends: `aspshell` (blocking, [`hand_off`]) and the
//! daemon ([`read_request`], [`write_status`]).
//!
//! The shell sends one message: [`MAGIC`], the command's length (u32, big-endian) and the
//! command's bytes, with its stdin, stdout and stderr attached as `SCM_RIGHTS`. It claims
//! nothing else: who the user is and where they connect from, the daemon finds out itself
//! (peer credentials, `/proc`). When the session ends the daemon answers with the exit status
//! (u32, big-endian) and closes the socket.

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};

/// First bytes of a hand-off request (name and version of this format).
pub const MAGIC: &[u8; 6] = b"FPHO1\0";
/// Longest command accepted.
pub const MAX_COMMAND: usize = 4096;
/// Header: magic and length.
const HEADER: usize = MAGIC.len() + 4;

/// A request as the daemon receives it.
#[derive(Debug)]
pub struct Request {
    /// The command line (UTF-8).
    pub command: String,
    /// The shell's stdin, stdout and stderr.
    pub stdin: OwnedFd,
    /// See `stdin`.
    pub stdout: OwnedFd,
    /// See `stdin`.
    pub stderr: OwnedFd,
}

/// Sends `command` and this process's stdin, stdout and stderr to the daemon listening on
/// `socket`, points stdin and stdout at /dev/null (so that the session's end is seen by sshd
/// when the daemon closes its copies), and waits for the session's exit status. Blocking; used
/// by `aspshell`.
pub fn hand_off(socket: &Path, command: &str) -> io::Result<u32> {
    if command.len() > MAX_COMMAND {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("command longer than {MAX_COMMAND} bytes"),
        ));
    }
    let mut stream = UnixStream::connect(socket)?;
    let mut message = Vec::with_capacity(HEADER + command.len());
    message.extend_from_slice(MAGIC);
    message.extend_from_slice(&(command.len() as u32).to_be_bytes());
    message.extend_from_slice(command.as_bytes());
    let fds: [RawFd; 3] = [0, 1, 2];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(&message)];
    let sent = sendmsg::<UnixAddr>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(io::Error::from)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the hand-off message was cut short",
        ));
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in [0, 1] {
        nix::unistd::dup2(null.as_raw_fd(), fd).map_err(io::Error::from)?;
    }
    let mut status = [0u8; 4];
    stream.read_exact(&mut status).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the fasp-proxy daemon ended the session without an exit status",
            )
        } else {
            e
        }
    })?;
    Ok(u32::from_be_bytes(status))
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The socket failed.
    #[error("reading the hand-off request: {0}")]
    Io(#[from] io::Error),
    /// Not a hand-off request of this version, or cut short.
    #[error("malformed hand-off request: {0}")]
    Malformed(&'static str),
}

/// Reads one request from a connected socket that is ready to read (non-blocking: the caller
/// waits for readability and retries on `WouldBlock`). The whole message must come in one
/// `recvmsg`, as the shell sends it; descriptors are received close-on-exec.
pub fn read_request(fd: RawFd) -> Result<Request, RequestError> {
    let mut buf = vec![0u8; HEADER + MAX_COMMAND + 1];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let (len, fds, truncated) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(io::Error::from)?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                for raw in received {
                    // SAFETY: the kernel installed this descriptor in our table for us just
                    // now (SCM_RIGHTS); nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
        (msg.bytes, fds, msg.flags.contains(MsgFlags::MSG_CTRUNC))
    };
    if truncated {
        return Err(RequestError::Malformed(
            "more descriptors than stdin, stdout, stderr",
        ));
    }
    let [stdin, stdout, stderr]: [OwnedFd; 3] = fds
        .try_into()
        .map_err(|_| RequestError::Malformed("not exactly three descriptors attached"))?;
    let body = &buf[..len];
    if body.len() < HEADER || &body[..MAGIC.len()] != MAGIC {
        return Err(RequestError::Malformed("unknown format"));
    }
    let mut n = [0u8; 4];
    n.copy_from_slice(&body[MAGIC.len()..HEADER]);
    let n = u32::from_be_bytes(n) as usize;
    if n > MAX_COMMAND || body.len() != HEADER + n {
        return Err(RequestError::Malformed("command length does not match"));
    }
    let command = String::from_utf8(body[HEADER..].to_vec())
        .map_err(|_| RequestError::Malformed("command is not UTF-8"))?;
    Ok(Request {
        command,
        stdin,
        stdout,
        stderr,
    })
}

/// The answer: the exit status.
pub fn status_bytes(status: u32) -> [u8; 4] {
    status.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn send_raw(sock: &UnixStream, body: &[u8], fds: &[RawFd]) {
        let cmsg = [ControlMessage::ScmRights(fds)];
        let iov = [IoSlice::new(body)];
        sendmsg::<UnixAddr>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).unwrap();
    }

    fn message(command: &str) -> Vec<u8> {
        let mut m = MAGIC.to_vec();
        m.extend_from_slice(&(command.len() as u32).to_be_bytes());
        m.extend_from_slice(command.as_bytes());
        m
    }

    #[test]
    fn a_request_round_trips_with_its_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let (pipe_r, pipe_w) = nix::unistd::pipe().unwrap();
        let fds = [pipe_r.as_raw_fd(), pipe_w.as_raw_fd(), pipe_w.as_raw_fd()];
        send_raw(&a, &message("ascp --server"), &fds);
        let req = read_request(b.as_raw_fd()).unwrap();
        assert_eq!(req.command, "ascp --server");
        // The received stdout is the pipe's write end: what goes in comes out of ours.
        let mut out = std::fs::File::from(req.stdout);
        out.write_all(b"hi").unwrap();
        drop(out);
        drop(req.stderr);
        drop(pipe_w);
        let mut got = String::new();
        std::fs::File::from(pipe_r)
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "hi");
    }

    #[test]
    fn malformed_requests_are_refused() {
        let (pipe_r, _pipe_w) = nix::unistd::pipe().unwrap();
        let one = [pipe_r.as_raw_fd()];
        let three = [pipe_r.as_raw_fd(); 3];
        let cases: Vec<(Vec<u8>, &[RawFd], &str)> = vec![
            (message("ascp --server"), &one, "three descriptors"),
            (b"GET / HTTP/1.1\r\n\r\n".to_vec(), &three, "unknown format"),
            (
                {
                    let mut m = message("ascp --server");
                    m.truncate(m.len() - 1);
                    m
                },
                &three,
                "length",
            ),
            (
                {
                    let mut m = MAGIC.to_vec();
                    m.extend_from_slice(&2u32.to_be_bytes());
                    m.extend_from_slice(&[0xff, 0xfe]);
                    m
                },
                &three,
                "UTF-8",
            ),
        ];
        for (body, fds, want) in cases {
            let (a, b) = UnixStream::pair().unwrap();
            send_raw(&a, &body, fds);
            let e = read_request(b.as_raw_fd()).unwrap_err().to_string();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
        // Too long: more than MAX_COMMAND bytes never parse.
        let (a, b) = UnixStream::pair().unwrap();
        send_raw(&a, &message(&"x".repeat(MAX_COMMAND + 1)), &three);
        assert!(read_request(b.as_raw_fd()).is_err());
    }
}
