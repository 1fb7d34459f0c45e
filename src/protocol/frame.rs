//! Control frames: `u32` big-endian length of what follows, `u8` type, payload.
//!
//! The wire format of every frame is specified in `docs/protocol.md` §4. Decoding is strict: the
//! length must match the fields exactly, every enum and bool value is checked, every count is
//! checked against its limit before anything is allocated, and no input makes it panic.
//! Encoding refuses what the decoder would reject, so a peer never receives such a frame.

use std::io::{self, Write};

use super::datagram::MAX_DATAGRAM_PAYLOAD;
use super::*;

/// Length of the length prefix that starts every frame.
pub const LEN_PREFIX: usize = 4;

/// Type byte of [`Frame::SessionInit`].
pub const TYPE_SESSION_INIT: u8 = 1;
/// Type byte of [`Frame::SessionAccept`].
pub const TYPE_SESSION_ACCEPT: u8 = 2;
/// Type byte of [`Frame::FileStart`].
pub const TYPE_FILE_START: u8 = 3;
/// Type byte of [`Frame::FileHave`].
pub const TYPE_FILE_HAVE: u8 = 4;
/// Type byte of [`Frame::FileDone`].
pub const TYPE_FILE_DONE: u8 = 5;
/// Type byte of [`Frame::FileResult`].
pub const TYPE_FILE_RESULT: u8 = 6;
/// Type byte of [`Frame::SessionDone`].
pub const TYPE_SESSION_DONE: u8 = 7;
/// Type byte of [`Frame::Error`].
pub const TYPE_ERROR: u8 = 8;
/// Type byte of [`Frame::Keepalive`].
pub const TYPE_KEEPALIVE: u8 = 9;

/// One control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → server, first.
    SessionInit(SessionInit),
    /// Server → client, the answer.
    SessionAccept(SessionAccept),
    /// Sender → receiver: a file or directory follows.
    FileStart(FileStart),
    /// Receiver → sender: what it has of that file.
    FileHave(FileHave),
    /// Sender → receiver: every block of the file was sent.
    FileDone(FileDone),
    /// Receiver → sender: the file's verdict.
    FileResult(FileResult),
    /// Sender → receiver: no more files.
    SessionDone(SessionDone),
    /// Either way: the session fails.
    Error(ErrorFrame),
    /// Either way: still alive (sent when idle).
    Keepalive,
}

impl Frame {
    /// Appends the encoded frame (length prefix included) to `out`; refuses values over the
    /// limits (so a peer never receives what it must reject).
    ///
    /// On error `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let start = out.len();
        let result = self.encode_inner(out, start);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_inner(&self, out: &mut Vec<u8>, start: usize) -> Result<(), ProtocolError> {
        out.extend_from_slice(&[0; LEN_PREFIX]);
        out.push(self.type_byte());
        match self {
            Frame::SessionInit(m) => {
                check_version_range(m.min_version, m.max_version)?;
                check_datagram_size(m.datagram_size)?;
                if m.sources.len() > MAX_PATHS {
                    return Err(ProtocolError::TooMany("sources"));
                }
                put_u16(out, m.min_version);
                put_u16(out, m.max_version);
                out.extend_from_slice(m.session_id.as_bytes());
                put_str(out, &m.requested_host, "requested_host")?;
                put_u16(out, m.requested_port);
                put_u16(out, m.client_udp_port);
                put_u16(out, m.server_udp_port);
                out.push(direction_to_u8(m.direction));
                out.push(u8::from(m.recursive));
                out.push(u8::from(m.encrypt));
                out.push(resume_to_u8(m.resume));
                out.push(overwrite_to_u8(m.overwrite));
                put_u64(out, m.target_rate);
                put_u64(out, m.min_rate);
                put_u16(out, m.datagram_size);
                put_u16(out, count_u16(m.sources.len(), "sources")?);
                for s in &m.sources {
                    put_str(out, s, "sources")?;
                    // Stop early rather than building megabytes only to refuse them.
                    if out.len() - start > MAX_FRAME {
                        return Err(ProtocolError::TooLarge(out.len() - start));
                    }
                }
                put_str(out, &m.destination, "destination")?;
            }
            Frame::SessionAccept(m) => {
                if m.version == 0 {
                    return Err(ProtocolError::Malformed("version"));
                }
                if m.server_udp_port == 0 {
                    return Err(ProtocolError::Malformed("server_udp_port"));
                }
                check_datagram_size(m.datagram_size)?;
                put_u16(out, m.version);
                put_u16(out, m.server_udp_port);
                put_u64(out, m.token);
                out.extend_from_slice(&m.key);
                put_u16(out, m.datagram_size);
            }
            Frame::FileStart(m) => {
                validate_relative_path(&m.path)?;
                check_file_start(m.kind, m.size, m.mode)?;
                put_u32(out, m.file_id);
                put_str(out, &m.path, "path")?;
                out.push(file_kind_to_u8(m.kind));
                put_u64(out, m.size);
                put_u32(out, m.mode);
                put_u64(out, m.mtime as u64);
            }
            Frame::FileHave(m) => {
                if m.chunks.len() > MAX_CHUNKS {
                    return Err(ProtocolError::TooMany("chunks"));
                }
                check_chunk_size(m.chunk_size, m.chunks.len())?;
                put_u32(out, m.file_id);
                out.push(u8::from(m.skip));
                put_u64(out, m.chunk_size);
                put_u16(out, count_u16(m.chunks.len(), "chunks")?);
                for c in &m.chunks {
                    out.extend_from_slice(c);
                }
            }
            Frame::FileDone(m) => {
                put_u32(out, m.file_id);
                out.extend_from_slice(&m.checksum);
            }
            Frame::FileResult(m) => {
                put_u32(out, m.file_id);
                match &m.error {
                    None => out.push(0),
                    Some(e) => {
                        out.push(1);
                        put_error(out, e)?;
                    }
                }
                put_u64(out, m.bytes_transferred);
            }
            Frame::SessionDone(m) => {
                put_u32(out, m.files);
                put_u64(out, m.bytes);
            }
            Frame::Error(e) => put_error(out, e)?,
            Frame::Keepalive => {}
        }
        let total = out.len() - start;
        if total > MAX_FRAME {
            return Err(ProtocolError::TooLarge(total));
        }
        // total ≤ MAX_FRAME, so the body length fits a u32.
        let body = (total - LEN_PREFIX) as u32;
        out[start..start + LEN_PREFIX].copy_from_slice(&body.to_be_bytes());
        Ok(())
    }

