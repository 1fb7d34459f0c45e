//! The receiving side: places each announced file, reports what it already has, writes data
//! at its offsets into `<name>.partial`, NACKs holes until every byte is in, verifies the
//! sender's BLAKE3 and only then renames the file to its final name.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::chunks::{chunk_size_for, hash_file, hash_range};
use super::control::Channel;
use super::files::{partial_path, set_attributes, Destination};
use super::link::Link;
use super::ranges::RangeSet;
use super::report::{eta, FileReport, Outcome, Progress, Report, Throttle};
use super::sender::error_frame;
use super::udp;
use super::writer::WriteQueue;
use super::{Control, Options, Overwrite, ResumeLevel, TransferError, IDLE_TIMEOUT};
use crate::fsroot::{is_containment_violation, OpenOptions, Root};
use crate::protocol::datagram::{encode_nacks, Status};
use crate::protocol::{
    DatagramKind, ErrorCode, ErrorFrame, FileHave, FileKind, FileResult, FileStart, Frame,
    NackRange, SessionDone, CHECKSUM_LEN, MAX_NACK_RANGES,
};

/// How often a status report goes to the sender.
const STATUS_INTERVAL: Duration = Duration::from_millis(20);
/// How often holes are looked for.
const NACK_INTERVAL: Duration = Duration::from_millis(20);
/// A hole is asked for again only after this long, until the round trip of a NACK (NACK sent
/// to the first re-sent byte back) has been measured...
const NACK_RETRY: Duration = Duration::from_millis(250);
/// ...then after twice that round trip plus this margin, within [`NACK_RETRY_MIN`] and
/// [`NACK_RETRY`]: a lost NACK or re-sent datagram near the end of a file costs a few round
/// trips, not a quarter of a second.
const NACK_RETRY_MARGIN: Duration = Duration::from_millis(20);
/// The shortest wait before asking for a hole again.
const NACK_RETRY_MIN: Duration = Duration::from_millis(40);
/// Most NACK datagrams per round.
const NACK_DATAGRAMS: usize = 16;
/// When a receive returned fewer messages than this...
const COALESCE_BELOW: usize = 8;
/// ...the receiving loop sleeps this long before the next.
const COALESCE: Duration = Duration::from_micros(500);
/// Keepalive frames while busy (hashing or verifying a huge file).
const KEEPALIVE: Duration = Duration::from_secs(1);
/// The received prefix is handed to the writing thread for hashing (read back from the page
/// cache in big reads: much faster than datagram by datagram) each time it grew this much.
const CATCH_UP: u64 = 4 * 1024 * 1024;

/// Receives files from the peer into `destination`, a path in `opts.root` (see the module docs
/// of [`crate::transfer`] for the exchange). If `destination` is an existing directory the
/// files go under it; otherwise it is the new name of the single top-level source. Every
/// directory, partial file, rename and attribute change goes through `opts.root`.
pub fn receive(
    control: Control,
    sock: UdpSocket,
    peer: SocketAddr,
    destination: &Path,
    opts: &Options,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, TransferError> {
    opts.validate()?;
    let started = Instant::now();
    udp::prepare(&sock, peer)?;
    let ch = Channel::start(control)?;
    let mut r = Receiver {
        ch,
        link: Link::new(sock, opts),
        opts: opts.clone(),
        dest: Destination::new(&opts.root, destination),
        current: None,
        ignore: None,
        report: Report::default(),
        dirs: Vec::new(),
        last_activity: Instant::now(),
        last_keepalive: Instant::now(),
        last_status: Instant::now(),
        last_nack: Instant::now(),
        max_seq: 0,
        prev_max_seq: 0,
        interval_received: 0,
        received_bytes: 0,
        gap_lost: 0,
        reported_lost: 0,
        nack_rtt: None,
        writes: WriteQueue::start()
            .map_err(|e| TransferError::io("starting the writing thread", e))?,
    };
    let result = r.run(progress);
    r.report.link = r.link.stats;
    r.report.elapsed = started.elapsed();
    match result {
        Ok(()) => Ok(r.report),
        Err(e) => {
            if !matches!(e, TransferError::ControlClosed | TransferError::Peer(_)) {
                let _ = r.ch.send(&Frame::Error(error_frame(&e)));
            }
            Err(e)
        }
    }
}

/// What the partial file starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Base {
    /// Nothing: a new, empty (sparse) partial file.
    Fresh,
    /// A partial file left by an earlier transfer (`-k`).
    Partial,
    /// The existing destination file, copied to the partial file on the first write.
    Final,
}

