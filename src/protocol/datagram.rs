//! UDP datagrams of the data channel: a fixed header (authenticated, in clear) and a payload
//! (encrypted and authenticated with the session key unless the session runs with `-T`).
//!
//! Header, 32 bytes, big-endian (see `docs/protocol.md` §7):
//! ```text
//! token u64 | kind u8 | flags u8 (0) | reserved u16 (0) | seq u64 | file_id u32 | offset u64
//! ```
//! The header is the AEAD's associated data; the nonce is [`aead_nonce`].

use super::*;

/// Header length in bytes.
pub const HEADER_LEN: usize = 32;
/// Length of the AES-256-GCM tag that ends an encrypted payload.
pub const TAG_LEN: usize = 16;
/// Length of the AEAD nonce.
pub const NONCE_LEN: usize = 12;
/// Nonce prefix of datagrams sent by the client.
pub const NONCE_PREFIX_CLIENT: [u8; 4] = [0, 0, 0, 1];
/// Nonce prefix of datagrams sent by the server.
pub const NONCE_PREFIX_SERVER: [u8; 4] = [0, 0, 0, 2];
/// Largest `datagram_size` (file bytes per Data datagram) a session may use: what fits in
/// [`MAX_DATAGRAM`] after the header and the AEAD tag.
pub const MAX_DATAGRAM_PAYLOAD: usize = MAX_DATAGRAM - HEADER_LEN - TAG_LEN;
/// Length of an encoded [`NackRange`].
pub const NACK_RANGE_LEN: usize = 20;
/// Length of an encoded [`Status`].
pub const STATUS_LEN: usize = 16;

/// Wire value of [`DatagramKind::Hello`].
pub const KIND_HELLO: u8 = 1;
/// Wire value of [`DatagramKind::HelloAck`].
pub const KIND_HELLO_ACK: u8 = 2;
/// Wire value of [`DatagramKind::Data`].
pub const KIND_DATA: u8 = 3;
/// Wire value of [`DatagramKind::Nack`].
pub const KIND_NACK: u8 = 4;
/// Wire value of [`DatagramKind::Status`].
pub const KIND_STATUS: u8 = 5;

/// The AEAD nonce of a datagram: 4-byte direction prefix ([`NONCE_PREFIX_CLIENT`] or
/// [`NONCE_PREFIX_SERVER`]) followed by `seq` as a big-endian `u64`.
pub fn aead_nonce(sent_by_client: bool, seq: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(if sent_by_client {
        &NONCE_PREFIX_CLIENT
    } else {
        &NONCE_PREFIX_SERVER
    });
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n
}

impl DatagramKind {
    /// The wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            DatagramKind::Hello => KIND_HELLO,
            DatagramKind::HelloAck => KIND_HELLO_ACK,
            DatagramKind::Data => KIND_DATA,
            DatagramKind::Nack => KIND_NACK,
            DatagramKind::Status => KIND_STATUS,
        }
    }

    /// From the wire value; `None` for an unknown kind.
    pub fn from_u8(v: u8) -> Option<DatagramKind> {
        match v {
            KIND_HELLO => Some(DatagramKind::Hello),
            KIND_HELLO_ACK => Some(DatagramKind::HelloAck),
            KIND_DATA => Some(DatagramKind::Data),
            KIND_NACK => Some(DatagramKind::Nack),
            KIND_STATUS => Some(DatagramKind::Status),
            _ => None,
        }
    }
}

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// Client → server: opens the UDP path (through NAT and the proxy); repeated until answered.
    Hello,
    /// Server → client: the UDP path works.
    HelloAck,
    /// Sender → receiver: file data at `offset`.
    Data,
    /// Receiver → sender: ranges to send again (payload: [`NackRange`]s).
    Nack,
    /// Receiver → sender: progress and loss, for rate control (payload: [`Status`]).
    Status,
}

