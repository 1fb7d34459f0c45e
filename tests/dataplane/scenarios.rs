//! The data plane's behaviour, written once over `&mut dyn Forwarder`.
//!
//! Two kinds of scenario:
//! - bookkeeping (keys, list, remove, reconcile, purge), which needs no traffic: run against
//!   both kernel backends in the lab and against `MemoryForwarder` without root, which checks
//!   that the fake keeps the real backends' promises;
//! - forwarding, which sends datagrams through the lab (client → proxy → server and back): run
//!   against both kernel backends, each in its own lab namespace, through a [`KernelLab`]. An
//!   entry's TCP twin ([`SessionEntry::tcp_backend`]) is checked the same way, with real TCP
//!   connections from the client namespace to a listener in the server namespace.
//!
//! Lab quirks (docs/testing.md): NAT is decided on a flow's first packet, so every session is
//! installed before its first datagram; reads use `lab::udp_recv_from` (retries on EINTR) and
//! socket timeouts, so nothing hangs.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use fasp_proxy::dataplane::{DataplaneError, Forwarder, InstalledEntry, SessionEntry};
use uuid::Uuid;

use crate::lab::{self, Netns, Topology};

/// The proxy port (and backend port) most sessions use.
pub const PORT: u16 = 33001;
/// How long a datagram that should arrive is waited for.
pub const WAIT: Duration = Duration::from_secs(3);
/// How long "nothing arrives" is watched for.
pub const SILENCE: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Entries

/// An IPv4 session of the lab's client, to the first server's port [`PORT`].
pub fn entry_v4(client_port: Option<u16>, proxy_port: u16) -> SessionEntry {
    SessionEntry {
        id: Uuid::new_v4(),
        client: lab::CLIENT_V4.into(),
        client_port,
        proxy_addr: lab::PROXY_CLIENT_V4.into(),
        proxy_port,
        backend: SocketAddr::new(lab::server_v4(0).into(), PORT),
        tcp_backend: None,
        snat: None,
        lifetime: Duration::from_secs(60),
    }
}

/// The IPv6 twin of [`entry_v4`].
pub fn entry_v6(client_port: Option<u16>, proxy_port: u16) -> SessionEntry {
    SessionEntry {
        client: lab::CLIENT_V6.into(),
        proxy_addr: lab::PROXY_CLIENT_V6.into(),
        backend: SocketAddr::new(lab::server_v6(0).into(), PORT),
        tcp_backend: None,
        ..entry_v4(client_port, proxy_port)
    }
}

/// The port of the servers' TCP listener behind an entry's TCP twin (the outside SSH server).
pub const TCP_PORT: u16 = 22;

/// An IPv4 entry for any client port with a TCP twin to the first server's [`TCP_PORT`]
/// (the forward proxy's shape), masqueraded.
pub fn tcp_entry_v4(proxy_port: u16) -> SessionEntry {
    SessionEntry {
        tcp_backend: Some(SocketAddr::new(lab::server_v4(0).into(), TCP_PORT)),
        ..entry_v4(None, proxy_port)
    }
}

/// The IPv6 twin of [`tcp_entry_v4`].
pub fn tcp_entry_v6(proxy_port: u16) -> SessionEntry {
    SessionEntry {
        tcp_backend: Some(SocketAddr::new(lab::server_v6(0).into(), TCP_PORT)),
        ..entry_v6(None, proxy_port)
    }
}

/// What `list` reports for `entry` (without the time left, which only nftables knows).
pub fn installed(entry: &SessionEntry) -> InstalledEntry {
    InstalledEntry {
        id: Some(entry.id),
        key: entry.key(),
        backend: entry.backend,
        tcp_backend: entry.tcp_backend,
        snat: entry.snat,
        expires: None,
    }
}

/// `list`, sorted by key, without the time left.
pub fn listed(fw: &mut dyn Forwarder) -> Vec<InstalledEntry> {
    let mut entries = fw
        .list()
        .unwrap_or_else(|e| panic!("list: {e}"))
        .into_iter()
        .map(|e| InstalledEntry { expires: None, ..e })
        .collect::<Vec<_>>();
    entries.sort_by_key(|e| (e.key, e.backend));
    entries
}

/// [`installed`] of each entry, sorted as [`listed`] sorts.
pub fn all_installed(entries: &[&SessionEntry]) -> Vec<InstalledEntry> {
    let mut out: Vec<InstalledEntry> = entries.iter().map(|e| installed(e)).collect();
    out.sort_by_key(|e| (e.key, e.backend));
    out
}

fn sorted(mut entries: Vec<InstalledEntry>) -> Vec<InstalledEntry> {
    for e in &mut entries {
        e.expires = None;
    }
    entries.sort_by_key(|e| (e.key, e.backend));
    entries
}

// ---------------------------------------------------------------------------------------------
// Bookkeeping scenarios: no traffic, every backend (also the in-memory one)

/// Install, list, refresh, remove, remove again: the entry appears as installed (masqueraded or
/// SNAT'ed) and goes, and removing what is gone is not an error.
pub fn install_list_refresh_remove(fw: &mut dyn Forwarder) {
    let masq = entry_v4(Some(40000), PORT);
    let snat = SessionEntry {
        snat: Some(lab::PROXY_SERVER_V4.into()),
        ..entry_v4(Some(40001), PORT)
    };
    fw.install(&masq).unwrap();
    fw.install(&snat).unwrap();
    assert_eq!(listed(fw), all_installed(&[&masq, &snat]));
    fw.refresh(&masq).unwrap();
    assert_eq!(listed(fw), all_installed(&[&masq, &snat]));
    fw.remove(&masq).unwrap();
    assert_eq!(listed(fw), vec![installed(&snat)]);
    fw.remove(&masq)
        .unwrap_or_else(|e| panic!("removing what is gone: {e}"));
    fw.remove(&snat).unwrap();
    assert!(listed(fw).is_empty());
}