/// The file being received.
struct FileRx {
    /// The session's file system (the docroot, when confined).
    root: Root,
    id: u32,
    path: String,
    final_path: PathBuf,
    partial: PathBuf,
    size: u64,
    mode: u32,
    mtime: i64,
    base: Base,
    file: Option<Arc<File>>,
    /// The writing thread knows this file (see [`WriteQueue::begin`]).
    begun: bool,
    /// Bytes known to be right (received, or pre-existing and not being rewritten).
    have: RangeSet,
    /// Bytes received in this session (kept only when resuming, for the fallback).
    fresh: RangeSet,
    received: u64,
    highest_end: u64,
    chunk_size: u64,
    /// End of the pre-existing bytes reported in `FileHave`.
    reported_end: u64,
    rewriting: Vec<bool>,
    base_checksum: Option<[u8; CHECKSUM_LEN]>,
    done: Option<[u8; CHECKSUM_LEN]>,
    /// The writing thread hashes the contiguous prefix as it grows (fresh files only)...
    verify: bool,
    /// ...and has been told it may hash up to here.
    hash_requested: u64,
    nack_times: BTreeMap<u64, Instant>,
    nack_now: bool,
    fallback_used: bool,
    started: Instant,
}

fn code_of(e: &io::Error) -> ErrorCode {
    if is_containment_violation(e) {
        return ErrorCode::Refused;
    }
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        ErrorCode::NoSpace
    } else {
        match e.kind() {
            io::ErrorKind::PermissionDenied => ErrorCode::Permission,
            io::ErrorKind::NotFound => ErrorCode::NotFound,
            _ if e.raw_os_error() == Some(libc::EROFS) => ErrorCode::Permission,
            _ => ErrorCode::Other,
        }
    }
}

impl FileRx {
    /// Opens (creating or copying as needed) the partial file for writing.
    fn writable(&mut self) -> io::Result<&Arc<File>> {
        if self.file.is_none() {
            if self.base == Base::Final {
                // A copy of the destination to patch. Never written through whatever sits at
                // the partial path (a symlink planted there would redirect fs::copy): it is
                // removed, and the copy made into a file this call creates.
                if self.root.symlink_metadata(&self.partial).is_ok() {
                    self.root.remove_file(&self.partial)?;
                }
                let mut from = self
                    .root
                    .open_file(&self.final_path, OpenOptions::new().read(true))?;
                let mut to = self.root.open_file(
                    &self.partial,
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW),
                )?;
                io::copy(&mut from, &mut to)?;
            }
            let f = self.root.open_file(
                &self.partial,
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW),
            )?;
            f.set_len(self.size)?;
            self.file = Some(Arc::new(f));
        }
        match &self.file {
            Some(f) => Ok(f),
            None => Err(io::Error::other("partial file not open")),
        }
    }

    /// Records one datagram's data; true when it is to be written (false: out of range,
    /// duplicate, or zeros into a fresh sparse file). The file is then open.
    fn accept(&mut self, offset: u64, data: &[u8]) -> io::Result<bool> {
        let len = data.len() as u64;
        let Some(end) = offset.checked_add(len) else {
            return Ok(false);
        };
        if len == 0 || end > self.size {
            return Ok(false); // not ours to write: ignore
        }
        self.received += len;
        self.highest_end = self.highest_end.max(end);
        if offset < self.reported_end && self.chunk_size > 0 {
            let first = offset / self.chunk_size;
            let last = (end.min(self.reported_end) - 1) / self.chunk_size;
            for c in first..=last {
                if let Some(flag) = self.rewriting.get_mut(c as usize) {
                    if !*flag {
                        *flag = true;
                        let cs = self.chunk_size;
                        self.have
                            .remove(c * cs, ((c + 1) * cs).min(self.reported_end));
                    }
                }
            }
        }
        if self.have.contains_range(offset, end) {
            return Ok(false); // duplicate
        }
        let skip_write = self.base == Base::Fresh && data.iter().all(|&b| b == 0);
        self.writable()?;
        self.have.insert(offset, end);
        if self.reported_end > 0 {
            self.fresh.insert(offset, end);
        }
        Ok(!skip_write)
    }

    fn complete(&self) -> bool {
        self.done.is_some() && self.have.contains_range(0, self.size)
    }
}

