//! Conntrack entries by exact tuple over ctnetlink (NFNL_SUBSYS_CTNETLINK):
//! delete (IPCTNL_MSG_CT_DELETE), get with counters (IPCTNL_MSG_CT_GET), and create a
//! NAT'ed flow or change its timeout (IPCTNL_MSG_CT_NEW, [`create_nat_flow`],
//! [`set_flow_timeout`]).
//!
//! Request layout (nfgenmsg.family = AF_INET or AF_INET6):
//! ```text
//! CTA_TUPLE_ORIG (nested)
//!   CTA_TUPLE_IP    (nested) { CTA_IP_V4_SRC|CTA_IP_V6_SRC, CTA_IP_V4_DST|CTA_IP_V6_DST }
//!   CTA_TUPLE_PROTO (nested) { CTA_PROTO_NUM u8, CTA_PROTO_SRC_PORT be16, CTA_PROTO_DST_PORT be16 }
//! ```
//! For a DNAT'ed flow the *original* tuple is what the client sent:
//! client:cport -> proxy_addr:proxy_port (pre-NAT).

use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{parse_u64_be, Nla, NlasIterator};
use netlink_packet_netfilter::{
    conntrack::{
        ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Status, Tuple,
    },
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

use super::entry::{InstalledEntry, SessionEntry};
use super::error::DataplaneError;
use super::netlink::{Errno, NfnlSocket};

const CTA_NAT_SRC: u16 = 6;
const CTA_NAT_DST: u16 = 13;
const CTA_NAT_V4_MINIP: u16 = 1;
const CTA_NAT_V4_MAXIP: u16 = 2;
const CTA_NAT_PROTO: u16 = 3;
const CTA_NAT_V6_MINIP: u16 = 4;
const CTA_NAT_V6_MAXIP: u16 = 5;
const CTA_PROTONAT_PORT_MIN: u16 = 1;
const CTA_PROTONAT_PORT_MAX: u16 = 2;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// One direction of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    pub proto: u8,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl FlowTuple {
    pub fn udp(src: SocketAddr, dst: SocketAddr) -> Self {
        Self {
            proto: IPPROTO_UDP,
            src,
            dst,
        }
    }

    /// A TCP tuple from `src` to `dst`.
    pub fn tcp(src: SocketAddr, dst: SocketAddr) -> Self {
        Self {
            proto: IPPROTO_TCP,
            src,
            dst,
        }
    }

    fn family(&self) -> io::Result<NetfilterProtoFamily> {
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(_), IpAddr::V4(_)) => Ok(NetfilterProtoFamily::IPv4),
            (IpAddr::V6(_), IpAddr::V6(_)) => Ok(NetfilterProtoFamily::IPv6),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mixed address families",
            )),
        }
    }

    fn attrs(&self) -> Vec<Tuple> {
        vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(self.src.ip()),
                IPTuple::DestinationAddress(self.dst.ip()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::from(self.proto)),
                ProtoTuple::SourcePort(self.src.port()),
                ProtoTuple::DestinationPort(self.dst.port()),
            ]),
        ]
    }

    fn from_attrs(t: &[Tuple]) -> Option<Self> {
        let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, 0, 0);
        for a in t {
            match a {
                Tuple::Ip(ips) => {
                    for ip in ips {
                        match ip {
                            IPTuple::SourceAddress(a) => src = Some(*a),
                            IPTuple::DestinationAddress(a) => dst = Some(*a),
                            _ => {}
                        }
                    }
                }
                Tuple::Proto(ps) => {
                    for p in ps {
                        match p {
                            ProtoTuple::Protocol(p) => proto = Some(u8::from(*p)),
                            ProtoTuple::SourcePort(p) => sport = *p,
                            ProtoTuple::DestinationPort(p) => dport = *p,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Some(Self {
            proto: proto?,
            src: SocketAddr::new(src?, sport),
            dst: SocketAddr::new(dst?, dport),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub orig: Option<FlowTuple>,
    /// Reply direction: shows the NAT (src = DNAT target).
    pub reply: Option<FlowTuple>,
    /// Seconds left.
    pub timeout: Option<u32>,
    /// `IPS_*` status bits.
    pub status: Option<Status>,
    /// Present only with `net.netfilter.nf_conntrack_acct = 1` (per netns)
    /// at the time the flow was created.
    pub orig_counters: Option<Counters>,
    pub reply_counters: Option<Counters>,
}

fn ct_msg(family: NetfilterProtoFamily, m: ConntrackMessage) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), m)
}

/// Delete requests per datagram: the kernel answers each with an ACK, and all of one datagram's
/// ACKs must fit in the socket's receive buffer at once (each is charged at its skb's size, well
/// over 512 bytes), else they are dropped (ENOBUFS) and the outcome is unknown. A purge after
/// an any-port session with 45,000 flows overflowed 8 MiB in one datagram.
const DELETES_PER_DATAGRAM: usize = 1000;

/// Deletes flows by original tuple, [`DELETES_PER_DATAGRAM`] requests per datagram.
/// Per flow: `Ok(())`, or `Err(Errno::NOENT)` if there was no such flow.
pub fn delete_flows(
    sock: &mut NfnlSocket,
    flows: &[FlowTuple],
) -> io::Result<Vec<Result<(), Errno>>> {
    let mut results = Vec::with_capacity(flows.len());
    for chunk in flows.chunks(DELETES_PER_DATAGRAM) {
        let mut msgs = Vec::with_capacity(chunk.len());
        for f in chunk {
            let m = ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(f.attrs())]);
            msgs.push((0, ct_msg(f.family()?, m)));
        }
        results.extend(sock.requests(msgs)?);
    }
    Ok(results)
}

/// One netlink attribute: length, type, value, padded to 4 bytes.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity(len.next_multiple_of(4));
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(len.next_multiple_of(4), 0);
    out
}

