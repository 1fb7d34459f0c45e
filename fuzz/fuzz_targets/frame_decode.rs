//! Feeds arbitrary bytes to the control-frame decoders and the datagram parsers.
//!
//! Run (needs a nightly toolchain and cargo-fuzz):
//! `cargo +nightly fuzz run frame_decode` from the repository root.
#![no_main]

use fasp_proxy::protocol::datagram::{decode_nacks, Status};
use fasp_proxy::protocol::frame::read_frame;
use fasp_proxy::protocol::{Datagram, Decoder, Frame, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

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
