//! The UDP side: opening the path (`Hello` / `HelloAck`), socket tuning, and batched
//! `sendmmsg` / `recvmmsg` so one system call moves many messages (each possibly many
//! datagrams, see [`super::offload`]).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::offload::{self, CmsgBuf};
use super::TransferError;
use crate::protocol::datagram::HEADER_LEN;
use crate::protocol::{Datagram, DatagramHeader, DatagramKind, MAX_DATAGRAM};

/// Most messages moved by one batched call.
pub const BATCH: usize = 64;
/// Receive buffers when the kernel coalesces datagrams (each holds up to 64 KiB).
const GRO_SLOTS: usize = 32;
/// Receive buffer size asked for (the kernel caps it unless we may force it, e.g. as root): room
/// for tens of milliseconds at several Gbit/s while the receiving thread is busy elsewhere.
const RECEIVE_BUFFER: usize = 32 * 1024 * 1024;
/// Send buffer size asked for.
const SEND_BUFFER: usize = 16 * 1024 * 1024;
/// How often `Hello` is repeated until answered.
const HELLO_INTERVAL: Duration = Duration::from_millis(200);

fn hello(token: u64, kind: DatagramKind) -> [u8; HEADER_LEN] {
    let mut buf = [0u8; HEADER_LEN];
    DatagramHeader {
        token,
        kind,
        seq: 0,
        file_id: 0,
        offset: 0,
    }
    .encode(&mut buf);
    buf
}

/// True when `bytes` is a datagram of `kind` carrying `token`.
fn is(bytes: &[u8], token: u64, kind: DatagramKind) -> bool {
    matches!(Datagram::decode(bytes), Ok(d) if d.header.token == token && d.header.kind == kind)
}

/// Client side of opening the UDP path: sends `Hello` to `server` every 200 ms until a
/// `HelloAck` with `token` comes back from it, or `timeout` passes.
pub fn udp_connect(
    sock: &UdpSocket,
    server: SocketAddr,
    token: u64,
    timeout: Duration,
) -> Result<(), TransferError> {
    let start = Instant::now();
    let msg = hello(token, DatagramKind::Hello);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    sock.set_read_timeout(Some(
        HELLO_INTERVAL.min(timeout.max(Duration::from_millis(1))),
    ))
    .map_err(|e| TransferError::io("setting the UDP socket's read timeout", e))?;
    loop {
        if start.elapsed() >= timeout {
            return Err(TransferError::UdpUnreachable {
                peer: server.to_string(),
                waited: timeout,
            });
        }
        // A send error (e.g. ICMP port unreachable from an earlier try) is retried.
        let _ = sock.send_to(&msg, server);
        let round = Instant::now();
        while round.elapsed() < HELLO_INTERVAL {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == server && is(&buf[..n], token, DatagramKind::HelloAck) => {
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) if is_transient(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
                Err(e) => return Err(TransferError::io("waiting for the server's HelloAck", e)),
            }
        }
    }
}

/// Server side of opening the UDP path: waits up to `timeout` for a `Hello` with `token`,
/// answers `HelloAck` to the address it came from (as seen through any NAT), and returns it.
pub fn udp_accept(
    sock: &UdpSocket,
    token: u64,
    timeout: Duration,
) -> Result<SocketAddr, TransferError> {
    let start = Instant::now();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    sock.set_read_timeout(Some(HELLO_INTERVAL))
        .map_err(|e| TransferError::io("setting the UDP socket's read timeout", e))?;
    while start.elapsed() < timeout {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if is(&buf[..n], token, DatagramKind::Hello) => {
                let ack = hello(token, DatagramKind::HelloAck);
                sock.send_to(&ack, from)
                    .map_err(|e| TransferError::io(format!("answering HelloAck to {from}"), e))?;
                return Ok(from);
            }
            Ok(_) => {}
            Err(e) if is_transient(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(TransferError::io("waiting for the client's Hello", e)),
        }
    }
    Err(TransferError::UdpUnreachable {
        peer: "any client".into(),
        waited: timeout,
    })
}

/// A `Hello` datagram, as the server's engine re-answers late ones (their `HelloAck` was lost).
pub(crate) fn hello_ack(token: u64) -> [u8; HEADER_LEN] {
    hello(token, DatagramKind::HelloAck)
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Readies the session socket for the engine: connected to `peer` (so the kernel drops
/// datagrams from anyone else), large buffers, and timeouts so no call blocks for long.
pub(crate) fn prepare(sock: &UdpSocket, peer: SocketAddr) -> Result<(), TransferError> {
    sock.connect(peer)
        .map_err(|e| TransferError::io(format!("connecting the UDP socket to {peer}"), e))?;
    sock.set_nonblocking(false)
        .map_err(|e| TransferError::io("configuring the UDP socket", e))?;
    sock.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| TransferError::io("setting the UDP socket's write timeout", e))?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| TransferError::io("setting the UDP socket's read timeout", e))?;
    let fd = sock.as_raw_fd();
    for (force, plain, size) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, RECEIVE_BUFFER),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, SEND_BUFFER),
    ] {
        let size = size as libc::c_int;
        // SAFETY: setsockopt with a valid fd and a pointer to a live c_int of the given size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                force,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            // Not privileged: the plain option, capped by net.core.[rw]mem_max. Best effort.
            // SAFETY: as above.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    plain,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
    Ok(())
}