struct Receiver {
    ch: Channel,
    link: Link,
    opts: Options,
    dest: Destination,
    current: Option<FileRx>,
    /// A file that failed: its late datagrams and frames are ignored.
    ignore: Option<u32>,
    report: Report,
    dirs: Vec<(PathBuf, u32, i64)>,
    last_activity: Instant,
    last_keepalive: Instant,
    last_status: Instant,
    last_nack: Instant,
    max_seq: u64,
    prev_max_seq: u64,
    interval_received: u32,
    received_bytes: u64,
    /// Data datagrams known lost from `seq` gaps, cumulative.
    gap_lost: u64,
    /// Lost datagrams reported in Status so far.
    reported_lost: u64,
    /// Smoothed time from a NACK to the first byte it asked for.
    nack_rtt: Option<Duration>,
    /// Writes (and hashes back) received data off the receiving loop.
    writes: WriteQueue,
}

impl Receiver {
    fn run(&mut self, progress: &mut dyn FnMut(&Progress)) -> Result<(), TransferError> {
        let mut throttle = Throttle::new(Duration::from_millis(100));
        let mut reported = 0;
        loop {
            while let Some(frame) = self.ch.try_next()? {
                self.last_activity = Instant::now();
                match frame {
                    Frame::FileStart(fs) => self.start(fs)?,
                    Frame::FileDone(d) => match self.current.as_mut() {
                        Some(c) if c.id == d.file_id => {
                            c.done = Some(d.checksum);
                            c.nack_now = true;
                        }
                        _ if self.ignore == Some(d.file_id) => {}
                        _ => {
                            return Err(TransferError::Protocol(format!(
                                "FileDone for unknown file {}",
                                d.file_id
                            )))
                        }
                    },
                    Frame::SessionDone(_) => {
                        if let Some(c) = &self.current {
                            return Err(TransferError::Protocol(format!(
                                "session ended while {} was incomplete",
                                c.path
                            )));
                        }
                        self.finish_dirs();
                        let files = self.report.files.len().min(u32::MAX as usize) as u32;
                        self.ch.send(&Frame::SessionDone(SessionDone {
                            files,
                            bytes: self.report.bytes_transferred,
                        }))?;
                        return Ok(());
                    }
                    Frame::Keepalive => {}
                    Frame::Error(e) => return Err(TransferError::Peer(e)),
                    other => {
                        return Err(TransferError::Protocol(format!(
                            "unexpected frame from the sender: {other:?}"
                        )))
                    }
                }
            }

            let wait = if self.current.is_some() { 2 } else { 5 };
            self.pump(Duration::from_millis(wait))?;
            // Data trickling in (a paced sender): let some gather before the next receive, so
            // one wake-up and one `recvmmsg` take many datagrams. The socket buffer holds far
            // more than this at any rate.
            let got = self.link.last_batch();
            if self.current.is_some() && got > 0 && got < COALESCE_BELOW {
                std::thread::sleep(COALESCE);
            }

            if self.last_status.elapsed() >= STATUS_INTERVAL {
                self.send_status()?;
            }
            let due = self.last_nack.elapsed() >= NACK_INTERVAL
                || self.current.as_ref().is_some_and(|c| c.nack_now);
            if due && self.current.is_some() {
                self.send_nacks()?;
            }
            if self.current.as_ref().is_some_and(FileRx::complete) {
                self.finish_file()?;
            } else {
                self.catch_up()?;
            }

            if self.link.keys_mismatch() {
                return Err(TransferError::Authentication(self.link.stats.dropped_auth));
            }
            if self.last_activity.elapsed() > IDLE_TIMEOUT {
                let what = match &self.current {
                    Some(c) => format!("no data for {} arrived", c.path),
                    None => "no frame from the sender arrived".into(),
                };
                return Err(TransferError::Timeout {
                    what,
                    waited: IDLE_TIMEOUT,
                });
            }
            if let Some(c) = &self.current {
                if throttle.ready(false) {
                    let secs = c.started.elapsed().as_secs_f64().max(1e-3);
                    let rate = (c.received as f64 * 8.0 / secs) as u64;
                    let done = c.have.covered();
                    progress(&Progress {
                        path: c.path.clone(),
                        bytes_done: done,
                        total: c.size,
                        rate,
                        eta: eta(c.size.saturating_sub(done), rate),
                        finished: false,
                    });
                }
            }
            while reported < self.report.files.len() {
                let f = &self.report.files[reported];
                reported += 1;
                if f.kind == FileKind::File {
                    progress(&Progress {
                        path: f.path.clone(),
                        bytes_done: if f.outcome == Outcome::Ok { f.size } else { 0 },
                        total: f.size,
                        rate: 0,
                        eta: None,
                        finished: true,
                    });
                }
            }
        }
    }

