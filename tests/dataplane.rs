//! The nftables data plane in the namespace lab: real kernel forwarding, read back with real
//! `nft` and `conntrack`. Every forwarder is opened inside the lab's proxy namespace and keeps
//! its netlink socket and its `nft` runs there.

mod lab;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use fasp_proxy::dataplane::nftables::NftablesForwarder;
use fasp_proxy::dataplane::{DataplaneError, Forwarder, SessionEntry};
use fasp_proxy::sysctl;
use lab::{Netns, Topology};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(3);
/// How long "nothing arrives" is watched for.
const SILENCE: Duration = Duration::from_millis(800);

fn open_in(ns: &Netns) -> NftablesForwarder {
    let mut fwd = ns
        .run_in(NftablesForwarder::open)
        .unwrap_or_else(|e| panic!("open the forwarder: {e}"));
    fwd.prepare().unwrap_or_else(|e| panic!("prepare: {e}"));
    fwd
}

fn v4_entry(client_port: Option<u16>, proxy_port: u16, backend_port: u16) -> SessionEntry {
    SessionEntry {
        id: Uuid::new_v4(),
        client: lab::CLIENT_V4.into(),
        client_port,
        proxy_addr: lab::PROXY_CLIENT_V4.into(),
        proxy_port,
        backend: SocketAddr::new(lab::server_v4(0).into(), backend_port),
        snat: None,
        lifetime: Duration::from_secs(60),
    }
}

/// A client socket on `port` and a server socket on the entry's backend.
fn sockets(topo: &Topology, entry: &SessionEntry, port: u16) -> (UdpSocket, UdpSocket) {
    let client = lab::udp_socket(&topo.client, SocketAddr::new(entry.client, port), WAIT);
    let server = lab::udp_socket(topo.server(), entry.backend, WAIT);
    (client, server)
}

fn proxy_target(entry: &SessionEntry) -> SocketAddr {
    SocketAddr::new(entry.proxy_addr, entry.proxy_port)
}

/// Sends `payload` from the client and returns what the server got (payload, seen source).
fn through(
    client: &UdpSocket,
    server: &UdpSocket,
    entry: &SessionEntry,
    payload: &[u8],
) -> Option<(Vec<u8>, SocketAddr)> {
    client.send_to(payload, proxy_target(entry)).unwrap();
    lab::try_recv(server)
}

fn silent(server: &UdpSocket) -> bool {
    server.set_read_timeout(Some(SILENCE)).unwrap();
    let got = lab::try_recv(server);
    server.set_read_timeout(Some(WAIT)).unwrap();
    got.is_none()
}

fn conntrack_udp(ns: &Netns) -> String {
    ns.try_exec(&["conntrack", "-L", "-p", "udp"])
        .stdout
        .iter()
        .map(|&b| b as char)
        .collect()
}

