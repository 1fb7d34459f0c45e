//! Elements of the sets and maps the proxy owns (e.g. the DNAT map
//! `type ipv4_addr . inet_service . inet_service : ipv4_addr . inet_service; flags timeout`),
//! added, refreshed, deleted and listed over nf_tables netlink.
//!
//! Wire layout of one element (NFTA_LIST_ELEM inside NFTA_SET_ELEM_LIST_ELEMENTS):
//! ```text
//! NFTA_SET_ELEM_KEY        (nested) { NFTA_DATA_VALUE: saddr | sport,0,0 | dport,0,0 }
//! NFTA_SET_ELEM_DATA       (nested) { NFTA_DATA_VALUE: daddr | dport,0,0 }
//! NFTA_SET_ELEM_TIMEOUT    be64 milliseconds
//! NFTA_SET_ELEM_EXPIRATION be64 milliseconds (refresh; reported by dumps)
//! NFTA_SET_ELEM_USERDATA   nftnl udata TLV: type 0 (COMMENT), len, "text\0"
//! ```
//! Each component of a concatenation occupies whole 32-bit registers: an
//! address is copied as-is (network order, 4 or 16 bytes); a port is 2 bytes
//! network order followed by 2 zero bytes.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_core::{
    DecodeError, NlasIterator, Parseable, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
};
use netlink_packet_netfilter::{
    nftables::{
        DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
        SetElementMessage,
    },
    NetfilterHeader, NetfilterMessage, NetfilterProtoFamily,
};

pub use crate::dataplane::family::Family;
use crate::dataplane::netlink::{Errno, NfnlSocket};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFGENMSG_LEN: usize = 4;
/// libnftnl `NFTNL_UDATA_SET_ELEM_COMMENT`.
const UDATA_SET_ELEM_COMMENT: u8 = 0;
/// nft accepts comments up to 128 bytes; the udata blob max is 256.
const MAX_COMMENT: usize = 128;

/// The netlink protocol family of a table of `family`.
fn proto(family: Family) -> NetfilterProtoFamily {
    match family {
        Family::V4 => NetfilterProtoFamily::IPv4,
        Family::V6 => NetfilterProtoFamily::IPv6,
    }
}

/// The kind of one component of a concatenated key or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `ipv4_addr` or `ipv6_addr`, by the table's family.
    Addr,
    /// `inet_service`.
    Port,
}

/// One component of a concatenated key or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// An address.
    Addr(IpAddr),
    /// A port.
    Port(u16),
}

/// A set or map the proxy owns, with the shape of its keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetRef {
    /// `ip` or `ip6`.
    pub family: Family,
    /// The table name.
    pub table: &'static str,
    /// The set or map name.
    pub name: &'static str,
    /// Components of a key.
    pub key: &'static [Kind],
    /// Components of a value; `None` for a set.
    pub data: Option<&'static [Kind]>,
}

/// One element to add or refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The key components.
    pub key: Vec<Part>,
    /// The value components (maps only).
    pub data: Option<Vec<Part>>,
    /// Per-element timeout (the set has `flags timeout`).
    pub timeout: Duration,
    /// Shows as `comment "…"` in `nft list`: the session UUID.
    pub comment: String,
}

/// One operation on one element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElemOp {
    /// NEWSETELEM with NLM_F_CREATE|NLM_F_EXCL: EEXIST if the key exists.
    Add(SetRef, Element),
    /// NEWSETELEM with NLM_F_CREATE, no EXCL, carrying TIMEOUT and EXPIRATION=timeout. On
    /// Linux >= 6.12 an existing element's timer is restarted; a missing one is created. The
    /// value must equal the existing one, else EEXIST. Older kernels accept the message but leave
    /// the timer alone (see `NftablesForwarder`'s probe, which falls back to Delete + Add).
    Refresh(SetRef, Element),
    /// DELSETELEM: ENOENT if absent (which aborts the batch it is in).
    Delete(SetRef, Vec<Part>),
}