    /// Receives what is queued (waiting up to `wait` for the first datagram) and writes the
    /// current file's data, adjacent datagrams in one call.
    fn pump(&mut self, wait: Duration) -> Result<(), TransferError> {
        let mut wait = wait;
        for _ in 0..16 {
            let n = self
                .link
                .receive(wait)
                .map_err(|e| TransferError::io("receiving on the UDP socket", e))?;
            if n > 0 {
                self.last_activity = Instant::now();
            }
            let mut failure: Option<io::Error> = None;
            let mut count = 0u32;
            let mut bytes = 0u64;
            let mut rtt_sample: Option<Duration> = None;
            {
                let cur = &mut self.current;
                let writes = &mut self.writes;
                for inc in self.link.incoming() {
                    if inc.header.kind != DatagramKind::Data {
                        continue;
                    }
                    self.max_seq = self.max_seq.max(inc.header.seq);
                    count += 1;
                    bytes += inc.payload.len() as u64;
                    let Some(c) = cur.as_mut() else { continue };
                    if c.id != inc.header.file_id || failure.is_some() {
                        continue;
                    }
                    if !c.nack_times.is_empty()
                        && !c
                            .have
                            .contains_range(inc.header.offset, inc.header.offset + 1)
                    {
                        if let Some(t) = c.nack_times.get(&inc.header.offset) {
                            rtt_sample = Some(t.elapsed());
                        }
                    }
                    let written = c.accept(inc.header.offset, inc.payload).and_then(|write| {
                        let Some(f) = c.file.as_ref().filter(|_| write) else {
                            return Ok(());
                        };
                        if !c.begun {
                            c.begun = true;
                            writes.begin(f, c.verify)?;
                        }
                        writes.push(f, inc.header.offset, inc.payload)
                    });
                    if let Err(e) = written {
                        failure = Some(e);
                    }
                }
                if let Err(e) = writes.flush_if_due() {
                    failure.get_or_insert(e);
                }
            }
            if let Some(r) = rtt_sample {
                self.nack_rtt = Some(match self.nack_rtt {
                    Some(s) => (s * 7 + r) / 8,
                    None => r,
                });
            }
            self.interval_received = self.interval_received.saturating_add(count);
            self.received_bytes += bytes;
            if let Some(e) = failure {
                let (path, partial) = match &self.current {
                    Some(c) => (c.path.clone(), c.root.show(&c.partial)),
                    None => (String::new(), String::new()),
                };
                self.fail(code_of(&e), format!("writing {path} (into {partial}): {e}"))?;
            }
            wait = Duration::ZERO;
            // A Status due goes out on time, even while the socket stays full.
            if !self.link.more_queued() || self.last_status.elapsed() >= STATUS_INTERVAL {
                break;
            }
        }
        Ok(())
    }

    fn send_status(&mut self) -> Result<(), TransferError> {
        let expected = self.max_seq.saturating_sub(self.prev_max_seq);
        self.gap_lost += expected.saturating_sub(u64::from(self.interval_received));
        // Datagrams our own socket dropped (its buffer was full) show up as `seq` gaps only
        // once later ones arrive; the kernel's count is known at once. Both count the same
        // drops, so the larger of the two cumulative counts is reported.
        let total = self.gap_lost.max(u64::from(self.link.socket_drops()));
        let lost = total.saturating_sub(self.reported_lost);
        self.reported_lost = total;
        let st = Status {
            received_bytes: self.received_bytes,
            received_datagrams: self.interval_received,
            lost_datagrams: lost.min(u64::from(u32::MAX)) as u32,
        };
        self.prev_max_seq = self.max_seq;
        self.interval_received = 0;
        self.last_status = Instant::now();
        let mut payload = Vec::with_capacity(16);
        st.encode(&mut payload);
        self.link
            .send_now(DatagramKind::Status, &payload)
            .map_err(|e| TransferError::io("sending a status datagram", e))
    }