/// A second session with a key another holds is refused, naming the owner, and the first
/// entry stays as it was; a malformed entry is refused before anything is looked at.
pub fn a_taken_key_is_refused_and_the_first_entry_untouched(fw: &mut dyn Forwarder) {
    let first = entry_v4(Some(40000), PORT);
    fw.install(&first).unwrap();
    let second = SessionEntry {
        backend: SocketAddr::new(lab::server_v4(0).into(), 33999),
        tcp_backend: None,
        snat: Some(lab::PROXY_SERVER_V4.into()),
        ..entry_v4(Some(40000), PORT)
    };
    assert_key_taken(fw.install(&second), &first, &second);
    assert_eq!(listed(fw), vec![installed(&first)]);

    let bad = SessionEntry {
        backend: SocketAddr::new(lab::server_v6(0).into(), PORT),
        tcp_backend: None,
        ..entry_v4(Some(40001), PORT)
    };
    assert!(matches!(
        fw.install(&bad),
        Err(DataplaneError::InvalidEntry { .. })
    ));
    assert_eq!(listed(fw), vec![installed(&first)]);
}

/// `result` is the refusal of `second` because `first` holds the key.
pub fn assert_key_taken(
    result: Result<(), DataplaneError>,
    first: &SessionEntry,
    second: &SessionEntry,
) {
    let err = match result {
        Err(e @ DataplaneError::KeyTaken { .. }) => e,
        other => panic!("expected KeyTaken, got {other:?}"),
    };
    let DataplaneError::KeyTaken { id, key, owner } = &err else {
        unreachable!()
    };
    assert_eq!(
        (*id, *key, *owner),
        (second.id, first.key(), Some(first.id))
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&first.id.to_string()) && msg.contains("192.0.2.2 port 40000"),
        "{msg}"
    );
}

/// A session keyed on a client port and one keyed on any port of the same client and proxy
/// port are different keys: both install, both are listed.
pub fn port_and_any_port_keys_are_distinct(fw: &mut dyn Forwarder) {
    let any = entry_v4(None, PORT);
    let specific = SessionEntry {
        backend: SocketAddr::new(lab::server_v4(0).into(), PORT + 1),
        tcp_backend: None,
        ..entry_v4(Some(40003), PORT)
    };
    fw.install(&any).unwrap();
    fw.install(&specific).unwrap();
    assert_eq!(listed(fw), all_installed(&[&any, &specific]));
    // The same any-port key again is taken.
    let again = entry_v4(None, PORT);
    assert!(matches!(
        fw.install(&again),
        Err(DataplaneError::KeyTaken { owner: Some(o), .. }) if o == any.id
    ));
}

/// An entry's TCP twin is listed with it (also with SNAT, also IPv6), refreshed and removed
/// with it, and reported by reconcile; it shares the entry's key (an any-port UDP session of
/// the same client and proxy port is refused), while a port-keyed session of that client and
/// proxy port is another key.
pub fn a_tcp_twin_is_listed_with_its_session_and_shares_its_key(fw: &mut dyn Forwarder) {
    let masq = tcp_entry_v4(PORT);
    let snat = SessionEntry {
        snat: Some(lab::PROXY_SERVER_V4.into()),
        ..tcp_entry_v4(PORT + 1)
    };
    let v6 = tcp_entry_v6(PORT);
    for e in [&masq, &snat, &v6] {
        fw.install(e)
            .unwrap_or_else(|err| panic!("install {e:?}: {err}"));
    }
    assert_eq!(listed(fw), all_installed(&[&masq, &snat, &v6]));
    assert!(listed(fw).iter().all(|e| e.tcp_backend.is_some()));
    fw.refresh(&snat).unwrap();
    assert_eq!(listed(fw), all_installed(&[&masq, &snat, &v6]));

    let udp_only = entry_v4(None, PORT);
    assert!(matches!(
        fw.install(&udp_only),
        Err(DataplaneError::KeyTaken { owner: Some(o), .. }) if o == masq.id
    ));
    let port_keyed = entry_v4(Some(40000), PORT);
    fw.install(&port_keyed).unwrap();
    assert_eq!(listed(fw), all_installed(&[&masq, &snat, &v6, &port_keyed]));

    fw.remove(&masq).unwrap();
    assert_eq!(listed(fw), all_installed(&[&snat, &v6, &port_keyed]));
    let report = fw.reconcile(&[port_keyed.id]).unwrap();
    assert_eq!(report.kept, 1);
    assert_eq!(sorted(report.removed), all_installed(&[&snat, &v6]));
    assert_eq!(listed(fw), vec![installed(&port_keyed)]);
    // The key is free again, with or without a twin.
    fw.install(&udp_only).unwrap();
    fw.remove(&udp_only).unwrap();
    fw.install(&masq).unwrap();
    assert_eq!(listed(fw), all_installed(&[&masq, &port_keyed]));
}

/// Reconcile keeps the live sessions' entries and removes (and reports) every other one, of
/// both families and both key shapes.
pub fn reconcile_keeps_live_sessions_and_drops_the_rest(fw: &mut dyn Forwarder) {
    let live = entry_v4(Some(40000), PORT);
    let dead_any = entry_v4(None, PORT + 1);
    let dead_port = entry_v4(Some(40001), PORT + 2);
    let dead_v6 = entry_v6(Some(40000), PORT);
    for e in [&live, &dead_any, &dead_port, &dead_v6] {
        fw.install(e).unwrap();
    }
    let report = fw.reconcile(&[live.id, Uuid::new_v4()]).unwrap();
    assert_eq!(report.kept, 1);
    assert_eq!(
        sorted(report.removed),
        all_installed(&[&dead_any, &dead_port, &dead_v6])
    );
    assert_eq!(listed(fw), vec![installed(&live)]);
    let report = fw.reconcile(&[]).unwrap();
    assert_eq!(
        (report.kept, sorted(report.removed)),
        (0, vec![installed(&live)])
    );
    assert!(listed(fw).is_empty());
    assert_eq!(fw.reconcile(&[]).unwrap().removed, vec![]);
}

