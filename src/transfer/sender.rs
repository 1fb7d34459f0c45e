//! The sending side: announces each file, learns what the receiver has, sends the rest paced
//! at the controlled rate, re-sends what the receiver NACKs, and waits for the verdict.
//!
//! The whole-file BLAKE3 is computed while the file is read for its first (in-order) sending
//! pass. When the receiver reports chunk hashes (resume, `--overwrite=diff`), the file is read
//! once up front to hash its chunks (that pass also yields the checksum), then only differing
//! chunks are read again to be sent.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::chunks::{chunk_count, chunk_size_for, hash_file};
use super::control::Channel;
use super::files::{self, Entry, WalkItem};
use super::link::Link;
use super::pacing::{
    DeliveryRate, Feedback, QueueEstimate, RateController, TokenBucket, IP_UDP_OVERHEAD,
};
use super::ranges::RangeSet;
use super::report::{eta, FileReport, Outcome, Progress, Report, Throttle};
use super::udp;
use super::{Control, Options, TransferError, IDLE_TIMEOUT};
use crate::fsroot::{is_containment_violation, OpenOptions, Root};
use crate::protocol::datagram::{decode_nacks, Status};
use crate::protocol::{
    DatagramKind, ErrorCode, ErrorFrame, FileDone, FileHave, FileKind, FileResult, FileStart,
    Frame, SessionDone, CHECKSUM_LEN,
};

/// Bytes read from the file at a time in the first pass (rounded down to whole datagrams).
const SEGMENT: u64 = 1024 * 1024;
/// Most datagrams sent per turn of the sending loop (the token bucket may allow fewer).
const BURST: usize = 256;
/// Keepalive frames while we are busy with something long (hashing a huge file).
const KEEPALIVE: Duration = Duration::from_secs(1);

/// Sends `sources` (paths in `opts.root`) to the peer over `sock` (already past
/// `udp_connect`/`udp_accept`).
///
/// Every top-level source is checked before anything moves: a missing one, or a directory
/// without `recursive`, ends the session at once with an `Error` frame naming it. Per-file
/// failures reported by the receiver (disk full, permission) are recorded in the [`Report`]
/// and the session goes on.
pub fn send(
    control: Control,
    sock: UdpSocket,
    peer: SocketAddr,
    sources: &[PathBuf],
    opts: &Options,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, TransferError> {
    opts.validate()?;
    let started = Instant::now();
    let mut ch = Channel::start(control)?;
    let items = match files::walk(&opts.root, sources, opts.recursive) {
        Ok(items) => items,
        Err(e) => {
            let _ = ch.send(&Frame::Error(error_frame(&e)));
            return Err(e);
        }
    };
    udp::prepare(&sock, peer)?;
    let link = Link::new(sock, opts);
    let rate = RateController::new(opts.target_rate, opts.min_rate);
    let wire = opts.datagram_size + link.overhead() + IP_UDP_OVERHEAD;
    let mut s = Sender {
        bucket: TokenBucket::new(rate.rate(), wire),
        rate,
        delivery: DeliveryRate::new(wire as f64 / opts.datagram_size as f64),
        wire_per_byte: wire as f64 / opts.datagram_size as f64,
        queue: QueueEstimate::default(),
        sent_bytes: 0,
        trace: Trace::from_env(&opts.root),
        ch,
        link,
        opts: opts.clone(),
        report: Report::default(),
        last_activity: Instant::now(),
        last_keepalive: Instant::now(),
    };
    let result = s.run(&items, progress);
    s.report.link = s.link.stats;
    s.report.elapsed = started.elapsed();
    s.trace.summary(&s.report, s.rate.cuts);
    match result {
        Ok(()) => Ok(s.report),
        Err(e) => {
            if !matches!(e, TransferError::ControlClosed | TransferError::Peer(_)) {
                let _ = s.ch.send(&Frame::Error(error_frame(&e)));
            }
            Err(e)
        }
    }
}

/// The error frame telling the peer why this side gives up.
pub(crate) fn error_frame(e: &TransferError) -> ErrorFrame {
    let code = match e {
        TransferError::SourceNotFound(_) => ErrorCode::NotFound,
        TransferError::Io { source, .. } if is_containment_violation(source) => ErrorCode::Refused,
        TransferError::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::PermissionDenied => ErrorCode::Permission,
            std::io::ErrorKind::NotFound => ErrorCode::NotFound,
            _ if source.raw_os_error() == Some(libc::ENOSPC) => ErrorCode::NoSpace,
            _ => ErrorCode::Other,
        },
        TransferError::Timeout { .. } | TransferError::UdpUnreachable { .. } => ErrorCode::Timeout,
        TransferError::Protocol(_) | TransferError::Authentication(_) => ErrorCode::Protocol,
        TransferError::SourceIsDirectory(_) | TransferError::UnsupportedSource { .. } => {
            ErrorCode::Refused
        }
        _ => ErrorCode::Other,
    };
    ErrorFrame {
        code,
        message: crate::protocol::error_text(&e.to_string()),
    }
}

