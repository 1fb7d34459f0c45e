//! One side of the data channel: frames, seals and sends datagrams in batches; receives,
//! checks (token, then AEAD) and opens them. Anything that fails a check is dropped and counted.
//!
//! File data goes out without a user-space copy: each datagram is three iovecs (clear header,
//! the payload sealed in place in the caller's buffer, tag), and runs of equal-size datagrams
//! share one message with `UDP_SEGMENT` ([`super::offload`]) when the kernel and path allow.

use std::io;
use std::net::UdpSocket;
use std::time::Duration;

use super::crypto::DatagramCrypto;
use super::offload::{self, CmsgBuf};
use super::report::LinkStats;
use super::udp::{self, RecvBatch};
use super::{Options, Role};
use crate::protocol::datagram::{HEADER_LEN, TAG_LEN};
use crate::protocol::{Datagram, DatagramHeader, DatagramKind, MAX_DATAGRAM};

/// Most datagrams sealed and handed to the kernel in one round of [`Link::send_data`].
const ROUND: usize = 256;
/// Short waits for a full socket buffer before the rest of a round is dropped.
const SEND_TRIES: u32 = 20;

/// A received, authenticated datagram.
pub struct Incoming<'a> {
    /// Its header.
    pub header: DatagramHeader,
    /// Its payload, decrypted.
    pub payload: &'a [u8],
}

/// Where an accepted datagram's plaintext lies in the receive buffers.
#[derive(Clone, Copy)]
struct Accepted {
    header: DatagramHeader,
    start: usize,
    len: usize,
}

/// The data channel of one session, as one side sees it.
pub struct Link {
    sock: UdpSocket,
    token: u64,
    role: Role,
    crypto: DatagramCrypto,
    next_seq: u64,
    gso: bool,
    heads: Vec<[u8; HEADER_LEN]>,
    tags: Vec<[u8; TAG_LEN]>,
    cmsgs: Vec<CmsgBuf>,
    small: Vec<u8>,
    recv: RecvBatch,
    accepted: Vec<Accepted>,
    /// Counters.
    pub stats: LinkStats,
}

impl Link {
    /// Wraps a prepared (connected) socket; turns on segmentation offload where available.
    pub fn new(sock: UdpSocket, opts: &Options) -> Link {
        let gso = offload::gso_supported(&sock);
        let gro = offload::enable_gro(&sock);
        offload::enable_drop_count(&sock);
        Link {
            sock,
            token: opts.token,
            role: opts.role,
            crypto: DatagramCrypto::new(opts.role, opts.key),
            next_seq: 1,
            gso,
            heads: vec![[0; HEADER_LEN]; ROUND],
            tags: vec![[0; TAG_LEN]; ROUND],
            cmsgs: vec![CmsgBuf::default(); ROUND],
            small: vec![0; MAX_DATAGRAM],
            recv: RecvBatch::new(gro),
            accepted: Vec::with_capacity(udp::BATCH),
            stats: LinkStats::default(),
        }
    }

    /// Bytes each datagram carries on top of its payload (header, tag).
    pub fn overhead(&self) -> usize {
        HEADER_LEN + self.crypto.overhead()
    }

    /// Datagrams per message at `wire` bytes each (1 without segmentation offload).
    fn group_len(&self, wire: usize) -> usize {
        if self.gso {
            (offload::MAX_BYTES / wire.max(1)).clamp(1, offload::MAX_SEGMENTS)
        } else {
            1
        }
    }