/// A nested attribute (`CTA_NAT_SRC`/`CTA_NAT_DST`, which netlink-packet-netfilter 0.4 does not
/// type) holding one address, and a port when `port` is set:
/// `{ CTA_NAT_V4_MINIP, CTA_NAT_V4_MAXIP [, CTA_NAT_PROTO { PORT_MIN, PORT_MAX }] }`.
fn nat_range(kind: u16, addr: IpAddr, port: Option<u16>) -> ConntrackAttribute {
    let mut value = match addr {
        IpAddr::V4(a) => [
            nla(CTA_NAT_V4_MINIP, &a.octets()),
            nla(CTA_NAT_V4_MAXIP, &a.octets()),
        ]
        .concat(),
        IpAddr::V6(a) => [
            nla(CTA_NAT_V6_MINIP, &a.octets()),
            nla(CTA_NAT_V6_MAXIP, &a.octets()),
        ]
        .concat(),
    };
    if let Some(p) = port {
        let ports = [
            nla(CTA_PROTONAT_PORT_MIN, &p.to_be_bytes()),
            nla(CTA_PROTONAT_PORT_MAX, &p.to_be_bytes()),
        ]
        .concat();
        value.extend(nla(
            CTA_NAT_PROTO | netlink_packet_core::NLA_F_NESTED,
            &ports,
        ));
    }
    ConntrackAttribute::Other(netlink_packet_core::DefaultNla::new(
        kind | netlink_packet_core::NLA_F_NESTED,
        value,
    ))
}

/// Creates, as the first packet of `orig` would through the proxy's NAT rules, a flow
/// DNAT'ed to `dnat` with its source rewritten to `snat` (keeping the client's source port
/// when no other flow to `dnat` uses it, else another one the kernel picks, as `masquerade`
/// and `snat` do), assured, expiring after `timeout` unless refreshed
/// ([`set_flow_timeout`]). Returns the flow as the kernel holds it: its reply tuple
/// (`dnat` → `snat`:port) says which source port was chosen. Fails with EEXIST (as an
/// `io::Error`) when a flow of `orig` exists; NAT needs the proxy's NAT chains to be in place
/// for packets to follow it.
///
/// What `conntrack -I` does with `--dst-nat`/`--src-nat`:
/// ```text
/// IPCTNL_MSG_CT_NEW (NLM_F_CREATE|NLM_F_EXCL)
///   CTA_TUPLE_ORIG  client:cport -> proxy:pport    CTA_TUPLE_REPLY  its inverse
///   CTA_NAT_DST { MINIP = MAXIP = backend, PROTO { PORT_MIN = PORT_MAX = backend port } }
///   CTA_NAT_SRC { MINIP = MAXIP = snat }           CTA_TIMEOUT s
/// IPCTNL_MSG_CT_NEW  CTA_TUPLE_ORIG …  CTA_STATUS  its status | IPS_ASSURED  (not dropped early
///                                                  when the table fills up)
/// ```
pub fn create_nat_flow(
    sock: &mut NfnlSocket,
    orig: &FlowTuple,
    dnat: SocketAddr,
    snat: IpAddr,
    timeout: std::time::Duration,
) -> io::Result<FlowInfo> {
    let reply = FlowTuple {
        proto: orig.proto,
        src: orig.dst,
        dst: orig.src,
    };
    let m = ConntrackMessage::New(vec![
        ConntrackAttribute::CtaTupleOrig(orig.attrs()),
        ConntrackAttribute::CtaTupleReply(reply.attrs()),
        nat_range(CTA_NAT_DST, dnat.ip(), Some(dnat.port())),
        nat_range(CTA_NAT_SRC, snat, None),
        ConntrackAttribute::CtaTimeout(timeout_secs(timeout)),
    ]);
    let flags = netlink_packet_core::NLM_F_CREATE | netlink_packet_core::NLM_F_EXCL;
    request(sock, flags, ct_msg(orig.family()?, m))?;
    let mut flow =
        get_flow(sock, orig)?.ok_or_else(|| io::Error::other("the created flow is gone"))?;
    // The status can only be set on a flow that exists (on create the kernel refuses it,
    // EBUSY), and only as the whole word: what it has, plus assured.
    let status = flow.status.unwrap_or(Status::empty()) | Status::Assured;
    let m = ConntrackMessage::New(vec![
        ConntrackAttribute::CtaTupleOrig(orig.attrs()),
        ConntrackAttribute::CtaStatus(status),
    ]);
    request(sock, 0, ct_msg(orig.family()?, m))?;
    flow.status = Some(status);
    Ok(flow)
}

