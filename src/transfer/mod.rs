//! The data engine of `ascp`: moves files over the UDP data channel once the handshake is done.
//!
//! One side sends ([`send`]), the other receives ([`receive`]); which is which does not depend
//! on who is client or server ([`Role`] only picks the AEAD nonce prefix). The control channel
//! carries, per file: `FileStart` → `FileHave` (what the receiver has, or skip) → data
//! datagrams, NACKs and status over UDP → `FileDone` (whole-file BLAKE3) → `FileResult`; and at
//! the end `SessionDone`. A directory's `FileStart` is answered by a `FileResult` directly; so is
//! a file the receiver cannot create. Files go one at a time.
//!
//! Modules, one job each: [`crypto`] (datagram AEAD), [`udp`] (path opening, batched socket
//! calls), [`offload`] (UDP GSO/GRO), [`link`] (datagram framing + stats), [`writer`]
//! (coalesced positional writes), [`pacing`] (token bucket, rate control),
//! [`ranges`] (byte-range sets), [`chunks`] (resume hashes), [`files`] (walk, destination
//! mapping, attributes), [`control`] (frame reader thread), [`sender`], [`receiver`],
//! [`report`] (progress and results).
//!
//! Files are reached only through [`Options::root`] (a [`Root`]): the server confines a
//! session to the user's docroot with it, the client passes `Root::unconfined()`.

pub mod chunks;
#[cfg(test)]
mod confined_tests;
pub mod control;
pub mod crypto;
mod error;
pub mod files;
pub mod link;
pub mod offload;
pub mod pacing;
pub mod ranges;
pub mod receiver;
pub mod report;
pub mod sender;
pub mod udp;
pub mod writer;

use std::io::{Read, Write};
use std::time::Duration;

pub use crate::fsroot::Root;
pub use crate::protocol::{Overwrite, ResumeLevel};
pub use error::TransferError;
pub use receiver::receive;
pub use report::{FileReport, Outcome, Progress, Report};
pub use sender::send;
pub use udp::{udp_accept, udp_connect};

use crate::protocol::datagram::{HEADER_LEN, TAG_LEN};
use crate::protocol::MAX_DATAGRAM;

/// How long a transfer may go without any sign of life from the peer (control frame or
/// authenticated datagram) before it fails with [`TransferError::Timeout`].
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Smallest `datagram_size` accepted.
pub const MIN_DATAGRAM_SIZE: usize = 256;

/// The control channel once the handshake is done: frames are read and written with
/// [`crate::protocol::reader::read_frame`] / [`crate::protocol::frame::write_frame`].
pub struct Control {
    /// Frames from the peer.
    pub reader: Box<dyn Read + Send>,
    /// Frames to the peer.
    pub writer: Box<dyn Write + Send>,
}

/// Which end of the session this is (picks the AEAD nonce prefix of what it sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that ran `ascp` and opened the SSH connection.
    Client,
    /// The side started by sshd.
    Server,
}

/// How a transfer runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Client or server.
    pub role: Role,
    /// Session token (from `SessionAccept`); datagrams with another are dropped.
    pub token: u64,
    /// AEAD key; `None` runs without encryption (`-T`).
    pub key: Option<[u8; 32]>,
    /// `-l`: the rate to aim for, bits/s (0: no limit but the path's).
    pub target_rate: u64,
    /// `-m`: the rate not to go below unless the receiver reports heavy loss, bits/s.
    pub min_rate: u64,
    /// File bytes per data datagram (both sides must agree: `SessionAccept.datagram_size`).
    pub datagram_size: usize,
    /// `-k`.
    pub resume: ResumeLevel,
    /// `--overwrite`.
    pub overwrite: Overwrite,
    /// `-r`: directories may be sent.
    pub recursive: bool,
    /// Where the files are: every file-system access of the transfer goes through it.
    /// `Root::unconfined()` on the client; the user's docroot on a server that has one.
    pub root: Root,
}

impl Options {
    /// Checks what the engine cannot work with.
    pub(crate) fn validate(&self) -> Result<(), TransferError> {
        let max = MAX_DATAGRAM - HEADER_LEN - TAG_LEN;
        if self.datagram_size < MIN_DATAGRAM_SIZE || self.datagram_size > max {
            return Err(TransferError::InvalidOptions(format!(
                "datagram size {} is outside {MIN_DATAGRAM_SIZE}..={max} bytes",
                self.datagram_size
            )));
        }
        Ok(())
    }
}