/// Purge removes every entry of both families and reports them; purging again finds nothing.
pub fn purge_removes_everything_twice_in_a_row(fw: &mut dyn Forwarder) {
    let v4 = entry_v4(Some(40000), PORT);
    let v6 = entry_v6(None, PORT);
    fw.install(&v4).unwrap();
    fw.install(&v6).unwrap();
    let report = fw.purge().unwrap();
    let mut removed: Vec<Option<Uuid>> = report.removed.iter().map(|e| e.id).collect();
    removed.sort();
    let mut expected = vec![Some(v4.id), Some(v6.id)];
    expected.sort();
    assert_eq!(removed, expected);
    let again = fw.purge().unwrap();
    assert_eq!((again.kept, again.removed.len()), (0, 0));
    assert!(fw.list().unwrap().is_empty());
    assert!(fw.reconcile(&[]).unwrap().removed.is_empty());
}

/// Kernel backends only: after a purge an install fails saying `prepare()` is missing, and
/// works again once prepared.
pub fn install_after_purge_needs_prepare(fw: &mut dyn Forwarder) {
    let e = entry_v4(Some(40000), PORT);
    fw.purge().unwrap();
    let err = fw.install(&e).unwrap_err().to_string();
    assert!(err.contains("prepare()"), "{err}");
    assert!(fw.list().unwrap().is_empty());
    fw.prepare().unwrap();
    fw.install(&e).unwrap();
    assert_eq!(listed(fw), vec![installed(&e)]);
}

// ---------------------------------------------------------------------------------------------
// Forwarding scenarios: the kernel backends in the namespace lab

/// A kernel backend in its own lab topology.
pub trait KernelLab {
    /// The lab topology the backend runs in (its forwarders live in `topo().proxy`).
    fn topo(&self) -> &Topology;
    /// Opens a forwarder inside the proxy namespace and prepares it.
    fn open(&self) -> Box<dyn Forwarder>;
    /// The backend's own kernel objects as text, without what changes by itself (counters,
    /// time left): a refused install must leave it byte-identical.
    fn ours(&self) -> String;
    /// Only the per-session objects, as the backend's tool prints them: the `elements = { … }`
    /// of the nftables maps and sets, the `-A FASP_PROXY…` lines of iptables-save. Empty when
    /// no session has anything left.
    fn session_objects(&self) -> String;
    /// Writes, with the backend's own tool, what a TCP twin of the lab's IPv4 client on
    /// `proxy_port` to the first server's [`TCP_PORT`] would have, tagged `id`, but without
    /// the UDP half that makes it a session: a leftover.
    fn add_tcp_leftover(&self, id: Uuid, proxy_port: u16);
}

/// A UDP socket bound to `addr` inside `ns`, with read and write timeouts.
pub fn udp(ns: &Netns, addr: SocketAddr) -> UdpSocket {
    let sock = lab::udp_socket(ns, addr, WAIT);
    sock.set_write_timeout(Some(WAIT)).unwrap();
    sock
}

/// The client socket of a session, on source `port`.
pub fn client_socket(topo: &Topology, entry: &SessionEntry, port: u16) -> UdpSocket {
    udp(&topo.client, SocketAddr::new(entry.client, port))
}

/// Where the client sends a session's datagrams.
pub fn proxy_target(entry: &SessionEntry) -> SocketAddr {
    SocketAddr::new(entry.proxy_addr, entry.proxy_port)
}

/// One datagram, or `None` when the socket's read timeout passes.
pub fn recv(sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    match lab::udp_recv_from(sock, &mut buf) {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("recv_from: {e}"),
    }
}

/// Asserts that nothing arrives on `server` for [`SILENCE`].
pub fn assert_silent(server: &UdpSocket, why: &str) {
    server.set_read_timeout(Some(SILENCE)).unwrap();
    if let Some((got, from)) = recv(server) {
        panic!(
            "{why}: the server received {:?} from {from}",
            String::from_utf8_lossy(&got)
        );
    }
    server.set_read_timeout(Some(WAIT)).unwrap();
}

/// Sends `payload` from `client` to the session's proxy port and asserts the server gets it
/// from `seen_from` (the SNAT/masquerade address); then the server answers and the client must
/// get the answer from the proxy port it sent to.
pub fn round_trip(
    client: &UdpSocket,
    server: &UdpSocket,
    entry: &SessionEntry,
    payload: &[u8],
    seen_from: IpAddr,
) {
    client.send_to(payload, proxy_target(entry)).unwrap();
    let (got, from) =
        recv(server).unwrap_or_else(|| panic!("the server received nothing for {payload:?}"));
    assert_eq!(got, payload, "payload changed on the way");
    assert_eq!(from.ip(), seen_from, "the server must see the SNAT address");
    let reply = [b"reply to ".as_slice(), payload].concat();
    server.send_to(&reply, from).unwrap();
    let (got, from) = recv(client).expect("the client received no reply");
    assert_eq!(got, reply, "reply payload changed on the way");
    assert_eq!(
        from,
        proxy_target(entry),
        "the reply must come from the proxy port the client sent to"
    );
}