#[test]
fn forwards_both_ways_lists_and_stops_at_once_on_remove() {
    let topo = Topology::new(1);
    let mut fwd = open_in(&topo.proxy);
    let entry = v4_entry(Some(40000), 33001, 33001);
    let (client, server) = sockets(&topo, &entry, 40000);
    fwd.install(&entry).unwrap();

    // The kernel holds the element, with the session id as comment.
    let map = topo
        .proxy
        .exec(&["nft", "list", "map", "ip", "fasp_proxy", "sessions"]);
    assert!(map.contains("192.0.2.2 . 40000 . 33001"), "{map}");
    assert!(map.contains(&format!("comment \"{}\"", entry.id)), "{map}");
    assert!(map.contains(": 198.51.100.2 . 33001"), "{map}");
    let listed = fwd.list().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, Some(entry.id));
    assert_eq!(listed[0].key, entry.key());
    assert_eq!(listed[0].backend, entry.backend);
    assert_eq!(listed[0].snat, None);

    // Client -> proxy -> server, masqueraded to the proxy's server-side address.
    let (got, from) = through(&client, &server, &entry, b"block 0").expect("forwarded");
    assert_eq!(got, b"block 0");
    assert_eq!(from.ip(), IpAddr::from(lab::PROXY_SERVER_V4), "masquerade");
    // The reply goes back to the client, from the address it sent to.
    server.send_to(b"ack 0", from).unwrap();
    let (got, reply_from) = lab::try_recv(&client).expect("reply");
    assert_eq!(
        (got.as_slice(), reply_from),
        (&b"ack 0"[..], proxy_target(&entry))
    );
    // The flow is established in conntrack, DNAT'ed to the backend.
    let ct = conntrack_udp(&topo.proxy);
    assert!(
        ct.contains("src=192.0.2.2 dst=192.0.2.1 sport=40000 dport=33001"),
        "{ct}"
    );
    assert!(
        ct.contains("src=198.51.100.2 dst=198.51.100.1 sport=33001"),
        "{ct}"
    );

    // Remove: the running flow stops at once (its conntrack entry is gone too).
    fwd.remove(&entry).unwrap();
    assert!(
        silent(&{
            client.send_to(b"block 1", proxy_target(&entry)).unwrap();
            server
        }),
        "a removed session still forwards"
    );
    let ct = conntrack_udp(&topo.proxy);
    assert!(
        !ct.contains("dst=198.51.100.1 sport=33001"),
        "NAT'ed flow left: {ct}"
    );
    assert!(fwd.list().unwrap().is_empty());
    let map = topo
        .proxy
        .exec(&["nft", "list", "map", "ip", "fasp_proxy", "sessions"]);
    assert!(!map.contains("192.0.2.2"), "{map}");
    // Removing again is not an error.
    fwd.remove(&entry).unwrap();
}

#[test]
fn source_port_filtering_and_any_port_sessions() {
    let topo = Topology::new(1);
    let mut fwd = open_in(&topo.proxy);
    let filtered = v4_entry(Some(40000), 33001, 33001);
    let (client, server) = sockets(&topo, &filtered, 40000);
    fwd.install(&filtered).unwrap();
    let other_port = lab::udp_socket(&topo.client, SocketAddr::new(filtered.client, 40001), WAIT);
    other_port
        .send_to(b"wrong port", proxy_target(&filtered))
        .unwrap();
    assert!(
        silent(&server),
        "a datagram from another source port was forwarded"
    );
    assert!(through(&client, &server, &filtered, b"right port").is_some());

    // Without source-port filtering every source port of the client is forwarded.
    let any = v4_entry(None, 33002, 33002);
    let any_server = lab::udp_socket(topo.server(), any.backend, WAIT);
    fwd.install(&any).unwrap();
    for port in [41000, 41001] {
        let c = lab::udp_socket(&topo.client, SocketAddr::new(any.client, port), WAIT);
        let (got, _) = through(&c, &any_server, &any, b"any").expect("any-port session forwards");
        assert_eq!(got, b"any");
    }
    let map = topo.proxy.exec(&[
        "nft",
        "list",
        "map",
        "ip",
        "fasp_proxy",
        "sessions_any_port",
    ]);
    assert!(map.contains("192.0.2.2 . 33002"), "{map}");
    // Remove finds the any-port flows without knowing their ports.
    fwd.remove(&any).unwrap();
    let c = lab::udp_socket(&topo.client, SocketAddr::new(any.client, 41000), WAIT);
    c.send_to(b"after", proxy_target(&any)).unwrap();
    assert!(
        silent(&any_server),
        "any-port session still forwards after remove"
    );
}

#[test]
fn bind_source_address_snat() {
    let topo = Topology::new(1);
    topo.proxy
        .add_addr(lab::PROXY_SERVER_IF, "198.51.100.250/24");
    let mut fwd = open_in(&topo.proxy);
    let mut entry = v4_entry(Some(40000), 33001, 33001);
    entry.snat = Some("198.51.100.250".parse().unwrap());
    let (client, server) = sockets(&topo, &entry, 40000);
    fwd.install(&entry).unwrap();
    let (_, from) = through(&client, &server, &entry, b"x").expect("forwarded");
    assert_eq!(
        from.ip(),
        entry.snat.unwrap(),
        "SNAT to bind_source_address"
    );
    assert_eq!(fwd.list().unwrap()[0].snat, entry.snat);
    server.send_to(b"y", from).unwrap();
    assert!(lab::try_recv(&client).is_some(), "reply through SNAT");
}