/// What a dump returns per element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The key components.
    pub key: Vec<Part>,
    /// The value components (maps only).
    pub data: Option<Vec<Part>>,
    /// The element's timeout.
    pub timeout: Option<Duration>,
    /// Time left before the element expires.
    pub expires: Option<Duration>,
    /// The comment (session UUID).
    pub comment: Option<String>,
}

impl ElemOp {
    /// The set the op works on.
    pub fn set(&self) -> &SetRef {
        match self {
            ElemOp::Add(s, _) | ElemOp::Refresh(s, _) | ElemOp::Delete(s, _) => s,
        }
    }

    /// One op as one NEWSETELEM/DELSETELEM message with its nlmsg creation flags.
    pub fn encode(&self) -> io::Result<(u16, NetfilterMessage)> {
        let set = self.set();
        let (flags, attrs) = match self {
            ElemOp::Add(_, e) => (NLM_F_CREATE | NLM_F_EXCL, set.elem_attrs(e, false)?),
            ElemOp::Refresh(_, e) => (NLM_F_CREATE, set.elem_attrs(e, true)?),
            ElemOp::Delete(_, k) => (
                0,
                vec![SetElementAttribute::Key(DataAttribute::Value(
                    set.encode_parts(k, set.key)?,
                ))],
            ),
        };
        let mut list = set.list_head();
        list.push(SetElementList::Elements(vec![ListAttribute::Element(
            attrs,
        )]));
        let body = SetElementMessage { attributes: list };
        let msg = match self {
            ElemOp::Add(..) | ElemOp::Refresh(..) => NfTablesMessage::NewSetElement(body),
            ElemOp::Delete(..) => NfTablesMessage::DeleteSetElement(body),
        };
        Ok((flags, set.message(msg)))
    }
}

/// Sends `ops` in transactions of at most `max_batch` messages (one element per message, so
/// the kernel names every failing element). A batch is all-or-nothing in the kernel; when some
/// ops fail, they are reported and the others of that batch are sent again, so the result is
/// per op: every `Ok` is committed, every `Err` left no trace.
pub fn apply(
    sock: &mut NfnlSocket,
    ops: &[ElemOp],
    max_batch: usize,
) -> io::Result<Vec<Result<(), Errno>>> {
    let mut encoded = Vec::with_capacity(ops.len());
    for op in ops {
        encoded.push(op.encode()?);
    }
    let max_batch = max_batch.max(1);
    let mut results = vec![Ok(()); ops.len()];
    for (c, chunk) in encoded.chunks(max_batch).enumerate() {
        let base = c * max_batch;
        let mut pending: Vec<usize> = (0..chunk.len()).collect();
        while !pending.is_empty() {
            let report = sock.batch(pending.iter().map(|&i| chunk[i].clone()))?;
            if report.committed() {
                break;
            }
            if report.failed.is_empty() {
                // The commit failed as a whole (e.g. ENOMEM): nothing applied.
                let e = report.batch_error.unwrap_or(Errno(libc::EIO));
                for &i in &pending {
                    results[base + i] = Err(e);
                }
                break;
            }
            let mut failed = Vec::with_capacity(report.failed.len());
            for (j, e) in report.failed {
                results[base + pending[j]] = Err(e);
                failed.push(pending[j]);
            }
            pending.retain(|i| !failed.contains(i));
        }
    }
    Ok(results)
}