    /// Decodes exactly one complete frame (length prefix included).
    pub fn decode(bytes: &[u8]) -> Result<Frame, ProtocolError> {
        let Some(prefix) = bytes.first_chunk::<LEN_PREFIX>() else {
            return Err(ProtocolError::Length("length prefix"));
        };
        let total = frame_len(*prefix)?;
        if bytes.len() != total {
            return Err(ProtocolError::Length(if bytes.len() < total {
                "frame truncated"
            } else {
                "bytes after the frame"
            }));
        }
        let mut r = Reader {
            buf: &bytes[LEN_PREFIX..],
        };
        let ty = r.u8("type")?;
        let frame = match ty {
            TYPE_SESSION_INIT => Frame::SessionInit(decode_session_init(&mut r)?),
            TYPE_SESSION_ACCEPT => {
                let version = r.u16("version")?;
                if version == 0 {
                    return Err(ProtocolError::Malformed("version"));
                }
                let server_udp_port = r.u16("server_udp_port")?;
                if server_udp_port == 0 {
                    return Err(ProtocolError::Malformed("server_udp_port"));
                }
                let token = r.u64("token")?;
                let key = r.array::<KEY_LEN>("key")?;
                let datagram_size = r.u16("datagram_size")?;
                check_datagram_size(datagram_size)?;
                Frame::SessionAccept(SessionAccept {
                    version,
                    server_udp_port,
                    token,
                    key,
                    datagram_size,
                })
            }
            TYPE_FILE_START => {
                let file_id = r.u32("file_id")?;
                let path = r.string("path")?;
                validate_relative_path(&path)?;
                let kind = file_kind_from_u8(r.u8("kind")?)?;
                let size = r.u64("size")?;
                let mode = r.u32("mode")?;
                let mtime = r.u64("mtime")? as i64;
                check_file_start(kind, size, mode)?;
                Frame::FileStart(FileStart {
                    file_id,
                    path,
                    kind,
                    size,
                    mode,
                    mtime,
                })
            }
            TYPE_FILE_HAVE => {
                let file_id = r.u32("file_id")?;
                let skip = r.bool("skip")?;
                let chunk_size = r.u64("chunk_size")?;
                let count = r.count(MAX_CHUNKS, CHUNK_HASH_LEN, "chunks")?;
                check_chunk_size(chunk_size, count)?;
                let mut chunks = Vec::with_capacity(count);
                for _ in 0..count {
                    chunks.push(r.array::<CHUNK_HASH_LEN>("chunks")?);
                }
                Frame::FileHave(FileHave {
                    file_id,
                    skip,
                    chunk_size,
                    chunks,
                })
            }
            TYPE_FILE_DONE => Frame::FileDone(FileDone {
                file_id: r.u32("file_id")?,
                checksum: r.array::<CHECKSUM_LEN>("checksum")?,
            }),
            TYPE_FILE_RESULT => {
                let file_id = r.u32("file_id")?;
                let error = if r.bool("error present")? {
                    Some(r.error_frame()?)
                } else {
                    None
                };
                Frame::FileResult(FileResult {
                    file_id,
                    error,
                    bytes_transferred: r.u64("bytes_transferred")?,
                })
            }
            TYPE_SESSION_DONE => Frame::SessionDone(SessionDone {
                files: r.u32("files")?,
                bytes: r.u64("bytes")?,
            }),
            TYPE_ERROR => Frame::Error(r.error_frame()?),
            TYPE_KEEPALIVE => Frame::Keepalive,
            value => {
                return Err(ProtocolError::UnknownType {
                    what: "frame",
                    value,
                })
            }
        };
        if !r.buf.is_empty() {
            return Err(ProtocolError::Length("bytes after the last field"));
        }
        Ok(frame)
    }

    /// The type byte this frame carries on the wire.
    pub fn type_byte(&self) -> u8 {
        match self {
            Frame::SessionInit(_) => TYPE_SESSION_INIT,
            Frame::SessionAccept(_) => TYPE_SESSION_ACCEPT,
            Frame::FileStart(_) => TYPE_FILE_START,
            Frame::FileHave(_) => TYPE_FILE_HAVE,
            Frame::FileDone(_) => TYPE_FILE_DONE,
            Frame::FileResult(_) => TYPE_FILE_RESULT,
            Frame::SessionDone(_) => TYPE_SESSION_DONE,
            Frame::Error(_) => TYPE_ERROR,
            Frame::Keepalive => TYPE_KEEPALIVE,
        }
    }

    /// The frame type's name, for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::SessionInit(_) => "SessionInit",
            Frame::SessionAccept(_) => "SessionAccept",
            Frame::FileStart(_) => "FileStart",
            Frame::FileHave(_) => "FileHave",
            Frame::FileDone(_) => "FileDone",
            Frame::FileResult(_) => "FileResult",
            Frame::SessionDone(_) => "SessionDone",
            Frame::Error(_) => "Error",
            Frame::Keepalive => "Keepalive",
        }
    }
}

