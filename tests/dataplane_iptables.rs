//! The iptables data plane in the namespace lab: real kernel forwarding through rules written
//! with `iptables-restore --noflush`, read back with real `iptables`, `iptables-save` and
//! `conntrack`.
//!
//! Every forwarder is opened inside the lab's proxy namespace (`run_in`) and then driven from
//! the test's own thread, which lives in the machine's namespace: this also proves that the
//! forwarder runs its commands in the namespace it was opened in.
//!
//! Lab quirks (docs/testing.md): NAT is decided on a flow's first packet, so every session is
//! installed before its first datagram; reads use `lab::udp_recv_from` (retries on EINTR) and
//! socket timeouts, so nothing hangs.

mod lab;

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use fasp_proxy::dataplane::iptables::IptablesForwarder;
use fasp_proxy::dataplane::{Backend, DataplaneError, Forwarder, InstalledEntry, SessionEntry};
use lab::{Netns, Topology};
use uuid::Uuid;

const IPTABLES: &str = "/usr/sbin/iptables";
const PORT: u16 = 33001;
/// How long a datagram that should arrive is waited for.
const WAIT: Duration = Duration::from_secs(3);
/// How long "nothing arrives" is watched for.
const SILENCE: Duration = Duration::from_secs(1);

/// Opens a forwarder inside the proxy namespace and prepares it.
fn open(topo: &Topology) -> IptablesForwarder {
    let mut fw = topo
        .proxy
        .run_in(|| IptablesForwarder::open(Path::new(IPTABLES)))
        .unwrap_or_else(|e| panic!("opening the iptables forwarder: {e}"));
    fw.prepare().unwrap_or_else(|e| panic!("prepare: {e}"));
    fw
}

fn entry_v4(client_port: Option<u16>, proxy_port: u16) -> SessionEntry {
    SessionEntry {
        id: Uuid::new_v4(),
        client: lab::CLIENT_V4.into(),
        client_port,
        proxy_addr: lab::PROXY_CLIENT_V4.into(),
        proxy_port,
        backend: SocketAddr::new(lab::server_v4(0).into(), PORT),
        snat: None,
        lifetime: Duration::from_secs(60),
    }
}

fn entry_v6(client_port: Option<u16>, proxy_port: u16) -> SessionEntry {
    SessionEntry {
        client: lab::CLIENT_V6.into(),
        proxy_addr: lab::PROXY_CLIENT_V6.into(),
        backend: SocketAddr::new(lab::server_v6(0).into(), PORT),
        ..entry_v4(client_port, proxy_port)
    }
}

/// A UDP socket bound to `addr` inside `ns`, with read and write timeouts.
fn udp(ns: &Netns, addr: SocketAddr) -> UdpSocket {
    let sock = ns
        .run_in(|| UdpSocket::bind(addr))
        .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.name()));
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.set_write_timeout(Some(WAIT)).unwrap();
    sock
}

/// The client socket a session expects: its address, `port`.
fn client_socket(topo: &Topology, entry: &SessionEntry, port: u16) -> UdpSocket {
    udp(&topo.client, SocketAddr::new(entry.client, port))
}

fn proxy_target(entry: &SessionEntry) -> SocketAddr {
    SocketAddr::new(entry.proxy_addr, entry.proxy_port)
}

/// One datagram, or `None` when the socket's read timeout passes.
fn recv(sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    match lab::udp_recv_from(sock, &mut buf) {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("recv_from: {e}"),
    }
}

/// Asserts that nothing arrives on `server` for [`SILENCE`].
fn assert_silent(server: &UdpSocket, why: &str) {
    server.set_read_timeout(Some(SILENCE)).unwrap();
    if let Some((got, from)) = recv(server) {
        panic!(
            "{why}: the server received {:?} from {from}",
            String::from_utf8_lossy(&got)
        );
    }
    server.set_read_timeout(Some(WAIT)).unwrap();
}

/// Sends `payload` from `client` to the session's proxy port and asserts the server gets it,
/// from `seen_from`'s address (the SNAT/masquerade address); then the server answers and the
/// client must get the answer from the proxy port. Returns the source the server saw.
fn round_trip(
    client: &UdpSocket,
    server: &UdpSocket,
    entry: &SessionEntry,
    payload: &[u8],
    seen_from: IpAddr,
) -> SocketAddr {
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
    from
}