impl SetRef {
    /// Dumps the set (NFT_MSG_GETSETELEM with NLM_F_DUMP). Replies are NFT_MSG_NEWSETELEM
    /// messages: `TABLE, SET, ELEMENTS { LIST_ELEM { KEY, DATA, TIMEOUT, EXPIRATION, USERDATA } … }`.
    /// The list nesting is walked here (netlink-packet-netfilter 0.4's list parser is
    /// quadratic); each element attribute is decoded with the crate's `SetElementAttribute`.
    pub fn list(&self, sock: &mut NfnlSocket) -> io::Result<Vec<Listed>> {
        let req = self.message(NfTablesMessage::GetSetElement(SetElementMessage {
            attributes: self.list_head(),
        }));
        let mut out = Vec::new();
        for (ty, payload) in sock.query_raw(NLM_F_DUMP, req)? {
            if ty != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM {
                continue;
            }
            let attrs = payload.get(NFGENMSG_LEN..).unwrap_or_default();
            for top in NlasIterator::new(attrs) {
                let top = top.map_err(decode_err)?;
                if top.kind() != NFTA_SET_ELEM_LIST_ELEMENTS {
                    continue;
                }
                for elem in NlasIterator::new(top.value()) {
                    let elem = elem.map_err(decode_err)?;
                    if elem.kind() != NFTA_LIST_ELEM {
                        continue;
                    }
                    let mut parsed = Vec::new();
                    for a in NlasIterator::new(elem.value()) {
                        let a = a.map_err(decode_err)?;
                        parsed.push(SetElementAttribute::parse(&a).map_err(decode_err)?);
                    }
                    if let Some(l) = self.decode_elem(&parsed) {
                        out.push(l);
                    }
                }
            }
        }
        Ok(out)
    }

    fn list_head(&self) -> Vec<SetElementList> {
        vec![
            SetElementList::Table(self.table.to_string()),
            SetElementList::Set(self.name.to_string()),
        ]
    }

    fn message(&self, m: NfTablesMessage) -> NetfilterMessage {
        NetfilterMessage::new(NetfilterHeader::new(proto(self.family), 0, 0), m)
    }

    fn elem_attrs(&self, e: &Element, refresh: bool) -> io::Result<Vec<SetElementAttribute>> {
        if e.comment.len() > MAX_COMMENT || e.comment.contains('\0') {
            return Err(invalid("comment longer than 128 bytes or contains NUL"));
        }
        let ms = u64::try_from(e.timeout.as_millis()).unwrap_or(u64::MAX);
        let mut attrs = vec![SetElementAttribute::Key(DataAttribute::Value(
            self.encode_parts(&e.key, self.key)?,
        ))];
        match (&e.data, self.data) {
            (Some(d), Some(shape)) => attrs.push(SetElementAttribute::Data(DataAttribute::Value(
                self.encode_parts(d, shape)?,
            ))),
            (None, None) => {}
            _ => return Err(invalid("element value does not fit the set (map vs set)")),
        }
        attrs.push(SetElementAttribute::Timeout(ms));
        if refresh {
            // Restarts the timer of an existing element (Linux >= 6.12).
            attrs.push(SetElementAttribute::Expiration(ms));
        }
        if !e.comment.is_empty() {
            attrs.push(SetElementAttribute::UserData(comment_udata(&e.comment)));
        }
        Ok(attrs)
    }

    /// Encodes a concatenation: each component in whole 32-bit registers.
    fn encode_parts(&self, parts: &[Part], shape: &[Kind]) -> io::Result<Vec<u8>> {
        if parts.len() != shape.len() {
            return Err(invalid("wrong number of key/value components for the set"));
        }
        let mut v = Vec::with_capacity(parts.len() * self.family.addr_len());
        for (part, kind) in parts.iter().zip(shape) {
            match (part, kind) {
                (Part::Addr(a), Kind::Addr) if Family::of(*a) == self.family => put_addr(&mut v, a),
                (Part::Port(p), Kind::Port) => put_port(&mut v, *p),
                _ => return Err(invalid("component does not fit the set's type or family")),
            }
        }
        Ok(v)
    }

