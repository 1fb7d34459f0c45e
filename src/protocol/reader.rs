//! The one frame reader: control frames out of a byte stream, through one fuzzed core.
//!
//! [`Decoder`] is the core and does no I/O: bytes go in with [`Decoder::push`], frames come out
//! with [`Decoder::next_frame`] (or [`Decoder::next_raw`], which also gives each frame's exact
//! bytes). It checks every length prefix as soon as its 4 bytes are in, so a bad one is refused
//! before its body is read, and it keeps the start of stray text (a login shell or banner
//! answering instead of `ascp --server`) to name it in [`ProtocolError::Text`].
//!
//! Two front ends feed it:
//! - [`FrameReader`] (async, the proxy): reads ahead in chunks (bounded: one frame plus one
//!   read) and hands back the bytes read past the last frame with [`FrameReader::into_parts`],
//!   so the stream can then be forwarded raw without losing any.
//! - [`read_frame`] (blocking, `ascp` and the transfer engine): reads *exactly* one frame —
//!   the prefix, then as many bytes as it announces — because its callers go on using the same
//!   stream directly (the control channel after the handshake) and have nowhere to put bytes
//!   read ahead.

use std::io::{self, Read};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::frame::{frame_len, stray_text, Frame, LEN_PREFIX, TEXT_SHOWN};
use super::{ProtocolError, MAX_FRAME};

/// Most bytes [`FrameReader`] asks for per read (its buffer holds at most one frame plus this).
pub const READ_CHUNK: usize = 8 * 1024;

/// Fewest bytes [`FrameReader`] asks for per read. It asks for what the frame being read still
/// needs, within `MIN_READ..=READ_CHUNK`, so a reader waiting for a small frame (the proxy's
/// idle sessions wait for a `SessionInit` of a few hundred bytes) holds a small buffer.
const MIN_READ: usize = 512;

/// How long [`FrameReader`] waits for the rest of a line of stray text to show it.
const TEXT_WAIT: Duration = Duration::from_secs(1);

/// One frame as read: its exact bytes on the wire (length prefix included) and its decoded form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The frame's bytes as they arrived, length prefix included (forward these unchanged).
    pub bytes: Vec<u8>,
    /// The decoded frame.
    pub frame: Frame,
}

/// Incremental decoder for a byte stream; buffers at most one frame ([`MAX_FRAME`]).
///
/// Feed it with [`push`](Decoder::push) and drain it with [`next_frame`](Decoder::next_frame)
/// until that returns `Ok(None)` after every push: the buffer then holds at most one partial
/// frame plus one push's worth of bytes. A length prefix over the limit (or of zero) is
/// refused as soon as its 4 bytes are in, and the decoder stays failed (the stream cannot be
/// resynchronised): later pushes are discarded and `next_frame` repeats the error (frames
/// before the bad prefix still come out first). A frame
/// whose length was acceptable but whose contents are not is consumed and its error returned
/// once; the framing is intact, but callers normally end the session.
///
/// A prefix that is printable text fails with [`ProtocolError::Text`]; the decoder then keeps
/// the line that text starts (at most [`TEXT_SHOWN`] bytes more, to the first `\n`) from this
/// and later pushes, and the error shows it. [`text_pending`](Decoder::text_pending) says
/// whether more bytes could still add to it.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the first unconsumed byte in `buf`.
    pos: usize,
    /// Set when a length prefix was refused; `buf` then ends before that prefix.
    failed: Option<ProtocolError>,
    /// After a text prefix: that prefix and what followed it (bounded, see [`Decoder`]).
    text: Vec<u8>,
    /// The refused prefix and the rest of the push it came in (not frames, but bytes a
    /// caller forwarding the stream raw must not lose: see [`Decoder::into_buffered`]).
    refused: Vec<u8>,
}

