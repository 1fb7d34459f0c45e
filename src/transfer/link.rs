//! One side of the data channel: frames, seals and sends datagrams in batches; receives,
//! checks (token, then AEAD) and opens them. Anything that fails a check is dropped and counted.

use std::io;
use std::net::UdpSocket;
use std::time::Duration;

use super::crypto::DatagramCrypto;
use super::report::LinkStats;
use super::udp::{self, RecvBatch, BATCH};
use super::{Options, Role};
use crate::protocol::datagram::HEADER_LEN;
use crate::protocol::{Datagram, DatagramHeader, DatagramKind, MAX_DATAGRAM};

/// A received, authenticated datagram.
pub struct Incoming<'a> {
    /// Its header.
    pub header: DatagramHeader,
    /// Its payload, decrypted.
    pub payload: &'a [u8],
}

/// The data channel of one session, as one side sees it.
pub struct Link {
    sock: UdpSocket,
    token: u64,
    role: Role,
    crypto: DatagramCrypto,
    next_seq: u64,
    send_bufs: Vec<Vec<u8>>,
    send_lens: Vec<usize>,
    pending: usize,
    recv: RecvBatch,
    /// Counters.
    pub stats: LinkStats,
}

impl Link {
    /// Wraps a prepared (connected) socket.
    pub fn new(sock: UdpSocket, opts: &Options) -> Link {
        Link {
            sock,
            token: opts.token,
            role: opts.role,
            crypto: DatagramCrypto::new(opts.role, opts.key),
            next_seq: 1,
            send_bufs: (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            send_lens: vec![0; BATCH],
            pending: 0,
            recv: RecvBatch::new(),
            stats: LinkStats::default(),
        }
    }

    /// Bytes each datagram carries on top of its payload (header, tag).
    pub fn overhead(&self) -> usize {
        HEADER_LEN + self.crypto.overhead()
    }

    /// Room left in the current batch.
    pub fn batch_room(&self) -> usize {
        BATCH - self.pending
    }

    /// Queues one datagram; `fill` writes its plaintext payload (at most `len` bytes, the
    /// slice it is given) and returns how many bytes it wrote, or an error that is passed on.
    /// The caller flushes with [`Link::flush`] (queueing into a full batch flushes first).
    pub fn queue<E>(
        &mut self,
        kind: DatagramKind,
        file_id: u32,
        offset: u64,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<(), E>
    where
        E: From<io::Error>,
    {
        if self.pending == BATCH {
            self.flush()?;
        }
        let seq = self.next_seq;
        let buf = &mut self.send_bufs[self.pending];
        let room = MAX_DATAGRAM - HEADER_LEN - self.crypto.overhead();
        let written = fill(&mut buf[HEADER_LEN..HEADER_LEN + len.min(room)])?;
        let mut header = [0u8; HEADER_LEN];
        DatagramHeader {
            token: self.token,
            kind,
            seq,
            file_id,
            offset,
        }
        .encode(&mut header);
        buf[..HEADER_LEN].copy_from_slice(&header);
        self.send_lens[self.pending] = self.crypto.seal(seq, buf, written);
        self.next_seq += 1;
        self.pending += 1;
        Ok(())
    }

    /// Sends the queued datagrams. Ones the kernel will not take after a few short waits are
    /// dropped (the receiver asks for their data again).
    pub fn flush(&mut self) -> io::Result<()> {
        let mut start = 0;
        let mut tries = 0;
        while start < self.pending {
            let msgs: Vec<&[u8]> = self.send_bufs[start..self.pending]
                .iter()
                .zip(&self.send_lens[start..self.pending])
                .map(|(b, &l)| &b[..l])
                .collect();
            let n = match udp::send_batch(&self.sock, &msgs) {
                Ok(n) => n,
                // ICMP "port unreachable" from an earlier datagram: the peer may be restarting
                // its socket; the idle timeout decides when to give up.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => 0,
                Err(e) => {
                    self.pending = 0;
                    return Err(e);
                }
            };
            self.stats.datagrams_sent += n as u64;
            start += n;
            if n == 0 {
                tries += 1;
                if tries > 20 {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        self.pending = 0;
        Ok(())
    }

    /// Sends one small datagram (NACK, status) at once.
    pub fn send_now(&mut self, kind: DatagramKind, payload: &[u8]) -> io::Result<()> {
        self.queue::<io::Error>(kind, 0, 0, payload.len(), |buf| {
            buf.copy_from_slice(payload);
            Ok(payload.len())
        })?;
        self.flush()
    }

    /// Waits up to `wait` for datagrams, then hands every authenticated one of this session to
    /// `handle`. Returns how many were handled. The server answers late `Hello`s here.
    pub fn receive(
        &mut self,
        wait: Duration,
        mut handle: impl FnMut(Incoming<'_>),
    ) -> io::Result<usize> {
        if !wait.is_zero() && !udp::wait_readable(&self.sock, wait) {
            return Ok(0);
        }
        let n = self.recv.recv(&self.sock)?;
        let mut handled = 0;
        let mut hello = false;
        for i in 0..n {
            let bytes = self.recv.get_mut(i);
            let header = match Datagram::decode(bytes) {
                Ok(d) => d.header,
                Err(_) => {
                    self.stats.dropped_malformed += 1;
                    continue;
                }
            };
            if header.token != self.token {
                self.stats.dropped_token += 1;
                continue;
            }
            match header.kind {
                DatagramKind::Hello => {
                    hello = true;
                    continue;
                }
                DatagramKind::HelloAck => continue,
                _ => {}
            }
            let (head, payload) = bytes.split_at_mut(HEADER_LEN);
            let mut clear = [0u8; HEADER_LEN];
            clear.copy_from_slice(head);
            match self.crypto.open(header.seq, &clear, payload) {
                Ok(plain) => {
                    self.stats.datagrams_accepted += 1;
                    handled += 1;
                    handle(Incoming {
                        header,
                        payload: plain,
                    });
                }
                Err(_) => self.stats.dropped_auth += 1,
            }
        }
        if hello && self.role == Role::Server {
            let _ = self.sock.send(&udp::hello_ack(self.token));
        }
        Ok(handled)
    }

    /// True when many datagrams failed authentication and none passed: the keys differ.
    pub fn keys_mismatch(&self) -> bool {
        self.stats.dropped_auth >= 16 && self.stats.datagrams_accepted == 0
    }

    /// The number of datagrams the last receive call got from the kernel.
    pub fn last_batch(&self) -> usize {
        self.recv.count()
    }
}