/// The conntrack flows (UDP) of the proxy namespace, as `conntrack -L` prints them.
pub fn conntrack_udp(ns: &Netns, v6: bool) -> String {
    let family = if v6 { "ipv6" } else { "ipv4" };
    let out = ns.try_exec(&["conntrack", "-L", "-f", family, "-p", "udp"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Masquerades both ways, keeps the flow in conntrack, and on remove stops the running flow at
/// once (its conntrack entry goes with the entry).
pub fn forwards_both_ways_and_stops_at_once_on_remove(lab: &dyn KernelLab) {
    let topo = lab.topo();
    let mut fw = lab.open();
    let entry = entry_v4(Some(40000), PORT);
    fw.install(&entry).unwrap();
    let client = client_socket(topo, &entry, 40000);
    let server = udp(topo.server(), entry.backend);
    let seen = lab::PROXY_SERVER_V4.into();
    round_trip(&client, &server, &entry, b"first datagram \x00\xff", seen);
    round_trip(&client, &server, &entry, b"second datagram", seen);
    let ct = conntrack_udp(&topo.proxy, false);
    assert!(
        ct.contains("src=192.0.2.2 dst=192.0.2.1 sport=40000 dport=33001")
            && ct.contains("src=198.51.100.2 dst=198.51.100.1 sport=33001"),
        "the DNAT'd flow is in conntrack:\n{ct}"
    );
    assert_eq!(listed(&mut *fw), vec![installed(&entry)]);

    fw.remove(&entry).unwrap();
    assert!(listed(&mut *fw).is_empty());
    let ct = conntrack_udp(&topo.proxy, false);
    assert!(
        !ct.contains("dst=198.51.100.1 sport=33001"),
        "the NAT'd flow must be gone:\n{ct}"
    );
    client.send_to(b"after", proxy_target(&entry)).unwrap();
    assert_silent(&server, "after remove the flow must stop at once");
    fw.remove(&entry).unwrap();
}

/// A datagram sent before the session existed leaves an un-NAT'd conntrack flow that would
/// shadow the session: install deletes it.
pub fn install_clears_a_stale_flow_that_would_shadow_the_session(lab: &dyn KernelLab) {
    let topo = lab.topo();
    let mut fw = lab.open();
    // Another session stays installed throughout: with iptables, while no rule of the
    // namespace needs conntrack, the kernel does not track at all (so no stale flow appears).
    fw.install(&entry_v4(Some(41000), PORT + 1)).unwrap();
    let entry = entry_v4(Some(40000), PORT);
    let client = client_socket(topo, &entry, 40000);
    let server = udp(topo.server(), entry.backend);
    client.send_to(b"too early", proxy_target(&entry)).unwrap();
    assert_silent(&server, "no session yet");
    let ct = conntrack_udp(&topo.proxy, false);
    assert!(
        ct.contains("sport=40000 dport=33001 [UNREPLIED] src=192.0.2.1 dst=192.0.2.2"),
        "an un-NAT'd flow:\n{ct}"
    );
    fw.install(&entry).unwrap();
    round_trip(
        &client,
        &server,
        &entry,
        b"now",
        lab::PROXY_SERVER_V4.into(),
    );
}

/// A port-keyed session forwards only its source port; an any-port session every port; a
/// port-keyed session of the same client wins over the any-port one, whatever the order they
/// were installed in.
pub fn source_port_filtering_and_any_port_sessions(lab: &dyn KernelLab) {
    let topo = lab.topo();
    let mut fw = lab.open();
    let server = udp(
        topo.server(),
        SocketAddr::new(lab::server_v4(0).into(), PORT),
    );
    let seen = lab::PROXY_SERVER_V4.into();

    let filtered = entry_v4(Some(40000), PORT);
    fw.install(&filtered).unwrap();
    let other_port = client_socket(topo, &filtered, 40001);
    other_port
        .send_to(b"from another port", proxy_target(&filtered))
        .unwrap();
    assert_silent(
        &server,
        "a datagram from another source port must not be forwarded",
    );
    let right_port = client_socket(topo, &filtered, 40000);
    round_trip(
        &right_port,
        &server,
        &filtered,
        b"from the session's port",
        seen,
    );
    fw.remove(&filtered).unwrap();

    // Without source-port filtering any port of the client is forwarded, also 40001 whose
    // earlier datagram left an un-NAT'd flow (install clears it).
    let any = entry_v4(None, PORT);
    fw.install(&any).unwrap();
    round_trip(&other_port, &server, &any, b"any port: 40001", seen);
    let third = client_socket(topo, &any, 40002);
    round_trip(&third, &server, &any, b"any port: 40002", seen);

    let specific = SessionEntry {
        backend: SocketAddr::new(lab::server_v4(0).into(), PORT + 1),
        tcp_backend: None,
        ..entry_v4(Some(40003), PORT)
    };
    fw.install(&specific).unwrap();
    let specific_server = udp(topo.server(), specific.backend);
    let fourth = client_socket(topo, &specific, 40003);
    round_trip(&fourth, &specific_server, &specific, b"specific", seen);
    assert_eq!(listed(&mut *fw), all_installed(&[&any, &specific]));

    // Remove finds the any-port flows without knowing their ports.
    fw.remove(&any).unwrap();
    third.send_to(b"after", proxy_target(&any)).unwrap();
    assert_silent(&server, "an any-port session still forwards after remove");
}

/// Flows of a session, one datagram from each of `count` client source ports from 10000 up.
fn make_flows(topo: &Topology, entry: &SessionEntry, count: u16) {
    let target = proxy_target(entry);
    topo.client.run_in(|| {
        for port in 10_000..10_000 + count {
            let sock = UdpSocket::bind(SocketAddr::new(entry.client, port)).unwrap();
            sock.send_to(b"flow", target).unwrap();
        }
    });
}

/// UDP conntrack entries in the proxy namespace (the lab's bridge also tracks IGMP).
fn conntrack_count(ns: &Netns) -> usize {
    ns.exec(&["conntrack", "-L", "-p", "udp"]).lines().count()
}

/// An any-port session with more flows than one netlink datagram's deletion ACKs fit in the
/// socket's receive buffer (40,000 ACKs overflow 8 MiB): `remove` and `purge` delete them all
/// (they once failed with ENOBUFS, "outcome unknown").
pub fn thousands_of_flows_are_all_deleted(lab: &dyn KernelLab) {
    const FLOWS: u16 = 40_000;
    let topo = lab.topo();
    let mut fw = lab.open();
    let entry = entry_v4(None, PORT);
    fw.install(&entry).unwrap();
    make_flows(topo, &entry, FLOWS);
    let tracked = conntrack_count(&topo.proxy);
    assert!(
        tracked >= usize::from(FLOWS),
        "only {tracked} flows tracked"
    );
    fw.remove(&entry).unwrap();
    assert_eq!(conntrack_count(&topo.proxy), 0, "remove left flows");

    fw.install(&entry).unwrap();
    make_flows(topo, &entry, FLOWS);
    assert!(conntrack_count(&topo.proxy) >= usize::from(FLOWS));
    let report = fw.purge().unwrap();
    assert_eq!(report.removed.len(), 1);
    assert_eq!(conntrack_count(&topo.proxy), 0, "purge left flows");
}

/// `bind_source_address`: the server sees the configured address.
pub fn bind_source_address_snats_to_it(lab: &dyn KernelLab) {
    let topo = lab.topo();
    topo.proxy
        .add_addr(lab::PROXY_SERVER_IF, "198.51.100.250/24");
    let mut fw = lab.open();
    let entry = SessionEntry {
        snat: Some("198.51.100.250".parse().unwrap()),
        ..entry_v4(Some(40000), PORT)
    };
    fw.install(&entry).unwrap();
    let client = client_socket(topo, &entry, 40000);
    let server = udp(topo.server(), entry.backend);
    round_trip(
        &client,
        &server,
        &entry,
        b"snat",
        "198.51.100.250".parse().unwrap(),
    );
    assert_eq!(listed(&mut *fw), vec![installed(&entry)]);
}

/// IPv6 sessions forward, filter the source port and stop on remove as IPv4 ones do.
pub fn ipv6_sessions_work_like_ipv4(lab: &dyn KernelLab) {
    let topo = lab.topo();
    let mut fw = lab.open();
    let entry = entry_v6(Some(40000), PORT);
    fw.install(&entry).unwrap();
    let client = client_socket(topo, &entry, 40000);
    let server = udp(topo.server(), entry.backend);
    round_trip(
        &client,
        &server,
        &entry,
        b"v6 one",
        lab::PROXY_SERVER_V6.into(),
    );
    let other = client_socket(topo, &entry, 40001);
    other
        .send_to(b"v6 other port", proxy_target(&entry))
        .unwrap();
    assert_silent(&server, "IPv6: another source port must not be forwarded");
    assert_eq!(listed(&mut *fw), vec![installed(&entry)]);

    fw.remove(&entry).unwrap();
    assert!(listed(&mut *fw).is_empty());
    client.send_to(b"v6 two", proxy_target(&entry)).unwrap();
    assert_silent(&server, "IPv6: after remove the flow must stop at once");
}

/// A refused install changes nothing in the kernel: the backend's objects are byte-identical,
/// and the running flow of the key's owner keeps going.
pub fn a_taken_key_leaves_the_running_flow_alone(lab: &dyn KernelLab) {
    let topo = lab.topo();
    let mut fw = lab.open();
    let first = entry_v4(Some(40000), PORT);
    fw.install(&first).unwrap();
    let client = client_socket(topo, &first, 40000);
    let server = udp(topo.server(), first.backend);
    let seen = lab::PROXY_SERVER_V4.into();
    round_trip(&client, &server, &first, b"before", seen);

    let before = lab.ours();
    let second = SessionEntry {
        backend: SocketAddr::new(lab::server_v4(0).into(), 33999),
        tcp_backend: None,
        snat: Some(lab::PROXY_SERVER_V4.into()),
        ..entry_v4(Some(40000), PORT)
    };
    assert_key_taken(fw.install(&second), &first, &second);
    assert_eq!(lab.ours(), before, "a refused install changed the kernel");
    assert!(
        conntrack_udp(&topo.proxy, false).contains("src=198.51.100.2 dst=198.51.100.1"),
        "the running flow's conntrack entry is untouched"
    );
    round_trip(&client, &server, &first, b"after the refusal", seen);
    assert_eq!(listed(&mut *fw), vec![installed(&first)]);
}

/// Tables, chains and rules of other tenants of the host, in nftables and in both families of
/// iptables (iptables-nft), which the proxy must never change.
pub fn add_foreign_rules(ns: &Netns) {
    for args in [
        "-t nat -A PREROUTING -s 203.0.113.9/32 -p tcp --dport 2222 -j DNAT --to-destination 198.51.100.2:22",
        "-t nat -N FOREIGN",
        "-t nat -A FOREIGN -s 203.0.113.0/24 -m comment --comment not-ours -j RETURN",
        "-t nat -A PREROUTING -p udp --dport 5000 -j FOREIGN",
        "-t nat -A POSTROUTING -s 203.0.113.0/24 -o br-servers -j MASQUERADE",
    ] {
        let args: Vec<&str> = args.split(' ').collect();
        ns.exec(&[&["iptables"][..], &args].concat());
    }
    for args in [
        "-t nat -A PREROUTING -s 2001:db8:9::9/128 -p tcp --dport 2222 -j DNAT --to-destination [2001:db8:2::2]:22",
        "-t nat -N FOREIGN6",
        "-t nat -A FOREIGN6 -j RETURN",
    ] {
        let args: Vec<&str> = args.split(' ').collect();
        ns.exec(&[&["ip6tables"][..], &args].concat());
    }
    ns.exec_with_stdin(
        &["nft", "-f", "-"],
        "table inet foreign {\n set s { type ipv4_addr; elements = { 198.51.100.7 } }\n \
         chain c { type filter hook input priority 0; policy accept; ip saddr @s counter packets 0 bytes 0; }\n}\n",
    );
}

/// Everything [`add_foreign_rules`] made, as text without counters and without anything of the
/// proxy's: what must stay byte-identical whatever the proxy does.
pub fn foreign(ns: &Netns) -> String {
    let mut out = String::new();
    for save in ["iptables-save", "ip6tables-save"] {
        for l in ns.exec(&[save, "-t", "nat"]).lines() {
            if l.starts_with('#') || l.contains("FASP_PROXY") {
                continue;
            }
            // `:CHAIN POLICY [packets:bytes]`: the counters move with traffic.
            let l = match l.rfind(" [") {
                Some(i) if l.starts_with(':') => &l[..i],
                _ => l,
            };
            out.push_str(l);
            out.push('\n');
        }
    }
    let table = ns.exec(&["nft", "list", "table", "inet", "foreign"]);
    out.extend(
        table
            .lines()
            .map(|l| l.split(" counter ").next().unwrap_or(l).to_owned() + "\n"),
    );
    out
}

/// After a crash (the forwarder dropped without removing anything), a new life's prepare keeps
/// every entry, reconcile drops (with their flows) what no live session owns and leaves the
/// live one forwarding, and purge removes the rest, twice in a row; nothing of other tenants
/// changes at any step.
pub fn after_a_crash_reconcile_drops_what_no_live_session_owns_and_nothing_else(
    lab: &dyn KernelLab,
) {
    let topo = lab.topo();
    add_foreign_rules(&topo.proxy);
    let foreign_before = foreign(&topo.proxy);

    let live = entry_v4(Some(40000), PORT);
    let dead_any = entry_v4(None, PORT + 1);
    let dead_port = entry_v4(Some(40001), PORT + 2);
    let dead_v6 = entry_v6(Some(40000), PORT);
    let server = udp(topo.server(), live.backend);
    let client = client_socket(topo, &live, 40000);
    let client_dead = client_socket(topo, &dead_port, 40001);
    let seen = lab::PROXY_SERVER_V4.into();
    {
        let mut fw = lab.open();
        for e in [&live, &dead_any, &dead_port, &dead_v6] {
            fw.install(e).unwrap();
        }
        round_trip(&client, &server, &live, b"live before the crash", seen);
        round_trip(
            &client_dead,
            &server,
            &dead_port,
            b"dead before the crash",
            seen,
        );
        // The process dies: the forwarder goes away, its entries and flows stay.
    }
    assert!(conntrack_udp(&topo.proxy, false).contains("dport=33003"));

    let mut fw = lab.open();
    assert_eq!(
        listed(&mut *fw),
        all_installed(&[&live, &dead_any, &dead_port, &dead_v6]),
        "prepare must not drop a previous life's entries"
    );
    let report = fw.reconcile(&[live.id]).unwrap();
    assert_eq!(report.kept, 1);
    assert_eq!(
        sorted(report.removed),
        all_installed(&[&dead_any, &dead_port, &dead_v6])
    );
    assert_eq!(listed(&mut *fw), vec![installed(&live)]);
    // The dead session's flow went with its entry; the live one still runs.
    let ct = conntrack_udp(&topo.proxy, false);
    assert!(
        !ct.contains("dport=33003"),
        "a dead session's flow is left:\n{ct}"
    );
    client_dead
        .send_to(b"dead after reconcile", proxy_target(&dead_port))
        .unwrap();
    assert_silent(&server, "a reconciled session's flow must stop");
    round_trip(&client, &server, &live, b"live after reconcile", seen);
    assert_eq!(
        foreign(&topo.proxy),
        foreign_before,
        "a foreign rule changed"
    );

    let report = fw.reconcile(&[]).unwrap();
    assert_eq!(
        (report.kept, sorted(report.removed)),
        (0, vec![installed(&live)])
    );
    let ct = conntrack_udp(&topo.proxy, false);
    assert!(
        !ct.contains("src=198.51.100.2 dst=198.51.100.1"),
        "NAT'd flows left:\n{ct}"
    );
    client
        .send_to(b"live after the last reconcile", proxy_target(&live))
        .unwrap();
    assert_silent(&server, "no session left: nothing is forwarded");

    fw.purge().unwrap();
    fw.purge().unwrap();
    assert!(fw.list().unwrap().is_empty());
    assert_eq!(
        foreign(&topo.proxy),
        foreign_before,
        "a foreign rule changed"
    );
}

// ---------------------------------------------------------------------------------------------
// TCP twins: real TCP connections through the lab

/// A TCP listener bound to `addr` inside `ns`, not blocking (see [`accept`]).
pub fn tcp_listener(ns: &Netns, addr: SocketAddr) -> TcpListener {
    let listener = ns
        .run_in(|| TcpListener::bind(addr))
        .unwrap_or_else(|e| panic!("lab: bind TCP {addr} in {}: {e}", ns.name()));
    listener.set_nonblocking(true).unwrap();
    listener
}

/// A TCP connection from `ns` to `target`, given up after 1 s; with read and write timeouts.
pub fn tcp_connect(ns: &Netns, target: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = ns.run_in(|| TcpStream::connect_timeout(&target, SILENCE))?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    Ok(stream)
}

/// The next connection on `listener` (waited for up to [`WAIT`]), blocking with timeouts.
pub fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut accepted = None;
    lab::wait_until(WAIT, || match listener.accept() {
        Ok(a) => {
            accepted = Some(a);
            true
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    });
    let (stream, from) = accepted.expect("the server accepted no connection");
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    (stream, from)
}

/// Reads exactly `n` bytes (panics on a timeout or an early end).
fn read_n(stream: &mut TcpStream, n: usize, what: &str) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream
        .read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    buf
}

/// Connects from the client to the entry's proxy address and port, and asserts that the
/// connection arrives at the TCP backend's `listener` from `seen_from` (masquerade or SNAT
/// address) and that data flows both ways. Returns both ends.
pub fn tcp_round_trip(
    topo: &Topology,
    listener: &TcpListener,
    entry: &SessionEntry,
    seen_from: IpAddr,
) -> (TcpStream, TcpStream) {
    let mut client = tcp_connect(&topo.client, proxy_target(entry))
        .unwrap_or_else(|e| panic!("TCP connect to {}: {e}", proxy_target(entry)));
    let (mut server, from) = accept(listener);
    assert_eq!(
        from.ip(),
        seen_from,
        "the TCP backend must see the SNAT address"
    );
    assert_eq!(
        server.local_addr().unwrap(),
        entry.tcp_backend.unwrap(),
        "the connection must reach the TCP backend"
    );
    let hello = b"SSH-2.0-client \x00\xff";
    client.write_all(hello).unwrap();
    assert_eq!(read_n(&mut server, hello.len(), "server read"), hello);
    let reply = b"SSH-2.0-server reply";
    server.write_all(reply).unwrap();
    assert_eq!(read_n(&mut client, reply.len(), "client read"), reply);
    (client, server)
}

/// The conntrack flows (TCP) of the proxy namespace, as `conntrack -L` prints them.
pub fn conntrack_tcp(ns: &Netns, v6: bool) -> String {
    let family = if v6 { "ipv6" } else { "ipv4" };
    let out = ns.try_exec(&["conntrack", "-L", "-f", family, "-p", "tcp"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the proxy's conntrack holds the client connection `client` (its local address) as
/// DNAT'ed to the entry's TCP backend.
pub fn tcp_flow_is_natted(topo: &Topology, entry: &SessionEntry, client: &TcpStream) -> bool {
    let local = client.local_addr().unwrap();
    let (tcp, orig) = (
        entry.tcp_backend.unwrap(),
        format!("sport={} dport={}", local.port(), entry.proxy_port),
    );
    conntrack_tcp(&topo.proxy, entry.client.is_ipv6())
        .lines()
        .any(|l| {
            l.contains(&orig)
                && l.contains(&format!("src={} ", tcp.ip()))
                && l.contains(&format!("sport={}", tcp.port()))
        })
}

/// Asserts the running connection is cut: what the client sends never reaches the server.
fn assert_tcp_silent(client: &mut TcpStream, server: &mut TcpStream, why: &str) {
    // The write may succeed locally (the proxy answers it with a reset) or fail at once.
    let _ = client.write_all(b"after");
    server.set_read_timeout(Some(SILENCE)).unwrap();
    let mut buf = [0u8; 64];
    match server.read(&mut buf) {
        Ok(n) if n > 0 => panic!(
            "{why}: the server received {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        _ => {}
    }
}

/// (a) An entry with a TCP twin: a TCP connection from the client to the proxy address and
/// port reaches the TCP backend, masqueraded (or SNAT'ed to `bind_source_address`), data flows
/// both ways, the connection is DNAT'ed in conntrack; the same entry's UDP still works; list
/// reports the TCP backend.
pub fn tcp_twin_forwards_connections_masqueraded_or_snated(lab: &dyn KernelLab) {
    let topo = lab.topo();
    topo.proxy
        .add_addr(lab::PROXY_SERVER_IF, "198.51.100.250/24");
    let mut fw = lab.open();
    let masq = tcp_entry_v4(PORT);
    let bound: IpAddr = "198.51.100.250".parse().unwrap();
    let snat = SessionEntry {
        snat: Some(bound),
        ..tcp_entry_v4(PORT + 1)
    };
    fw.install(&masq).unwrap();
    fw.install(&snat).unwrap();
    assert_eq!(listed(&mut *fw), all_installed(&[&masq, &snat]));
    assert_eq!(
        listed(&mut *fw)[0].tcp_backend,
        Some(SocketAddr::new(lab::server_v4(0).into(), TCP_PORT))
    );

    let listener = tcp_listener(topo.server(), masq.tcp_backend.unwrap());
    let seen = lab::PROXY_SERVER_V4.into();
    let (client, _server) = tcp_round_trip(topo, &listener, &masq, seen);
    assert!(
        tcp_flow_is_natted(topo, &masq, &client),
        "the DNAT'd connection is in conntrack:\n{}",
        conntrack_tcp(&topo.proxy, false)
    );
    let (_client2, _server2) = tcp_round_trip(topo, &listener, &snat, bound);

    // The same entries' UDP, from any client port.
    let udp_server = udp(topo.server(), masq.backend);
    let udp_client = client_socket(topo, &masq, 40000);
    round_trip(&udp_client, &udp_server, &masq, b"udp beside tcp", seen);
    let udp_client = client_socket(topo, &snat, 40001);
    round_trip(&udp_client, &udp_server, &snat, b"udp with snat", bound);
    // And a second connection of the same client (another source port) too.
    let (_client3, _server3) = tcp_round_trip(topo, &listener, &masq, seen);
}

/// (b) Removing an entry with a TCP twin stops its TCP at once: a new connection fails (within
/// the 1 s connect timeout), the established connection's conntrack entry is gone and what the
/// client sends on it never reaches the server; the UDP goes too.
pub fn removing_a_tcp_twin_stops_new_and_running_connections(lab: &dyn KernelLab) {
    let topo = lab.topo();
    let mut fw = lab.open();
    let entry = tcp_entry_v4(PORT);
    fw.install(&entry).unwrap();
    let listener = tcp_listener(topo.server(), entry.tcp_backend.unwrap());
    let seen = lab::PROXY_SERVER_V4.into();
    let (mut client, mut server) = tcp_round_trip(topo, &listener, &entry, seen);
    assert!(tcp_flow_is_natted(topo, &entry, &client));
    let udp_server = udp(topo.server(), entry.backend);
    let udp_client = client_socket(topo, &entry, 40000);
    round_trip(&udp_client, &udp_server, &entry, b"udp", seen);

    fw.remove(&entry).unwrap();
    assert!(listed(&mut *fw).is_empty());
    assert!(
        !tcp_flow_is_natted(topo, &entry, &client),
        "the running connection's conntrack entry must be gone:\n{}",
        conntrack_tcp(&topo.proxy, false)
    );
    assert_tcp_silent(&mut client, &mut server, "after remove");
    assert!(
        tcp_connect(&topo.client, proxy_target(&entry)).is_err(),
        "a new TCP connection must fail after remove"
    );
    udp_client.send_to(b"after", proxy_target(&entry)).unwrap();
    assert_silent(&udp_server, "after remove the UDP must stop too");
    fw.remove(&entry)
        .unwrap_or_else(|e| panic!("removing what is gone: {e}"));
}

/// (c) The IPv6 twin forwards (masqueraded to the proxy's server-side address), is listed, and
/// stops on remove, as the IPv4 one.
pub fn ipv6_tcp_twin_works_like_ipv4(lab: &dyn KernelLab) {
    let topo = lab.topo();
    let mut fw = lab.open();
    let entry = tcp_entry_v6(PORT);
    fw.install(&entry).unwrap();
    assert_eq!(listed(&mut *fw), vec![installed(&entry)]);
    let listener = tcp_listener(topo.server(), entry.tcp_backend.unwrap());
    let seen = lab::PROXY_SERVER_V6.into();
    let (mut client, mut server) = tcp_round_trip(topo, &listener, &entry, seen);
    assert!(
        tcp_flow_is_natted(topo, &entry, &client),
        "{}",
        conntrack_tcp(&topo.proxy, true)
    );
    let udp_server = udp(topo.server(), entry.backend);
    let udp_client = client_socket(topo, &entry, 40000);
    round_trip(&udp_client, &udp_server, &entry, b"v6 udp", seen);

    fw.remove(&entry).unwrap();
    assert!(listed(&mut *fw).is_empty());
    assert!(!tcp_flow_is_natted(topo, &entry, &client));
    assert_tcp_silent(&mut client, &mut server, "IPv6: after remove");
    assert!(
        tcp_connect(&topo.client, proxy_target(&entry)).is_err(),
        "IPv6: a new TCP connection must fail after remove"
    );
}

/// (d) Reconcile drops the TCP twins of the sessions it removes (with their connections'
/// conntrack entries) and a key with TCP objects only, even one tagged with a live session's
/// id; purge removes the rest; nothing of any session is left in the kernel.
pub fn reconcile_and_purge_remove_tcp_twins_and_tcp_only_leftovers(lab: &dyn KernelLab) {
    let topo = lab.topo();
    let mut fw = lab.open();
    let live = tcp_entry_v4(PORT);
    let dead = SessionEntry {
        snat: Some(lab::PROXY_SERVER_V4.into()),
        ..tcp_entry_v4(PORT + 1)
    };
    let dead_v6 = tcp_entry_v6(PORT);
    for e in [&live, &dead, &dead_v6] {
        fw.install(e).unwrap();
    }
    let listener = tcp_listener(topo.server(), live.tcp_backend.unwrap());
    let seen = lab::PROXY_SERVER_V4.into();
    let (live_client, _live_server) = tcp_round_trip(topo, &listener, &live, seen);
    let (dead_client, _dead_server) = tcp_round_trip(topo, &listener, &dead, seen);
    // 33006: a port no session uses, so its text shows only the leftover.
    let leftover_port = PORT + 5;
    lab.add_tcp_leftover(live.id, leftover_port);
    assert!(
        lab.session_objects().contains("33006"),
        "{}",
        lab.session_objects()
    );
    assert_eq!(
        listed(&mut *fw),
        all_installed(&[&live, &dead, &dead_v6]),
        "a TCP-only key is not a session"
    );

    let report = fw.reconcile(&[live.id]).unwrap();
    assert_eq!(report.kept, 1);
    assert_eq!(sorted(report.removed), all_installed(&[&dead, &dead_v6]));
    assert_eq!(listed(&mut *fw), vec![installed(&live)]);
    let objects = lab.session_objects();
    assert!(
        !objects.contains("33006") && !objects.contains("33002"),
        "reconcile left a TCP leftover or a dead session's objects:\n{objects}"
    );
    assert!(objects.contains(&live.id.to_string()), "{objects}");
    assert!(
        !tcp_flow_is_natted(topo, &dead, &dead_client),
        "a dead session's connection is left in conntrack"
    );
    assert!(tcp_flow_is_natted(topo, &live, &live_client));
    let (_c, _s) = tcp_round_trip(topo, &listener, &live, seen);

    let report = fw.reconcile(&[]).unwrap();
    assert_eq!(
        (report.kept, sorted(report.removed)),
        (0, vec![installed(&live)])
    );
    assert_eq!(lab.session_objects(), "", "reconcile left something");
    assert!(!tcp_flow_is_natted(topo, &live, &live_client));

    // Purge: twins and a leftover, of both families.
    for e in [&live, &dead_v6] {
        fw.install(e).unwrap();
    }
    lab.add_tcp_leftover(dead.id, leftover_port);
    let (client, _server) = tcp_round_trip(topo, &listener, &live, seen);
    let report = fw.purge().unwrap();
    let mut removed: Vec<_> = report.removed.iter().map(|e| e.id).collect();
    removed.sort();
    let mut expected = vec![Some(live.id), Some(dead_v6.id)];
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(lab.session_objects(), "", "purge left something");
    assert!(!tcp_flow_is_natted(topo, &live, &client));
    assert!(
        tcp_connect(&topo.client, proxy_target(&live)).is_err(),
        "after purge no TCP is forwarded"
    );
}