    fn decode_parts(&self, mut b: &[u8], shape: &[Kind]) -> Option<Vec<Part>> {
        let mut out = Vec::with_capacity(shape.len());
        for kind in shape {
            let n = match kind {
                Kind::Addr => self.family.addr_len(),
                Kind::Port => 4,
            };
            let (this, rest) = (b.get(..n)?, b.get(n..)?);
            out.push(match kind {
                Kind::Addr => Part::Addr(get_addr(self.family, this)?),
                Kind::Port => Part::Port(get_port(this)?),
            });
            b = rest;
        }
        b.is_empty().then_some(out)
    }

    fn decode_elem(&self, attrs: &[SetElementAttribute]) -> Option<Listed> {
        let (mut key, mut data, mut timeout, mut expires, mut comment) =
            (None, None, None, None, None);
        for a in attrs {
            match a {
                SetElementAttribute::Key(DataAttribute::Value(b)) => {
                    key = self.decode_parts(b, self.key)
                }
                SetElementAttribute::Data(DataAttribute::Value(b)) => {
                    data = self.data.and_then(|shape| self.decode_parts(b, shape))
                }
                SetElementAttribute::Timeout(ms) => timeout = Some(Duration::from_millis(*ms)),
                SetElementAttribute::Expiration(ms) => expires = Some(Duration::from_millis(*ms)),
                SetElementAttribute::UserData(u) => comment = parse_comment_udata(u),
                _ => {}
            }
        }
        Some(Listed {
            key: key?,
            data,
            timeout,
            expires,
            comment,
        })
    }
}