#[test]
fn ipv6_sessions_work_like_ipv4() {
    let topo = Topology::new(1);
    let mut fwd = open_in(&topo.proxy);
    let entry = SessionEntry {
        id: Uuid::new_v4(),
        client: lab::CLIENT_V6.into(),
        client_port: Some(40000),
        proxy_addr: lab::PROXY_CLIENT_V6.into(),
        proxy_port: 33001,
        backend: SocketAddr::new(lab::server_v6(0).into(), 33001),
        snat: None,
        lifetime: Duration::from_secs(60),
    };
    let (client, server) = sockets(&topo, &entry, 40000);
    fwd.install(&entry).unwrap();
    let map = topo
        .proxy
        .exec(&["nft", "list", "map", "ip6", "fasp_proxy", "sessions"]);
    assert!(map.contains("2001:db8:1::2 . 40000 . 33001"), "{map}");
    let (got, from) = through(&client, &server, &entry, b"v6").expect("forwarded");
    assert_eq!(
        (got.as_slice(), from.ip()),
        (&b"v6"[..], IpAddr::from(lab::PROXY_SERVER_V6))
    );
    server.send_to(b"v6 ack", from).unwrap();
    assert_eq!(
        lab::try_recv(&client).map(|(_, f)| f),
        Some(proxy_target(&entry))
    );
    fwd.remove(&entry).unwrap();
    client.send_to(b"after", proxy_target(&entry)).unwrap();
    assert!(silent(&server), "IPv6 session still forwards after remove");
}

#[test]
fn lifetime_runs_out_unless_refreshed() {
    let topo = Topology::new(1);
    let mut fwd = open_in(&topo.proxy);
    if !fwd.refreshes_in_place() {
        // Before Linux 6.12 re-adding an element does not restart its timer: prepare() found
        // that out, and both refreshes below use delete + add.
        eprintln!("note: this kernel cannot refresh in place; only delete + add is tested");
    }
    let short = |port| SessionEntry {
        lifetime: Duration::from_secs(2),
        ..v4_entry(Some(port), 33001, 33001)
    };
    let (left_alone, refreshed_in_place, refreshed_by_readd) =
        (short(40000), short(40001), short(40002));
    for e in [&left_alone, &refreshed_in_place, &refreshed_by_readd] {
        fwd.install(e).unwrap();
    }
    // Refresh two of them every 400 ms for 3.2 s: one in place, one by delete + add (the path
    // for kernels older than 6.12).
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(400));
        fwd.refresh(&refreshed_in_place).unwrap();
        fwd.force_delete_add_refresh(true);
        fwd.refresh(&refreshed_by_readd).unwrap();
        fwd.force_delete_add_refresh(false);
    }
    let ids: Vec<_> = fwd
        .list()
        .unwrap()
        .into_iter()
        .filter_map(|e| e.id)
        .collect();
    assert!(
        !ids.contains(&left_alone.id),
        "an expired element is still there"
    );
    assert!(
        ids.contains(&refreshed_in_place.id),
        "refresh in place did not extend the lifetime"
    );
    assert!(
        ids.contains(&refreshed_by_readd.id),
        "refresh by re-add did not extend the lifetime"
    );
    let map = topo
        .proxy
        .exec(&["nft", "list", "map", "ip", "fasp_proxy", "sessions"]);
    assert!(!map.contains("40000"), "{map}");
    let masq = topo
        .proxy
        .exec(&["nft", "list", "set", "ip", "fasp_proxy", "masq_sessions"]);
    assert!(!masq.contains("40000") && masq.contains("40001"), "{masq}");
}

