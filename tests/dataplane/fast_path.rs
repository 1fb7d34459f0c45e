//! The BPF fast path (`<fast_path>true`): [`FastPathForwarder`] around the nftables backend must
//! keep every promise the backend alone keeps, so the shared scenarios run against it too; then
//! what only it has: packets really forwarded by the program (conntrack never counts them),
//! packets it does not hold going through nftables, the kernel's own path taking over with the
//! same translation when the fast path is gone (its process killed), and a flushed conntrack.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use fasp_proxy::dataplane::conntrack::{self, FlowTuple};
use fasp_proxy::dataplane::fast_path::FastPath;
use fasp_proxy::dataplane::netlink::NfnlSocket;
use fasp_proxy::dataplane::SessionEntry;

use crate::lab::{self, Netns};
use crate::nftables::Nft;
use crate::scenarios::{self, entry_v4, entry_v6, KernelLab, PORT};

// The shared scenarios.

#[test]
fn install_list_refresh_remove() {
    scenarios::install_list_refresh_remove(&mut *Nft::with_fast_path().open());
}

#[test]
fn a_taken_key_is_refused_and_the_first_entry_untouched() {
    let lab = Nft::with_fast_path();
    scenarios::a_taken_key_is_refused_and_the_first_entry_untouched(&mut *lab.open());
}

#[test]
fn port_and_any_port_keys_are_distinct() {
    scenarios::port_and_any_port_keys_are_distinct(&mut *Nft::with_fast_path().open());
}

#[test]
fn reconcile_keeps_live_sessions_and_drops_the_rest() {
    let lab = Nft::with_fast_path();
    scenarios::reconcile_keeps_live_sessions_and_drops_the_rest(&mut *lab.open());
}

#[test]
fn purge_removes_everything_twice_in_a_row() {
    let lab = Nft::with_fast_path();
    scenarios::purge_removes_everything_twice_in_a_row(&mut *lab.open());
    assert!(attached(&lab.topo.proxy, lab::PROXY_CLIENT_IF).is_empty());
}

#[test]
fn install_after_purge_needs_prepare() {
    scenarios::install_after_purge_needs_prepare(&mut *Nft::with_fast_path().open());
}

#[test]
fn forwards_both_ways_and_stops_at_once_on_remove() {
    scenarios::forwards_both_ways_and_stops_at_once_on_remove(&Nft::with_fast_path());
}

#[test]
fn install_clears_a_stale_flow_that_would_shadow_the_session() {
    scenarios::install_clears_a_stale_flow_that_would_shadow_the_session(&Nft::with_fast_path());
}

#[test]
fn source_port_filtering_and_any_port_sessions() {
    scenarios::source_port_filtering_and_any_port_sessions(&Nft::with_fast_path());
}

#[test]
fn bind_source_address_snats_to_it() {
    scenarios::bind_source_address_snats_to_it(&Nft::with_fast_path());
}

#[test]
fn ipv6_sessions_work_like_ipv4() {
    scenarios::ipv6_sessions_work_like_ipv4(&Nft::with_fast_path());
}

#[test]
fn a_taken_key_leaves_the_running_flow_alone() {
    scenarios::a_taken_key_leaves_the_running_flow_alone(&Nft::with_fast_path());
}

#[test]
fn after_a_crash_reconcile_drops_what_no_live_session_owns_and_nothing_else() {
    let lab = Nft::with_fast_path();
    scenarios::after_a_crash_reconcile_drops_what_no_live_session_owns_and_nothing_else(&lab);
}

#[test]
fn tcp_twin_forwards_connections_masqueraded_or_snated() {
    scenarios::tcp_twin_forwards_connections_masqueraded_or_snated(&Nft::with_fast_path());
}

#[test]
fn removing_a_tcp_twin_stops_new_and_running_connections() {
    scenarios::removing_a_tcp_twin_stops_new_and_running_connections(&Nft::with_fast_path());
}

// What only the fast path has.

/// The programs attached (TCX) at the ingress of `iface` in `ns`, by name.
fn attached(ns: &Netns, iface: &str) -> Vec<String> {
    ns.run_in(|| FastPath::tcx_ingress_programs(iface))
        .unwrap_or_else(|e| panic!("query {iface}: {e}"))
        .into_iter()
        .map(|(_, name)| name)
        .collect()
}

/// The kernel path's (conntrack's) packet count of a session's flow from the client.
fn conntrack_packets(ns: &Netns, entry: &SessionEntry, client_port: u16) -> u64 {
    let mut sock = ns.run_in(|| NfnlSocket::open(1 << 20)).unwrap();
    let orig = FlowTuple::udp(
        SocketAddr::new(entry.client, client_port),
        scenarios::proxy_target(entry),
    );
    let flow = conntrack::get_flow(&mut sock, &orig)
        .unwrap()
        .unwrap_or_else(|| panic!("no conntrack flow {orig:?}"));
    flow.orig_counters.map(|c| c.packets).unwrap_or(0)
}

/// The lab's SNAT address of `entry`'s family (masquerade: the proxy's server-side address).
fn seen_from(entry: &SessionEntry) -> IpAddr {
    if entry.is_ipv4() {
        lab::PROXY_SERVER_V4.into()
    } else {
        lab::PROXY_SERVER_V6.into()
    }
}

