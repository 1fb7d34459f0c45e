//! What a transfer tells its caller: [`Progress`] while it runs, a [`Report`] at the end.

use std::time::Duration;

use crate::protocol::{ErrorCode, FileKind};

/// A progress snapshot of the file being transferred.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The file's announced path.
    pub path: String,
    /// Bytes of the file done (sent once / received and written, including resumed bytes).
    pub bytes_done: u64,
    /// The file's size.
    pub total: u64,
    /// Current rate, bits/s (paced rate on the sender, goodput on the receiver).
    pub rate: u64,
    /// Estimated time to finish the file, when the rate allows one.
    pub eta: Option<Duration>,
    /// This is the last report for the file.
    pub finished: bool,
}

/// How one file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Arrived intact (checksum verified), or was already identical at the destination.
    Ok,
    /// Deliberately not transferred (already there and `--overwrite=never`, `-k` attributes
    /// match, symbolic link inside a tree...). Not a failure.
    Skipped(String),
    /// Did not arrive intact.
    Failed {
        /// Machine-readable cause.
        code: ErrorCode,
        /// What happened, for a person.
        message: String,
    },
}

/// One file's line in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The announced path.
    pub path: String,
    /// File or directory.
    pub kind: FileKind,
    /// The file's size.
    pub size: u64,
    /// File bytes that crossed the network for it (sender: sent, retransmissions included;
    /// receiver: received).
    pub bytes_transferred: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// Counters of the data channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams received that decoded, carried our token and authenticated.
    pub datagrams_accepted: u64,
    /// Datagrams dropped: undecodable.
    pub dropped_malformed: u64,
    /// Datagrams dropped: another session's token.
    pub dropped_token: u64,
    /// Datagrams dropped: failed authentication.
    pub dropped_auth: u64,
    /// File bytes sent again because the receiver asked (sender).
    pub retransmitted_bytes: u64,
    /// NACK ranges sent (receiver) or received (sender).
    pub nack_ranges: u64,
}

/// The result of a whole transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Every file and directory, in order, with its outcome.
    pub files: Vec<FileReport>,
    /// File bytes that crossed the network in all.
    pub bytes_transferred: u64,
    /// How long the transfer took.
    pub elapsed: Duration,
    /// Data channel counters.
    pub link: LinkStats,
}

impl Report {
    /// True when no file failed: every file arrived intact or was deliberately skipped.
    /// (An `ascp` exit status of 0 means exactly this.)
    pub fn all_intact(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The files that failed.
    pub fn failures(&self) -> impl Iterator<Item = &FileReport> {
        self.files
            .iter()
            .filter(|f| matches!(f.outcome, Outcome::Failed { .. }))
    }

    /// Goodput over the whole transfer, bits/s.
    pub fn goodput(&self) -> u64 {
        let secs = self.elapsed.as_secs_f64();
        if secs <= 0.0 {
            return 0;
        }
        let bytes: u64 = self
            .files
            .iter()
            .filter(|f| f.outcome == Outcome::Ok)
            .map(|f| f.size)
            .sum();
        (bytes as f64 * 8.0 / secs) as u64
    }
}

/// Calls the caller's progress callback at most every `interval` (and always for the last
/// report of a file).
pub(crate) struct Throttle {
    last: Option<std::time::Instant>,
    interval: Duration,
}

impl Throttle {
    /// A throttle allowing one report per `interval`.
    pub(crate) fn new(interval: Duration) -> Throttle {
        Throttle {
            last: None,
            interval,
        }
    }

    /// True if a report may go now (`force` for the last one).
    pub(crate) fn ready(&mut self, force: bool) -> bool {
        let now = std::time::Instant::now();
        if force
            || self
                .last
                .is_none_or(|t| now.duration_since(t) >= self.interval)
        {
            self.last = Some(now);
            true
        } else {
            false
        }
    }
}

/// Estimated time for `remaining` bytes at `rate` bits/s.
pub(crate) fn eta(remaining: u64, rate: u64) -> Option<Duration> {
    if rate == 0 {
        None
    } else {
        Some(Duration::from_secs_f64(
            remaining as f64 * 8.0 / rate as f64,
        ))
    }
}