/// Checks a `FileStart` path: relative, `/`-separated, no empty, `.` or `..` component, no NUL,
/// at most [`MAX_STRING`] bytes. Errors are `Malformed("path")`.
pub fn validate_relative_path(path: &str) -> Result<(), ProtocolError> {
    let bad = path.is_empty()
        || path.len() > MAX_STRING
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        Err(ProtocolError::Malformed("path"))
    } else {
        Ok(())
    }
}

/// The total frame length (prefix included) announced by a length prefix, or why it is refused.
/// The whole length (prefix included) of the frame `prefix` starts, checked against
/// [`MAX_FRAME`]. A prefix that is printable text gives [`ProtocolError::Text`].
pub fn frame_len(prefix: [u8; LEN_PREFIX]) -> Result<usize, ProtocolError> {
    let body = u32::from_be_bytes(prefix) as usize;
    if body == 0 {
        return Err(ProtocolError::Length("no type byte"));
    }
    let total = body.saturating_add(LEN_PREFIX);
    if total > MAX_FRAME {
        if prefix.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return Err(ProtocolError::Text(
                String::from_utf8_lossy(&prefix).into_owned(),
            ));
        }
        return Err(ProtocolError::TooLarge(total));
    }
    Ok(total)
}

/// Most bytes of stray text a reader ([`super::reader`]) reads to show in [`ProtocolError::Text`].
pub const TEXT_SHOWN: usize = 200;

/// `seen` (the text prefix) plus `rest`, up to the first line end, printable, at most
/// [`TEXT_SHOWN`] bytes: what to show of text that arrived instead of a frame.
pub fn stray_text(seen: &[u8], rest: &[u8]) -> String {
    let mut all: Vec<u8> = seen.iter().chain(rest).copied().collect();
    if let Some(end) = all.iter().position(|&b| b == b'\n' || b == b'\r') {
        all.truncate(end);
    }
    all.truncate(TEXT_SHOWN);
    all.iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim()
        .to_string()
}

fn check_version_range(min: u16, max: u16) -> Result<(), ProtocolError> {
    if min == 0 || min > max {
        return Err(ProtocolError::Malformed("version range"));
    }
    Ok(())
}

fn check_datagram_size(size: u16) -> Result<(), ProtocolError> {
    if size == 0 || usize::from(size) > MAX_DATAGRAM_PAYLOAD {
        return Err(ProtocolError::Malformed("datagram_size"));
    }
    Ok(())
}

fn check_file_start(kind: FileKind, size: u64, mode: u32) -> Result<(), ProtocolError> {
    if mode & !MODE_MASK != 0 {
        return Err(ProtocolError::Malformed("mode"));
    }
    if kind == FileKind::Directory && size != 0 {
        return Err(ProtocolError::Malformed("size"));
    }
    Ok(())
}

fn check_chunk_size(chunk_size: u64, count: usize) -> Result<(), ProtocolError> {
    if count > 0 && chunk_size == 0 {
        return Err(ProtocolError::Malformed("chunk_size"));
    }
    Ok(())
}

/// Permission bits a `FileStart.mode` may carry (`0o7777`; no file-type bits).
pub const MODE_MASK: u32 = 0o7777;

