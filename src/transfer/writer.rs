//! Writing received data: [`WriteQueue`], a writing thread fed with blocks of adjacent
//! payloads (the receiving loop's path), and [`RunWriter`], coalesced positional writes of
//! consecutive pieces bound for adjacent file offsets in one `pwritev` (kept for callers that
//! write in place).

use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::chunks::hash_range_with;

/// Most pieces in one `pwritev` (Linux's `IOV_MAX`).
const MAX_IOVS: usize = 1024;

/// Pieces waiting to be written at `start..end` of file `fd`.
pub struct RunWriter<'a> {
    fd: RawFd,
    start: u64,
    end: u64,
    pieces: Vec<&'a [u8]>,
}

impl<'a> RunWriter<'a> {
    /// An empty writer.
    pub fn new() -> RunWriter<'a> {
        RunWriter {
            fd: -1,
            start: 0,
            end: 0,
            pieces: Vec::with_capacity(64),
        }
    }

    /// Queues `data` for `offset` of `fd`; what was queued is written first unless `data`
    /// continues it.
    pub fn push(&mut self, fd: RawFd, offset: u64, data: &'a [u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let continues = fd == self.fd && offset == self.end && self.pieces.len() < MAX_IOVS;
        if !continues {
            self.flush()?;
            self.fd = fd;
            self.start = offset;
            self.end = offset;
        }
        self.pieces.push(data);
        self.end += data.len() as u64;
        Ok(())
    }

    /// Writes whatever is queued.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut iovs: Vec<libc::iovec> = self
            .pieces
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        self.pieces.clear();
        let mut at = self.start;
        let mut first = 0;
        while first < iovs.len() {
            let count = (iovs.len() - first) as libc::c_int;
            let Ok(off) = libc::off_t::try_from(at) else {
                return Err(io::Error::from_raw_os_error(libc::EFBIG));
            };
            // SAFETY: `iovs[first..]` describe live slices borrowed for 'a; fd is the caller's
            // open file.
            let n = unsafe { libc::pwritev(self.fd, iovs[first..].as_ptr(), count, off) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            let mut left = n as usize;
            at += left as u64;
            while left > 0 && first < iovs.len() {
                let iov = &mut iovs[first];
                if left >= iov.iov_len {
                    left -= iov.iov_len;
                    first += 1;
                } else {
                    // SAFETY: advancing within the same slice.
                    iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(left) }.cast();
                    iov.iov_len -= left;
                    left = 0;
                }
            }
        }
        self.start = self.end;
        Ok(())
    }
}

impl Default for RunWriter<'_> {
    fn default() -> Self {
        RunWriter::new()
    }
}

/// Bytes the receiving loop gathers into one block for the writing thread (adjacent payloads).
pub const BLOCK: usize = 1024 * 1024;
/// A block is handed over once it holds this much...
const HANDOFF_BYTES: usize = 256 * 1024;
/// ...or is this old (see [`WriteQueue::flush_if_due`]).
const HANDOFF_AGE: Duration = Duration::from_millis(10);
/// Blocks (and other jobs) that may wait for the writing thread before the receiving loop
/// itself waits: with [`BLOCK`], at most 8 MiB of file data. Small on purpose: a writer that
/// falls behind should show as a growing socket queue (which the sender's rate control sees
/// in the receiver's Status), not hide in memory.
const QUEUE_DEPTH: usize = 8;

/// Work for the writing thread, done in order.
enum Job {
    /// Write `data` at `offset` of `file` (the lock-free `pwrite`: positional).
    Write {
        file: Arc<File>,
        offset: u64,
        data: Vec<u8>,
    },
    /// A new file: its incremental checksum (fresh files) starts at 0.
    Begin { file: Arc<File>, verify: bool },
    /// Every byte of `[0, upto)` has been queued for writing: hash up to there.
    Hash { upto: u64 },
    /// Barrier: answer with the first write error since `Begin` and the checksum state.
    Finish { reply: mpsc::Sender<Finished> },
}