#[test]
fn a_taken_key_is_refused_and_the_existing_entry_untouched() {
    let topo = Topology::new(1);
    let mut fwd = open_in(&topo.proxy);
    let first = v4_entry(Some(40000), 33001, 33001);
    fwd.install(&first).unwrap();
    let mut second = v4_entry(Some(40000), 33001, 33009);
    second.snat = Some(lab::PROXY_SERVER_V4.into());
    match fwd.install(&second) {
        Err(DataplaneError::KeyTaken { id, owner, .. }) => {
            assert_eq!((id, owner), (second.id, Some(first.id)));
        }
        other => panic!("expected KeyTaken, got {other:?}"),
    }
    let listed = fwd.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id, listed[0].backend, listed[0].snat),
        (Some(first.id), first.backend, None)
    );
    // A malformed entry is refused before the kernel is asked.
    let mut bad = v4_entry(Some(40001), 33001, 33001);
    bad.backend = SocketAddr::new(lab::server_v6(0).into(), 33001);
    assert!(matches!(
        fwd.install(&bad),
        Err(DataplaneError::InvalidEntry { .. })
    ));
    assert_eq!(fwd.list().unwrap().len(), 1);
}

#[test]
fn install_clears_a_stale_flow_that_would_shadow_the_session() {
    let topo = Topology::new(1);
    let mut fwd = open_in(&topo.proxy);
    let entry = v4_entry(Some(40000), 33001, 33001);
    let (client, server) = sockets(&topo, &entry, 40000);
    // Before the session exists: the datagram makes an un-NAT'ed conntrack entry.
    client.send_to(b"too early", proxy_target(&entry)).unwrap();
    assert!(silent(&server));
    let ct = conntrack_udp(&topo.proxy);
    assert!(
        ct.contains("sport=40000 dport=33001"),
        "no stale flow was created: {ct}"
    );
    fwd.install(&entry).unwrap();
    let (got, _) =
        through(&client, &server, &entry, b"now").expect("the stale flow shadowed the session");
    assert_eq!(got, b"now");
}

/// What a test-created foreign ruleset looks like, to compare before and after.
fn foreign_state(ns: &Netns) -> (String, String, String) {
    (
        ns.exec(&["nft", "list", "table", "ip", "nat"]),
        ns.exec(&["nft", "list", "table", "inet", "foreign"]),
        ns.exec(&["iptables-save", "-t", "nat"])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

#[test]
fn after_a_crash_reconcile_and_purge_leave_foreign_tables_byte_identical() {
    let topo = Topology::new(1);
    // Tenants of the same host: an iptables-nft NAT rule and a native nft table.
    topo.proxy.exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-s",
        "203.0.113.9/32",
        "-p",
        "tcp",
        "--dport",
        "2222",
        "-j",
        "DNAT",
        "--to-destination",
        "198.51.100.2:22",
    ]);
    topo.proxy.exec_with_stdin(
        &["nft", "-f", "-"],
        "table inet foreign {\n set s { type ipv4_addr; elements = { 198.51.100.7 } }\n \
         chain c { type filter hook input priority 0; policy accept; ip saddr @s counter; }\n}\n",
    );
    let before = foreign_state(&topo.proxy);

    let entries: Vec<SessionEntry> = (0..3)
        .map(|i| v4_entry(Some(40000 + i), 33001, 33001))
        .collect();
    {
        let mut fwd = open_in(&topo.proxy);
        let server = lab::udp_socket(topo.server(), entries[0].backend, WAIT);
        for e in &entries {
            fwd.install(e).unwrap();
            let c = lab::udp_socket(
                &topo.client,
                SocketAddr::new(e.client, e.client_port.unwrap()),
                WAIT,
            );
            assert!(through(&c, &server, e, b"flow").is_some());
        }
        // The process dies: the forwarder goes away without removing anything.
        drop(fwd);
    }
    assert!(conntrack_udp(&topo.proxy).contains("dport=33001"));

    // The restarted proxy: prepare keeps the elements, reconcile with no live session drops
    // them and their flows.
    let mut fwd = open_in(&topo.proxy);
    assert_eq!(
        fwd.list().unwrap().len(),
        3,
        "prepare must not drop a previous life's entries"
    );
    let report = fwd.reconcile(&[]).unwrap();
    assert_eq!((report.kept, report.removed.len()), (0, 3));
    assert!(fwd.list().unwrap().is_empty());
    let table = topo
        .proxy
        .exec(&["nft", "list", "table", "ip", "fasp_proxy"]);
    assert!(!table.contains("192.0.2.2"), "elements left: {table}");
    let ct = conntrack_udp(&topo.proxy);
    assert!(!ct.contains("dport=33001"), "flows left: {ct}");
    assert_eq!(
        before,
        foreign_state(&topo.proxy),
        "a foreign table changed"
    );

    // A live session survives reconcile.
    let live = v4_entry(Some(40009), 33001, 33001);
    fwd.install(&live).unwrap();
    fwd.install(&entries[0]).unwrap();
    let report = fwd.reconcile(&[live.id]).unwrap();
    assert_eq!((report.kept, report.removed.len()), (1, 1));
    assert_eq!(report.removed[0].id, Some(entries[0].id));

    // Purge removes everything of ours, twice in a row.
    fwd.purge().unwrap();
    fwd.purge().unwrap();
    let tables = topo.proxy.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("fasp_proxy"), "{tables}");
    assert_eq!(
        before,
        foreign_state(&topo.proxy),
        "a foreign table changed"
    );
}