    fn send_nacks(&mut self) -> Result<(), TransferError> {
        self.last_nack = Instant::now();
        let Some(c) = self.current.as_mut() else {
            return Ok(());
        };
        c.nack_now = false;
        let limit = if c.done.is_some() {
            c.size
        } else {
            c.highest_end
        };
        let gaps = c.have.gaps(0, limit);
        let now = Instant::now();
        let retry = self.nack_rtt.map_or(NACK_RETRY, |r| {
            (r * 2 + NACK_RETRY_MARGIN).clamp(NACK_RETRY_MIN, NACK_RETRY)
        });
        let mut ranges = Vec::new();
        for g in &gaps {
            if c.nack_times
                .get(&g.start)
                .is_some_and(|t| now.duration_since(*t) < retry)
            {
                continue;
            }
            c.nack_times.insert(g.start, now);
            ranges.push(NackRange {
                file_id: c.id,
                offset: g.start,
                len: g.end - g.start,
            });
            if ranges.len() == MAX_NACK_RANGES * NACK_DATAGRAMS {
                break;
            }
        }
        if c.nack_times.len() > 4 * gaps.len() + 64 {
            let starts: std::collections::HashSet<u64> = gaps.iter().map(|g| g.start).collect();
            c.nack_times.retain(|k, _| starts.contains(k));
        }
        self.link.stats.nack_ranges += ranges.len() as u64;
        for part in ranges.chunks(MAX_NACK_RANGES) {
            let mut payload = Vec::with_capacity(2 + part.len() * 20);
            encode_nacks(part, &mut payload)
                .map_err(|e| TransferError::Protocol(format!("encoding NACKs: {e}")))?;
            self.link
                .send_now(DatagramKind::Nack, &payload)
                .map_err(|e| TransferError::io("sending a NACK datagram", e))?;
        }
        Ok(())
    }

    fn keepalive(ch: &mut Channel, last: &mut Instant) {
        if last.elapsed() > KEEPALIVE {
            *last = Instant::now();
            let _ = ch.send(&Frame::Keepalive);
        }
    }

    /// Lets the writing thread hash the received prefix back as it grows, so the final check
    /// has little left to read; reports a write that failed in the background.
    fn catch_up(&mut self) -> Result<(), TransferError> {
        let Some(c) = self.current.as_mut() else {
            return Ok(());
        };
        if self.writes.failed() {
            let e = match self.writes.finish() {
                Ok(done) => done.error,
                Err(e) => Some(e),
            }
            .unwrap_or_else(|| io::Error::other("a write failed"));
            c.begun = false;
            let msg = format!("writing {} (into {}): {e}", c.path, c.root.show(&c.partial));
            return self.fail(code_of(&e), msg);
        }
        if !c.verify || !c.begun {
            return Ok(());
        }
        let prefix = c.have.contiguous_prefix();
        if prefix >= c.hash_requested + CATCH_UP || (prefix == c.size && prefix > c.hash_requested)
        {
            c.hash_requested = prefix;
            if let Err(e) = self.writes.hash_to(prefix) {
                let msg = format!("writing {}: {e}", c.root.show(&c.partial));
                return self.fail(code_of(&e), msg);
            }
        }
        Ok(())
    }