/// Waits up to `timeout` for the socket to become readable; true if it is.
pub(crate) fn wait_readable(sock: &UdpSocket, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    rc > 0
}

/// One `sendmmsg` of prepared messages on the connected socket. Returns how many went out; a
/// full socket buffer or an interrupted call is `Ok(0)` (the caller decides to retry or drop).
pub(crate) fn send_messages(sock: &UdpSocket, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    if msgs.is_empty() {
        return Ok(0);
    }
    // SAFETY: `msgs` are valid headers whose iovecs and control buffers the caller keeps alive
    // for the call; the socket is connected so no address is needed.
    let n = unsafe {
        libc::sendmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len().min(u32::MAX as usize) as libc::c_uint,
            0,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        if is_transient(&e) || e.raw_os_error() == Some(libc::ENOBUFS) {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// Reusable receive buffers for `recvmmsg`, coalesced (GRO) or one datagram per message.
pub(crate) struct RecvBatch {
    buf: Vec<u8>,
    slot: usize,
    lens: Vec<usize>,
    segments: Vec<usize>,
    cmsgs: Vec<CmsgBuf>,
    gro: bool,
    count: usize,
    /// The socket's cumulative drop count (`SO_RXQ_OVFL`), as last reported.
    drops: u32,
}

impl RecvBatch {
    /// With `gro`, [`GRO_SLOTS`] buffers of [`offload::GRO_BUFFER`] bytes; else [`BATCH`]
    /// buffers of [`MAX_DATAGRAM`] bytes.
    pub(crate) fn new(gro: bool) -> RecvBatch {
        let (slots, slot) = if gro {
            (GRO_SLOTS, offload::GRO_BUFFER)
        } else {
            (BATCH, MAX_DATAGRAM)
        };
        RecvBatch {
            buf: vec![0u8; slots * slot],
            slot,
            lens: vec![0; slots],
            segments: vec![0; slots],
            cmsgs: vec![CmsgBuf::default(); slots],
            gro,
            count: 0,
            drops: 0,
        }
    }

    /// Receives whatever is queued (up to one message per buffer) without waiting; returns the
    /// number of messages. Truncated (oversized) messages come back with length 0.
    pub(crate) fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let slots = self.lens.len();
        let base = self.buf.as_mut_ptr();
        let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: all-zero mmsghdr is valid.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..slots {
            // SAFETY: slot i lies inside `buf` (slots * slot bytes).
            iovs[i].iov_base = unsafe { base.add(i * self.slot) }.cast();
            iovs[i].iov_len = self.slot;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
            offload::attach_receive_buffer(&mut hdrs[i].msg_hdr, &mut self.cmsgs[i]);
        }
        // SAFETY: `slots` headers, each with one iovec over its own live slot of `buf` and,
        // with GRO, a live control buffer.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                slots as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.count = 0;
            if is_transient(&e) || e.kind() == io::ErrorKind::ConnectionRefused {
                return Ok(0);
            }
            return Err(e);
        }
        let n = n as usize;
        for (i, h) in hdrs.iter().take(n).enumerate() {
            let len = if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                0
            } else {
                (h.msg_len as usize).min(self.slot)
            };
            self.lens[i] = len;
            if let Some(d) = offload::received_drop_count(&h.msg_hdr) {
                self.drops = d;
            }
            self.segments[i] = if self.gro {
                offload::received_segment_size(&h.msg_hdr).unwrap_or(len)
            } else {
                len
            };
        }
        self.count = n;
        Ok(n)
    }

    /// Where message `i` starts in [`RecvBatch::bytes_mut`], its length and the size of the
    /// datagrams it holds (the last one may be shorter).
    pub(crate) fn message(&self, i: usize) -> (usize, usize, usize) {
        (i * self.slot, self.lens[i], self.segments[i].max(1))
    }

    /// All receive buffers.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// All receive buffers, mutable (payloads are decrypted in place).
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Datagrams the kernel dropped on this socket so far because its buffer was full (0 when
    /// it does not say).
    pub(crate) fn drops(&self) -> u32 {
        self.drops
    }

    /// How many messages the last [`RecvBatch::recv`] returned.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// True when the last receive filled every buffer (more may be queued).
    pub(crate) fn was_full(&self) -> bool {
        self.count == self.lens.len()
    }
}