fn count_u16(n: usize, field: &'static str) -> Result<u16, ProtocolError> {
    u16::try_from(n).map_err(|_| ProtocolError::TooMany(field))
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str, field: &'static str) -> Result<(), ProtocolError> {
    if s.len() > MAX_STRING {
        return Err(ProtocolError::Malformed(field));
    }
    // MAX_STRING < u16::MAX, so the length fits.
    put_u16(out, s.len() as u16);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_error(out: &mut Vec<u8>, e: &ErrorFrame) -> Result<(), ProtocolError> {
    put_u16(out, e.code.to_u16());
    put_str(out, &e.message, "message")
}

fn direction_to_u8(d: Direction) -> u8 {
    match d {
        Direction::Upload => 1,
        Direction::Download => 2,
    }
}

fn resume_to_u8(r: ResumeLevel) -> u8 {
    match r {
        ResumeLevel::None => 0,
        ResumeLevel::Attributes => 1,
        ResumeLevel::SparseChecksum => 2,
        ResumeLevel::FullChecksum => 3,
    }
}

fn overwrite_to_u8(o: Overwrite) -> u8 {
    match o {
        Overwrite::Always => 1,
        Overwrite::Never => 2,
        Overwrite::Diff => 3,
    }
}

fn file_kind_to_u8(k: FileKind) -> u8 {
    match k {
        FileKind::File => 1,
        FileKind::Directory => 2,
    }
}

fn file_kind_from_u8(v: u8) -> Result<FileKind, ProtocolError> {
    match v {
        1 => Ok(FileKind::File),
        2 => Ok(FileKind::Directory),
        _ => Err(ProtocolError::Malformed("kind")),
    }
}

fn decode_session_init(r: &mut Reader<'_>) -> Result<SessionInit, ProtocolError> {
    let min_version = r.u16("min_version")?;
    let max_version = r.u16("max_version")?;
    check_version_range(min_version, max_version)?;
    let session_id = Uuid::from_bytes(r.array::<16>("session_id")?);
    let requested_host = r.string("requested_host")?;
    let requested_port = r.u16("requested_port")?;
    let client_udp_port = r.u16("client_udp_port")?;
    let server_udp_port = r.u16("server_udp_port")?;
    let direction = match r.u8("direction")? {
        1 => Direction::Upload,
        2 => Direction::Download,
        _ => return Err(ProtocolError::Malformed("direction")),
    };
    let recursive = r.bool("recursive")?;
    let encrypt = r.bool("encrypt")?;
    let resume = match r.u8("resume")? {
        0 => ResumeLevel::None,
        1 => ResumeLevel::Attributes,
        2 => ResumeLevel::SparseChecksum,
        3 => ResumeLevel::FullChecksum,
        _ => return Err(ProtocolError::Malformed("resume")),
    };
    let overwrite = match r.u8("overwrite")? {
        1 => Overwrite::Always,
        2 => Overwrite::Never,
        3 => Overwrite::Diff,
        _ => return Err(ProtocolError::Malformed("overwrite")),
    };
    let target_rate = r.u64("target_rate")?;
    let min_rate = r.u64("min_rate")?;
    let datagram_size = r.u16("datagram_size")?;
    check_datagram_size(datagram_size)?;
    // Each string is at least its 2-byte length.
    let count = r.count(MAX_PATHS, 2, "sources")?;
    let mut sources = Vec::with_capacity(count);
    for _ in 0..count {
        sources.push(r.string("sources")?);
    }
    let destination = r.string("destination")?;
    Ok(SessionInit {
        min_version,
        max_version,
        session_id,
        requested_host,
        requested_port,
        client_udp_port,
        server_udp_port,
        direction,
        recursive,
        encrypt,
        resume,
        overwrite,
        target_rate,
        min_rate,
        datagram_size,
        sources,
        destination,
    })
}

/// Reads fields off the front of a frame body; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(ProtocolError::Length(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtocolError> {
        let Some((head, tail)) = self.buf.split_first_chunk::<N>() else {
            return Err(ProtocolError::Length(field));
        };
        self.buf = tail;
        Ok(*head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, ProtocolError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, ProtocolError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, ProtocolError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, ProtocolError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ProtocolError::Malformed(field)),
        }
    }

    fn string(&mut self, field: &'static str) -> Result<String, ProtocolError> {
        let len = usize::from(self.u16(field)?);
        if len > MAX_STRING {
            return Err(ProtocolError::Malformed(field));
        }
        let bytes = self.take(len, field)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(ProtocolError::Malformed(field)),
        }
    }

    /// A `u16` count, checked against `max` and against the bytes left (each item takes at
    /// least `min_item` bytes) before the caller allocates for it.
    fn count(
        &mut self,
        max: usize,
        min_item: usize,
        field: &'static str,
    ) -> Result<usize, ProtocolError> {
        let n = usize::from(self.u16(field)?);
        if n > max {
            return Err(ProtocolError::TooMany(field));
        }
        if n.saturating_mul(min_item) > self.buf.len() {
            return Err(ProtocolError::Length(field));
        }
        Ok(n)
    }

    fn error_frame(&mut self) -> Result<ErrorFrame, ProtocolError> {
        let code = ErrorCode::from_u16(self.u16("code")?);
        let message = self.string("message")?;
        Ok(ErrorFrame { code, message })
    }
}