fn tool(v6: bool, name: &str) -> String {
    if v6 {
        format!("/usr/sbin/ip6{name}")
    } else {
        format!("/usr/sbin/ip{name}")
    }
}

/// `iptables-save -t nat` (or ip6tables-save) inside the proxy namespace.
fn save(ns: &Netns, v6: bool) -> String {
    ns.exec(&[&tool(v6, "tables-save"), "-t", "nat"])
}

/// Our rule lines (`-A FASP_PROXY…`), as `iptables-save` prints them.
fn our_rules(ns: &Netns, v6: bool) -> Vec<String> {
    save(ns, v6)
        .lines()
        .filter(|l| l.starts_with("-A FASP_PROXY"))
        .map(str::to_owned)
        .collect()
}

/// `iptables-save -t nat` without comments, counters and everything the proxy owns: what must
/// stay byte-identical whatever the proxy does.
fn foreign(ns: &Netns, v6: bool) -> String {
    save(ns, v6)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("FASP_PROXY"))
        .map(|l| match l.rfind(" [") {
            Some(i) if l.starts_with(':') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Adds rules and a chain the proxy does not own, in both families.
fn add_foreign_rules(ns: &Netns) {
    for args in [
        "-t nat -A PREROUTING -s 203.0.113.9/32 -p tcp --dport 2222 -j DNAT --to-destination 198.51.100.2:22",
        "-t nat -N FOREIGN",
        "-t nat -A FOREIGN -s 203.0.113.0/24 -m comment --comment not-ours -j RETURN",
        "-t nat -A PREROUTING -p udp --dport 5000 -j FOREIGN",
        "-t nat -A POSTROUTING -s 203.0.113.0/24 -o br-servers -j MASQUERADE",
    ] {
        let args: Vec<&str> = args.split(' ').collect();
        ns.exec(&[&[IPTABLES][..], &args].concat());
    }
    for args in [
        "-t nat -A PREROUTING -s 2001:db8:9::9/128 -p tcp --dport 2222 -j DNAT --to-destination [2001:db8:2::2]:22",
        "-t nat -N FOREIGN6",
        "-t nat -A FOREIGN6 -j RETURN",
    ] {
        let args: Vec<&str> = args.split(' ').collect();
        ns.exec(&[&["/usr/sbin/ip6tables"][..], &args].concat());
    }
}

/// The line of `iptables -t nat -L -n` (or ip6tables) showing the session's DNAT rule, split
/// into words.
fn listed_dnat(ns: &Netns, v6: bool, id: Uuid) -> Vec<String> {
    let listing = ns.exec(&[&tool(v6, "tables"), "-t", "nat", "-L", "-n"]);
    let lines: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("DNAT") && l.contains(&id.to_string()))
        .collect();
    assert_eq!(lines.len(), 1, "one DNAT line for {id} in:\n{listing}");
    lines[0].split_whitespace().map(str::to_owned).collect()
}

/// `iptables -t nat -L -n` prints the protocol as `udp` before v1.8.9 and as `17` from it on.
fn assert_dnat_shape(words: &[String], expected: &[&str]) {
    assert_eq!(words.len(), expected.len(), "{words:?}");
    for (i, (w, e)) in words.iter().zip(expected).enumerate() {
        if i == 1 {
            assert!(
                w == "udp" || w == "17",
                "protocol column {w:?} in {words:?}"
            );
        } else {
            assert_eq!(w, e, "word {i} of {words:?}");
        }
    }
}

fn installed(entry: &SessionEntry) -> InstalledEntry {
    InstalledEntry {
        id: Some(entry.id),
        key: entry.key(),
        backend: entry.backend,
        snat: entry.snat,
        expires: None,
    }
}

/// The conntrack flows (UDP) of the proxy namespace, as `conntrack -L` prints them.
fn conntrack_udp(ns: &Netns, v6: bool) -> String {
    let family = if v6 { "ipv6" } else { "ipv4" };
    let out = ns.try_exec(&["conntrack", "-L", "-f", family, "-p", "udp"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn forwards_both_ways_with_masquerade_and_lists_in_the_documented_shape() {
    let topo = Topology::new(1);
    let mut fw = open(&topo);
    assert_eq!(fw.kind(), Backend::Iptables);
    let entry = entry_v4(Some(40000), PORT);
    fw.install(&entry).unwrap();

    // Exactly the rules the module documents, as iptables-save prints them.
    let id = entry.id;
    assert_eq!(
        our_rules(&topo.proxy, false),
        vec![
            format!("-A FASP_PROXY -s 192.0.2.2/32 -p udp -m udp --sport 40000 --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment {id} -j DNAT --to-destination 198.51.100.2:33001"),
            format!("-A FASP_PROXY_POST -s 192.0.2.2/32 -d 198.51.100.2/32 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigsrcport 40000 --ctorigdstport 33001 -m comment --comment {id} -j MASQUERADE"),
        ]
    );
    let saved = save(&topo.proxy, false);
    for jump in [
        "-A PREROUTING -j FASP_PROXY",
        "-A POSTROUTING -j FASP_PROXY_POST",
    ] {
        assert_eq!(
            saved.lines().filter(|l| *l == jump).count(),
            1,
            "{jump} in:\n{saved}"
        );
    }
    assert_dnat_shape(
        &listed_dnat(&topo.proxy, false, id),
        &[
            "DNAT",
            "udp",
            "--",
            "192.0.2.2",
            "0.0.0.0/0",
            "udp",
            "spt:40000",
            "dpt:33001",
            "ADDRTYPE",
            "match",
            "dst-type",
            "LOCAL",
            "/*",
            &id.to_string(),
            "*/",
            "to:198.51.100.2:33001",
        ],
    );

    let client = client_socket(&topo, &entry, 40000);
    let server = udp(topo.server(), entry.backend);
    let seen = lab::PROXY_SERVER_V4.into();
    round_trip(&client, &server, &entry, b"first datagram \x00\xff", seen);
    round_trip(&client, &server, &entry, b"second datagram", seen);

    assert_eq!(fw.list().unwrap(), vec![installed(&entry)]);
    fw.refresh(&entry).unwrap();

    // prepare again: nothing duplicated, nothing dropped (declaring an existing chain in an
    // iptables-restore --noflush batch would flush it).
    let before = save(&topo.proxy, false);
    fw.prepare().unwrap();
    let strip = |s: &str| -> String { s.lines().filter(|l| !l.starts_with('#')).collect() };
    assert_eq!(strip(&save(&topo.proxy, false)), strip(&before));
    round_trip(&client, &server, &entry, b"after a second prepare", seen);
}

#[test]
fn bind_source_address_snats_to_it() {
    let topo = Topology::new(1);
    topo.proxy
        .add_addr(lab::PROXY_SERVER_IF, "198.51.100.10/24");
    let mut fw = open(&topo);
    let mut entry = entry_v4(Some(40000), PORT);
    entry.snat = Some("198.51.100.10".parse().unwrap());
    fw.install(&entry).unwrap();
    let client = client_socket(&topo, &entry, 40000);
    let server = udp(topo.server(), entry.backend);
    round_trip(
        &client,
        &server,
        &entry,
        b"snat",
        "198.51.100.10".parse().unwrap(),
    );
    assert_eq!(fw.list().unwrap(), vec![installed(&entry)]);
}

#[test]
fn remove_stops_an_established_flow_at_once_and_install_clears_the_stale_flow() {
    let topo = Topology::new(1);
    let mut fw = open(&topo);
    // Another session stays installed throughout: while no rule of the namespace needs
    // conntrack, the kernel does not track at all (so no stale flow could appear).
    let bystander = entry_v4(Some(41000), PORT + 1);
    fw.install(&bystander).unwrap();
    let entry = entry_v4(Some(40000), PORT);
    fw.install(&entry).unwrap();
    let client = client_socket(&topo, &entry, 40000);
    let server = udp(topo.server(), entry.backend);
    let seen = lab::PROXY_SERVER_V4.into();
    round_trip(&client, &server, &entry, b"one", seen);
    round_trip(&client, &server, &entry, b"one more", seen);
    let ct = conntrack_udp(&topo.proxy, false);
    assert!(
        ct.contains("sport=40000 dport=33001 src=198.51.100.2 dst=198.51.100.1"),
        "the DNAT'd flow is in conntrack:\n{ct}"
    );

    fw.remove(&entry).unwrap();
    assert_eq!(fw.list().unwrap(), vec![installed(&bystander)]);
    assert!(!save(&topo.proxy, false).contains(&entry.id.to_string()));
    let ct = conntrack_udp(&topo.proxy, false);
    assert!(
        !ct.contains("sport=40000"),
        "the flow's conntrack entry must be gone:\n{ct}"
    );
    // Removing what is gone is not an error.
    fw.remove(&entry).unwrap();
    client.send_to(b"two", proxy_target(&entry)).unwrap();
    assert_silent(&server, "after remove the flow must stop at once");

    // "two" left an un-NATed flow behind, which would shadow a new session of the same tuple:
    // install deletes it.
    let ct = conntrack_udp(&topo.proxy, false);
    assert!(
        ct.contains("sport=40000 dport=33001 [UNREPLIED] src=192.0.2.1 dst=192.0.2.2"),
        "an un-NATed flow:\n{ct}"
    );
    fw.install(&entry).unwrap();
    round_trip(&client, &server, &entry, b"three", seen);
}

#[test]
fn source_port_filtering_and_any_port_sessions() {
    let topo = Topology::new(1);
    let mut fw = open(&topo);
    let server = udp(
        topo.server(),
        SocketAddr::new(lab::server_v4(0).into(), PORT),
    );
    let seen = lab::PROXY_SERVER_V4.into();

    let filtered = entry_v4(Some(40000), PORT);
    fw.install(&filtered).unwrap();
    let other_port = client_socket(&topo, &filtered, 40001);
    other_port
        .send_to(b"from another port", proxy_target(&filtered))
        .unwrap();
    assert_silent(
        &server,
        "a datagram from another source port must not be forwarded",
    );
    let right_port = client_socket(&topo, &filtered, 40000);
    round_trip(
        &right_port,
        &server,
        &filtered,
        b"from the session's port",
        seen,
    );
    fw.remove(&filtered).unwrap();

    // Without source-port filtering any port of the client is forwarded, also 40001 whose
    // earlier datagram left an un-NATed flow (install clears it).
    let any = entry_v4(None, PORT);
    fw.install(&any).unwrap();
    assert_dnat_shape(
        &listed_dnat(&topo.proxy, false, any.id),
        &[
            "DNAT",
            "udp",
            "--",
            "192.0.2.2",
            "0.0.0.0/0",
            "udp",
            "dpt:33001",
            "ADDRTYPE",
            "match",
            "dst-type",
            "LOCAL",
            "/*",
            &any.id.to_string(),
            "*/",
            "to:198.51.100.2:33001",
        ],
    );
    round_trip(&other_port, &server, &any, b"any port: 40001", seen);
    let third = client_socket(&topo, &any, 40002);
    round_trip(&third, &server, &any, b"any port: 40002", seen);

    // A port-keyed session of the same client wins over the any-port one, though installed
    // after it: it goes to another backend port.
    let specific = SessionEntry {
        backend: SocketAddr::new(lab::server_v4(0).into(), PORT + 1),
        ..entry_v4(Some(40003), PORT)
    };
    fw.install(&specific).unwrap();
    let specific_server = udp(topo.server(), specific.backend);
    let fourth = client_socket(&topo, &specific, 40003);
    round_trip(&fourth, &specific_server, &specific, b"specific", seen);
    let mut listed = fw.list().unwrap();
    listed.sort_by_key(|e| e.key);
    let mut expected = vec![installed(&any), installed(&specific)];
    expected.sort_by_key(|e| e.key);
    assert_eq!(listed, expected);
}

#[test]
fn ipv6_sessions_work_like_ipv4() {
    let topo = Topology::new(1);
    let mut fw = open(&topo);
    let entry = entry_v6(Some(40000), PORT);
    fw.install(&entry).unwrap();
    let id = entry.id;
    assert_eq!(
        our_rules(&topo.proxy, true),
        vec![
            format!("-A FASP_PROXY -s 2001:db8:1::2/128 -p udp -m udp --sport 40000 --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment {id} -j DNAT --to-destination [2001:db8:2::2]:33001"),
            format!("-A FASP_PROXY_POST -s 2001:db8:1::2/128 -d 2001:db8:2::2/128 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigsrcport 40000 --ctorigdstport 33001 -m comment --comment {id} -j MASQUERADE"),
        ]
    );
    assert!(
        our_rules(&topo.proxy, false).is_empty(),
        "nothing in the IPv4 table"
    );
    assert_dnat_shape(
        &listed_dnat(&topo.proxy, true, id),
        &[
            "DNAT",
            "udp",
            "--",
            "2001:db8:1::2",
            "::/0",
            "udp",
            "spt:40000",
            "dpt:33001",
            "ADDRTYPE",
            "match",
            "dst-type",
            "LOCAL",
            "/*",
            &id.to_string(),
            "*/",
            "to:[2001:db8:2::2]:33001",
        ],
    );

    let client = client_socket(&topo, &entry, 40000);
    let server = udp(topo.server(), entry.backend);
    let seen = lab::PROXY_SERVER_V6.into();
    round_trip(&client, &server, &entry, b"v6 one", seen);
    let other = client_socket(&topo, &entry, 40001);
    other
        .send_to(b"v6 other port", proxy_target(&entry))
        .unwrap();
    assert_silent(&server, "IPv6: another source port must not be forwarded");
    assert_eq!(fw.list().unwrap(), vec![installed(&entry)]);

    fw.remove(&entry).unwrap();
    assert!(our_rules(&topo.proxy, true).is_empty());
    client.send_to(b"v6 two", proxy_target(&entry)).unwrap();
    assert_silent(&server, "IPv6: after remove the flow must stop at once");
}

#[test]
fn a_taken_key_is_refused_and_the_existing_rule_untouched() {
    let topo = Topology::new(1);
    let mut fw = open(&topo);
    let first = entry_v4(Some(40000), PORT);
    fw.install(&first).unwrap();
    let client = client_socket(&topo, &first, 40000);
    let server = udp(topo.server(), first.backend);
    let seen = lab::PROXY_SERVER_V4.into();
    round_trip(&client, &server, &first, b"before", seen);

    let before = (save(&topo.proxy, false), conntrack_udp(&topo.proxy, false));
    let second = SessionEntry {
        backend: SocketAddr::new(lab::server_v4(0).into(), 33999),
        ..entry_v4(Some(40000), PORT)
    };
    let err = fw.install(&second).unwrap_err();
    match &err {
        DataplaneError::KeyTaken { id, key, owner } => {
            assert_eq!(*id, second.id);
            assert_eq!(*key, first.key());
            assert_eq!(*owner, Some(first.id));
        }
        other => panic!("expected KeyTaken, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&first.id.to_string()) && msg.contains("192.0.2.2 port 40000"),
        "{msg}"
    );
    let strip = |s: &str| -> String { s.lines().filter(|l| !l.starts_with('#')).collect() };
    assert_eq!(strip(&save(&topo.proxy, false)), strip(&before.0));
    assert!(
        conntrack_udp(&topo.proxy, false).contains("src=198.51.100.2 dst=198.51.100.1"),
        "the running flow's conntrack entry is untouched"
    );
    round_trip(&client, &server, &first, b"after the refusal", seen);
    assert_eq!(fw.list().unwrap(), vec![installed(&first)]);

    // Invalid entries are refused before anything is looked at.
    let bad = SessionEntry {
        backend: SocketAddr::new(lab::server_v6(0).into(), PORT),
        ..entry_v4(Some(40001), PORT)
    };
    assert!(matches!(
        fw.install(&bad),
        Err(DataplaneError::InvalidEntry { .. })
    ));
}

#[test]
fn after_a_crash_reconcile_drops_what_no_live_session_owns_and_nothing_else() {
    let topo = Topology::new(1);
    add_foreign_rules(&topo.proxy);
    let foreign_before = (foreign(&topo.proxy, false), foreign(&topo.proxy, true));

    let live = entry_v4(Some(40000), PORT);
    let dead_any = entry_v4(None, PORT + 1);
    let dead_port = entry_v4(Some(40001), PORT + 2);
    let dead_v6 = entry_v6(Some(40000), PORT);
    let server = udp(topo.server(), live.backend);
    let client = client_socket(&topo, &live, 40000);
    let client_dead = client_socket(&topo, &dead_port, 40001);
    let seen = lab::PROXY_SERVER_V4.into();
    {
        let mut fw = open(&topo);
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
        // The process dies: the forwarder is gone, its rules and flows stay.
    }
    assert_eq!(our_rules(&topo.proxy, false).len(), 6);
    // A rule in our chain the proxy did not write.
    topo.proxy.exec(&[
        IPTABLES,
        "-t",
        "nat",
        "-A",
        "FASP_PROXY",
        "-s",
        "192.0.2.77/32",
        "-p",
        "udp",
        "-j",
        "RETURN",
    ]);

    // A new life: prepare keeps every existing rule.
    let mut fw = open(&topo);
    assert_eq!(our_rules(&topo.proxy, false).len(), 7);
    assert_eq!(our_rules(&topo.proxy, true).len(), 2);
    let err = fw.list().unwrap_err().to_string();
    assert!(
        err.contains("-A FASP_PROXY -s 192.0.2.77/32 -p udp -j RETURN"),
        "list names the line it cannot read: {err}"
    );

    let report = fw.reconcile(&[live.id]).unwrap();
    assert_eq!(report.kept, 1);
    let mut removed = report.removed.clone();
    removed.sort_by_key(|e| (e.key, e.backend));
    let mut expected = vec![
        installed(&dead_any),
        installed(&dead_port),
        installed(&dead_v6),
    ];
    expected.sort_by_key(|e| (e.key, e.backend));
    assert_eq!(removed, expected);
    assert_eq!(fw.list().unwrap(), vec![installed(&live)]);
    // The dead session's flow was deleted with its rules; the live one still runs.
    client_dead
        .send_to(b"dead after reconcile", proxy_target(&dead_port))
        .unwrap();
    assert_silent(&server, "a reconciled session's flow must stop");
    round_trip(&client, &server, &live, b"live after reconcile", seen);

    let report = fw.reconcile(&[]).unwrap();
    assert_eq!((report.kept, report.removed), (0, vec![installed(&live)]));
    client
        .send_to(b"live after the last reconcile", proxy_target(&live))
        .unwrap();
    assert_silent(&server, "no session left: nothing is forwarded");

    for v6 in [false, true] {
        for chain in ["FASP_PROXY", "FASP_PROXY_POST"] {
            assert_eq!(
                topo.proxy
                    .exec(&[&tool(v6, "tables"), "-t", "nat", "-S", chain])
                    .trim(),
                format!("-N {chain}"),
                "our chain is empty (v6: {v6})"
            );
        }
    }
    assert_eq!(
        (foreign(&topo.proxy, false), foreign(&topo.proxy, true)),
        foreign_before,
        "foreign rules and chains are byte-identical"
    );
}

#[test]
fn purge_leaves_nothing_of_ours_twice_in_a_row() {
    let topo = Topology::new(1);
    add_foreign_rules(&topo.proxy);
    let strip = |s: String| -> String {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before = (
        strip(save(&topo.proxy, false)),
        strip(save(&topo.proxy, true)),
    );

    let mut fw = open(&topo);
    let v4 = entry_v4(Some(40000), PORT);
    let v6 = entry_v6(None, PORT);
    fw.install(&v4).unwrap();
    fw.install(&v6).unwrap();
    let client = client_socket(&topo, &v4, 40000);
    let server = udp(topo.server(), v4.backend);
    round_trip(
        &client,
        &server,
        &v4,
        b"before purge",
        lab::PROXY_SERVER_V4.into(),
    );

    let report = fw.purge().unwrap();
    let mut removed: Vec<Option<Uuid>> = report.removed.iter().map(|e| e.id).collect();
    removed.sort();
    let mut expected = vec![Some(v4.id), Some(v6.id)];
    expected.sort();
    assert_eq!(removed, expected);
    for v6 in [false, true] {
        let saved = save(&topo.proxy, v6);
        assert!(!saved.contains("FASP"), "purge left something:\n{saved}");
    }
    assert_eq!(
        (
            strip(save(&topo.proxy, false)),
            strip(save(&topo.proxy, true))
        ),
        before,
        "after purge table nat is as before the proxy touched it"
    );
    client.send_to(b"after purge", proxy_target(&v4)).unwrap();
    assert_silent(&server, "after purge nothing is forwarded");

    let again = fw.purge().unwrap();
    assert_eq!((again.kept, again.removed.len()), (0, 0));
    assert!(fw.list().unwrap().is_empty());
    assert!(fw.reconcile(&[]).unwrap().removed.is_empty());

    // Installing without the chains fails clearly; prepare brings them back.
    let err = fw.install(&v4).unwrap_err().to_string();
    assert!(err.contains("prepare()"), "{err}");
    fw.prepare().unwrap();
    fw.install(&v4).unwrap();
    assert_eq!(fw.list().unwrap(), vec![installed(&v4)]);
}