/// Sends one ctnetlink request and waits for its ACK; a kernel error becomes an `io::Error`
/// with its errno.
fn request(sock: &mut NfnlSocket, flags: u16, msg: NetfilterMessage) -> io::Result<()> {
    match sock.requests([(flags, msg)])?.pop() {
        Some(Ok(())) => Ok(()),
        Some(Err(errno)) => Err(io::Error::from_raw_os_error(errno.0)),
        None => Err(io::Error::other("no answer from ctnetlink")),
    }
}

/// Sets the time left of the flow of `orig` (IPCTNL_MSG_CT_NEW without NLM_F_CREATE:
/// `conntrack -U --timeout`). ENOENT (as an `io::Error`) when there is no such flow.
pub fn set_flow_timeout(
    sock: &mut NfnlSocket,
    orig: &FlowTuple,
    timeout: std::time::Duration,
) -> io::Result<()> {
    let m = ConntrackMessage::New(vec![
        ConntrackAttribute::CtaTupleOrig(orig.attrs()),
        ConntrackAttribute::CtaTimeout(timeout_secs(timeout)),
    ]);
    request(sock, 0, ct_msg(orig.family()?, m))
}

/// Conntrack timeouts are whole seconds: at least 1, rounded up.
fn timeout_secs(timeout: std::time::Duration) -> u32 {
    u32::try_from(timeout.as_millis().div_ceil(1000))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Looks one flow up by original tuple. `Ok(None)` if it does not exist.
pub fn get_flow(sock: &mut NfnlSocket, flow: &FlowTuple) -> io::Result<Option<FlowInfo>> {
    let m = ConntrackMessage::Get(vec![ConntrackAttribute::CtaTupleOrig(flow.attrs())]);
    let replies = match sock.query(0, ct_msg(flow.family()?, m)) {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    for r in replies {
        // The answer to a GET is an IPCTNL_MSG_CT_NEW message.
        if let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) = r.inner {
            return Ok(Some(flow_info(&attrs)));
        }
    }
    Ok(None)
}

/// Dumps every conntrack entry of one IP family (IPCTNL_MSG_CT_GET with NLM_F_DUMP).
/// The kernel walks its whole table: use for the rare cases without an exact tuple.
pub fn dump_flows(sock: &mut NfnlSocket, ipv4: bool) -> io::Result<Vec<FlowInfo>> {
    let family = if ipv4 {
        NetfilterProtoFamily::IPv4
    } else {
        NetfilterProtoFamily::IPv6
    };
    let replies = sock.query(
        netlink_packet_core::NLM_F_DUMP,
        ct_msg(family, ConntrackMessage::Get(vec![])),
    )?;
    Ok(replies
        .into_iter()
        .filter_map(|r| match r.inner {
            NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) => {
                Some(flow_info(&attrs))
            }
            _ => None,
        })
        .collect())
}

/// The original tuple of a session's flow: what the client sends, before DNAT.
fn session_tuple(entry: &SessionEntry, client_port: u16) -> FlowTuple {
    FlowTuple::udp(
        SocketAddr::new(entry.client, client_port),
        SocketAddr::new(entry.proxy_addr, entry.proxy_port),
    )
}

