//! The data plane's behaviour, written once over `&mut dyn Forwarder`.
//!
//! Two kinds of scenario:
//! - bookkeeping (keys, list, remove, reconcile, purge), which needs no traffic: run against
//!   both kernel backends in the lab and against `MemoryForwarder` without root, which checks
//!   that the fake keeps the real backends' promises;
//! - forwarding, which sends datagrams through the lab (client → proxy → server and back): run
//!   against both kernel backends, each in its own lab namespace, through a [`KernelLab`].
//!
//! Lab quirks (docs/testing.md): NAT is decided on a flow's first packet, so every session is
//! installed before its first datagram; reads use `lab::udp_recv_from` (retries on EINTR) and
//! socket timeouts, so nothing hangs.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
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