/// The clear header of every datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramHeader {
    /// The session token from `SessionAccept`.
    pub token: u64,
    /// What the datagram carries.
    pub kind: DatagramKind,
    /// Per-sender sequence number, never reused within a session and direction (AEAD nonce).
    pub seq: u64,
    /// The file (Data, Nack/Status: 0).
    pub file_id: u32,
    /// Byte offset of the data in the file (Data), else 0.
    pub offset: u64,
}

/// A byte range the receiver is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackRange {
    /// The file.
    pub file_id: u32,
    /// First missing byte.
    pub offset: u64,
    /// Number of missing bytes.
    pub len: u64,
}

/// Receiver statistics carried by a Status datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Bytes of file data received so far (all files).
    pub received_bytes: u64,
    /// Data datagrams received since the last status.
    pub received_datagrams: u32,
    /// Data datagrams known lost since the last status.
    pub lost_datagrams: u32,
}

/// A decoded datagram: header and (still encrypted, if it was) payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The header.
    pub header: DatagramHeader,
    /// The bytes after the header.
    pub payload: &'a [u8],
}

impl DatagramHeader {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..8].copy_from_slice(&self.token.to_be_bytes());
        out[8] = self.kind.to_u8();
        out[9] = 0; // flags
        out[10..12].copy_from_slice(&[0, 0]); // reserved
        out[12..20].copy_from_slice(&self.seq.to_be_bytes());
        out[20..24].copy_from_slice(&self.file_id.to_be_bytes());
        out[24..32].copy_from_slice(&self.offset.to_be_bytes());
    }

    /// The encoded header as an array (convenient as AEAD associated data).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        self.encode(&mut out);
        out
    }
}

impl<'a> Datagram<'a> {
    /// Splits a received datagram; checks size, kind and reserved bits (not the token: the
    /// caller compares it with its session's).
    pub fn decode(bytes: &'a [u8]) -> Result<Datagram<'a>, ProtocolError> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(ProtocolError::TooLarge(bytes.len()));
        }
        let Some((h, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(ProtocolError::Length("datagram header"));
        };
        let kind = DatagramKind::from_u8(h[8]).ok_or(ProtocolError::UnknownType {
            what: "datagram",
            value: h[8],
        })?;
        if h[9] != 0 {
            return Err(ProtocolError::Malformed("flags"));
        }
        if h[10] != 0 || h[11] != 0 {
            return Err(ProtocolError::Malformed("reserved"));
        }
        let header = DatagramHeader {
            token: be_u64(&h[0..8]),
            kind,
            seq: be_u64(&h[12..20]),
            file_id: be_u32(&h[20..24]),
            offset: be_u64(&h[24..32]),
        };
        Ok(Datagram { header, payload })
    }

    /// The first [`HEADER_LEN`] bytes of a datagram this was decoded from (the AEAD's
    /// associated data), re-encoded from the header.
    pub fn header_bytes(&self) -> [u8; HEADER_LEN] {
        self.header.to_bytes()
    }
}

/// Encodes NACK ranges as a datagram payload (at most [`MAX_NACK_RANGES`]).
///
/// Appends to `out`; refuses more than [`MAX_NACK_RANGES`] ranges, an empty range, or one
/// that runs past `u64::MAX`, leaving `out` as it was.
pub fn encode_nacks(ranges: &[NackRange], out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    if ranges.len() > MAX_NACK_RANGES {
        return Err(ProtocolError::TooMany("nack ranges"));
    }
    for r in ranges {
        check_range(r)?;
    }
    // MAX_NACK_RANGES < u16::MAX.
    out.extend_from_slice(&(ranges.len() as u16).to_be_bytes());
    for r in ranges {
        out.extend_from_slice(&r.file_id.to_be_bytes());
        out.extend_from_slice(&r.offset.to_be_bytes());
        out.extend_from_slice(&r.len.to_be_bytes());
    }
    Ok(())
}