/// Packets and bytes of a session's flow from the client (exact tuple; `None` without a client
/// port, without a flow, or without conntrack accounting).
pub fn session_counters(
    sock: &mut NfnlSocket,
    entry: &SessionEntry,
) -> Result<Option<(u64, u64)>, DataplaneError> {
    let Some(port) = entry.client_port else {
        return Ok(None);
    };
    let flow = get_flow(sock, &session_tuple(entry, port)).map_err(|e| {
        DataplaneError::io(
            format!("session {}: reading conntrack counters", entry.id),
            e,
        )
    })?;
    Ok(flow
        .and_then(|f| f.orig_counters)
        .map(|c| (c.packets, c.bytes)))
}

/// Deletes the conntrack entries of a session's flow: the DNAT'ed flow of a live session, or a
/// stale un-NATed one that would shadow a new entry. By exact tuple (one lookup) when the client
/// port is known; otherwise every UDP flow from the client to the proxy port is found by a dump.
/// With a TCP twin, the same dump also finds the TCP connections from the client (any source
/// port) to the proxy port that were DNAT'ed to the TCP backend. Returns how many entries were
/// deleted.
pub fn delete_session_flows(
    sock: &mut NfnlSocket,
    entry: &SessionEntry,
) -> Result<usize, DataplaneError> {
    let what = || format!("session {}: deleting conntrack entries", entry.id);
    let target = SocketAddr::new(entry.proxy_addr, entry.proxy_port);
    let tuples: Vec<FlowTuple> = match entry.client_port {
        Some(port) => vec![session_tuple(entry, port)],
        None => dump_flows(sock, entry.is_ipv4())
            .map_err(|e| DataplaneError::io(what(), e))?
            .into_iter()
            .filter_map(|f| Some((f.orig?, f.reply?)))
            .filter(|(o, r)| {
                o.src.ip() == entry.client
                    && o.dst == target
                    && match o.proto {
                        // Only this session's flows: forwarded to its backend, or never NAT'ed
                        // (stale). A port-specific session of the same client and port,
                        // DNAT'ed elsewhere, stays.
                        IPPROTO_UDP => r.src == entry.backend || r.src == target,
                        // Only connections DNAT'ed to the TCP backend: an un-NAT'ed one is a
                        // connection to the proxy host itself, which must keep its tracking
                        // (a stale TCP flow shadows nothing, new connections get new ports).
                        IPPROTO_TCP => entry.tcp_backend.is_some_and(|t| r.src == t),
                        _ => false,
                    }
            })
            .map(|(o, _)| o)
            .collect(),
    };
    delete_counted(sock, &tuples, &what)
}

/// Deletes the conntrack entries of entries read back from the kernel (no proxy address known):
/// UDP flows from the entry's client (and port) to its proxy port that were forwarded to its
/// backend, and TCP connections from its client to its proxy port forwarded to its TCP backend.
pub fn delete_installed_flows(
    sock: &mut NfnlSocket,
    entries: &[InstalledEntry],
) -> Result<usize, DataplaneError> {
    let what = || "deleting conntrack entries of removed sessions".to_string();
    let mut tuples = Vec::new();
    for ipv4 in [true, false] {
        let mine: Vec<&InstalledEntry> = entries
            .iter()
            .filter(|e| e.key.client.is_ipv4() == ipv4)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let flows = dump_flows(sock, ipv4).map_err(|e| DataplaneError::io(what(), e))?;
        for f in flows {
            let (Some(orig), Some(reply)) = (f.orig, f.reply) else {
                continue;
            };
            let matches = mine.iter().any(|e| {
                orig.src.ip() == e.key.client
                    && orig.dst.port() == e.key.proxy_port
                    && match orig.proto {
                        IPPROTO_UDP => {
                            e.key.client_port.is_none_or(|p| p == orig.src.port())
                                && reply.src == e.backend
                        }
                        IPPROTO_TCP => e.tcp_backend.is_some_and(|t| reply.src == t),
                        _ => false,
                    }
            });
            if matches {
                tuples.push(orig);
            }
        }
    }
    delete_counted(sock, &tuples, &what)
}