impl Decoder {
    /// A decoder with an empty buffer.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Adds received bytes. Bytes after a refused length prefix are discarded (but for the
    /// bounded start of stray text, kept to show it).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            self.add_text(bytes);
            return;
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
        // Walk the frame boundaries so that a bad prefix is caught now, not after its body.
        let mut at = 0;
        while let Some(prefix) = self
            .buf
            .get(at..)
            .and_then(|b| b.first_chunk::<LEN_PREFIX>())
        {
            match frame_len(*prefix) {
                Ok(total) => at += total,
                Err(e) => {
                    let is_text = matches!(e, ProtocolError::Text(_));
                    self.failed = Some(e);
                    self.refused = self.buf.split_off(at);
                    if is_text {
                        let refused = std::mem::take(&mut self.refused);
                        let (prefix, after) = refused.split_at(LEN_PREFIX.min(refused.len()));
                        self.text = prefix.to_vec();
                        self.add_text(after);
                        self.refused = refused;
                    }
                    break;
                }
            }
        }
        if self.buf.is_empty() && self.buf.capacity() > 2 * MAX_FRAME {
            self.buf = Vec::new();
        }
    }

    /// The next complete frame, `None` if more bytes are needed; an error for a bad frame
    /// (including a length prefix over the limit, before its bytes arrive).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        self.next_with(|_, frame| frame)
    }

    /// Like [`next_frame`](Decoder::next_frame), with the frame's exact bytes.
    pub fn next_raw(&mut self) -> Result<Option<RawFrame>, ProtocolError> {
        self.next_with(|bytes, frame| RawFrame {
            bytes: bytes.to_vec(),
            frame,
        })
    }

    fn next_with<T>(
        &mut self,
        take: impl FnOnce(&[u8], Frame) -> T,
    ) -> Result<Option<T>, ProtocolError> {
        let avail = self.buf.get(self.pos..).unwrap_or_default();
        let Some(prefix) = avail.first_chunk::<LEN_PREFIX>() else {
            return match &self.failed {
                Some(e) if avail.is_empty() => Err(e.clone()),
                _ => Ok(None),
            };
        };
        let total = match frame_len(*prefix) {
            Ok(total) => total,
            Err(e) => {
                // `push` already split at bad prefixes; kept for safety.
                let mut rest = self.buf.split_off(self.pos);
                rest.append(&mut self.refused);
                self.refused = rest;
                self.failed = Some(e.clone());
                return Err(e);
            }
        };
        let Some(bytes) = avail.get(..total) else {
            return Ok(None);
        };
        let result = Frame::decode(bytes).map(|frame| take(bytes, frame));
        self.pos += total;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        result.map(Some)
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// How many more bytes complete the next length prefix or frame; 0 when a whole frame is
    /// buffered or the decoder has failed. Reading exactly this many never reads past a frame.
    pub fn needed(&self) -> usize {
        if self.failed.is_some() {
            return 0;
        }
        let avail = self.buf.get(self.pos..).unwrap_or_default();
        match avail.first_chunk::<LEN_PREFIX>() {
            None => LEN_PREFIX - avail.len(),
            Some(prefix) => frame_len(*prefix).map_or(0, |total| total.saturating_sub(avail.len())),
        }
    }

    /// The error that stopped the decoder (a refused length prefix), if any.
    pub fn failure(&self) -> Option<&ProtocolError> {
        self.failed.as_ref()
    }

    /// The decoder failed on stray text and more bytes could still add to the line it shows.
    pub fn text_pending(&self) -> bool {
        matches!(self.failed, Some(ProtocolError::Text(_)))
            && self.text.len() < LEN_PREFIX + TEXT_SHOWN
            && !self
                .text
                .get(LEN_PREFIX..)
                .unwrap_or_default()
                .contains(&b'\n')
    }

    /// Every byte pushed after the last frame returned, in order: the buffered ones and, if a
    /// length prefix was refused, that prefix and the rest of its push (bytes pushed after the
    /// failure are not kept).
    pub fn into_buffered(mut self) -> Vec<u8> {
        self.buf.drain(..self.pos);
        self.buf.append(&mut self.refused);
        self.buf
    }

    /// Adds to the kept stray text while it is pending, and refreshes the error that shows it.
    fn add_text(&mut self, bytes: &[u8]) {
        if !self.text_pending() {
            return;
        }
        let room = LEN_PREFIX + TEXT_SHOWN - self.text.len();
        let mut take = &bytes[..bytes.len().min(room)];
        if let Some(end) = take.iter().position(|&b| b == b'\n') {
            take = &take[..=end];
        }
        self.text.extend_from_slice(take);
        let (prefix, rest) = self.text.split_at(LEN_PREFIX.min(self.text.len()));
        self.failed = Some(ProtocolError::Text(stray_text(prefix, rest)));
    }
}

fn invalid_data(e: ProtocolError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("protocol error: {e}"))
}

