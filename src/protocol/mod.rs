//! The open transfer protocol (specified in `docs/protocol.md`): control frames carried over the
//! SSH exec channel, and the UDP datagrams of the data channel.
//!
//! Types and their codecs, strict and allocation-bounded, never panicking on any input, and
//! [`reader`], the one frame reader over a byte stream (blocking for `ascp`, async for the
//! proxy's handshake). Shared by `ascp` (both sides) and by the proxy.

pub mod datagram;
pub mod frame;
pub mod reader;

pub use datagram::{Datagram, DatagramHeader, DatagramKind, NackRange};
pub use frame::Frame;
pub use reader::{Decoder, FrameReader, RawFrame, ReadError};

use uuid::Uuid;

/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// Largest control frame, header included.
pub const MAX_FRAME: usize = 64 * 1024;
/// Longest string (host name, path, message) in a frame, in bytes.
pub const MAX_STRING: usize = 4096;

/// `message` cut to at most `MAX_STRING / 2` bytes, at a character boundary: room for an error
/// text in a frame, whatever the peer-chosen paths it quotes are made of.
pub fn error_text(message: &str) -> String {
    let mut end = message.len().min(MAX_STRING / 2);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}
/// Most source paths a `SessionInit` may carry.
pub const MAX_PATHS: usize = 1024;
/// Most chunk hashes a `FileHave` may carry.
pub const MAX_CHUNKS: usize = 2048;
/// Most ranges one NACK datagram may carry.
pub const MAX_NACK_RANGES: usize = 64;
/// Largest UDP datagram accepted or sent.
pub const MAX_DATAGRAM: usize = 9000;
/// AEAD key length (AES-256-GCM).
pub const KEY_LEN: usize = 32;
/// Length of a chunk hash (BLAKE3, truncated) and of a file checksum (BLAKE3, full).
pub const CHUNK_HASH_LEN: usize = 16;
/// Length of a file checksum.
pub const CHECKSUM_LEN: usize = 32;

/// Which way the files go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The client sends files to the server.
    Upload,
    /// The server sends files to the client.
    Download,
}

/// What to do with a destination file that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it.
    Always,
    /// Keep it; skip the file.
    Never,
    /// Replace it only if size or checksum differ (the default).
    Diff,
}

/// `-k`: how a partly transferred destination is resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ResumeLevel {
    /// Always transfer the whole file.
    None,
    /// Skip the file when its size and modification time match.
    Attributes,
    /// Re-send only chunks whose (sparse) checksums differ.
    SparseChecksum,
    /// Like `SparseChecksum`, and verify the whole file.
    FullChecksum,
}

/// The client's first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInit {
    /// Lowest protocol version the client speaks.
    pub min_version: u16,
    /// Highest protocol version the client speaks.
    pub max_version: u16,
    /// The session UUID (also the proxy's forwarding comment).
    pub session_id: Uuid,
    /// The host name the client asked for, as typed (a proxy routes on it: `host_domain`).
    pub requested_host: String,
    /// The SSH port the client dialled.
    pub requested_port: u16,
    /// The client's UDP port.
    pub client_udp_port: u16,
    /// The server UDP port asked for with `-O`; 0 lets the server choose.
    pub server_udp_port: u16,
    /// Which way the files go.
    pub direction: Direction,
    /// `-r`: directories are sent recursively.
    pub recursive: bool,
    /// Data datagrams are encrypted (off with `-T`).
    pub encrypt: bool,
    /// `-k`.
    pub resume: ResumeLevel,
    /// `--overwrite`.
    pub overwrite: Overwrite,
    /// `-l`: target rate, bits per second.
    pub target_rate: u64,
    /// `-m`: minimum rate, bits per second.
    pub min_rate: u64,
    /// Payload bytes per data datagram the client proposes.
    pub datagram_size: u16,
    /// Download: the remote source paths. Upload: empty.
    pub sources: Vec<String>,
    /// Upload: the remote destination. Download: empty.
    pub destination: String,
}

/// The server's answer to `SessionInit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAccept {
    /// The version both speak.
    pub version: u16,
    /// The server's UDP port for this session.
    pub server_udp_port: u16,
    /// Session token carried by every datagram.
    pub token: u64,
    /// AEAD key for the datagrams (all zero when not encrypting).
    pub key: [u8; KEY_LEN],
    /// Payload bytes per data datagram, at most the client's proposal.
    pub datagram_size: u16,
}