fn delete_counted(
    sock: &mut NfnlSocket,
    tuples: &[FlowTuple],
    what: &dyn Fn() -> String,
) -> Result<usize, DataplaneError> {
    if tuples.is_empty() {
        return Ok(0);
    }
    let mut deleted = 0;
    for result in delete_flows(sock, tuples).map_err(|e| DataplaneError::io(what(), e))? {
        match result {
            Ok(()) => deleted += 1,
            Err(Errno::NOENT) => {}
            Err(errno) => {
                return Err(DataplaneError::Kernel {
                    what: what(),
                    errno,
                })
            }
        }
    }
    Ok(deleted)
}

fn flow_info(attrs: &[ConntrackAttribute]) -> FlowInfo {
    let mut info = FlowInfo {
        orig: None,
        reply: None,
        timeout: None,
        status: None,
        orig_counters: None,
        reply_counters: None,
    };
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => info.orig = FlowTuple::from_attrs(t),
            ConntrackAttribute::CtaTupleReply(t) => info.reply = FlowTuple::from_attrs(t),
            ConntrackAttribute::CtaTimeout(s) => info.timeout = Some(*s),
            ConntrackAttribute::CtaStatus(s) => info.status = Some(*s),
            ConntrackAttribute::Other(nla) => {
                // Counters are not typed in netlink-packet-netfilter 0.4.
                let kind = nla.kind() & !(netlink_packet_core::NLA_F_NESTED);
                if kind == CTA_COUNTERS_ORIG || kind == CTA_COUNTERS_REPLY {
                    let mut v = vec![0; nla.value_len()];
                    nla.emit_value(&mut v);
                    let c = parse_counters(&v);
                    if kind == CTA_COUNTERS_ORIG {
                        info.orig_counters = c;
                    } else {
                        info.reply_counters = c;
                    }
                }
            }
            _ => {}
        }
    }
    info
}

fn parse_counters(v: &[u8]) -> Option<Counters> {
    let mut c = Counters::default();
    for nla in NlasIterator::new(v) {
        let nla = nla.ok()?;
        match nla.kind() {
            CTA_COUNTERS_PACKETS => c.packets = parse_u64_be(nla.value()).ok()?,
            CTA_COUNTERS_BYTES => c.bytes = parse_u64_be(nla.value()).ok()?,
            _ => {}
        }
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};

    #[test]
    fn delete_request_bytes() {
        let f = FlowTuple::udp(
            "198.51.100.2:40000".parse().unwrap(),
            "198.51.100.1:33001".parse().unwrap(),
        );
        let m = ct_msg(
            f.family().unwrap(),
            ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(f.attrs())]),
        );
        let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(m));
        nl.finalize();
        let mut b = vec![0; nl.buffer_len()];
        nl.serialize(&mut b);
        // nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 0x0102);
        assert_eq!(b[16], libc::AF_INET as u8); // nfgenmsg.family
                                                // CTA_TUPLE_ORIG { CTA_TUPLE_IP {src,dst}, CTA_TUPLE_PROTO {num,sport,dport} }
        let body = &b[20..];
        // type CTA_TUPLE_ORIG (1) with NLA_F_NESTED set by the crate
        assert_eq!(u16::from_ne_bytes([body[2], body[3]]), 0x8001);
        let back = NetlinkMessage::<NetfilterMessage>::deserialize(&b).unwrap();
        let NetlinkPayload::InnerMessage(m) = back.payload else {
            panic!()
        };
        let NetfilterMessageInner::Conntrack(ConntrackMessage::Delete(a)) = m.inner else {
            panic!()
        };
        let ConntrackAttribute::CtaTupleOrig(t) = &a[0] else {
            panic!()
        };
        assert_eq!(FlowTuple::from_attrs(t), Some(f));
    }

    #[test]
    fn a_tcp_tuple_carries_protocol_6() {
        let f = FlowTuple::tcp(
            "[2001:db8:1::2]:50000".parse().unwrap(),
            "[2001:db8:1::1]:33001".parse().unwrap(),
        );
        assert_eq!(f.proto, IPPROTO_TCP);
        assert_eq!(f.family().unwrap(), NetfilterProtoFamily::IPv6);
        assert_eq!(FlowTuple::from_attrs(&f.attrs()), Some(f));
    }

    #[test]
    fn counters_parse() {
        let mut v = Vec::new();
        for (k, x) in [(CTA_COUNTERS_PACKETS, 3u64), (CTA_COUNTERS_BYTES, 300u64)] {
            v.extend_from_slice(&12u16.to_ne_bytes());
            v.extend_from_slice(&k.to_ne_bytes());
            v.extend_from_slice(&x.to_be_bytes());
        }
        assert_eq!(
            parse_counters(&v),
            Some(Counters {
                packets: 3,
                bytes: 300
            })
        );
    }
}