    /// Sends `data`, the file bytes at `offset` of file `file_id`, as Data datagrams of
    /// `size` bytes (the last may be shorter), sealing them in place: `data` holds ciphertext
    /// afterwards. Datagrams the kernel will not take after a few short waits are dropped (the
    /// receiver asks for them again). Returns how many datagrams went out.
    pub fn send_data(
        &mut self,
        file_id: u32,
        offset: u64,
        data: &mut [u8],
        size: usize,
    ) -> io::Result<usize> {
        let size = size.max(1);
        let mut sent = 0;
        let mut done = 0usize;
        while done < data.len() {
            let take = (data.len() - done).min(ROUND * size);
            let round = &mut data[done..done + take];
            let count = take.div_ceil(size);
            for (k, payload) in round.chunks_mut(size).enumerate() {
                let seq = self.next_seq;
                self.next_seq += 1;
                DatagramHeader {
                    token: self.token,
                    kind: DatagramKind::Data,
                    seq,
                    file_id,
                    offset: offset + (done + k * size) as u64,
                }
                .encode(&mut self.heads[k]);
                if let Some(tag) = self.crypto.seal_separate(seq, &self.heads[k], payload) {
                    self.tags[k] = tag;
                }
            }
            sent += self.send_round(round, size, count)?;
            done += take;
        }
        self.stats.datagrams_sent += sent as u64;
        Ok(sent)
    }