/// A file or directory the sender announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStart {
    /// Identifies the file in later frames and datagrams.
    pub file_id: u32,
    /// Path relative to the destination, `/`-separated, no `..`, not absolute.
    pub path: String,
    /// Regular file or directory.
    pub kind: FileKind,
    /// Size in bytes (0 for a directory).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

/// What a `FileStart` announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
}

/// The receiver's answer to a `FileStart`: what it already has (resume), or that it skips it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHave {
    /// The file.
    pub file_id: u32,
    /// The receiver wants nothing of this file (exists and `Never`, or identical).
    pub skip: bool,
    /// Chunk size the hashes cover.
    pub chunk_size: u64,
    /// BLAKE3 hash (truncated) of each chunk of the existing destination, in order.
    pub chunks: Vec<[u8; CHUNK_HASH_LEN]>,
}

/// The sender has sent every block of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDone {
    /// The file.
    pub file_id: u32,
    /// BLAKE3 of the whole file.
    pub checksum: [u8; CHECKSUM_LEN],
}

/// The receiver's verdict on a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileResult {
    /// The file.
    pub file_id: u32,
    /// `None` when the file arrived intact; else why not.
    pub error: Option<ErrorFrame>,
    /// Bytes that crossed the network for it.
    pub bytes_transferred: u64,
}

/// End of the session (sent by the sender when every file has a result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDone {
    /// Files announced.
    pub files: u32,
    /// Bytes that crossed the network.
    pub bytes: u64,
}

/// An error with a code and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// Machine-readable cause.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
}

/// Causes of errors, on the wire as `u16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Anything not listed.
    Other,
    /// No common protocol version.
    Version,
    /// A source does not exist.
    NotFound,
    /// Permission denied.
    Permission,
    /// The destination file system is full.
    NoSpace,
    /// The data did not verify.
    Checksum,
    /// A malformed or unexpected frame or datagram.
    Protocol,
    /// Nothing arrived for too long.
    Timeout,
    /// Refused by policy (docroot, overwrite never, proxy rule).
    Refused,
    /// An unknown code from a newer peer.
    Unknown(u16),
}

impl ErrorCode {
    /// The wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Other => 1,
            ErrorCode::Version => 2,
            ErrorCode::NotFound => 3,
            ErrorCode::Permission => 4,
            ErrorCode::NoSpace => 5,
            ErrorCode::Checksum => 6,
            ErrorCode::Protocol => 7,
            ErrorCode::Timeout => 8,
            ErrorCode::Refused => 9,
            ErrorCode::Unknown(v) => v,
        }
    }

    /// From the wire value.
    pub fn from_u16(v: u16) -> ErrorCode {
        match v {
            1 => ErrorCode::Other,
            2 => ErrorCode::Version,
            3 => ErrorCode::NotFound,
            4 => ErrorCode::Permission,
            5 => ErrorCode::NoSpace,
            6 => ErrorCode::Checksum,
            7 => ErrorCode::Protocol,
            8 => ErrorCode::Timeout,
            9 => ErrorCode::Refused,
            other => ErrorCode::Unknown(other),
        }
    }
}

/// Why a frame or datagram could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The length prefix exceeds [`MAX_FRAME`] (or a datagram exceeds [`MAX_DATAGRAM`]).
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// An unknown frame or datagram type.
    #[error("unknown {what} type {value}")]
    UnknownType {
        /// "frame" or "datagram".
        what: &'static str,
        /// The type byte.
        value: u8,
    },
    /// A field is malformed (names the field).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A count exceeds its limit (names the field).
    #[error("too many {0}")]
    TooMany(&'static str),
    /// The frame ended before its fields did, or has bytes left over.
    #[error("frame length does not match its contents ({0})")]
    Length(&'static str),
    /// The stream starts with printable text where a length prefix belongs: something other
    /// than the transfer program is talking (a login shell such as nologin, a banner, a
    /// profile script). Holds the text seen (the prefix, or the line it starts).
    #[error(
        "the peer sent text instead of the transfer protocol: \"{0}\"; something other than \
         `ascp --server` answered (a login shell such as nologin, or a banner or profile \
         script writing to stdout)"
    )]
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_cuts_long_messages_at_a_character_boundary() {
        // 2-byte characters so that byte MAX_STRING / 2 + 1 falls inside one (this panicked
        // with String::truncate when a peer chose such a path).
        let message = format!("x{}", "é".repeat(MAX_STRING));
        let cut = error_text(&message);
        assert!(cut.len() <= MAX_STRING / 2 && cut.len() >= MAX_STRING / 2 - 1);
        assert!(message.starts_with(&cut));
        assert_eq!(error_text("short"), "short");
    }
}