/// What the writing thread answers to a finish: the first error since the file began, and
/// the incremental checksum with how far it got.
pub struct Finished {
    /// The first write or read-back error.
    pub error: Option<io::Error>,
    /// The checksum of `[0, .1)` so far (fresh files).
    pub hashed: Option<(blake3::Hasher, u64)>,
}

/// A thread that writes received data to the files (and hashes the written prefix back), so
/// the receiving loop only receives, opens, records and queues: the socket is drained while
/// the disk or the page cache is slow.
pub struct WriteQueue {
    jobs: Option<mpsc::SyncSender<Job>>,
    spare: mpsc::Receiver<Vec<u8>>,
    failed: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The block being gathered: file, offset, bytes.
    open: Option<(Arc<File>, u64, Vec<u8>)>,
    /// When the block being gathered got its first bytes.
    opened: Instant,
}

impl WriteQueue {
    /// Starts the writing thread.
    pub fn start() -> io::Result<WriteQueue> {
        let (jobs, rx) = mpsc::sync_channel::<Job>(QUEUE_DEPTH);
        let (spare_tx, spare) = mpsc::channel::<Vec<u8>>();
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let thread = std::thread::Builder::new()
            .name("ascp-writer".into())
            .spawn(move || write_loop(rx, spare_tx, flag))?;
        Ok(WriteQueue {
            jobs: Some(jobs),
            spare,
            failed,
            thread: Some(thread),
            open: None,
            opened: Instant::now(),
        })
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        match self.jobs.as_ref() {
            Some(tx) => tx
                .send(job)
                .map_err(|_| io::Error::other("the writing thread ended")),
            None => Err(io::Error::other("the writing thread ended")),
        }
    }