    /// Every byte is in and the checksum is known: verify, then rename or fail.
    fn finish_file(&mut self) -> Result<(), TransferError> {
        let Some(mut c) = self.current.take() else {
            return Ok(());
        };
        let Some(expected) = c.done else {
            self.current = Some(c);
            return Ok(());
        };
        // The destination already held exactly this file (`--overwrite=diff`, `-k`).
        if c.file.is_none() && c.base == Base::Final && c.base_checksum == Some(expected) {
            return self.succeed(c); // identical at the destination: kept as it is
        }
        // Everything queued reaches the file (and the prefix hashed so far comes back).
        let verifier = if std::mem::take(&mut c.begun) {
            let done = self.writes.finish().and_then(|d| match d.error {
                Some(e) => Err(e),
                None => Ok(d.hashed),
            });
            match done {
                Ok(h) => h,
                Err(e) => {
                    let msg = format!("writing {} (into {}): {e}", c.path, c.root.show(&c.partial));
                    self.current = Some(c);
                    return self.fail(code_of(&e), msg);
                }
            }
        } else {
            None
        };
        let verifier = verifier.or_else(|| c.verify.then(|| (blake3::Hasher::new(), 0)));
        let got = {
            let ch = &mut self.ch;
            let last = &mut self.last_keepalive;
            let mut tick = || Self::keepalive(ch, last);
            let size = c.size;
            let file = match c.writable() {
                Ok(f) => f,
                Err(e) => {
                    let msg = describe(&c.root, "opening", &c.partial, &e).1;
                    self.current = Some(c);
                    return self.fail(code_of(&e), msg);
                }
            };
            let r = match verifier {
                Some((mut h, upto)) => {
                    hash_range(file, &mut h, upto, size, &mut tick).map(|()| h.finalize())
                }
                None => {
                    let mut h = blake3::Hasher::new();
                    hash_range(file, &mut h, 0, size, &mut tick).map(|()| h.finalize())
                }
            };
            match r {
                Ok(h) => *h.as_bytes(),
                Err(e) => {
                    let msg = format!("reading back {}: {e}", c.root.show(&c.partial));
                    self.current = Some(c);
                    return self.fail(code_of(&e), msg);
                }
            }
        };
        self.last_activity = Instant::now();
        if got == expected {
            return self.succeed(c);
        }
        if !c.fallback_used && c.reported_end > 0 {
            // Pre-existing bytes we counted on were wrong (or a rewritten chunk was lost
            // entirely): keep only what arrived in this session and ask for the rest.
            c.fallback_used = true;
            c.have = c.fresh.clone();
            c.reported_end = 0;
            c.hash_requested = 0;
            c.nack_times.clear();
            c.nack_now = true;
            self.current = Some(c);
            return Ok(());
        }
        let msg = format!(
            "{}: the received data does not match the sender's checksum (kept as {})",
            c.path,
            c.root.show(&c.partial)
        );
        self.current = Some(c);
        self.fail(ErrorCode::Checksum, msg)
    }

    fn succeed(&mut self, c: FileRx) -> Result<(), TransferError> {
        if c.file.is_some() {
            drop(c.file);
            let done = set_attributes(&c.root, &c.partial, c.mode, c.mtime)
                .and_then(|()| c.root.rename(&c.partial, &c.final_path));
            if let Err(e) = done {
                let msg = if is_containment_violation(&e) {
                    e.to_string()
                } else {
                    format!(
                        "moving {} to {}: {e}",
                        c.root.show(&c.partial),
                        c.root.show(&c.final_path)
                    )
                };
                let (id, path, size, received) = (c.id, c.path, c.size, c.received);
                return self.report_failure(id, path, size, received, code_of(&e), msg);
            }
        }
        self.ch.send(&Frame::FileResult(FileResult {
            file_id: c.id,
            error: None,
            bytes_transferred: c.received,
        }))?;
        self.report.bytes_transferred += c.received;
        self.report.files.push(FileReport {
            path: c.path,
            kind: FileKind::File,
            size: c.size,
            bytes_transferred: c.received,
            outcome: Outcome::Ok,
        });
        Ok(())
    }

    /// The current file failed: tell the sender, record it, drop it.
    fn fail(&mut self, code: ErrorCode, message: String) -> Result<(), TransferError> {
        let Some(c) = self.current.take() else {
            return Ok(());
        };
        if c.begun {
            // Whatever is still queued for the file is written (or not): the partial file
            // stays for a later `-k`; the next file starts clean.
            let _ = self.writes.finish();
        }
        self.report_failure(c.id, c.path, c.size, c.received, code, message)
    }

    fn report_failure(
        &mut self,
        id: u32,
        path: String,
        size: u64,
        received: u64,
        code: ErrorCode,
        message: String,
    ) -> Result<(), TransferError> {
        self.ignore = Some(id);
        let wire = crate::protocol::error_text(&message);
        self.ch.send(&Frame::FileResult(FileResult {
            file_id: id,
            error: Some(ErrorFrame {
                code,
                message: wire,
            }),
            bytes_transferred: received,
        }))?;
        self.report.bytes_transferred += received;
        self.report.files.push(FileReport {
            path,
            kind: FileKind::File,
            size,
            bytes_transferred: received,
            outcome: Outcome::Failed { code, message },
        });
        Ok(())
    }

    fn skip(&mut self, fs: &FileStart, reason: &str) -> Result<(), TransferError> {
        self.done_without_data(fs, fs.size, Outcome::Skipped(reason.into()))
    }