fn decode_err(e: DecodeError) -> io::Error {
    io::Error::other(format!("set element dump decode: {e}"))
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn put_addr(v: &mut Vec<u8>, a: &IpAddr) {
    match a {
        IpAddr::V4(a) => v.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => v.extend_from_slice(&a.octets()),
    }
}

/// `inet_service` in a concatenation: 2 bytes big-endian, padded to 4.
fn put_port(v: &mut Vec<u8>, p: u16) {
    v.extend_from_slice(&p.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
}

fn get_addr(fam: Family, b: &[u8]) -> Option<IpAddr> {
    match fam {
        Family::V4 => Some(IpAddr::from(<[u8; 4]>::try_from(b.get(..4)?).ok()?)),
        Family::V6 => Some(IpAddr::from(<[u8; 16]>::try_from(b.get(..16)?).ok()?)),
    }
}

fn get_port(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

/// nftnl udata TLV list with one COMMENT entry, NUL-terminated like nft.
fn comment_udata(comment: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(comment.len() + 3);
    v.push(UDATA_SET_ELEM_COMMENT);
    v.push((comment.len() + 1) as u8);
    v.extend_from_slice(comment.as_bytes());
    v.push(0);
    v
}

fn parse_comment_udata(mut u: &[u8]) -> Option<String> {
    while u.len() >= 2 {
        let (ty, len) = (u[0], u[1] as usize);
        let val = u.get(2..2 + len)?;
        if ty == UDATA_SET_ELEM_COMMENT {
            let s = val.strip_suffix(&[0]).unwrap_or(val);
            return String::from_utf8(s.to_vec()).ok();
        }
        u = &u[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_netfilter::NetfilterMessageInner;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const KEY3: &[Kind] = &[Kind::Addr, Kind::Port, Kind::Port];
    const ADDR_PORT: &[Kind] = &[Kind::Addr, Kind::Port];

    fn v4map() -> SetRef {
        SetRef {
            family: Family::V4,
            table: "fasp_proxy",
            name: "sessions",
            key: KEY3,
            data: Some(ADDR_PORT),
        }
    }

    fn entry() -> Element {
        Element {
            key: vec![
                Part::Addr(Ipv4Addr::new(198, 51, 100, 4).into()),
                Part::Port(40001),
                Part::Port(33001),
            ],
            data: Some(vec![
                Part::Addr(Ipv4Addr::new(203, 0, 113, 2).into()),
                Part::Port(33002),
            ]),
            timeout: Duration::from_secs(60),
            comment: "11111111-2222-3333-4444-555555555555".into(),
        }
    }

    #[test]
    fn key_layout_matches_nft_debug_output() {
        // `nft --debug=netlink add element ...` printed (host-endian u32 words):
        // element 046433c6 0000419c 0000e980 : 027100cb 0000ea80
        let m = v4map();
        let e = entry();
        assert_eq!(
            m.encode_parts(&e.key, KEY3).unwrap(),
            [198, 51, 100, 4, 0x9c, 0x41, 0, 0, 0x80, 0xe9, 0, 0]
        );
        assert_eq!(
            m.encode_parts(e.data.as_ref().unwrap(), ADDR_PORT).unwrap(),
            [203, 0, 113, 2, 0x80, 0xea, 0, 0]
        );
    }

    #[test]
    fn ip6_layout_and_shape_checks() {
        let m = SetRef {
            family: Family::V6,
            ..v4map()
        };
        let k = vec![
            Part::Addr("2001:db8::1".parse::<Ipv6Addr>().unwrap().into()),
            Part::Port(1),
            Part::Port(2),
        ];
        let b = m.encode_parts(&k, KEY3).unwrap();
        assert_eq!(b.len(), 24);
        assert_eq!(&b[16..], &[0, 1, 0, 0, 0, 2, 0, 0]);
        assert_eq!(m.decode_parts(&b, KEY3), Some(k.clone()));
        assert!(m.decode_parts(&b[..20], KEY3).is_none());
        assert!(
            m.encode_parts(&entry().key, KEY3).is_err(),
            "v4 key into ip6 map must fail"
        );
        assert!(m.encode_parts(&k[..2], KEY3).is_err(), "too few components");
        let set = SetRef {
            data: None,
            ..v4map()
        };
        assert!(
            set.elem_attrs(&entry(), false).is_err(),
            "value into a set must fail"
        );
    }

    #[test]
    fn comment_udata_matches_nft() {
        // nft: userdata = { \x00%11111111-2222-3333-4444-555555555555\x00 }
        let u = comment_udata("11111111-2222-3333-4444-555555555555");
        assert_eq!(u[0], 0);
        assert_eq!(u[1], 37);
        assert_eq!(*u.last().unwrap(), 0);
        assert_eq!(
            parse_comment_udata(&u).as_deref(),
            Some("11111111-2222-3333-4444-555555555555")
        );
        // A flags TLV before the comment is skipped.
        let mut two = vec![1, 4, 0, 0, 0, 0];
        two.extend_from_slice(&u);
        assert_eq!(
            parse_comment_udata(&two).as_deref(),
            Some("11111111-2222-3333-4444-555555555555")
        );
    }

    #[test]
    fn encode_roundtrip_through_crate_parser() {
        let m = v4map();
        for op in [
            ElemOp::Add(m, entry()),
            ElemOp::Refresh(m, entry()),
            ElemOp::Delete(m, entry().key),
        ] {
            let (_, msg) = op.encode().unwrap();
            let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
            nl.finalize();
            let mut buf = vec![0; nl.buffer_len()];
            nl.serialize(&mut buf);
            let back = NetlinkMessage::<NetfilterMessage>::deserialize(&buf).unwrap();
            let NetlinkPayload::InnerMessage(back) = back.payload else {
                panic!()
            };
            match (&op, back.inner) {
                (
                    ElemOp::Add(_, e) | ElemOp::Refresh(_, e),
                    NetfilterMessageInner::NfTables(NfTablesMessage::NewSetElement(sm)),
                ) => {
                    let SetElementList::Elements(el) = &sm.attributes[2] else {
                        panic!()
                    };
                    let ListAttribute::Element(attrs) = &el[0] else {
                        panic!()
                    };
                    let l = m.decode_elem(attrs).unwrap();
                    assert_eq!(l.key, e.key);
                    assert_eq!(l.data, e.data);
                    assert_eq!(l.timeout, Some(e.timeout));
                    assert_eq!(l.comment.as_deref(), Some(e.comment.as_str()));
                    assert_eq!(l.expires.is_some(), matches!(op, ElemOp::Refresh(..)));
                }
                (
                    ElemOp::Delete(..),
                    NetfilterMessageInner::NfTables(NfTablesMessage::DeleteSetElement(_)),
                ) => {}
                (op, other) => panic!("{op:?} decoded as {other:?}"),
            }
        }
    }

    #[test]
    fn golden_bytes_of_an_add() {
        let (flags, msg) = ElemOp::Add(v4map(), entry()).encode().unwrap();
        let mut h = NetlinkHeader::default();
        h.flags = 0x0001 | 0x0004 | flags; // REQUEST | ACK | (CREATE|EXCL)
        h.sequence_number = 2;
        let mut nl = NetlinkMessage::new(h, NetlinkPayload::from(msg));
        nl.finalize();
        let mut buf = vec![0; nl.buffer_len()];
        nl.serialize(&mut buf);
        #[rustfmt::skip]
        let want: [u8; 152] = [
            // nlmsghdr: len 152, type (NFNL_SUBSYS_NFTABLES<<8)|NFT_MSG_NEWSETELEM, flags 0x605, seq 2, pid 0
            0x98, 0x00, 0x00, 0x00, 0x0c, 0x0a, 0x05, 0x06, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            // nfgenmsg: AF_INET, v0, res_id 0
            0x02, 0x00, 0x00, 0x00,
            // NFTA_SET_ELEM_LIST_TABLE "fasp_proxy\0"
            0x0f, 0x00, 0x01, 0x00, b'f', b'a', b's', b'p', b'_', b'p', b'r', b'o', b'x', b'y', 0x00, 0x00,
            // NFTA_SET_ELEM_LIST_SET "sessions\0"
            0x0d, 0x00, 0x02, 0x00, b's', b'e', b's', b's', b'i', b'o', b'n', b's', 0x00, 0x00, 0x00, 0x00,
            // NFTA_SET_ELEM_LIST_ELEMENTS (nested) > NFTA_LIST_ELEM (nested)
            0x64, 0x00, 0x03, 0x80, 0x60, 0x00, 0x01, 0x80,
            // NFTA_SET_ELEM_KEY (nested) > NFTA_DATA_VALUE: 198.51.100.4 | 40001,0,0 | 33001,0,0
            0x14, 0x00, 0x01, 0x80, 0x10, 0x00, 0x01, 0x00,
            0xc6, 0x33, 0x64, 0x04, 0x9c, 0x41, 0x00, 0x00, 0x80, 0xe9, 0x00, 0x00,
            // NFTA_SET_ELEM_DATA (nested) > NFTA_DATA_VALUE: 203.0.113.2 | 33002,0,0
            0x10, 0x00, 0x02, 0x80, 0x0c, 0x00, 0x01, 0x00, 0xcb, 0x00, 0x71, 0x02, 0x80, 0xea, 0x00, 0x00,
            // NFTA_SET_ELEM_TIMEOUT be64 60000 ms
            0x0c, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xea, 0x60,
            // NFTA_SET_ELEM_USERDATA: udata COMMENT(0), len 37, "1111...5555\0", pad
            0x2b, 0x00, 0x06, 0x00, 0x00, 0x25,
            b'1', b'1', b'1', b'1', b'1', b'1', b'1', b'1', b'-', b'2', b'2', b'2', b'2', b'-',
            b'3', b'3', b'3', b'3', b'-', b'4', b'4', b'4', b'4', b'-',
            b'5', b'5', b'5', b'5', b'5', b'5', b'5', b'5', b'5', b'5', b'5', b'5', 0x00, 0x00,
        ];
        assert_eq!(buf, want);
    }
}