    /// Hands the `count` sealed datagrams of `round` (headers and tags in `self`) to the
    /// kernel, in as few messages and calls as it allows.
    fn send_round(&mut self, round: &[u8], size: usize, count: usize) -> io::Result<usize> {
        let tagged = self.crypto.overhead() > 0;
        let per = if tagged { 3 } else { 2 };
        let mut iovs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 3 * ROUND];
        // SAFETY: all-zero mmsghdr is valid.
        let mut msgs: [libc::mmsghdr; ROUND] = unsafe { std::mem::zeroed() };
        let mut first = 0;
        let mut tries = 0;
        while first < count {
            let group = self.group_len(HEADER_LEN + size + self.crypto.overhead());
            // Lay out the messages for datagrams first..count.
            let mut nmsg = 0;
            let mut k = first;
            while k < count {
                let end = (k + group).min(count);
                let iov_start = k * per;
                for d in k..end {
                    let from = d * size;
                    let to = ((d + 1) * size).min(round.len());
                    let at = d * per;
                    iovs[at] = libc::iovec {
                        iov_base: self.heads[d].as_ptr() as *mut libc::c_void,
                        iov_len: HEADER_LEN,
                    };
                    iovs[at + 1] = libc::iovec {
                        iov_base: round[from..to].as_ptr() as *mut libc::c_void,
                        iov_len: to - from,
                    };
                    if tagged {
                        iovs[at + 2] = libc::iovec {
                            iov_base: self.tags[d].as_ptr() as *mut libc::c_void,
                            iov_len: TAG_LEN,
                        };
                    }
                }
                // SAFETY: all-zero msghdr is valid.
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_iov = &mut iovs[iov_start];
                hdr.msg_iovlen = ((end - k) * per) as _;
                if end - k > 1 {
                    let wire = (HEADER_LEN + size + self.crypto.overhead()) as u16;
                    offload::attach_segment_size(&mut hdr, &mut self.cmsgs[nmsg], wire);
                }
                msgs[nmsg] = libc::mmsghdr {
                    msg_hdr: hdr,
                    msg_len: 0,
                };
                nmsg += 1;
                k = end;
            }
            // The iovecs point into `round`, `self.heads` and `self.tags`, and the control
            // buffers into `self.cmsgs`; none of them moves or is written until the call returns.
            match udp::send_messages(&self.sock, &mut msgs[..nmsg]) {
                Ok(0) => {}
                Ok(n) => {
                    first = (first + n * group).min(count);
                    continue;
                }
                // ICMP "port unreachable" from an earlier datagram: the peer may be restarting
                // its socket; the idle timeout decides when to give up.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                // The path or device cannot segment (no checksum offload, a datagram over the
                // path MTU...): one datagram per message from now on.
                Err(e) if self.gso && group > 1 && offload_refused(&e) => {
                    self.gso = false;
                    continue;
                }
                Err(e) => return Err(e),
            }
            tries += 1;
            if tries > SEND_TRIES {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(first)
    }

    /// Sends one small datagram (NACK, status) at once. A full socket buffer drops it (these
    /// are repeated periodically).
    pub fn send_now(&mut self, kind: DatagramKind, payload: &[u8]) -> io::Result<()> {
        let room = MAX_DATAGRAM - HEADER_LEN - self.crypto.overhead();
        let len = payload.len().min(room);
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut header = [0u8; HEADER_LEN];
        DatagramHeader {
            token: self.token,
            kind,
            seq,
            file_id: 0,
            offset: 0,
        }
        .encode(&mut header);
        self.small[..HEADER_LEN].copy_from_slice(&header);
        self.small[HEADER_LEN..HEADER_LEN + len].copy_from_slice(&payload[..len]);
        let total = self.crypto.seal(seq, &mut self.small, len);
        match self.sock.send(&self.small[..total]) {
            Ok(_) => {
                self.stats.datagrams_sent += 1;
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionRefused
                ) || e.raw_os_error() == Some(libc::ENOBUFS) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Waits up to `wait` for datagrams, then checks and opens whatever is queued; the ones of
    /// this session that authenticate are then available from [`Link::incoming`] until the
    /// next call. Returns how many there are. The server answers late `Hello`s here.
    pub fn receive(&mut self, wait: Duration) -> io::Result<usize> {
        self.accepted.clear();
        if !wait.is_zero() && !udp::wait_readable(&self.sock, wait) {
            return Ok(0);
        }
        let n = self.recv.recv(&self.sock)?;
        let mut hello = false;
        for i in 0..n {
            let (base, len, segment) = self.recv.message(i);
            if len == 0 {
                self.stats.dropped_malformed += 1;
                continue;
            }
            let mut at = base;
            while at < base + len {
                let end = (at + segment).min(base + len);
                hello |= self.open_one(at, end);
                at = end;
            }
        }
        if hello && self.role == Role::Server {
            let _ = self.sock.send(&udp::hello_ack(self.token));
        }
        Ok(self.accepted.len())
    }

    /// Checks and opens the datagram at `start..end` of the receive buffers; true if it was a
    /// `Hello` of this session.
    fn open_one(&mut self, start: usize, end: usize) -> bool {
        let bytes = &mut self.recv.bytes_mut()[start..end];
        let header = match Datagram::decode(bytes) {
            Ok(d) => d.header,
            Err(_) => {
                self.stats.dropped_malformed += 1;
                return false;
            }
        };
        if header.token != self.token {
            self.stats.dropped_token += 1;
            return false;
        }
        match header.kind {
            DatagramKind::Hello => return true,
            DatagramKind::HelloAck => return false,
            _ => {}
        }
        let (head, payload) = bytes.split_at_mut(HEADER_LEN);
        let mut clear = [0u8; HEADER_LEN];
        clear.copy_from_slice(head);
        match self.crypto.open(header.seq, &clear, payload) {
            Ok(plain) => {
                let len = plain.len();
                self.stats.datagrams_accepted += 1;
                self.accepted.push(Accepted {
                    header,
                    start: start + HEADER_LEN,
                    len,
                });
            }
            Err(_) => self.stats.dropped_auth += 1,
        }
        false
    }

    /// The datagrams the last [`Link::receive`] accepted, in arrival order.
    pub fn incoming(&self) -> impl Iterator<Item = Incoming<'_>> + '_ {
        let bytes = self.recv.bytes();
        self.accepted.iter().map(move |a| Incoming {
            header: a.header,
            payload: &bytes[a.start..a.start + a.len],
        })
    }

    /// True when many datagrams failed authentication and none passed: the keys differ.
    pub fn keys_mismatch(&self) -> bool {
        self.stats.dropped_auth >= 16 && self.stats.datagrams_accepted == 0
    }

    /// True when the last receive call filled every buffer (more may be waiting).
    pub fn more_queued(&self) -> bool {
        self.recv.was_full()
    }

    /// Datagrams the kernel dropped so far because this socket's receive buffer was full.
    pub fn socket_drops(&self) -> u32 {
        self.recv.drops()
    }

    /// Messages the last receive call got from the kernel.
    pub fn last_batch(&self) -> usize {
        self.recv.count()
    }
}

/// Errors with which a kernel or device refuses a segmented send.
fn offload_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EIO | libc::EMSGSIZE | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
    )
}