    /// Answers a `FileStart` that needs no data (a skipped file, a directory made): "have it",
    /// then a successful `FileResult`, and records `outcome`.
    fn done_without_data(
        &mut self,
        fs: &FileStart,
        size: u64,
        outcome: Outcome,
    ) -> Result<(), TransferError> {
        self.ch.send(&Frame::FileHave(FileHave {
            file_id: fs.file_id,
            skip: true,
            chunk_size: 0,
            chunks: Vec::new(),
        }))?;
        self.ch.send(&Frame::FileResult(FileResult {
            file_id: fs.file_id,
            error: None,
            bytes_transferred: 0,
        }))?;
        self.report.files.push(FileReport {
            path: fs.path.clone(),
            kind: fs.kind,
            size,
            bytes_transferred: 0,
            outcome,
        });
        Ok(())
    }

    /// A refusal before any data: the answer to `FileStart` is a failed `FileResult`.
    fn refuse(
        &mut self,
        fs: &FileStart,
        code: ErrorCode,
        message: String,
    ) -> Result<(), TransferError> {
        self.report_failure(fs.file_id, fs.path.clone(), fs.size, 0, code, message)?;
        if let Some(last) = self.report.files.last_mut() {
            last.kind = fs.kind;
        }
        Ok(())
    }

