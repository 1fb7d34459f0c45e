//! Feeds arbitrary bytes to the control-frame decoder, the frame reader's two front ends (the
//! proxy's async `FrameReader`, ascp's blocking `read_frame`) and the datagram parsers.
//!
//! Run (needs a nightly toolchain and cargo-fuzz):
//! `cargo +nightly fuzz run frame_decode` from the repository root.
#![no_main]

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use fasp_proxy::protocol::datagram::{decode_nacks, Status};
use fasp_proxy::protocol::reader::{read_frame, READ_CHUNK};
use fasp_proxy::protocol::{Datagram, Decoder, Frame, FrameReader, MAX_FRAME};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

/// Gives `data` `step` bytes at a time (less if the reader asks for less), then EOF.
struct Pieces<'a> {
    data: &'a [u8],
    step: usize,
}

impl Pieces<'_> {
    fn piece(&mut self, room: usize) -> &[u8] {
        let n = self.step.min(room).min(self.data.len());
        let (piece, rest) = self.data.split_at(n);
        self.data = rest;
        piece
    }
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let piece = self.piece(buf.len());
        buf[..piece.len()].copy_from_slice(piece);
        Ok(piece.len())
    }
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let piece = self.piece(buf.remaining());
        buf.put_slice(piece);
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    // Whole-frame decode: anything that decodes must re-encode to the same bytes.
    if let Ok(frame) = Frame::decode(data) {
        let mut out = Vec::new();
        frame.encode(&mut out).expect("a decoded frame re-encodes");
        assert_eq!(out, data, "the encoding is canonical");
    }

    // Stream decode, pushed in uneven pieces (the first byte picks the piece size).
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut decoder = Decoder::new();
    for piece in data.chunks(step) {
        decoder.push(piece);
        assert!(decoder.buffered() <= MAX_FRAME + step);
        for _ in 0..=piece.len() {
            match decoder.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    // The async reader (as the proxy uses it), in the same pieces: what it returns is exactly
    // what was on the wire, its buffer stays bounded, and nothing read is lost.
    let mut reader = FrameReader::new(Pieces { data, step });
    let (frames, async_failed, leftover_ok) = runtime().block_on(async {
        let mut frames = Vec::new();
        let mut wire = Vec::new();
        let failed = loop {
            match reader.read_frame().await {
                Ok(Some(raw)) => {
                    assert!(reader.buffered() <= MAX_FRAME + READ_CHUNK);
                    assert_eq!(Frame::decode(&raw.bytes).as_ref(), Ok(&raw.frame));
                    wire.extend_from_slice(&raw.bytes);
                    frames.push(raw.frame);
                }
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        assert_eq!(&data[..wire.len()], &wire[..], "raw bytes are the input's");
        let (rest, mut leftover) = reader.into_parts();
        leftover.extend_from_slice(rest.data);
        // Without an error, every byte is a returned frame or handed back.
        (frames, failed, failed || leftover.is_empty())
    });
    assert!(leftover_ok);

    // The blocking reader, in the same pieces, agrees frame for frame.
    let mut pieces = Pieces { data, step };
    let mut sync_frames = Vec::new();
    let sync_failed = loop {
        match read_frame(&mut pieces) {
            Ok(Some(f)) => sync_frames.push(f),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert_eq!(sync_frames, frames, "both front ends read the same frames");
    assert_eq!(sync_failed, async_failed);
    let _ = read_frame(&mut &data[..]);

    // Datagrams and their payloads.
    if let Ok(d) = Datagram::decode(data) {
        assert_eq!(&d.header_bytes()[..], &data[..d.header_bytes().len()]);
        let _ = decode_nacks(d.payload);
        let _ = Status::decode(d.payload);
    }
    let _ = decode_nacks(data);
    let _ = Status::decode(data);
});