/// What the receiver answered to a `FileStart`.
enum Answer {
    Have(FileHave),
    Result(FileResult),
}

struct Sender {
    ch: Channel,
    link: Link,
    opts: Options,
    rate: RateController,
    bucket: TokenBucket,
    delivery: DeliveryRate,
    wire_per_byte: f64,
    queue: QueueEstimate,
    /// File bytes handed to the socket so far, all files, retransmissions included.
    sent_bytes: u64,
    trace: Trace,
    report: Report,
    last_activity: Instant,
    last_keepalive: Instant,
}

/// The file being sent.
struct Current<'a> {
    id: u32,
    entry: &'a Entry,
    size: u64,
}

impl Sender {
    fn run(
        &mut self,
        items: &[WalkItem],
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(), TransferError> {
        let mut id = 0u32;
        for item in items {
            match item {
                WalkItem::Skip { path, reason, .. } => self.report.files.push(FileReport {
                    path: path.clone(),
                    kind: FileKind::File,
                    size: 0,
                    bytes_transferred: 0,
                    outcome: Outcome::Skipped(reason.clone()),
                }),
                WalkItem::Send(entry) => {
                    id += 1;
                    self.send_entry(id, entry, progress)?;
                }
            }
        }
        self.ch.send(&Frame::SessionDone(SessionDone {
            files: id,
            bytes: self.report.bytes_transferred,
        }))?;
        // The receiver answers with its own SessionDone.
        let mut none = RangeSet::new();
        loop {
            while let Some(frame) = self.ch.try_next()? {
                self.last_activity = Instant::now();
                match frame {
                    Frame::SessionDone(_) => return Ok(()),
                    other => self.unexpected(other)?,
                }
            }
            self.pump(Duration::from_millis(5), None, &mut none)?;
            self.check_idle("waiting for the receiver's SessionDone")?;
        }
    }

    fn send_entry(
        &mut self,
        id: u32,
        entry: &Entry,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(), TransferError> {
        let (file, size) = match entry.kind {
            FileKind::Directory => (None, 0),
            FileKind::File => {
                let root = &self.opts.root;
                let f = root
                    .open_file(&entry.local, OpenOptions::new().read(true))
                    .map_err(|e| {
                        TransferError::io(format!("opening {}", root.show(&entry.local)), e)
                    })?;
                let size = f
                    .metadata()
                    .map_err(|e| {
                        TransferError::io(format!("reading {}", root.show(&entry.local)), e)
                    })?
                    .len();
                (Some(f), size)
            }
        };
        self.ch.send(&Frame::FileStart(FileStart {
            file_id: id,
            path: entry.path.clone(),
            kind: entry.kind,
            size,
            mode: entry.mode,
            mtime: entry.mtime,
        }))?;
        let cur = Current { id, entry, size };
        let answer = self.wait_answer(&cur)?;
        let (outcome, sent) = match (answer, file) {
            (Answer::Result(r), _) => (outcome_of(&r), 0),
            (Answer::Have(h), Some(file)) if !h.skip => self.transfer(&cur, &file, &h, progress)?,
            (Answer::Have(_), file) => {
                // Skipped (or a directory): the receiver's FileResult follows at once.
                let r = match self.wait_answer(&cur)? {
                    Answer::Result(r) => r,
                    Answer::Have(_) => {
                        return Err(TransferError::Protocol(format!(
                            "second FileHave for {}",
                            entry.path
                        )))
                    }
                };
                match (outcome_of(&r), file) {
                    (Outcome::Ok, Some(_)) => {
                        (Outcome::Skipped("already at the destination".into()), 0)
                    }
                    (o, _) => (o, 0),
                }
            }
        };
        self.report.bytes_transferred += sent;
        progress(&Progress {
            path: entry.path.clone(),
            bytes_done: if outcome == Outcome::Ok { size } else { 0 },
            total: size,
            rate: 0,
            eta: None,
            finished: true,
        });
        self.report.files.push(FileReport {
            path: entry.path.clone(),
            kind: entry.kind,
            size,
            bytes_transferred: sent,
            outcome,
        });
        Ok(())
    }

    /// Waits for the receiver's answer to a `FileStart`.
    fn wait_answer(&mut self, cur: &Current<'_>) -> Result<Answer, TransferError> {
        let mut none = RangeSet::new();
        loop {
            while let Some(frame) = self.ch.try_next()? {
                self.last_activity = Instant::now();
                match frame {
                    Frame::FileHave(h) if h.file_id == cur.id => return Ok(Answer::Have(h)),
                    Frame::FileResult(r) if r.file_id == cur.id => return Ok(Answer::Result(r)),
                    other => self.unexpected(other)?,
                }
            }
            self.pump(Duration::from_millis(5), None, &mut none)?;
            self.check_idle(&format!(
                "waiting for the receiver to accept {}",
                cur.entry.path
            ))?;
        }
    }

    fn unexpected(&mut self, frame: Frame) -> Result<(), TransferError> {
        match frame {
            Frame::Keepalive => Ok(()),
            Frame::Error(e) => Err(TransferError::Peer(e)),
            other => Err(TransferError::Protocol(format!(
                "unexpected frame from the receiver: {other:?}"
            ))),
        }
    }

    fn check_idle(&self, what: &str) -> Result<(), TransferError> {
        if self.link.keys_mismatch() {
            return Err(TransferError::Authentication(self.link.stats.dropped_auth));
        }
        if self.last_activity.elapsed() > IDLE_TIMEOUT {
            return Err(TransferError::Timeout {
                what: what.to_string(),
                waited: IDLE_TIMEOUT,
            });
        }
        Ok(())
    }

    /// Handles incoming datagrams (waiting up to `wait` for the first): status reports drive
    /// the rate; NACKs for file `current` (id, size) join `resend`.
    fn pump(
        &mut self,
        wait: Duration,
        current: Option<(u32, u64)>,
        resend: &mut RangeSet,
    ) -> Result<(), TransferError> {
        let mut wait = wait;
        for _ in 0..8 {
            let n = self
                .link
                .receive(wait)
                .map_err(|e| TransferError::io("receiving on the UDP socket", e))?;
            if n > 0 {
                self.last_activity = Instant::now();
            }
            let mut nack_ranges = 0u64;
            for inc in self.link.incoming() {
                match inc.header.kind {
                    DatagramKind::Status => {
                        if let Ok(st) = Status::decode(inc.payload) {
                            let delivered = self.delivery.on_status(st.received_bytes);
                            let queued = self.queue.on_status(
                                self.sent_bytes,
                                st.received_bytes,
                                st.lost_datagrams,
                                self.opts.datagram_size,
                            );
                            let fb = Feedback {
                                received: st.received_datagrams,
                                lost: st.lost_datagrams,
                                delivered,
                                queued: Some((queued as f64 * self.wire_per_byte) as u64),
                            };
                            let r = self.rate.on_feedback(fb);
                            self.trace.status(&fb, r);
                            self.bucket.set_rate(r);
                        }
                    }
                    DatagramKind::Nack => {
                        let Ok(ranges) = decode_nacks(inc.payload) else {
                            continue;
                        };
                        let Some((id, size)) = current else {
                            continue;
                        };
                        for r in ranges.iter().filter(|r| r.file_id == id) {
                            let end = r.offset.saturating_add(r.len).min(size);
                            resend.insert(r.offset.min(end), end);
                            nack_ranges += 1;
                        }
                    }
                    _ => {}
                }
            }
            self.link.stats.nack_ranges += nack_ranges;
            wait = Duration::ZERO;
            if !self.link.more_queued() {
                break;
            }
        }
        Ok(())
    }

    /// Sends one file's data until the receiver's verdict; returns it and the bytes sent.
    fn transfer(
        &mut self,
        cur: &Current<'_>,
        file: &File,
        have: &FileHave,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(Outcome, u64), TransferError> {
        let path = &cur.entry.path;
        let local = cur.entry.local.display().to_string();
        let size = cur.size;
        let read_err = |e: std::io::Error| TransferError::io(format!("reading {local}"), e);

        // What to send in the first pass, and how the checksum is obtained.
        let mut plan = RangeSet::new();
        let mut hasher = None;
        let mut checksum: Option<[u8; CHECKSUM_LEN]> = None;
        if have.chunks.is_empty() || have.chunk_size == 0 {
            plan.insert(0, size);
            hasher = Some(blake3::Hasher::new());
        } else {
            let cs = have.chunk_size;
            // The receiver chose the chunk size: only the one the spec gives for this size is
            // accepted (a tiny one would make us hold a hash per few bytes of a huge file).
            if cs != chunk_size_for(size) {
                return Err(TransferError::Protocol(format!(
                    "FileHave for {path}: chunk size {cs} is not {} (the size for {size} bytes)",
                    chunk_size_for(size)
                )));
            }
            let ch = &mut self.ch;
            let last = &mut self.last_keepalive;
            let (mine, whole) = hash_file(file, size, cs, &mut || {
                if last.elapsed() > KEEPALIVE {
                    *last = Instant::now();
                    let _ = ch.send(&Frame::Keepalive);
                }
            })
            .map_err(read_err)?;
            for i in 0..chunk_count(size, cs) {
                let theirs = have.chunks.get(i as usize);
                if theirs != mine.get(i as usize) {
                    plan.insert(i * cs, ((i + 1) * cs).min(size));
                }
            }
            checksum = Some(whole);
        }
        let resumed = size - plan.covered();

        let ds = self.opts.datagram_size;
        let overhead = self.link.overhead() + IP_UDP_OVERHEAD;
        let wire = ds + overhead;
        // First-pass reads: whole datagrams' worth, about SEGMENT bytes.
        let seg_cap = (SEGMENT as usize / ds).max(1) * ds;
        let mut segment = vec![0u8; seg_cap.min(size.max(1) as usize)];
        let mut again = vec![0u8; BURST * ds];
        let (mut seg_off, mut seg_len, mut seg_pos) = (0u64, 0usize, 0usize);
        let mut first_pass = 0u64;
        let mut resend = RangeSet::new();
        let mut done_sent = false;
        let mut sent = 0u64;
        let started = Instant::now();
        let mut throttle = Throttle::new(Duration::from_millis(100));
        self.last_activity = Instant::now();
        let send_err = |e| TransferError::io("sending on the UDP socket", e);

        loop {
            while let Some(frame) = self.ch.try_next()? {
                self.last_activity = Instant::now();
                match frame {
                    Frame::FileResult(r) if r.file_id == cur.id => {
                        return Ok((outcome_of(&r), sent));
                    }
                    other => self.unexpected(other)?,
                }
            }
            self.pump(Duration::ZERO, Some((cur.id, size)), &mut resend)?;
            self.check_idle(&format!("waiting for the receiver's verdict on {path}"))?;

            let work = !resend.is_empty() || seg_pos < seg_len || !plan.is_empty();
            if work {
                let max = self.bucket.batch_size(wire, BURST);
                let n = self.bucket.allowance(wire, max);
                if n == 0 {
                    let t = self.bucket.time_until(wire * max);
                    if t >= Duration::from_millis(2) {
                        self.pump(Duration::from_millis(1), Some((cur.id, size)), &mut resend)?;
                    } else {
                        std::thread::sleep(t);
                    }
                    continue;
                }
                let mut budget = n;
                // Retransmissions first, read again from the file.
                while budget > 0 {
                    let Some(r) = resend.pop_front((budget * ds) as u64) else {
                        break;
                    };
                    let len = (r.end - r.start) as usize;
                    let buf = &mut again[..len];
                    file.read_exact_at(buf, r.start).map_err(read_err)?;
                    self.link
                        .send_data(cur.id, r.start, buf, ds)
                        .map_err(send_err)?;
                    let count = len.div_ceil(ds);
                    budget = budget.saturating_sub(count);
                    self.bucket.consume(len + count * overhead);
                    self.link.stats.retransmitted_bytes += len as u64;
                    sent += len as u64;
                    self.sent_bytes += len as u64;
                }
                // Then new data, straight from the segment buffer (sealed in place).
                while budget > 0 {
                    if seg_pos == seg_len {
                        let Some(r) = plan.pop_front(segment.len() as u64) else {
                            break;
                        };
                        seg_len = (r.end - r.start) as usize;
                        file.read_exact_at(&mut segment[..seg_len], r.start)
                            .map_err(read_err)?;
                        if let Some(h) = hasher.as_mut() {
                            h.update(&segment[..seg_len]);
                        }
                        seg_off = r.start;
                        seg_pos = 0;
                    }
                    let len = (budget * ds).min(seg_len - seg_pos);
                    let data = &mut segment[seg_pos..seg_pos + len];
                    self.link
                        .send_data(cur.id, seg_off + seg_pos as u64, data, ds)
                        .map_err(send_err)?;
                    let count = len.div_ceil(ds);
                    budget = budget.saturating_sub(count);
                    self.bucket.consume(len + count * overhead);
                    seg_pos += len;
                    first_pass += len as u64;
                    sent += len as u64;
                    self.sent_bytes += len as u64;
                }
            } else if !done_sent {
                let sum = match (checksum, hasher.take()) {
                    (Some(c), _) => c,
                    (None, Some(h)) => *h.finalize().as_bytes(),
                    (None, None) => *blake3::hash(b"").as_bytes(),
                };
                checksum = Some(sum);
                self.ch.send(&Frame::FileDone(FileDone {
                    file_id: cur.id,
                    checksum: sum,
                }))?;
                done_sent = true;
            } else {
                self.pump(Duration::from_millis(5), Some((cur.id, size)), &mut resend)?;
            }

            if throttle.ready(false) {
                let done = resumed + first_pass;
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                let rate = (first_pass as f64 * 8.0 / secs) as u64;
                progress(&Progress {
                    path: path.clone(),
                    bytes_done: done,
                    total: size,
                    rate,
                    eta: eta(size - done, rate),
                    finished: false,
                });
            }
        }
    }
}

/// Optional trace of the rate control, for tuning: with `FASP_TRANSFER_TRACE=FILE` in the
/// environment the sender appends one line per receiver report (time, datagrams received and
/// lost, delivered rate, queued bytes, new rate) and a summary to FILE. Never in a session
/// confined to a docroot (FILE could be anywhere).
struct Trace {
    out: Option<std::io::BufWriter<File>>,
    start: Instant,
}

impl Trace {
    fn from_env(root: &Root) -> Trace {
        let path = std::env::var_os("FASP_TRANSFER_TRACE").filter(|_| !root.is_confined());
        let out = path.and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
                .map(std::io::BufWriter::new)
        });
        Trace {
            out,
            start: Instant::now(),
        }
    }

    fn status(&mut self, fb: &Feedback, rate: u64) {
        use std::io::Write;
        if let Some(out) = self.out.as_mut() {
            let _ = writeln!(
                out,
                "{:.3} recv {} lost {} delivered {:.1} queued {} rate {:.1}",
                self.start.elapsed().as_secs_f64(),
                fb.received,
                fb.lost,
                fb.delivered.unwrap_or(0) as f64 / 1e6,
                fb.queued.unwrap_or(0),
                rate as f64 / 1e6
            );
        }
    }

    fn summary(&mut self, report: &Report, cuts: u32) {
        use std::io::Write;
        if let Some(out) = self.out.as_mut() {
            let _ = writeln!(
                out,
                "summary elapsed {:.3} s, sent {} B, retransmitted {} B, cuts {cuts}, {:?}",
                report.elapsed.as_secs_f64(),
                report.bytes_transferred,
                report.link.retransmitted_bytes,
                report.link
            );
            let _ = out.flush();
        }
    }
}

fn outcome_of(r: &FileResult) -> Outcome {
    match &r.error {
        None => Outcome::Ok,
        Some(e) => Outcome::Failed {
            code: e.code,
            message: e.message.clone(),
        },
    }
}