fn check_range(r: &NackRange) -> Result<(), ProtocolError> {
    if r.len == 0 || r.offset.checked_add(r.len).is_none() {
        return Err(ProtocolError::Malformed("nack range"));
    }
    Ok(())
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

/// Decodes a NACK payload.
///
/// Strict: the count must be at most [`MAX_NACK_RANGES`] and match the payload length exactly;
/// every range must be non-empty and end at or below `u64::MAX`.
pub fn decode_nacks(payload: &[u8]) -> Result<Vec<NackRange>, ProtocolError> {
    let Some((count, rest)) = payload.split_first_chunk::<2>() else {
        return Err(ProtocolError::Length("nack count"));
    };
    let count = usize::from(u16::from_be_bytes(*count));
    if count > MAX_NACK_RANGES {
        return Err(ProtocolError::TooMany("nack ranges"));
    }
    if rest.len() != count * NACK_RANGE_LEN {
        return Err(ProtocolError::Length("nack ranges"));
    }
    let mut ranges = Vec::with_capacity(count);
    for c in rest.chunks_exact(NACK_RANGE_LEN) {
        let r = NackRange {
            file_id: be_u32(&c[0..4]),
            offset: be_u64(&c[4..12]),
            len: be_u64(&c[12..20]),
        };
        check_range(&r)?;
        ranges.push(r);
    }
    Ok(ranges)
}

impl Status {
    /// Encodes the status as a datagram payload.
    ///
    /// Appends [`STATUS_LEN`] bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.received_bytes.to_be_bytes());
        out.extend_from_slice(&self.received_datagrams.to_be_bytes());
        out.extend_from_slice(&self.lost_datagrams.to_be_bytes());
    }

    /// Decodes a status payload.
    ///
    /// The payload must be exactly [`STATUS_LEN`] bytes.
    pub fn decode(payload: &[u8]) -> Result<Status, ProtocolError> {
        if payload.len() != STATUS_LEN {
            return Err(ProtocolError::Length("status"));
        }
        Ok(Status {
            received_bytes: be_u64(&payload[0..8]),
            received_datagrams: be_u32(&payload[8..12]),
            lost_datagrams: be_u32(&payload[12..16]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(kind: DatagramKind) -> DatagramHeader {
        DatagramHeader {
            token: 0x0102_0304_0506_0708,
            kind,
            seq: 0x1112_1314_1516_1718,
            file_id: 0x2122_2324,
            offset: 0x3132_3334_3536_3738,
        }
    }

    #[test]
    fn header_layout_is_as_specified() {
        let b = header(DatagramKind::Data).to_bytes();
        assert_eq!(
            b,
            [
                1, 2, 3, 4, 5, 6, 7, 8, 3, 0, 0, 0, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
                0x21, 0x22, 0x23, 0x24, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38
            ]
        );
        assert_eq!(MAX_DATAGRAM_PAYLOAD, 9000 - 32 - 16);
    }

    #[test]
    fn every_kind_round_trips_with_payload() {
        for (kind, v) in [
            (DatagramKind::Hello, 1),
            (DatagramKind::HelloAck, 2),
            (DatagramKind::Data, 3),
            (DatagramKind::Nack, 4),
            (DatagramKind::Status, 5),
        ] {
            assert_eq!(kind.to_u8(), v);
            assert_eq!(DatagramKind::from_u8(v), Some(kind));
            let h = header(kind);
            let mut bytes = h.to_bytes().to_vec();
            let d = Datagram::decode(&bytes).unwrap();
            assert_eq!(d.header, h);
            assert!(d.payload.is_empty());
            bytes.extend_from_slice(b"payload");
            let d = Datagram::decode(&bytes).unwrap();
            assert_eq!(d.header, h);
            assert_eq!(d.payload, b"payload");
            assert_eq!(d.header_bytes()[..], bytes[..HEADER_LEN]);
        }
        let mut max = header(DatagramKind::Data).to_bytes().to_vec();
        max.resize(MAX_DATAGRAM, 0xaa);
        assert_eq!(
            Datagram::decode(&max).unwrap().payload.len(),
            MAX_DATAGRAM - HEADER_LEN
        );
    }

    #[test]
    fn datagram_rejections() {
        assert_eq!(
            Datagram::decode(&[]),
            Err(ProtocolError::Length("datagram header"))
        );
        assert_eq!(
            Datagram::decode(&[0; HEADER_LEN - 1]),
            Err(ProtocolError::Length("datagram header"))
        );
        let mut big = header(DatagramKind::Data).to_bytes().to_vec();
        big.resize(MAX_DATAGRAM + 1, 0);
        assert_eq!(
            Datagram::decode(&big),
            Err(ProtocolError::TooLarge(MAX_DATAGRAM + 1))
        );
        let good = header(DatagramKind::Nack).to_bytes();
        for kind in [0u8, 6, 0xff] {
            let mut b = good;
            b[8] = kind;
            assert_eq!(
                Datagram::decode(&b),
                Err(ProtocolError::UnknownType {
                    what: "datagram",
                    value: kind
                })
            );
        }
        let mut b = good;
        b[9] = 1;
        assert_eq!(Datagram::decode(&b), Err(ProtocolError::Malformed("flags")));
        for at in [10, 11] {
            let mut b = good;
            b[at] = 0x80;
            assert_eq!(
                Datagram::decode(&b),
                Err(ProtocolError::Malformed("reserved"))
            );
        }
    }

    #[test]
    fn nonce_layout() {
        assert_eq!(
            aead_nonce(true, 0x0102_0304_0506_0708),
            [0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(aead_nonce(false, 0), [0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn nacks_round_trip_and_layout() {
        let mut out = vec![0xee];
        encode_nacks(&[], &mut out).unwrap();
        assert_eq!(out, vec![0xee, 0, 0]);
        assert_eq!(decode_nacks(&out[1..]), Ok(vec![]));

        let r = NackRange {
            file_id: 1,
            offset: 2,
            len: 3,
        };
        let mut out = Vec::new();
        encode_nacks(&[r], &mut out).unwrap();
        assert_eq!(
            out,
            vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3]
        );

        let max: Vec<NackRange> = (0..MAX_NACK_RANGES as u64)
            .map(|i| NackRange {
                file_id: i as u32,
                offset: u64::MAX - i - 1,
                len: i + 1,
            })
            .collect();
        let mut out = Vec::new();
        encode_nacks(&max, &mut out).unwrap();
        assert_eq!(out.len(), 2 + MAX_NACK_RANGES * NACK_RANGE_LEN);
        assert_eq!(decode_nacks(&out), Ok(max));
    }

    #[test]
    fn nack_rejections() {
        let r = NackRange {
            file_id: 1,
            offset: 0,
            len: 1,
        };
        let mut out = vec![7];
        assert_eq!(
            encode_nacks(&vec![r; MAX_NACK_RANGES + 1], &mut out),
            Err(ProtocolError::TooMany("nack ranges"))
        );
        for bad in [
            NackRange { len: 0, ..r },
            NackRange {
                offset: u64::MAX,
                len: 1,
                ..r
            },
        ] {
            assert_eq!(
                encode_nacks(&[r, bad], &mut out),
                Err(ProtocolError::Malformed("nack range"))
            );
        }
        assert_eq!(out, vec![7], "out untouched on error");

        assert_eq!(decode_nacks(&[]), Err(ProtocolError::Length("nack count")));
        assert_eq!(decode_nacks(&[0]), Err(ProtocolError::Length("nack count")));
        assert_eq!(
            decode_nacks(&[0, MAX_NACK_RANGES as u8 + 1]),
            Err(ProtocolError::TooMany("nack ranges"))
        );
        assert_eq!(
            decode_nacks(&[0xff, 0xff]),
            Err(ProtocolError::TooMany("nack ranges"))
        );
        let mut good = Vec::new();
        encode_nacks(&[r], &mut good).unwrap();
        assert_eq!(
            decode_nacks(&good[..good.len() - 1]),
            Err(ProtocolError::Length("nack ranges"))
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            decode_nacks(&long),
            Err(ProtocolError::Length("nack ranges"))
        );
        let mut zero_len = good.clone();
        zero_len[21] = 0;
        assert_eq!(
            decode_nacks(&zero_len),
            Err(ProtocolError::Malformed("nack range"))
        );
        let mut wraps = good;
        wraps[6..14].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            decode_nacks(&wraps),
            Err(ProtocolError::Malformed("nack range"))
        );
    }

    #[test]
    fn status_round_trip_and_rejections() {
        let s = Status {
            received_bytes: 1 << 50,
            received_datagrams: 7,
            lost_datagrams: u32::MAX,
        };
        let mut out = vec![1];
        s.encode(&mut out);
        assert_eq!(out.len(), 1 + STATUS_LEN);
        assert_eq!(
            out[1..],
            [0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(Status::decode(&out[1..]), Ok(s));
        assert_eq!(
            Status::decode(&out[2..]),
            Err(ProtocolError::Length("status"))
        );
        assert_eq!(Status::decode(&out), Err(ProtocolError::Length("status")));
        assert_eq!(Status::decode(&[]), Err(ProtocolError::Length("status")));
    }

    fn any_kind() -> impl Strategy<Value = DatagramKind> {
        prop_oneof![
            Just(DatagramKind::Hello),
            Just(DatagramKind::HelloAck),
            Just(DatagramKind::Data),
            Just(DatagramKind::Nack),
            Just(DatagramKind::Status),
        ]
    }

    fn any_range() -> impl Strategy<Value = NackRange> {
        (any::<u32>(), any::<u64>(), 1..=u64::MAX).prop_map(|(file_id, offset, len)| NackRange {
            file_id,
            offset: offset.min(u64::MAX - len),
            len,
        })
    }

    proptest! {
        #[test]
        fn prop_datagrams_round_trip(
            token in any::<u64>(), kind in any_kind(), seq in any::<u64>(),
            file_id in any::<u32>(), offset in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..=MAX_DATAGRAM - HEADER_LEN),
        ) {
            let h = DatagramHeader { token, kind, seq, file_id, offset };
            let mut bytes = h.to_bytes().to_vec();
            bytes.extend_from_slice(&payload);
            let d = Datagram::decode(&bytes).unwrap();
            prop_assert_eq!(d.header, h);
            prop_assert_eq!(d.payload, &payload[..]);
        }

        #[test]
        fn prop_nacks_round_trip(ranges in proptest::collection::vec(any_range(), 0..=MAX_NACK_RANGES)) {
            let mut out = Vec::new();
            encode_nacks(&ranges, &mut out).unwrap();
            prop_assert_eq!(decode_nacks(&out), Ok(ranges));
        }

        #[test]
        fn prop_status_round_trip(b in any::<u64>(), r in any::<u32>(), l in any::<u32>()) {
            let s = Status { received_bytes: b, received_datagrams: r, lost_datagrams: l };
            let mut out = Vec::new();
            s.encode(&mut out);
            prop_assert_eq!(Status::decode(&out), Ok(s));
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..10_000)) {
            if let Ok(d) = Datagram::decode(&bytes) {
                // Whatever decodes re-encodes to the same header.
                prop_assert_eq!(&d.header_bytes()[..], &bytes[..HEADER_LEN]);
                prop_assert_eq!(d.payload, &bytes[HEADER_LEN..]);
            }
            if let Ok(ranges) = decode_nacks(&bytes) {
                let mut out = Vec::new();
                encode_nacks(&ranges, &mut out).unwrap();
                prop_assert_eq!(out, bytes.clone());
            }
            let _ = Status::decode(&bytes);
        }

        #[test]
        fn prop_mutated_nacks_never_panic(
            ranges in proptest::collection::vec(any_range(), 0..=MAX_NACK_RANGES),
            muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        ) {
            let mut out = Vec::new();
            encode_nacks(&ranges, &mut out).unwrap();
            for (at, v) in muts {
                let i = at % out.len();
                out[i] = v;
            }
            let _ = decode_nacks(&out);
        }
    }
}