    fn start(&mut self, fs: FileStart) -> Result<(), TransferError> {
        if let Some(c) = &self.current {
            return Err(TransferError::Protocol(format!(
                "FileStart for {} while {} is still incomplete",
                fs.path, c.path
            )));
        }
        let final_path = match self.dest.resolve(&fs.path) {
            Ok(p) => p,
            Err(msg) => return self.refuse(&fs, ErrorCode::Refused, msg),
        };
        if fs.kind == FileKind::Directory {
            let root = &self.opts.root;
            let made = match root.symlink_metadata(&final_path) {
                Ok(m) if m.is_dir() => Ok(()),
                // A link is not a directory to write into; one leading out of the docroot is
                // refused as such.
                Ok(_) => root.metadata(&final_path).and_then(|_| {
                    Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "exists and is not a directory",
                    ))
                }),
                Err(e) if is_containment_violation(&e) => Err(e),
                Err(_) => root.create_dir_all(&final_path),
            };
            if let Err(e) = made {
                let (code, msg) = describe(root, "creating directory", &final_path, &e);
                return self.refuse(&fs, code, msg);
            }
            self.dirs.push((final_path, fs.mode, fs.mtime));
            return self.done_without_data(&fs, 0, Outcome::Ok);
        }
        match self.place(&fs, final_path) {
            Ok(Some((rx, chunks))) => {
                let have = FileHave {
                    file_id: rx.id,
                    skip: false,
                    chunk_size: rx.chunk_size,
                    chunks,
                };
                self.current = Some(rx);
                self.ch.send(&Frame::FileHave(have))?;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err((code, msg)) => self.refuse(&fs, code, msg),
        }
    }

    /// Decides what to do with an announced file; `Ok(None)` when it was skipped.
    #[allow(clippy::type_complexity)]
    fn place(
        &mut self,
        fs: &FileStart,
        final_path: PathBuf,
    ) -> Result<Option<(FileRx, Vec<[u8; 16]>)>, (ErrorCode, String)> {
        let root = self.opts.root.clone();
        let show = root.show(&final_path);
        let existing = match root.symlink_metadata(&final_path) {
            Ok(m) => Some(m),
            Err(e) if is_containment_violation(&e) => {
                return Err(describe(&root, "reading", &final_path, &e))
            }
            Err(_) => None,
        };
        if let Some(m) = &existing {
            // Under a docroot, a name that is a link leading out of it is refused, not replaced.
            if m.file_type().is_symlink() && root.is_confined() {
                if let Err(e) = root.metadata(&final_path) {
                    if is_containment_violation(&e) {
                        return Err(describe(&root, "reading", &final_path, &e));
                    }
                }
            }
            if m.is_dir() {
                return Err((
                    ErrorCode::Refused,
                    format!("{show} exists and is a directory"),
                ));
            }
            if self.opts.overwrite == Overwrite::Never {
                self.skip(fs, "exists at the destination (--overwrite=never)")
                    .map_err(|e| (ErrorCode::Other, e.to_string()))?;
                return Ok(None);
            }
            if self.opts.resume >= ResumeLevel::Attributes
                && m.is_file()
                && m.len() == fs.size
                && m.mtime() == fs.mtime
            {
                self.skip(fs, "size and modification time match (-k)")
                    .map_err(|e| (ErrorCode::Other, e.to_string()))?;
                return Ok(None);
            }
        }
        if let Some(parent) = final_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            root.create_dir_all(parent)
                .map_err(|e| describe(&root, "creating directory", parent, &e))?;
        }
        let partial = partial_path(&final_path);
        let io_err = |what: &str, p: &Path, e: io::Error| describe(&root, what, p, &e);
        let chunk_size = chunk_size_for(fs.size);
        let mut tick = {
            let ch = &mut self.ch;
            let last = &mut self.last_keepalive;
            move || Self::keepalive(ch, last)
        };
        let checksums = self.opts.resume >= ResumeLevel::SparseChecksum;
        let partial_exists = root
            .symlink_metadata(&partial)
            .map(|m| m.is_file())
            .unwrap_or(false);
        let (base, file, chunks, reported_end, base_checksum) = if checksums && partial_exists {
            let f = root
                .open_file(
                    &partial,
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(libc::O_NOFOLLOW),
                )
                .map_err(|e| io_err("opening", &partial, e))?;
            let len = f
                .metadata()
                .map_err(|e| io_err("reading", &partial, e))?
                .len();
            let end = len.min(fs.size);
            let (chunks, _) = hash_file(&f, end, chunk_size, &mut tick)
                .map_err(|e| io_err("reading", &partial, e))?;
            f.set_len(fs.size)
                .map_err(|e| io_err("resizing", &partial, e))?;
            (Base::Partial, Some(f), chunks, end, None)
        } else if existing.as_ref().is_some_and(|m| {
            m.is_file()
                && (checksums || (self.opts.overwrite == Overwrite::Diff && m.len() == fs.size))
        }) {
            let f = root
                .open_file(&final_path, OpenOptions::new().read(true))
                .map_err(|e| io_err("opening", &final_path, e))?;
            let len = f
                .metadata()
                .map_err(|e| io_err("reading", &final_path, e))?
                .len();
            let end = len.min(fs.size);
            let (chunks, whole) = hash_file(&f, end, chunk_size, &mut tick)
                .map_err(|e| io_err("reading", &final_path, e))?;
            let whole = (len == fs.size).then_some(whole);
            (Base::Final, None, chunks, end, whole)
        } else {
            let f = root
                .open_file(
                    &partial,
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW),
                )
                .map_err(|e| io_err("creating", &partial, e))?;
            f.set_len(fs.size)
                .map_err(|e| io_err("allocating", &partial, e))?;
            (Base::Fresh, Some(f), Vec::new(), 0, None)
        };
        let mut have = RangeSet::new();
        have.insert(0, reported_end);
        let verify = base == Base::Fresh;
        let rx = FileRx {
            root,
            id: fs.file_id,
            path: fs.path.clone(),
            final_path,
            partial,
            size: fs.size,
            mode: fs.mode,
            mtime: fs.mtime,
            base,
            file: file.map(Arc::new),
            have,
            fresh: RangeSet::new(),
            received: 0,
            highest_end: 0,
            chunk_size,
            reported_end,
            rewriting: vec![false; chunks.len()],
            base_checksum,
            done: None,
            verify,
            hash_requested: 0,
            begun: false,
            nack_times: BTreeMap::new(),
            nack_now: false,
            fallback_used: false,
            started: Instant::now(),
        };
        Ok(Some((rx, chunks)))
    }

    /// Directory modes and times, deepest first, once their contents are written.
    fn finish_dirs(&mut self) {
        for (path, mode, mtime) in self.dirs.drain(..).rev() {
            let _ = set_attributes(&self.opts.root, &path, mode, mtime);
        }
    }
}

/// The code and message for a failed file operation on `path`: a docroot violation is
/// `Refused` with the violation's own message; anything else names what was done and where.
fn describe(root: &Root, what: &str, path: &Path, e: &io::Error) -> (ErrorCode, String) {
    if is_containment_violation(e) {
        (ErrorCode::Refused, e.to_string())
    } else {
        (code_of(e), format!("{what} {}: {e}", root.show(path)))
    }
}