    /// Queues `data` for `offset` of `file`, joining it to the block being gathered when it
    /// continues it.
    pub fn push(&mut self, file: &Arc<File>, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if let Some((f, start, buf)) = self.open.as_mut() {
            let continues = Arc::ptr_eq(f, file) && *start + buf.len() as u64 == offset;
            if continues && buf.len() + data.len() <= BLOCK {
                buf.extend_from_slice(data);
                return Ok(());
            }
            self.flush()?;
        }
        let mut buf = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BLOCK));
        buf.clear();
        buf.extend_from_slice(data);
        self.open = Some((file.clone(), offset, buf));
        self.opened = Instant::now();
        Ok(())
    }

    /// Hands the block being gathered to the writing thread if it is big or old enough
    /// ([`HANDOFF_BYTES`], [`HANDOFF_AGE`]): one wake-up of the writing thread per few
    /// hundred KiB, not per turn of the receiving loop.
    pub fn flush_if_due(&mut self) -> io::Result<()> {
        let due = self.open.as_ref().is_some_and(|(_, _, buf)| {
            buf.len() >= HANDOFF_BYTES || self.opened.elapsed() >= HANDOFF_AGE
        });
        if due {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands the block being gathered to the writing thread.
    pub fn flush(&mut self) -> io::Result<()> {
        match self.open.take() {
            Some((file, offset, data)) => self.send(Job::Write { file, offset, data }),
            None => Ok(()),
        }
    }

    /// A new file begins (after [`WriteQueue::finish`] of the previous one); with `verify`
    /// the writing thread hashes its prefix as [`WriteQueue::hash_to`] allows.
    pub fn begin(&mut self, file: &Arc<File>, verify: bool) -> io::Result<()> {
        self.flush()?;
        self.send(Job::Begin {
            file: file.clone(),
            verify,
        })
    }

    /// Everything of the current file below `upto` has been pushed: it may be hashed.
    pub fn hash_to(&mut self, upto: u64) -> io::Result<()> {
        self.flush()?;
        self.send(Job::Hash { upto })
    }

    /// True when a write has failed since the current file began (see [`WriteQueue::finish`]).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Waits until everything queued is written; returns the first error and the checksum
    /// state, and forgets the file.
    pub fn finish(&mut self) -> io::Result<Finished> {
        self.flush()?;
        let (reply, answer) = mpsc::channel();
        self.send(Job::Finish { reply })?;
        let done = answer
            .recv()
            .map_err(|_| io::Error::other("the writing thread ended"))?;
        self.failed.store(false, Ordering::Relaxed);
        Ok(done)
    }
}

impl Drop for WriteQueue {
    fn drop(&mut self) {
        self.open = None;
        self.jobs = None; // ends the thread once it has done what is queued
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_loop(rx: mpsc::Receiver<Job>, spare: mpsc::Sender<Vec<u8>>, failed: Arc<AtomicBool>) {
    let mut error: Option<io::Error> = None;
    let mut current: Option<Arc<File>> = None;
    let mut hashed: Option<(blake3::Hasher, u64)> = None;
    let mut scratch: Vec<u8> = Vec::new();
    while let Ok(job) = rx.recv() {
        match job {
            Job::Write { file, offset, data } => {
                if error.is_none() {
                    if let Err(e) = write_all_at(&file, &data, offset) {
                        error = Some(e);
                        failed.store(true, Ordering::Relaxed);
                    }
                }
                let _ = spare.send(data);
            }
            Job::Begin { file, verify } => {
                error = None;
                hashed = verify.then(|| (blake3::Hasher::new(), 0));
                current = Some(file);
            }
            Job::Hash { upto } => {
                let (Some((h, at)), Some(f)) = (hashed.as_mut(), current.as_ref()) else {
                    continue;
                };
                if error.is_some() || upto <= *at {
                    continue;
                }
                if scratch.is_empty() {
                    scratch = vec![0u8; BLOCK];
                }
                match hash_range_with(f, h, *at, upto, &mut scratch, &mut || {}) {
                    Ok(()) => *at = upto,
                    Err(e) => {
                        error = Some(e);
                        failed.store(true, Ordering::Relaxed);
                    }
                }
            }
            Job::Finish { reply } => {
                current = None;
                let _ = reply.send(Finished {
                    error: error.take(),
                    hashed: hashed.take(),
                });
            }
        }
    }
}

fn write_all_at(file: &File, mut data: &[u8], mut offset: u64) -> io::Result<()> {
    while !data.is_empty() {
        match file.write_at(data, offset) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                data = &data[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;

    #[test]
    fn coalesces_and_splits_runs() {
        let f = tempfile::tempfile().unwrap();
        let fd = f.as_raw_fd();
        let mut w = RunWriter::new();
        w.push(fd, 0, b"abc").unwrap();
        w.push(fd, 3, b"def").unwrap();
        w.push(fd, 10, b"xyz").unwrap();
        w.push(fd, 13, b"").unwrap();
        w.flush().unwrap();
        let mut buf = [0u8; 13];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"abcdef\0\0\0\0xyz");
    }

    #[test]
    fn queue_writes_hashes_and_reports_errors() {
        let f = Arc::new(tempfile::tempfile().unwrap());
        f.set_len(6).unwrap();
        let mut q = WriteQueue::start().unwrap();
        q.begin(&f, true).unwrap();
        q.push(&f, 3, b"def").unwrap();
        q.push(&f, 0, b"abc").unwrap();
        q.hash_to(6).unwrap();
        let done = q.finish().unwrap();
        assert!(done.error.is_none());
        let (h, at) = done.hashed.unwrap();
        assert_eq!(at, 6);
        assert_eq!(h.finalize(), blake3::hash(b"abcdef"));
        // A file opened read-only cannot be written: the error comes back at finish.
        let ro = Arc::new(std::fs::File::open("/dev/null").unwrap());
        q.begin(&ro, false).unwrap();
        q.push(&ro, 0, b"x").unwrap();
        q.flush().unwrap();
        let done = q.finish().unwrap();
        assert!(done.error.is_some());
        assert!(!q.failed());
    }
}