/// IPv4 and IPv6 sessions are forwarded by the program: the forwarder counts their packets
/// and bytes (IP length, as conntrack would) while conntrack's own counters of the flow stay at
/// zero; the program is attached at every interface of the namespace.
#[test]
fn sessions_are_forwarded_by_the_program_and_counted() {
    let lab = Nft::with_fast_path();
    lab.topo
        .proxy
        .sysctl("net.netfilter.nf_conntrack_acct", "1");
    let mut fw = lab.open();
    for iface in [lab::PROXY_CLIENT_IF, lab::PROXY_SERVER_IF] {
        assert_eq!(attached(&lab.topo.proxy, iface), ["fasp_fast_path"]);
    }
    for (entry, header) in [
        (entry_v4(Some(40000), PORT), 28),
        (entry_v6(Some(40000), PORT), 48),
    ] {
        fw.install(&entry).unwrap();
        let client = scenarios::client_socket(&lab.topo, &entry, 40000);
        let server = scenarios::udp(lab.topo.server(), entry.backend);
        for i in 0..3 {
            let payload = format!("datagram {i} of 3");
            scenarios::round_trip(
                &client,
                &server,
                &entry,
                payload.as_bytes(),
                seen_from(&entry),
            );
        }
        let bytes = 3 * (header + "datagram 0 of 3".len() as u64);
        assert_eq!(fw.counters(&entry).unwrap(), Some((3, bytes)), "{entry:?}");
        assert_eq!(
            conntrack_packets(&lab.topo.proxy, &entry, 40000),
            0,
            "the kernel path forwarded packets of a fast-path session"
        );
        fw.remove(&entry).unwrap();
    }
}

/// What the program does not hold goes through nftables as before: an any-port session (its
/// flows are counted by conntrack), and a port no session has (not forwarded at all).
#[test]
fn packets_it_does_not_hold_still_go_through_nftables() {
    let lab = Nft::with_fast_path();
    lab.topo
        .proxy
        .sysctl("net.netfilter.nf_conntrack_acct", "1");
    let mut fw = lab.open();
    let any = entry_v4(None, PORT);
    fw.install(&any).unwrap();
    let client = scenarios::client_socket(&lab.topo, &any, 40005);
    let server = scenarios::udp(lab.topo.server(), any.backend);
    scenarios::round_trip(&client, &server, &any, b"any port", seen_from(&any));
    scenarios::round_trip(&client, &server, &any, b"any port again", seen_from(&any));
    assert_eq!(conntrack_packets(&lab.topo.proxy, &any, 40005), 2);
    assert_eq!(
        fw.counters(&any).unwrap(),
        None,
        "no client port: no counters"
    );

    let nobody = SessionEntry {
        proxy_port: PORT + 5,
        ..entry_v4(Some(40006), PORT + 5)
    };
    let stray = scenarios::client_socket(&lab.topo, &nobody, 40006);
    stray
        .send_to(b"to no session", scenarios::proxy_target(&nobody))
        .unwrap();
    scenarios::assert_silent(&server, "a datagram of no session was forwarded");
}

/// The daemon killed (its fast path dropped without a removal: the kernel detaches the program
/// and frees the maps with the process): the session goes on through the kernel's own path
/// with the very translation the program used (the server sees the same source address and
/// port), until the next life's reconcile removes it.
#[test]
fn the_kernel_path_takes_over_the_same_translation_when_the_fast_path_is_gone() {
    let lab = Nft::with_fast_path();
    let entry = entry_v4(Some(40000), PORT);
    let client = scenarios::client_socket(&lab.topo, &entry, 40000);
    let server = scenarios::udp(lab.topo.server(), entry.backend);
    let receive = |payload: &[u8]| {
        client
            .send_to(payload, scenarios::proxy_target(&entry))
            .unwrap();
        let (got, from) = scenarios::recv(&server).expect("the server received nothing");
        assert_eq!(got, payload);
        from
    };
    let before = {
        let mut fw = lab.open();
        fw.install(&entry).unwrap();
        receive(b"through the program")
    };
    assert!(attached(&lab.topo.proxy, lab::PROXY_CLIENT_IF).is_empty());
    let after = receive(b"through conntrack and nftables");
    assert_eq!(
        after, before,
        "the translation changed when the fast path went"
    );

    let mut next_life = lab.open();
    next_life.reconcile(&[]).unwrap();
    client
        .send_to(b"after reconcile", scenarios::proxy_target(&entry))
        .unwrap();
    scenarios::assert_silent(&server, "a reconciled session still forwards");
}

/// A flushed conntrack (`conntrack -F` by an administrator) takes the reserved translation
/// away; the next refresh reserves it again and the session stays on the fast path.
#[test]
fn a_refresh_after_a_conntrack_flush_reserves_the_translation_again() {
    let lab = Nft::with_fast_path();
    lab.topo
        .proxy
        .sysctl("net.netfilter.nf_conntrack_acct", "1");
    let mut fw = lab.open();
    let entry = entry_v4(Some(40000), PORT);
    fw.install(&entry).unwrap();
    let client = scenarios::client_socket(&lab.topo, &entry, 40000);
    let server = scenarios::udp(lab.topo.server(), entry.backend);
    scenarios::round_trip(&client, &server, &entry, b"before", seen_from(&entry));
    lab.topo.proxy.exec(&["conntrack", "-F"]);
    fw.refresh(&SessionEntry {
        lifetime: Duration::from_secs(120),
        ..entry.clone()
    })
    .unwrap();
    scenarios::round_trip(&client, &server, &entry, b"after", seen_from(&entry));
    assert_eq!(conntrack_packets(&lab.topo.proxy, &entry, 40000), 0);
    assert_eq!(fw.counters(&entry).unwrap().map(|c| c.0), Some(2));
}