#[test]
fn prepare_is_idempotent() {
    let topo = Topology::new(1);
    let mut fwd = open_in(&topo.proxy);
    let first = topo
        .proxy
        .exec(&["nft", "list", "table", "ip", "fasp_proxy"]);
    fwd.prepare().unwrap();
    assert_eq!(
        first,
        topo.proxy
            .exec(&["nft", "list", "table", "ip", "fasp_proxy"])
    );
    assert!(
        first.contains("dnat ip to ip saddr . udp sport . udp dport map @sessions"),
        "{first}"
    );
}

#[test]
fn ip_forwarding_off_fails_loudly_unless_the_config_allows_turning_it_on() {
    let topo = Topology::new(1);
    topo.proxy.sysctl("net.ipv4.ip_forward", "0");
    let err = topo
        .proxy
        .run_in(|| sysctl::ensure_forwarding(true, false, false))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("net.ipv4.ip_forward is 0") && err.contains("enable_ip_forwarding"),
        "{err}"
    );
    assert_eq!(topo.proxy.sysctl_get("net.ipv4.ip_forward"), "0");
    let changed = topo
        .proxy
        .run_in(|| sysctl::ensure_forwarding(true, false, true))
        .unwrap();
    assert_eq!(changed, vec!["net.ipv4.ip_forward set to 1".to_string()]);
    assert_eq!(topo.proxy.sysctl_get("net.ipv4.ip_forward"), "1");
    assert!(topo
        .proxy
        .run_in(|| sysctl::ensure_forwarding(true, true, false))
        .unwrap()
        .is_empty());
}

#[test]
fn purge_command_removes_everything_of_ours_in_its_namespace() {
    let topo = Topology::new(1);
    let mut fwd = open_in(&topo.proxy);
    fwd.install(&v4_entry(Some(40000), 33001, 33001)).unwrap();
    fwd.install(&v4_entry(None, 33002, 33002)).unwrap();
    let out = topo.proxy.exec(&[
        env!("CARGO_BIN_EXE_fasp-proxy"),
        "--config",
        "/nonexistent/aspera.conf",
        "purge",
    ]);
    assert!(out.contains("nftables: removed 2 session entries"), "{out}");
    assert!(out.contains("iptables: removed 0 session entries"), "{out}");
    let tables = topo.proxy.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("fasp_proxy"), "{tables}");
    // Twice is fine.
    let out = topo.proxy.exec(&[
        env!("CARGO_BIN_EXE_fasp-proxy"),
        "--config",
        "/nonexistent",
        "purge",
    ]);
    assert!(out.contains("nftables: removed 0 session entries"), "{out}");
}

#[test]
fn install_without_prepare_says_what_is_missing() {
    let topo = Topology::new(1);
    let mut fwd = topo.proxy.run_in(NftablesForwarder::open).unwrap();
    let err = fwd
        .install(&v4_entry(Some(40000), 33001, 33001))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("table ip fasp_proxy is missing; prepare() creates it"),
        "{err}"
    );
}