/// Writes one frame to a blocking stream and flushes it.
///
/// A frame the codec refuses to encode is an [`io::ErrorKind::InvalidInput`] error and
/// nothing is written.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    let mut out = Vec::new();
    frame.encode(&mut out).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to send {}: {e}", frame.name()),
        )
    })?;
    w.write_all(&out)?;
    w.flush()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn init() -> SessionInit {
        SessionInit {
            min_version: 1,
            max_version: 1,
            session_id: Uuid::from_bytes([7; 16]),
            requested_host: "files.example.com".into(),
            requested_port: 33001,
            client_udp_port: 40000,
            server_udp_port: 0,
            direction: Direction::Download,
            recursive: true,
            encrypt: true,
            resume: ResumeLevel::SparseChecksum,
            overwrite: Overwrite::Diff,
            target_rate: 500_000_000,
            min_rate: 0,
            datagram_size: 1400,
            sources: vec!["/data/a.bin".into(), "dir".into()],
            destination: String::new(),
        }
    }

    fn accept() -> SessionAccept {
        SessionAccept {
            version: 1,
            server_udp_port: 33001,
            token: 0xdead_beef_0123_4567,
            key: [0x42; KEY_LEN],
            datagram_size: 1400,
        }
    }

    fn file_start() -> FileStart {
        FileStart {
            file_id: 3,
            path: "dir/sub/file.txt".into(),
            kind: FileKind::File,
            size: 1 << 40,
            mode: 0o644,
            mtime: -5,
        }
    }

    pub(crate) fn samples() -> Vec<Frame> {
        vec![
            Frame::SessionInit(init()),
            Frame::SessionAccept(accept()),
            Frame::FileStart(file_start()),
            Frame::FileHave(FileHave {
                file_id: 3,
                skip: false,
                chunk_size: 1 << 20,
                chunks: vec![[1; CHUNK_HASH_LEN], [2; CHUNK_HASH_LEN]],
            }),
            Frame::FileDone(FileDone {
                file_id: 3,
                checksum: [9; CHECKSUM_LEN],
            }),
            Frame::FileResult(FileResult {
                file_id: 3,
                error: None,
                bytes_transferred: 12345,
            }),
            Frame::FileResult(FileResult {
                file_id: 4,
                error: Some(ErrorFrame {
                    code: ErrorCode::NoSpace,
                    message: "disk full".into(),
                }),
                bytes_transferred: 0,
            }),
            Frame::SessionDone(SessionDone {
                files: 2,
                bytes: u64::MAX,
            }),
            Frame::Error(ErrorFrame {
                code: ErrorCode::Unknown(999),
                message: "from the future".into(),
            }),
            Frame::Keepalive,
        ]
    }

    pub(crate) fn enc(f: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        f.encode(&mut out).expect("encodes");
        out
    }

    fn roundtrip(f: &Frame) {
        let bytes = enc(f);
        assert_eq!(
            u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
            bytes.len() - 4
        );
        assert_eq!(bytes[4], f.type_byte());
        assert_eq!(Frame::decode(&bytes).as_ref(), Ok(f));
    }

    /// Replaces the body (type byte + payload) of a frame, fixing the prefix.
    pub(crate) fn with_body(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn every_frame_type_round_trips() {
        for f in samples() {
            roundtrip(&f);
        }
    }

    #[test]
    fn type_bytes_are_as_specified() {
        let types: Vec<u8> = samples().iter().map(|f| enc(f)[4]).collect();
        assert_eq!(types, vec![1, 2, 3, 4, 5, 6, 6, 7, 8, 9]);
        assert_eq!(enc(&Frame::Keepalive), vec![0, 0, 0, 1, 9]);
    }

    #[test]
    fn exact_wire_layout_of_session_accept_and_file_done() {
        let bytes = enc(&Frame::SessionAccept(accept()));
        let mut want = vec![0, 0, 0, 47, 2, 0, 1, 0x80, 0xe9];
        want.extend_from_slice(&0xdead_beef_0123_4567u64.to_be_bytes());
        want.extend_from_slice(&[0x42; 32]);
        want.extend_from_slice(&1400u16.to_be_bytes());
        assert_eq!(bytes, want);

        let bytes = enc(&Frame::FileResult(FileResult {
            file_id: 1,
            error: Some(ErrorFrame {
                code: ErrorCode::Checksum,
                message: "x".into(),
            }),
            bytes_transferred: 2,
        }));
        assert_eq!(
            bytes,
            vec![0, 0, 0, 19, 6, 0, 0, 0, 1, 1, 0, 6, 0, 1, b'x', 0, 0, 0, 0, 0, 0, 0, 2]
        );
    }

    #[test]
    fn edge_values_round_trip() {
        // Empty lists and strings.
        let mut i = init();
        i.sources.clear();
        i.requested_host.clear();
        i.destination = "/upload/here".into();
        i.direction = Direction::Upload;
        i.recursive = false;
        i.encrypt = false;
        i.resume = ResumeLevel::None;
        i.overwrite = Overwrite::Never;
        i.min_version = 1;
        i.max_version = u16::MAX;
        i.datagram_size = MAX_DATAGRAM_PAYLOAD as u16;
        roundtrip(&Frame::SessionInit(i.clone()));
        for (r, o) in [
            (ResumeLevel::Attributes, Overwrite::Always),
            (ResumeLevel::FullChecksum, Overwrite::Diff),
        ] {
            i.resume = r;
            i.overwrite = o;
            roundtrip(&Frame::SessionInit(i.clone()));
        }
        // Max-length strings.
        i.requested_host = "h".repeat(MAX_STRING);
        i.destination = "d".repeat(MAX_STRING);
        i.sources = vec!["s".repeat(MAX_STRING); 3];
        roundtrip(&Frame::SessionInit(i.clone()));
        // Max count of (short) paths.
        i.requested_host.clear();
        i.destination.clear();
        i.sources = (0..MAX_PATHS).map(|n| format!("f{n}")).collect();
        roundtrip(&Frame::SessionInit(i));
        // Max chunks; empty chunks with chunk_size 0; skip.
        roundtrip(&Frame::FileHave(FileHave {
            file_id: u32::MAX,
            skip: false,
            chunk_size: u64::MAX,
            chunks: vec![[0xab; CHUNK_HASH_LEN]; MAX_CHUNKS],
        }));
        roundtrip(&Frame::FileHave(FileHave {
            file_id: 0,
            skip: true,
            chunk_size: 0,
            chunks: vec![],
        }));
        // Directory, extreme mtimes, full mode bits, max-length path, unicode.
        for mtime in [i64::MIN, 0, i64::MAX] {
            roundtrip(&Frame::FileStart(FileStart {
                file_id: 0,
                path: "ü/ñ/..x/.y/z.".into(),
                kind: FileKind::Directory,
                size: 0,
                mode: 0o7777,
                mtime,
            }));
        }
        let mut f = file_start();
        f.path = "p".repeat(MAX_STRING);
        roundtrip(&Frame::FileStart(f));
        // Every error code, max message.
        for code in 0..=12u16 {
            roundtrip(&Frame::Error(ErrorFrame {
                code: ErrorCode::from_u16(code),
                message: "m".repeat(MAX_STRING),
            }));
        }
    }

    #[test]
    fn encode_refuses_what_decode_rejects() {
        let refuse = |f: Frame, e: ProtocolError| {
            let mut out = vec![1, 2, 3];
            assert_eq!(f.encode(&mut out), Err(e), "{f:?}");
            assert_eq!(out, vec![1, 2, 3], "out untouched on error");
        };
        let mut i = init();
        i.requested_host = "h".repeat(MAX_STRING + 1);
        refuse(
            Frame::SessionInit(i),
            ProtocolError::Malformed("requested_host"),
        );
        let mut i = init();
        i.sources = vec!["a".into(); MAX_PATHS + 1];
        refuse(Frame::SessionInit(i), ProtocolError::TooMany("sources"));
        let mut i = init();
        i.sources = vec!["a".repeat(MAX_STRING); 40];
        assert!(matches!(
            Frame::SessionInit(i).encode(&mut Vec::new()),
            Err(ProtocolError::TooLarge(n)) if n > MAX_FRAME
        ));
        let mut i = init();
        i.min_version = 2;
        i.max_version = 1;
        refuse(
            Frame::SessionInit(i),
            ProtocolError::Malformed("version range"),
        );
        let mut i = init();
        i.min_version = 0;
        refuse(
            Frame::SessionInit(i),
            ProtocolError::Malformed("version range"),
        );
        let mut i = init();
        i.datagram_size = 0;
        refuse(
            Frame::SessionInit(i),
            ProtocolError::Malformed("datagram_size"),
        );
        let mut a = accept();
        a.datagram_size = MAX_DATAGRAM_PAYLOAD as u16 + 1;
        refuse(
            Frame::SessionAccept(a),
            ProtocolError::Malformed("datagram_size"),
        );
        let mut a = accept();
        a.version = 0;
        refuse(Frame::SessionAccept(a), ProtocolError::Malformed("version"));
        let mut a = accept();
        a.server_udp_port = 0;
        refuse(
            Frame::SessionAccept(a),
            ProtocolError::Malformed("server_udp_port"),
        );
        let mut f = file_start();
        f.path = "../etc/passwd".into();
        refuse(Frame::FileStart(f), ProtocolError::Malformed("path"));
        let mut f = file_start();
        f.mode = 0o100644;
        refuse(Frame::FileStart(f), ProtocolError::Malformed("mode"));
        let mut f = file_start();
        f.kind = FileKind::Directory;
        refuse(Frame::FileStart(f), ProtocolError::Malformed("size"));
        refuse(
            Frame::FileHave(FileHave {
                file_id: 1,
                skip: false,
                chunk_size: 1,
                chunks: vec![[0; CHUNK_HASH_LEN]; MAX_CHUNKS + 1],
            }),
            ProtocolError::TooMany("chunks"),
        );
        refuse(
            Frame::FileHave(FileHave {
                file_id: 1,
                skip: false,
                chunk_size: 0,
                chunks: vec![[0; CHUNK_HASH_LEN]],
            }),
            ProtocolError::Malformed("chunk_size"),
        );
        refuse(
            Frame::Error(ErrorFrame {
                code: ErrorCode::Other,
                message: "m".repeat(MAX_STRING + 1),
            }),
            ProtocolError::Malformed("message"),
        );
        refuse(
            Frame::FileResult(FileResult {
                file_id: 1,
                error: Some(ErrorFrame {
                    code: ErrorCode::Other,
                    message: "m".repeat(MAX_STRING + 1),
                }),
                bytes_transferred: 0,
            }),
            ProtocolError::Malformed("message"),
        );
    }

    #[test]
    fn path_validation() {
        for ok in [
            "a",
            "a/b",
            "a/b/c.txt",
            "...",
            ".hidden",
            "a..b",
            "a b/ c",
            "ü",
            "a\\b",
        ] {
            assert_eq!(validate_relative_path(ok), Ok(()), "{ok}");
        }
        let long = "x".repeat(MAX_STRING + 1);
        for bad in [
            "",
            "/",
            "/abs",
            "a/",
            "a//b",
            ".",
            "..",
            "./a",
            "a/.",
            "a/../b",
            "../a",
            "a/..",
            "a\0b",
            long.as_str(),
        ] {
            assert_eq!(
                validate_relative_path(bad),
                Err(ProtocolError::Malformed("path")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn decode_rejects_bad_paths_on_the_wire() {
        for bad in ["/etc/passwd", "a/../../b", "", "a\0"] {
            let mut body = vec![TYPE_FILE_START, 0, 0, 0, 1];
            body.extend_from_slice(&(bad.len() as u16).to_be_bytes());
            body.extend_from_slice(bad.as_bytes());
            body.push(1);
            body.extend_from_slice(&[0; 8 + 4 + 8]);
            assert_eq!(
                Frame::decode(&with_body(&body)),
                Err(ProtocolError::Malformed("path")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn decode_length_errors() {
        assert_eq!(
            Frame::decode(&[]),
            Err(ProtocolError::Length("length prefix"))
        );
        assert_eq!(
            Frame::decode(&[0, 0, 0]),
            Err(ProtocolError::Length("length prefix"))
        );
        assert_eq!(
            Frame::decode(&[0, 0, 0, 0]),
            Err(ProtocolError::Length("no type byte"))
        );
        assert_eq!(
            Frame::decode(&[0, 0, 0, 1]),
            Err(ProtocolError::Length("frame truncated"))
        );
        assert_eq!(
            Frame::decode(&[0, 0, 0, 1, 9, 0]),
            Err(ProtocolError::Length("bytes after the frame"))
        );
        // Keepalive with a payload byte: the prefix matches but the fields do not.
        assert_eq!(
            Frame::decode(&[0, 0, 0, 2, 9, 0]),
            Err(ProtocolError::Length("bytes after the last field"))
        );
        // Every frame: truncated bodies and a trailing byte are Length errors.
        for f in samples() {
            let bytes = enc(&f);
            for cut in 1..bytes.len() - 4 {
                let body = &bytes[4..4 + cut];
                assert!(
                    matches!(
                        Frame::decode(&with_body(body)),
                        Err(ProtocolError::Length(_))
                    ),
                    "{f:?} cut at {cut}"
                );
            }
            let mut body = bytes[4..].to_vec();
            body.push(0);
            assert_eq!(
                Frame::decode(&with_body(&body)),
                Err(ProtocolError::Length("bytes after the last field"))
            );
        }
    }

    #[test]
    fn decode_too_large_and_unknown_type() {
        let limit = (MAX_FRAME - 4) as u32;
        let mut big = limit.to_be_bytes().to_vec();
        big.push(TYPE_KEEPALIVE);
        big.resize(MAX_FRAME, 0);
        // Largest allowed length: decoded (and rejected for trailing bytes, not for size).
        assert_eq!(
            Frame::decode(&big),
            Err(ProtocolError::Length("bytes after the last field"))
        );
        let mut over = (limit + 1).to_be_bytes().to_vec();
        over.push(TYPE_KEEPALIVE);
        assert_eq!(
            Frame::decode(&over),
            Err(ProtocolError::TooLarge(MAX_FRAME + 1))
        );
        assert_eq!(
            Frame::decode(&[0xff, 0xff, 0xff, 0xff]),
            Err(ProtocolError::TooLarge(u32::MAX as usize + 4))
        );
        for t in [0u8, 10, 0x80, 0xff] {
            assert_eq!(
                Frame::decode(&[0, 0, 0, 1, t]),
                Err(ProtocolError::UnknownType {
                    what: "frame",
                    value: t
                })
            );
        }
    }

    /// Encodes `f`, overwrites the byte at `at` (an offset into the whole frame) with `v`.
    fn patched(f: &Frame, at: usize, v: u8) -> Result<Frame, ProtocolError> {
        let mut bytes = enc(f);
        bytes[at] = v;
        Frame::decode(&bytes)
    }

    #[test]
    fn decode_malformed_fields() {
        let si = Frame::SessionInit(init());
        // Offsets in a SessionInit: 4 prefix, 1 type, then min(2) max(2) uuid(16) host(2+17)
        // req_port(2) cport(2) sport(2) → direction at 5+4+16+19+6 = 50.
        let dir = 50;
        assert_eq!(
            patched(&si, dir, 0),
            Err(ProtocolError::Malformed("direction"))
        );
        assert_eq!(
            patched(&si, dir, 3),
            Err(ProtocolError::Malformed("direction"))
        );
        assert_eq!(
            patched(&si, dir + 1, 2),
            Err(ProtocolError::Malformed("recursive"))
        );
        assert_eq!(
            patched(&si, dir + 2, 0xff),
            Err(ProtocolError::Malformed("encrypt"))
        );
        assert_eq!(
            patched(&si, dir + 3, 4),
            Err(ProtocolError::Malformed("resume"))
        );
        assert_eq!(
            patched(&si, dir + 4, 0),
            Err(ProtocolError::Malformed("overwrite"))
        );
        assert_eq!(
            patched(&si, dir + 4, 4),
            Err(ProtocolError::Malformed("overwrite"))
        );
        // min_version 0x0101 > max_version 1.
        assert_eq!(
            patched(&si, 5, 1),
            Err(ProtocolError::Malformed("version range"))
        );
        // datagram_size at dir + 5 + 16: set to 0xff.. (> max) and 0.
        assert_eq!(
            patched(&si, dir + 21, 0xff),
            Err(ProtocolError::Malformed("datagram_size"))
        );
        // Invalid UTF-8 in requested_host (starts at 5+4+16+2 = 27).
        assert_eq!(
            patched(&si, 27, 0xff),
            Err(ProtocolError::Malformed("requested_host"))
        );
        // String length over MAX_STRING (the length field itself).
        assert_eq!(
            patched(&si, 25, 0x10),
            Err(ProtocolError::Malformed("requested_host"))
        );

        // Count over the limit: sources count at dir + 23.
        let mut bytes = enc(&si);
        bytes[dir + 23..dir + 25].copy_from_slice(&((MAX_PATHS + 1) as u16).to_be_bytes());
        assert_eq!(
            Frame::decode(&bytes),
            Err(ProtocolError::TooMany("sources"))
        );
        // A count within the limit but larger than the bytes left: refused before allocating.
        bytes[dir + 23..dir + 25].copy_from_slice(&(MAX_PATHS as u16).to_be_bytes());
        assert_eq!(Frame::decode(&bytes), Err(ProtocolError::Length("sources")));

        let fh = Frame::FileHave(FileHave {
            file_id: 1,
            skip: true,
            chunk_size: 4,
            chunks: vec![],
        });
        assert_eq!(patched(&fh, 9, 2), Err(ProtocolError::Malformed("skip")));
        let mut bytes = enc(&fh);
        bytes[18..20].copy_from_slice(&((MAX_CHUNKS + 1) as u16).to_be_bytes());
        assert_eq!(Frame::decode(&bytes), Err(ProtocolError::TooMany("chunks")));
        bytes[18..20].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(Frame::decode(&bytes), Err(ProtocolError::Length("chunks")));

        let fs = Frame::FileStart(file_start());
        // kind right after the path: 5 + 4 + 2 + 16.
        assert_eq!(patched(&fs, 27, 0), Err(ProtocolError::Malformed("kind")));
        assert_eq!(patched(&fs, 27, 3), Err(ProtocolError::Malformed("kind")));
        // mode's top byte: 28 + 8.
        assert_eq!(patched(&fs, 36, 1), Err(ProtocolError::Malformed("mode")));

        let fr = Frame::FileResult(FileResult {
            file_id: 1,
            error: None,
            bytes_transferred: 0,
        });
        assert_eq!(
            patched(&fr, 9, 2),
            Err(ProtocolError::Malformed("error present"))
        );
    }

    #[test]
    fn write_frame_refuses_invalid_frames() {
        let mut wire = Vec::new();
        let mut f = file_start();
        f.path = "/abs".into();
        let e = write_frame(&mut wire, &Frame::FileStart(f)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("malformed path"), "{e}");
        assert!(wire.is_empty());
    }

    // ---- property tests ----

    fn any_string(max: usize) -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::string::string_regex("[a-zA-Z0-9 ._/:@-]{0,40}").unwrap(),
            any::<String>(),
            (0..=max).prop_map(|n| "x".repeat(n)),
        ]
        .prop_filter("fits MAX_STRING", move |s| s.len() <= max)
    }

    fn any_path() -> impl Strategy<Value = String> {
        proptest::collection::vec("[^/\0]{1,12}", 1..6)
            .prop_map(|cs| cs.join("/"))
            .prop_filter("valid path", |p| validate_relative_path(p).is_ok())
    }

    fn any_error() -> impl Strategy<Value = ErrorFrame> {
        (any::<u16>(), any_string(MAX_STRING)).prop_map(|(c, message)| ErrorFrame {
            code: ErrorCode::from_u16(c),
            message,
        })
    }

    fn any_datagram_size() -> impl Strategy<Value = u16> {
        1..=MAX_DATAGRAM_PAYLOAD as u16
    }

    fn any_session_init() -> impl Strategy<Value = SessionInit> {
        (
            (
                1..=u16::MAX,
                any::<u16>(),
                any::<[u8; 16]>(),
                any_string(300),
            ),
            (any::<u16>(), any::<u16>(), any::<u16>(), any::<bool>()),
            (any::<bool>(), any::<bool>(), 0..4u8, 0..3u8),
            (any::<u64>(), any::<u64>(), any_datagram_size()),
            (
                proptest::collection::vec(any_string(200), 0..20),
                any_string(300),
            ),
        )
            .prop_map(
                |(
                    (min, spread, id, host),
                    (rport, cport, sport, download),
                    (recursive, encrypt, resume, overwrite),
                    (target_rate, min_rate, datagram_size),
                    (sources, destination),
                )| SessionInit {
                    min_version: min,
                    max_version: min.saturating_add(spread),
                    session_id: Uuid::from_bytes(id),
                    requested_host: host,
                    requested_port: rport,
                    client_udp_port: cport,
                    server_udp_port: sport,
                    direction: if download {
                        Direction::Download
                    } else {
                        Direction::Upload
                    },
                    recursive,
                    encrypt,
                    resume: [
                        ResumeLevel::None,
                        ResumeLevel::Attributes,
                        ResumeLevel::SparseChecksum,
                        ResumeLevel::FullChecksum,
                    ][usize::from(resume)],
                    overwrite: [Overwrite::Always, Overwrite::Never, Overwrite::Diff]
                        [usize::from(overwrite)],
                    target_rate,
                    min_rate,
                    datagram_size,
                    sources,
                    destination,
                },
            )
    }

    pub(crate) fn any_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            any_session_init().prop_map(Frame::SessionInit),
            (
                1..=u16::MAX,
                1..=u16::MAX,
                any::<u64>(),
                any::<[u8; KEY_LEN]>(),
                any_datagram_size()
            )
                .prop_map(|(version, server_udp_port, token, key, datagram_size)| {
                    Frame::SessionAccept(SessionAccept {
                        version,
                        server_udp_port,
                        token,
                        key,
                        datagram_size,
                    })
                }),
            (
                any::<u32>(),
                any_path(),
                any::<bool>(),
                any::<u64>(),
                0..=MODE_MASK,
                any::<i64>()
            )
                .prop_map(|(file_id, path, dir, size, mode, mtime)| {
                    Frame::FileStart(FileStart {
                        file_id,
                        path,
                        kind: if dir {
                            FileKind::Directory
                        } else {
                            FileKind::File
                        },
                        size: if dir { 0 } else { size },
                        mode,
                        mtime,
                    })
                }),
            (
                any::<u32>(),
                any::<bool>(),
                1..=u64::MAX,
                proptest::collection::vec(any::<[u8; CHUNK_HASH_LEN]>(), 0..=MAX_CHUNKS)
            )
                .prop_map(|(file_id, skip, chunk_size, chunks)| {
                    Frame::FileHave(FileHave {
                        file_id,
                        skip,
                        chunk_size,
                        chunks,
                    })
                }),
            (any::<u32>(), any::<[u8; CHECKSUM_LEN]>())
                .prop_map(|(file_id, checksum)| Frame::FileDone(FileDone { file_id, checksum })),
            (
                any::<u32>(),
                proptest::option::of(any_error()),
                any::<u64>()
            )
                .prop_map(|(file_id, error, bytes_transferred)| Frame::FileResult(
                    FileResult {
                        file_id,
                        error,
                        bytes_transferred,
                    }
                )),
            (any::<u32>(), any::<u64>())
                .prop_map(|(files, bytes)| Frame::SessionDone(SessionDone { files, bytes })),
            any_error().prop_map(Frame::Error),
            Just(Frame::Keepalive),
        ]
    }

    proptest! {
        #[test]
        fn prop_valid_frames_round_trip(f in any_frame()) {
            let mut bytes = Vec::new();
            f.encode(&mut bytes).unwrap();
            prop_assert!(bytes.len() <= MAX_FRAME);
            prop_assert_eq!(Frame::decode(&bytes), Ok(f));
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Frame::decode(&bytes);
        }

        #[test]
        fn prop_arbitrary_bodies_never_panic(ty in 0..12u8, body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut b = vec![ty];
            b.extend_from_slice(&body);
            let bytes = with_body(&b);
            if let Ok(f) = Frame::decode(&bytes) {
                // Whatever decodes re-encodes to the same bytes (the encoding is canonical).
                prop_assert_eq!(enc(&f), bytes);
            }
        }

        #[test]
        fn prop_mutated_encodings_never_panic(
            f in any_frame(),
            muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in proptest::option::of(any::<usize>()),
        ) {
            let mut bytes = enc(&f);
            for (at, v) in muts {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            if let Some(c) = cut {
                bytes.truncate(c % (bytes.len() + 1));
            }
            if let Ok(g) = Frame::decode(&bytes) {
                prop_assert_eq!(enc(&g), bytes);
            }
        }
    }
}