/// Reads one frame from a blocking stream; `Ok(None)` at a clean end of stream between frames.
///
/// A bad frame, or an end of stream inside a frame, is an [`io::ErrorKind::InvalidData`] error
/// whose message includes the [`ProtocolError`]. A length prefix over the limit is refused
/// before any of the frame's body is read; at most that (bounded) length is allocated.
///
/// Nothing past the frame is read (the prefix first, then exactly the bytes it announces, fed
/// through a [`Decoder`]): callers go on using the stream itself, so bytes read ahead would be
/// lost. After stray text it reads on, a byte at a time, to the end of that line (at most
/// [`TEXT_SHOWN`] bytes; a read error just ends it) to show it in the error.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut decoder = Decoder::new();
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => return Ok(Some(frame)),
            Ok(None) => {}
            Err(ProtocolError::Text(seen)) => {
                let mut byte = [0u8; 1];
                while decoder.text_pending() {
                    match r.read(&mut byte) {
                        Ok(1) => decoder.push(&byte),
                        _ => break,
                    }
                }
                let e = decoder
                    .failure()
                    .cloned()
                    .unwrap_or(ProtocolError::Text(seen));
                return Err(invalid_data(e));
            }
            Err(e) => return Err(invalid_data(e)),
        }
        let want = decoder.needed().clamp(1, chunk.len());
        match r.read(&mut chunk[..want]) {
            Ok(0) if decoder.buffered() == 0 => return Ok(None),
            Ok(0) => {
                return Err(invalid_data(ProtocolError::Length(
                    if decoder.buffered() < LEN_PREFIX {
                        "end of stream inside a length prefix"
                    } else {
                        "end of stream inside a frame"
                    },
                )))
            }
            Ok(n) => decoder.push(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Why [`FrameReader::read_frame`] could not read a frame.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading the stream failed.
    #[error("read failed: {0}")]
    Io(#[source] io::Error),
    /// The bytes are not a valid frame (among them: stray text, [`ProtocolError::Text`]).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The stream ended inside a frame (or its length prefix).
    #[error("the stream ended in the middle of a frame")]
    Eof,
}

/// Reads frames from an async byte stream through a [`Decoder`] (bounded buffer: at most one
/// frame plus one read of [`READ_CHUNK`] bytes).
///
/// It reads ahead: bytes after the last frame returned stay in its buffer, and
/// [`into_parts`](FrameReader::into_parts) hands them back with the stream. `read_frame` is
/// cancel safe (bytes read are pushed to the decoder before any other await), so it can run
/// under `tokio::time::timeout` or `select!`.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    decoder: Decoder,
    /// The read buffer, sized by [`FrameReader::buffer`].
    chunk: Vec<u8>,
    /// The wait for the rest of a line of stray text was done (it is done once).
    text_waited: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `inner` with an empty buffer.
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            decoder: Decoder::new(),
            chunk: Vec::new(),
            text_waited: false,
        }
    }

    /// Next frame; `Ok(None)` at a clean end of stream between frames.
    ///
    /// Errors: a bad frame, EOF inside a frame, stray text ([`ProtocolError::Text`] with the
    /// line the text starts: what arrives within a second, at most [`TEXT_SHOWN`] bytes), and
    /// read errors. After a length-prefix error every call repeats it.
    pub async fn read_frame(&mut self) -> Result<Option<RawFrame>, ReadError> {
        loop {
            match self.decoder.next_raw() {
                Ok(Some(raw)) => return Ok(Some(raw)),
                Ok(None) => {}
                Err(ProtocolError::Text(seen)) => {
                    if self.decoder.text_pending() && !self.text_waited {
                        self.text_waited = true;
                        let want = TEXT_SHOWN.max(MIN_READ);
                        self.chunk.resize(want, 0);
                        let read =
                            tokio::time::timeout(TEXT_WAIT, self.inner.read(&mut self.chunk));
                        if let Ok(Ok(n)) = read.await {
                            self.decoder.push(&self.chunk[..n]);
                        }
                    }
                    let e = self
                        .decoder
                        .failure()
                        .cloned()
                        .unwrap_or(ProtocolError::Text(seen));
                    return Err(ReadError::Protocol(e));
                }
                Err(e) => return Err(ReadError::Protocol(e)),
            }
            let want = self.decoder.needed().clamp(MIN_READ, READ_CHUNK);
            if self.chunk.len() < want {
                self.chunk.resize(want, 0);
            }
            let n = self
                .inner
                .read(&mut self.chunk[..want])
                .await
                .map_err(ReadError::Io)?;
            if n == 0 {
                return if self.decoder.buffered() == 0 {
                    Ok(None)
                } else {
                    Err(ReadError::Eof)
                };
            }
            self.decoder.push(&self.chunk[..n]);
        }
    }

    /// Bytes read and not yet returned as frames (at most [`MAX_FRAME`] + [`READ_CHUNK`]).
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// The stream back, with bytes already read past the last returned frame (they must be
    /// forwarded first), whatever they are: a bad frame that follows is not dropped. (After
    /// `read_frame` returned an error, bytes read later, while waiting for stray text, are not
    /// included.)
    pub fn into_parts(self) -> (R, Vec<u8>) {
        (self.inner, self.decoder.into_buffered())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::tests::{any_frame, enc, samples};
    use crate::protocol::frame::{write_frame, TYPE_KEEPALIVE};
    use proptest::prelude::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    fn sample_stream() -> Vec<u8> {
        let mut all = Vec::new();
        for f in samples() {
            f.encode(&mut all).unwrap();
        }
        all
    }

    fn drain(d: &mut Decoder) -> Vec<Frame> {
        let mut got = Vec::new();
        while let Some(f) = d.next_frame().expect("valid frame") {
            got.push(f);
        }
        got
    }

    #[test]
    fn decoder_one_byte_at_a_time() {
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in sample_stream() {
            d.push(&[b]);
            got.extend(drain(&mut d));
            assert!(d.buffered() <= MAX_FRAME);
        }
        assert_eq!(got, samples());
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn decoder_several_frames_in_one_push() {
        let mut d = Decoder::new();
        let stream = sample_stream();
        d.push(&stream);
        assert_eq!(drain(&mut d), samples());
        // And split at every point.
        for cut in 0..stream.len() {
            let mut d = Decoder::new();
            d.push(&stream[..cut]);
            let mut got = drain(&mut d);
            d.push(&stream[cut..]);
            got.extend(drain(&mut d));
            assert_eq!(got, samples(), "cut at {cut}");
        }
    }

    #[test]
    fn decoder_rejects_over_limit_prefix_after_four_bytes() {
        let mut d = Decoder::new();
        d.push(&[0x00, 0x01]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&[0x00]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&[0x01]); // 0x00010001 = 65537 bytes of body: over MAX_FRAME.
        let err = Err(ProtocolError::TooLarge(0x10001 + 4));
        assert_eq!(d.next_frame(), err);
        // Sticky, and nothing more is buffered.
        d.push(&[0; 100_000]);
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.next_frame(), err);

        // Caught in push even without next_frame in between; earlier frames still come out.
        let mut d = Decoder::new();
        let mut bytes = enc(&Frame::Keepalive);
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        d.push(&bytes);
        d.push(&[0; 100_000]);
        assert_eq!(d.buffered(), 5);
        assert_eq!(d.next_frame(), Ok(Some(Frame::Keepalive)));
        assert!(matches!(d.next_frame(), Err(ProtocolError::TooLarge(_))));

        // A zero-length prefix is refused the same way.
        let mut d = Decoder::new();
        d.push(&[0, 0, 0, 0, 0, 0, 0, 1, 9]);
        assert_eq!(d.next_frame(), Err(ProtocolError::Length("no type byte")));
        assert_eq!(d.next_frame(), Err(ProtocolError::Length("no type byte")));
    }

    #[test]
    fn decoder_continues_after_a_bad_body() {
        let mut d = Decoder::new();
        d.push(&[0, 0, 0, 1, 200]);
        d.push(&enc(&Frame::Keepalive));
        assert_eq!(
            d.next_frame(),
            Err(ProtocolError::UnknownType {
                what: "frame",
                value: 200
            })
        );
        assert_eq!(d.next_frame(), Ok(Some(Frame::Keepalive)));
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn decoder_buffer_stays_bounded_with_a_max_frame() {
        let mut d = Decoder::new();
        let mut big = ((MAX_FRAME - 4) as u32).to_be_bytes().to_vec();
        big.push(TYPE_KEEPALIVE);
        big.resize(MAX_FRAME, 0);
        for c in big.chunks(1000) {
            d.push(c);
            assert!(d.buffered() <= MAX_FRAME);
            if d.buffered() < MAX_FRAME {
                assert_eq!(d.next_frame(), Ok(None));
            }
        }
        assert!(matches!(d.next_frame(), Err(ProtocolError::Length(_))));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn read_and_write_frames() {
        let mut wire = Vec::new();
        for f in samples() {
            write_frame(&mut wire, &f).unwrap();
        }
        assert_eq!(wire, sample_stream());
        let mut r = io::Cursor::new(wire);
        let mut got = Vec::new();
        while let Some(f) = read_frame(&mut r).unwrap() {
            got.push(f);
        }
        assert_eq!(got, samples());
        // Clean EOF again.
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn text_instead_of_a_frame_is_named_as_such() {
        let mut r = io::Cursor::new(b"This account is currently not available.\nmore".to_vec());
        let e = read_frame(&mut r).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let msg = e.to_string();
        assert!(
            msg.contains("\"This account is currently not available.\"")
                && msg.contains("ascp --server"),
            "{msg}"
        );
        // Text is bounded, and non-printable bytes are not echoed.
        let mut long = b"Welcome".to_vec();
        long.extend(std::iter::repeat_n(b'x', 10_000));
        let e = read_frame(&mut io::Cursor::new(long))
            .unwrap_err()
            .to_string();
        assert!(e.len() < TEXT_SHOWN + 300, "{}", e.len());
        assert_eq!(stray_text(b"Hi \x1b", b"[31mred"), "Hi ?[31mred");
        // A binary over-long prefix stays a length error.
        let e = read_frame(&mut io::Cursor::new(vec![0xff, 0, 0, 1, 5]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("exceeds the limit"), "{e}");
    }

    #[test]
    fn read_frame_eof_and_errors() {
        let read = |b: &[u8]| read_frame(&mut io::Cursor::new(b.to_vec()));
        assert!(read(&[]).unwrap().is_none());
        for partial in [&[0u8][..], &[0, 0, 0], &[0, 0, 0, 5, 9], &[0, 0, 0, 1]] {
            let e = read(partial).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{partial:?}");
            assert!(e.to_string().contains("end of stream inside"), "{e}");
        }
        let e = read(&[0, 0, 0, 1, 77]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("unknown frame type 77"), "{e}");

        // An over-limit prefix is refused without reading (or allocating for) the body.
        struct Endless(usize);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf
                    .len()
                    .min(4 - self.0.min(4))
                    .max(usize::from(self.0 >= 4));
                for b in &mut buf[..n] {
                    *b = 0x7f;
                }
                self.0 += n;
                Ok(n)
            }
        }
        let mut r = Endless(0);
        let e = read_frame(&mut r).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
        assert_eq!(r.0, 4, "only the prefix was read");

        // Interrupted reads are retried; other errors pass through.
        struct Flaky(Vec<io::Result<Vec<u8>>>);
        impl Read for Flaky {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Ok(0);
                }
                let b = self.0.remove(0)?;
                buf[..b.len()].copy_from_slice(&b);
                Ok(b.len())
            }
        }
        let mut r = Flaky(vec![
            Ok(vec![0, 0]),
            Err(io::ErrorKind::Interrupted.into()),
            Ok(vec![0, 1]),
            Err(io::ErrorKind::Interrupted.into()),
            Ok(vec![9]),
        ]);
        assert_eq!(read_frame(&mut r).unwrap(), Some(Frame::Keepalive));
        let mut r = Flaky(vec![Ok(vec![0]), Err(io::ErrorKind::BrokenPipe.into())]);
        assert_eq!(
            read_frame(&mut r).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    /// Runs a future on a current-thread runtime (with time, for the stray-text wait).
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Polls a future once: `None` if it waits.
    fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    /// Gives `data` in pieces of the sizes in `splits` (then the rest), counting bytes read;
    /// at the end, EOF or (with `then_wait`) waits forever.
    struct Chunked {
        data: Vec<u8>,
        splits: Vec<usize>,
        next: usize,
        pos: usize,
        then_wait: bool,
    }

    impl Chunked {
        fn new(data: Vec<u8>, splits: Vec<usize>) -> Chunked {
            Chunked {
                data,
                splits,
                next: 0,
                pos: 0,
                then_wait: false,
            }
        }

        fn piece(&mut self, room: usize) -> &[u8] {
            let left = self.data.len() - self.pos;
            let split = self.splits.get(self.next).copied().unwrap_or(left).max(1);
            self.next += 1;
            let n = split.min(left).min(room);
            let start = self.pos;
            self.pos += n;
            &self.data[start..start + n]
        }
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.pos == self.data.len() && self.then_wait {
                return Poll::Pending;
            }
            let room = buf.remaining();
            let piece = self.piece(room).to_vec();
            buf.put_slice(&piece);
            Poll::Ready(Ok(()))
        }
    }

    impl Read for Chunked {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let piece = self.piece(buf.len()).to_vec();
            buf[..piece.len()].copy_from_slice(&piece);
            Ok(piece.len())
        }
    }

    /// Every frame `FrameReader` gives until the end of the stream or an error.
    async fn read_all<R: AsyncRead + Unpin>(
        r: &mut FrameReader<R>,
    ) -> (Vec<RawFrame>, Option<ReadError>) {
        let mut got = Vec::new();
        loop {
            match r.read_frame().await {
                Ok(Some(raw)) => {
                    assert!(r.decoder.buffered() <= MAX_FRAME + READ_CHUNK);
                    got.push(raw);
                }
                Ok(None) => return (got, None),
                Err(e) => return (got, Some(e)),
            }
        }
    }

    #[test]
    fn frame_reader_reads_frames_and_their_bytes() {
        let stream = sample_stream();
        for split in [1, 2, 3, 5, 64, 100_000] {
            let mut r = FrameReader::new(Chunked::new(stream.clone(), vec![split; 1000]));
            let (got, err) = block_on(read_all(&mut r));
            assert!(err.is_none(), "{err:?}");
            assert_eq!(
                got.iter().map(|r| r.frame.clone()).collect::<Vec<_>>(),
                samples()
            );
            assert_eq!(got.concat_bytes(), stream);
            // Clean EOF again.
            assert!(block_on(r.read_frame()).unwrap().is_none());
        }
    }

    trait ConcatBytes {
        fn concat_bytes(&self) -> Vec<u8>;
    }

    impl ConcatBytes for Vec<RawFrame> {
        fn concat_bytes(&self) -> Vec<u8> {
            self.iter().flat_map(|r| r.bytes.iter().copied()).collect()
        }
    }

    #[test]
    fn frame_reader_into_parts_returns_what_was_read_ahead() {
        let mut stream = enc(&Frame::Keepalive);
        let first = stream.len();
        for f in samples() {
            f.encode(&mut stream).unwrap();
        }
        stream.extend_from_slice(b"raw bytes after the handshake");
        let mut r = FrameReader::new(Chunked::new(stream.clone(), vec![]));
        let raw = block_on(r.read_frame()).unwrap().unwrap();
        assert_eq!(raw.frame, Frame::Keepalive);
        assert_eq!(raw.bytes, stream[..first]);
        let (mut inner, rest) = r.into_parts();
        assert_eq!(rest, stream[first..]);
        // Nothing was lost or read twice: the stream goes on where the leftover ends.
        let mut after = Vec::new();
        block_on(AsyncReadExt::read_to_end(&mut inner, &mut after)).unwrap();
        assert!(after.is_empty());
    }

    #[test]
    fn frame_reader_errors() {
        let read = |b: &[u8]| {
            let mut r = FrameReader::new(Chunked::new(b.to_vec(), vec![]));
            block_on(r.read_frame())
        };
        assert!(read(&[]).unwrap().is_none());
        for partial in [&[0u8][..], &[0, 0, 0], &[0, 0, 0, 5, 9], &[0, 0, 0, 1]] {
            let e = read(partial).unwrap_err();
            assert!(matches!(e, ReadError::Eof), "{partial:?}: {e:?}");
            assert!(e.to_string().contains("middle of a frame"), "{e}");
        }
        let e = read(&[0, 0, 0, 1, 77]).unwrap_err();
        assert!(e.to_string().contains("unknown frame type 77"), "{e}");
        let e = read(&[0xff, 0, 0, 1, 5]).unwrap_err();
        assert!(
            matches!(e, ReadError::Protocol(ProtocolError::TooLarge(_))),
            "{e:?}"
        );
        assert!(e.to_string().contains("exceeds the limit"), "{e}");

        // Read errors pass through, named.
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: Pin<&mut Self>,
                _cx: &mut Context<'_>,
                _buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
            }
        }
        let e = block_on(FrameReader::new(Broken).read_frame()).unwrap_err();
        assert!(matches!(&e, ReadError::Io(io) if io.kind() == io::ErrorKind::ConnectionReset));
        assert!(e.to_string().starts_with("read failed: "), "{e}");
    }

    #[test]
    fn frame_reader_refuses_a_bad_prefix_without_waiting_for_the_body() {
        for prefix in [[0x00, 0x01, 0x00, 0x01], [0, 0, 0, 0], [0xff; 4]] {
            // The prefix arrives, then nothing more, ever: the error must not wait for it.
            let mut src = Chunked::new(prefix.to_vec(), vec![]);
            src.then_wait = true;
            let mut r = FrameReader::new(src);
            let got = poll_once(r.read_frame()).expect("answered without more bytes");
            assert!(matches!(got, Err(ReadError::Protocol(_))), "{got:?}");
            // And it repeats.
            assert!(matches!(
                poll_once(r.read_frame()),
                Some(Err(ReadError::Protocol(_)))
            ));
        }
    }

    #[test]
    fn frame_reader_names_stray_text() {
        let line = "This account is currently not available.";
        let check = |e: ReadError| {
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("\"{line}\"")) && msg.contains("ascp --server"),
                "{msg}"
            );
        };
        // In one read, in two (the second within the wait), and with the rest pending forever
        // (the reader gives up after TEXT_WAIT).
        let text = format!("{line}\nmore");
        let mut r = FrameReader::new(Chunked::new(text.clone().into_bytes(), vec![]));
        check(block_on(r.read_frame()).unwrap_err());
        let mut r = FrameReader::new(Chunked::new(text.clone().into_bytes(), vec![4]));
        check(block_on(r.read_frame()).unwrap_err());
        let mut src = Chunked::new(line.as_bytes().to_vec(), vec![]);
        src.then_wait = true;
        let mut r = FrameReader::new(src);
        check(block_on(r.read_frame()).unwrap_err());

        // Bounded, and non-printable bytes are not echoed.
        let mut long = b"Welcome".to_vec();
        long.extend(std::iter::repeat_n(b'x', 100_000));
        let mut r = FrameReader::new(Chunked::new(long, vec![]));
        let e = block_on(r.read_frame()).unwrap_err().to_string();
        assert!(e.len() < TEXT_SHOWN + 300, "{}", e.len());
        assert!(r.decoder.text.len() <= LEN_PREFIX + TEXT_SHOWN);
    }

    #[test]
    fn decoder_keeps_only_the_start_of_stray_text() {
        let mut d = Decoder::new();
        d.push(b"Hel");
        assert_eq!(d.next_frame(), Ok(None));
        d.push(b"lo there");
        assert!(d.text_pending());
        assert_eq!(
            d.next_frame(),
            Err(ProtocolError::Text("Hello there".into()))
        );
        d.push(b", world\r\nsecond line");
        assert!(!d.text_pending());
        assert_eq!(
            d.next_frame(),
            Err(ProtocolError::Text("Hello there, world".into()))
        );
        assert_eq!(d.buffered(), 0);
        let mut d = Decoder::new();
        for _ in 0..1000 {
            d.push(&[b'y'; 100]);
        }
        assert!(d.text.len() <= LEN_PREFIX + TEXT_SHOWN);
        assert!(!d.text_pending());
        assert!(matches!(d.next_frame(), Err(ProtocolError::Text(t)) if t.len() == TEXT_SHOWN));
    }

    #[test]
    fn decoder_needed_never_reads_past_a_frame() {
        let mut d = Decoder::new();
        assert_eq!(d.needed(), LEN_PREFIX);
        d.push(&[0, 0]);
        assert_eq!(d.needed(), 2);
        d.push(&[0, 3]);
        assert_eq!(d.needed(), 3);
        d.push(&[TYPE_KEEPALIVE]);
        assert_eq!(d.needed(), 2);
        d.push(&[0, 0]);
        assert_eq!(d.needed(), 0);
        d.push(&[0xff; 4]);
        assert_eq!(d.needed(), 0);
        assert!(d.next_frame().is_err());
    }

    fn any_text_line() -> impl Strategy<Value = String> {
        "[ -~]{4,300}"
    }

    proptest! {
        #[test]
        fn prop_valid_frames_read_back(f in any_frame()) {
            let bytes = enc(&f);
            let mut r = io::Cursor::new(&bytes);
            prop_assert_eq!(read_frame(&mut r).unwrap(), Some(f.clone()));
            let mut d = Decoder::new();
            d.push(&bytes);
            prop_assert_eq!(d.next_frame(), Ok(Some(f.clone())));
            prop_assert_eq!(d.next_frame(), Ok(None));
            let mut d = Decoder::new();
            d.push(&bytes);
            prop_assert_eq!(d.next_raw(), Ok(Some(RawFrame { bytes, frame: f })));
        }

        #[test]
        fn prop_streams_read_back_byte_exact_at_any_split(
            fs in proptest::collection::vec(any_frame(), 1..6),
            splits in proptest::collection::vec(1..5000usize, 0..30),
        ) {
            let mut stream = Vec::new();
            let mut ends = Vec::new();
            for f in &fs {
                f.encode(&mut stream).unwrap();
                ends.push(stream.len());
            }
            // The core, pushed in pieces.
            let mut d = Decoder::new();
            let mut got = Vec::new();
            let mut rest = &stream[..];
            let mut pieces = splits.iter().copied();
            while !rest.is_empty() {
                let n = pieces.next().unwrap_or(rest.len()).min(rest.len());
                d.push(&rest[..n]);
                rest = &rest[n..];
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            prop_assert_eq!(&got, &fs);
            // The async front end: frames and their exact bytes.
            let mut r = FrameReader::new(Chunked::new(stream.clone(), splits.clone()));
            let (raws, err) = block_on(read_all(&mut r));
            prop_assert!(err.is_none(), "{:?}", err);
            prop_assert_eq!(raws.concat_bytes(), stream.clone());
            for (raw, f) in raws.iter().zip(&fs) {
                prop_assert_eq!(&raw.bytes, &enc(f));
                prop_assert_eq!(&raw.frame, f);
            }
            prop_assert_eq!(raws.len(), fs.len());
            // The blocking front end: the same frames, and never a byte past each one.
            let mut src = Chunked::new(stream.clone(), splits);
            for (f, end) in fs.iter().zip(&ends) {
                let got = read_frame(&mut src).unwrap();
                prop_assert_eq!(got.as_ref(), Some(f));
                prop_assert_eq!(src.pos, *end);
            }
            prop_assert!(read_frame(&mut src).unwrap().is_none());
        }

        #[test]
        fn prop_into_parts_loses_no_byte(
            fs in proptest::collection::vec(any_frame(), 1..4),
            tail in proptest::collection::vec(any::<u8>(), 0..3000),
            splits in proptest::collection::vec(1..3000usize, 0..10),
        ) {
            let mut stream = Vec::new();
            for f in &fs {
                f.encode(&mut stream).unwrap();
            }
            let frames_end = stream.len();
            stream.extend_from_slice(&tail);
            let mut r = FrameReader::new(Chunked::new(stream.clone(), splits));
            let mut got = Vec::new();
            for _ in &fs {
                got.push(block_on(r.read_frame()).unwrap().unwrap());
            }
            prop_assert_eq!(got.concat_bytes(), stream[..frames_end].to_vec());
            let (src, mut leftover) = r.into_parts();
            leftover.extend_from_slice(&src.data[src.pos..]);
            prop_assert_eq!(leftover, tail);
        }

        #[test]
        fn prop_bad_prefixes_error_before_the_body(
            body in 0u32..=u32::MAX,
            keep in 0usize..3,
        ) {
            let too_large = body as usize + LEN_PREFIX > MAX_FRAME;
            prop_assume!(body == 0 || too_large);
            // A valid frame or two first: they still come out.
            let mut stream = Vec::new();
            for f in samples().into_iter().take(keep) {
                f.encode(&mut stream).unwrap();
            }
            stream.extend_from_slice(&body.to_be_bytes());
            let before = stream.len();
            // Blocking: reads nothing past the prefix.
            let mut with_body = stream.clone();
            with_body.extend(std::iter::repeat_n(b'\n', 10_000));
            let mut src = Chunked::new(with_body, vec![]);
            for _ in 0..keep {
                prop_assert!(read_frame(&mut src).unwrap().is_some());
            }
            let e = read_frame(&mut src).unwrap_err();
            prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            let text = body.to_be_bytes().iter().all(|b| b.is_ascii_graphic() || *b == b' ');
            if !text {
                prop_assert_eq!(src.pos, before);
            }
            // Async: the error comes without waiting for a single byte of the body.
            let mut src = Chunked::new(stream, vec![]);
            src.then_wait = !text;
            let mut r = FrameReader::new(src);
            for _ in 0..keep {
                let got = poll_once(r.read_frame());
                prop_assert!(matches!(got, Some(Ok(Some(_)))));
            }
            let got = block_on(r.read_frame());
            prop_assert!(matches!(got, Err(ReadError::Protocol(_))), "{:?}", got);
        }

        #[test]
        fn prop_stray_text_names_its_line(
            line in any_text_line(),
            junk in proptest::collection::vec(any::<u8>(), 0..100),
            splits in proptest::collection::vec(1..50usize, 0..10),
        ) {
            let mut stream = line.clone().into_bytes();
            stream.push(b'\n');
            stream.extend_from_slice(&junk);
            let expected = stray_text(line.as_bytes(), b"");
            // Blocking: the whole line (to TEXT_SHOWN bytes).
            let e = read_frame(&mut Chunked::new(stream.clone(), splits.clone())).unwrap_err();
            prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            prop_assert!(e.to_string().contains(&format!("\"{expected}\"")), "{}", e);
            // Async: in one read, the whole line; in pieces, what two reads brought.
            let mut r = FrameReader::new(Chunked::new(stream.clone(), vec![]));
            match block_on(r.read_frame()) {
                Err(ReadError::Protocol(ProtocolError::Text(t))) => prop_assert_eq!(t, expected.clone()),
                other => prop_assert!(false, "{:?}", other),
            }
            let mut r = FrameReader::new(Chunked::new(stream, splits));
            match block_on(r.read_frame()) {
                Err(ReadError::Protocol(ProtocolError::Text(t))) => {
                    prop_assert!(expected.starts_with(&t), "{:?} / {:?}", t, expected)
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            splits in proptest::collection::vec(1..300usize, 0..10),
        ) {
            let _ = read_frame(&mut io::Cursor::new(&bytes));
            let mut d = Decoder::new();
            d.push(&bytes);
            for _ in 0..bytes.len() + 2 {
                if !matches!(d.next_frame(), Ok(Some(_)) | Err(_)) {
                    break;
                }
                prop_assert!(d.buffered() <= bytes.len());
            }
            let mut r = FrameReader::new(Chunked::new(bytes, splits));
            let _ = block_on(read_all(&mut r));
            prop_assert!(r.decoder.buffered() <= MAX_FRAME + READ_CHUNK);
            prop_assert!(r.decoder.text.len() <= LEN_PREFIX + TEXT_SHOWN);
        }

        #[test]
        fn prop_mutated_streams_never_panic(
            fs in proptest::collection::vec(any_frame(), 1..4),
            muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in proptest::option::of(any::<usize>()),
        ) {
            let mut bytes = Vec::new();
            for f in &fs {
                f.encode(&mut bytes).unwrap();
            }
            for (at, v) in muts {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            if let Some(c) = cut {
                bytes.truncate(c % (bytes.len() + 1));
            }
            let mut src = io::Cursor::new(&bytes);
            while let Ok(Some(_)) = read_frame(&mut src) {}
            let mut d = Decoder::new();
            for c in bytes.chunks(7) {
                d.push(c);
                while let Ok(Some(_)) = d.next_frame() {}
            }
            // Whatever the async reader returns is exactly what was on the wire.
            let mut r = FrameReader::new(Chunked::new(bytes.clone(), vec![7; 10_000]));
            let (raws, _) = block_on(read_all(&mut r));
            let got = raws.concat_bytes();
            prop_assert_eq!(&bytes[..got.len()], &got[..]);
            for raw in &raws {
                prop_assert_eq!(Frame::decode(&raw.bytes), Ok(raw.frame.clone()));
            }
        }
    }
}
