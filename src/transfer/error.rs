//! The errors a transfer session can end with. Per-file failures (disk full on one file, a
//! checksum that did not verify) are not session errors: they are recorded in the
//! [`Report`](super::Report) and the session goes on with the next file.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::ErrorFrame;

/// Why a transfer session failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The options cannot work (e.g. a datagram size over the protocol limit).
    #[error("invalid transfer options: {0}")]
    InvalidOptions(String),
    /// A source named on the command line does not exist.
    #[error("source {} does not exist", .0.display())]
    SourceNotFound(PathBuf),
    /// A source is a directory and `-r` was not given.
    #[error("source {} is a directory; use -r to send directories", .0.display())]
    SourceIsDirectory(PathBuf),
    /// A source cannot be sent (neither a regular file nor a directory, or its name is unusable).
    #[error("source {}: {reason}", path.display())]
    UnsupportedSource {
        /// The source.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The UDP path never opened (no `HelloAck` / `Hello` in time).
    #[error("no UDP answer from {peer} within {} s (is the UDP port reachable through firewalls and the proxy?)", .waited.as_secs())]
    UdpUnreachable {
        /// The peer (or "any client" for the server).
        peer: String,
        /// How long we waited.
        waited: Duration,
    },
    /// Nothing moved for too long.
    #[error("transfer stalled: {what} for {} s", .waited.as_secs())]
    Timeout {
        /// What we were waiting for.
        what: String,
        /// How long we waited.
        waited: Duration,
    },
    /// Datagrams arrive but none authenticates.
    #[error("{0} datagrams from the peer failed authentication and none passed: the session keys differ, or only one side runs with -T")]
    Authentication(u64),
    /// The control channel closed before the session ended.
    #[error("the control channel closed before the session ended (the peer exited or the SSH connection dropped)")]
    ControlClosed,
    /// The peer sent something the protocol does not allow here.
    #[error("protocol violation by the peer: {0}")]
    Protocol(String),
    /// The peer ended the session with an error frame.
    #[error("the peer ended the session: {} ({:?})", .0.message, .0.code)]
    Peer(ErrorFrame),
}

impl TransferError {
    /// An [`TransferError::Io`] with context.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> TransferError {
        TransferError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<io::Error> for TransferError {
    /// A failed socket call of the data channel (file errors carry their own context).
    fn from(source: io::Error) -> TransferError {
        TransferError::io("sending on the UDP socket", source)
    }
}
