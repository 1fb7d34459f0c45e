//! The nftables backend: the shared scenarios in its own lab topology, plus what only it has
//! (the elements' text in `nft list`, element timeouts and refresh, the idempotent ruleset).

use fasp_proxy::dataplane::fast_path::FastPathForwarder;
use fasp_proxy::dataplane::nftables::NftablesForwarder;
use fasp_proxy::dataplane::{Backend, Forwarder, SessionEntry};
use std::time::Duration;
use uuid::Uuid;

use crate::lab::{self, Netns, Topology};
use crate::scenarios::{self, entry_v4, entry_v6, tcp_entry_v4, KernelLab, PORT, TCP_PORT};

/// Opens an nftables forwarder inside `ns` and prepares it.
pub fn open_in(ns: &Netns) -> NftablesForwarder {
    let mut fwd = ns
        .run_in(NftablesForwarder::open)
        .unwrap_or_else(|e| panic!("open the forwarder: {e}"));
    fwd.prepare().unwrap_or_else(|e| panic!("prepare: {e}"));
    fwd
}

/// The nftables backend in a fresh one-server topology, alone or under the BPF fast path
/// (tests/dataplane/fast_path.rs).
pub struct Nft {
    pub topo: Topology,
    fast_path: bool,
}

impl Nft {
    pub fn new() -> Nft {
        Nft {
            topo: Topology::new(1),
            fast_path: false,
        }
    }

    /// The nftables backend wrapped in [`FastPathForwarder`], as `<fast_path>true` has it.
    pub fn with_fast_path() -> Nft {
        Nft {
            fast_path: true,
            ..Nft::new()
        }
    }
}

impl KernelLab for Nft {
    fn topo(&self) -> &Topology {
        &self.topo
    }

    fn open(&self) -> Box<dyn Forwarder> {
        if !self.fast_path {
            return Box::new(open_in(&self.topo.proxy));
        }
        let mut fwd = self.topo.proxy.run_in(|| {
            let nft = NftablesForwarder::open().expect("open the forwarder");
            FastPathForwarder::open(Box::new(nft), 1024).expect("load the fast path")
        });
        fwd.prepare().unwrap_or_else(|e| panic!("prepare: {e}"));
        Box::new(fwd)
    }

    /// Both tables, without the elements' time left (`expires 59s520ms`).
    fn ours(&self) -> String {
        ["ip", "ip6"]
            .iter()
            .map(|f| {
                let table = self
                    .topo
                    .proxy
                    .exec(&["nft", "list", "table", f, "fasp_proxy"]);
                let mut words = table.split_whitespace();
                let mut out = Vec::new();
                while let Some(w) = words.next() {
                    if w == "expires" {
                        words.next();
                    } else {
                        out.push(w);
                    }
                }
                out.join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The `elements = { … }` lines of both tables (an element list may span lines).
    fn session_objects(&self) -> String {
        let mut out = String::new();
        for f in ["ip", "ip6"] {
            let table = self
                .topo
                .proxy
                .try_exec(&["nft", "list", "table", f, "fasp_proxy"]);
            let mut in_elements = false;
            for line in String::from_utf8_lossy(&table.stdout).lines() {
                in_elements |= line.contains("elements = {");
                if in_elements {
                    out.push_str(line.trim());
                    out.push('\n');
                    in_elements = !line.contains('}');
                }
            }
        }
        out
    }

    /// `nft add element` of a `tcp_sessions` and a `tcp_masq_sessions` element only.
    fn add_tcp_leftover(&self, id: Uuid, proxy_port: u16) {
        let key = format!(
            "{} . {proxy_port} timeout 60s comment \"{id}\"",
            lab::CLIENT_V4
        );
        let script = format!(
            "add element ip fasp_proxy tcp_sessions {{ {key} : {} . {TCP_PORT} }}\n\
             add element ip fasp_proxy tcp_masq_sessions {{ {key} }}\n",
            lab::server_v4(0)
        );
        self.topo
            .proxy
            .exec_with_stdin(&["nft", "-f", "-"], &script);
    }
}

// The shared scenarios.

#[test]
fn install_list_refresh_remove() {
    let lab = Nft::new();
    scenarios::install_list_refresh_remove(&mut *lab.open());
}

#[test]
fn a_taken_key_is_refused_and_the_first_entry_untouched() {
    let lab = Nft::new();
    scenarios::a_taken_key_is_refused_and_the_first_entry_untouched(&mut *lab.open());
}

#[test]
fn port_and_any_port_keys_are_distinct() {
    let lab = Nft::new();
    scenarios::port_and_any_port_keys_are_distinct(&mut *lab.open());
}

#[test]
fn reconcile_keeps_live_sessions_and_drops_the_rest() {
    let lab = Nft::new();
    scenarios::reconcile_keeps_live_sessions_and_drops_the_rest(&mut *lab.open());
}

#[test]
fn purge_removes_everything_twice_in_a_row() {
    let lab = Nft::new();
    scenarios::purge_removes_everything_twice_in_a_row(&mut *lab.open());
    let tables = lab.topo.proxy.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("fasp_proxy"), "{tables}");
}

#[test]
fn install_after_purge_needs_prepare() {
    let lab = Nft::new();
    scenarios::install_after_purge_needs_prepare(&mut *lab.open());
}

#[test]
fn forwards_both_ways_and_stops_at_once_on_remove() {
    scenarios::forwards_both_ways_and_stops_at_once_on_remove(&Nft::new());
}

#[test]
fn install_clears_a_stale_flow_that_would_shadow_the_session() {
    scenarios::install_clears_a_stale_flow_that_would_shadow_the_session(&Nft::new());
}

#[test]
fn source_port_filtering_and_any_port_sessions() {
    scenarios::source_port_filtering_and_any_port_sessions(&Nft::new());
}

#[test]
fn thousands_of_flows_are_all_deleted() {
    scenarios::thousands_of_flows_are_all_deleted(&Nft::new());
}

#[test]
fn bind_source_address_snats_to_it() {
    scenarios::bind_source_address_snats_to_it(&Nft::new());
}

#[test]
fn ipv6_sessions_work_like_ipv4() {
    scenarios::ipv6_sessions_work_like_ipv4(&Nft::new());
}

#[test]
fn a_taken_key_leaves_the_running_flow_alone() {
    scenarios::a_taken_key_leaves_the_running_flow_alone(&Nft::new());
}

#[test]
fn after_a_crash_reconcile_drops_what_no_live_session_owns_and_nothing_else() {
    let lab = Nft::new();
    scenarios::after_a_crash_reconcile_drops_what_no_live_session_owns_and_nothing_else(&lab);
    let tables = lab.topo.proxy.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("fasp_proxy"), "{tables}");
}

#[test]
fn a_tcp_twin_is_listed_with_its_session_and_shares_its_key() {
    let lab = Nft::new();
    scenarios::a_tcp_twin_is_listed_with_its_session_and_shares_its_key(&mut *lab.open());
}

#[test]
fn tcp_twin_forwards_connections_masqueraded_or_snated() {
    scenarios::tcp_twin_forwards_connections_masqueraded_or_snated(&Nft::new());
}

#[test]
fn removing_a_tcp_twin_stops_new_and_running_connections() {
    scenarios::removing_a_tcp_twin_stops_new_and_running_connections(&Nft::new());
}

#[test]
fn ipv6_tcp_twin_works_like_ipv4() {
    scenarios::ipv6_tcp_twin_works_like_ipv4(&Nft::new());
}

#[test]
fn reconcile_and_purge_remove_tcp_twins_and_tcp_only_leftovers() {
    let lab = Nft::new();
    scenarios::reconcile_and_purge_remove_tcp_twins_and_tcp_only_leftovers(&lab);
    let tables = lab.topo.proxy.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("fasp_proxy"), "{tables}");
}

// What only nftables shows or has.

fn nft_list(ns: &Netns, what: &str, family: &str, name: &str) -> String {
    ns.exec(&["nft", "list", what, family, "fasp_proxy", name])
}

#[test]
fn elements_in_the_maps_carry_the_key_the_backend_and_the_session_id() {
    let topo = Topology::new(1);
    let mut fwd = open_in(&topo.proxy);
    assert_eq!(fwd.kind(), Backend::Nftables);
    let entry = entry_v4(Some(40000), PORT);
    let any = entry_v4(None, PORT + 1);
    let v6 = entry_v6(Some(40000), PORT);
    for e in [&entry, &any, &v6] {
        fwd.install(e).unwrap();
    }
    let map = nft_list(&topo.proxy, "map", "ip", "sessions");
    assert!(map.contains("192.0.2.2 . 40000 . 33001"), "{map}");
    assert!(map.contains(&format!("comment \"{}\"", entry.id)), "{map}");
    assert!(map.contains(": 198.51.100.2 . 33001"), "{map}");
    let map = nft_list(&topo.proxy, "map", "ip", "sessions_any_port");
    assert!(map.contains("192.0.2.2 . 33002"), "{map}");
    let map = nft_list(&topo.proxy, "map", "ip6", "sessions");
    assert!(map.contains("2001:db8:1::2 . 40000 . 33001"), "{map}");
    let masq = nft_list(&topo.proxy, "set", "ip", "masq_sessions");
    assert!(masq.contains("192.0.2.2 . 40000 . 33001"), "{masq}");
    // nftables elements expire: list says when.
    let listed = fwd.list().unwrap();
    assert!(
        listed
            .iter()
            .all(|e| e.expires.is_some_and(|t| t <= Duration::from_secs(60))),
        "{listed:?}"
    );

    for e in [&entry, &any, &v6] {
        fwd.remove(e).unwrap();
    }
    let map = nft_list(&topo.proxy, "map", "ip", "sessions");
    assert!(!map.contains("192.0.2.2"), "{map}");
    let masq = nft_list(&topo.proxy, "set", "ip", "masq_sessions");
    assert!(!masq.contains("192.0.2.2"), "{masq}");
}

#[test]
fn a_tcp_twin_is_two_more_elements_keyed_on_client_and_proxy_port() {
    let topo = Topology::new(1);
    let mut fwd = open_in(&topo.proxy);
    let masq = tcp_entry_v4(PORT);
    let snat = SessionEntry {
        snat: Some(lab::PROXY_SERVER_V4.into()),
        ..tcp_entry_v4(PORT + 1)
    };
    fwd.install(&masq).unwrap();
    fwd.install(&snat).unwrap();
    let map = nft_list(&topo.proxy, "map", "ip", "tcp_sessions");
    for (e, port) in [(&masq, "33001"), (&snat, "33002")] {
        assert!(
            map.contains(&format!("192.0.2.2 . {port} timeout 1m"))
                && map.contains(&format!("comment \"{}\" : 198.51.100.2 . 22", e.id)),
            "{map}"
        );
    }
    let masq_set = nft_list(&topo.proxy, "set", "ip", "tcp_masq_sessions");
    assert!(masq_set.contains("192.0.2.2 . 33001 timeout"), "{masq_set}");
    assert!(!masq_set.contains("33002"), "{masq_set}");
    let snat_map = nft_list(&topo.proxy, "map", "ip", "tcp_source_nat");
    assert!(
        snat_map.contains(&format!("comment \"{}\" : 198.51.100.1", snat.id)),
        "{snat_map}"
    );
    // The UDP half is where it always was.
    let any = nft_list(&topo.proxy, "map", "ip", "sessions_any_port");
    assert!(
        any.contains("192.0.2.2 . 33001") && any.contains("192.0.2.2 . 33002"),
        "{any}"
    );

    for e in [&masq, &snat] {
        fwd.remove(e).unwrap();
    }
    for (what, name) in [
        ("map", "tcp_sessions"),
        ("map", "tcp_source_nat"),
        ("set", "tcp_masq_sessions"),
        ("map", "sessions_any_port"),
    ] {
        let text = nft_list(&topo.proxy, what, "ip", name);
        assert!(!text.contains("elements"), "{text}");
    }
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
        ..entry_v4(Some(port), PORT)
    };
    let (left_alone, refreshed_in_place, refreshed_by_readd) =
        (short(40000), short(40001), short(40002));
    // Entries with a TCP twin, whose TCP elements live and die with the UDP ones.
    let short_tcp = |port| SessionEntry {
        lifetime: Duration::from_secs(2),
        ..tcp_entry_v4(port)
    };
    let (tcp_left_alone, tcp_in_place, tcp_by_readd) = (
        short_tcp(PORT + 1),
        short_tcp(PORT + 2),
        short_tcp(PORT + 3),
    );
    for e in [
        &left_alone,
        &refreshed_in_place,
        &refreshed_by_readd,
        &tcp_left_alone,
        &tcp_in_place,
        &tcp_by_readd,
    ] {
        fwd.install(e).unwrap();
    }
    // Refresh two of them every 400 ms for 3.2 s: one in place, one by delete + add (the path
    // for kernels older than 6.12).
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(400));
        fwd.refresh(&refreshed_in_place).unwrap();
        fwd.refresh(&tcp_in_place).unwrap();
        fwd.force_delete_add_refresh(true);
        fwd.refresh(&refreshed_by_readd).unwrap();
        fwd.refresh(&tcp_by_readd).unwrap();
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
    let map = nft_list(&topo.proxy, "map", "ip", "sessions");
    assert!(!map.contains("40000"), "{map}");
    let masq = nft_list(&topo.proxy, "set", "ip", "masq_sessions");
    assert!(!masq.contains("40000") && masq.contains("40001"), "{masq}");
    for (what, name) in [("map", "tcp_sessions"), ("set", "tcp_masq_sessions")] {
        let text = nft_list(&topo.proxy, what, "ip", name);
        assert!(
            !text.contains("33002") && text.contains("33003") && text.contains("33004"),
            "{text}"
        );
    }
    let listed = fwd.list().unwrap();
    assert!(
        listed
            .iter()
            .any(|e| e.id == Some(tcp_by_readd.id) && e.tcp_backend == tcp_by_readd.tcp_backend),
        "{listed:?}"
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
    // The TCP twin's rules, as nft prints them back (it drops the `ip` after `snat`).
    for rule in [
        "fib daddr type local dnat ip to ip saddr . tcp dport map @tcp_sessions",
        "ct status dnat meta l4proto tcp snat to ct original ip saddr . ct original proto-dst map @tcp_source_nat",
        "ct status dnat meta l4proto tcp ct original ip saddr . ct original proto-dst @tcp_masq_sessions masquerade",
    ] {
        assert!(first.contains(rule), "{rule} in:\n{first}");
    }
    let v6 = topo
        .proxy
        .exec(&["nft", "list", "table", "ip6", "fasp_proxy"]);
    assert!(
        v6.contains("fib daddr type local dnat ip6 to ip6 saddr . tcp dport map @tcp_sessions")
            && v6.contains("ct status dnat meta l4proto tcp snat to ct original ip6 saddr . ct original proto-dst map @tcp_source_nat")
            && v6.contains("ct status dnat meta l4proto tcp ct original ip6 saddr . ct original proto-dst @tcp_masq_sessions masquerade"),
        "{v6}"
    );
}

#[test]
fn install_without_prepare_says_what_is_missing() {
    let topo = Topology::new(1);
    let mut fwd = topo.proxy.run_in(NftablesForwarder::open).unwrap();
    let err = fwd
        .install(&entry_v4(Some(40000), PORT))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("table ip fasp_proxy is missing; prepare() creates it"),
        "{err}"
    );
}

/// A flow created over ctnetlink with DNAT and SNAT ([`conntrack::create_nat_flow`], what the
/// fast path reserves for each session) forwards both ways with no session entry at all: the
/// kernel's own path when the fast path is gone. Its source port is the client's while free,
/// another one when a second flow would clash, and its timeout can be extended.
#[test]
fn a_conntrack_flow_created_with_nat_forwards_without_a_session_entry() {
    use fasp_proxy::dataplane::conntrack::{self, FlowTuple};
    use fasp_proxy::dataplane::netlink::NfnlSocket;
    use std::net::SocketAddr;

    let nft = Nft::new();
    let topo = &nft.topo;
    let _chains_only = open_in(&topo.proxy);
    let entry = entry_v4(Some(40000), PORT);
    let snat: std::net::IpAddr = lab::PROXY_SERVER_V4.into();
    let mut sock = topo
        .proxy
        .run_in(|| NfnlSocket::open(1 << 20))
        .expect("ctnetlink socket");
    let orig = FlowTuple::udp(
        SocketAddr::new(entry.client, 40000),
        scenarios::proxy_target(&entry),
    );
    let minute = Duration::from_secs(60);
    let flow = conntrack::create_nat_flow(&mut sock, &orig, entry.backend, snat, minute).unwrap();
    assert_eq!(flow.orig, Some(orig));
    let assured = netlink_packet_netfilter::conntrack::Status::Assured;
    let read_back = conntrack::get_flow(&mut sock, &orig).unwrap().unwrap();
    assert!(read_back.status.unwrap().contains(assured), "{read_back:?}");
    assert_eq!(
        flow.reply,
        Some(FlowTuple::udp(entry.backend, SocketAddr::new(snat, 40000)))
    );
    let again = conntrack::create_nat_flow(&mut sock, &orig, entry.backend, snat, minute);
    assert_eq!(again.unwrap_err().raw_os_error(), Some(libc::EEXIST));

    let server = scenarios::udp(topo.server(), entry.backend);
    let client = scenarios::client_socket(topo, &entry, 40000);
    scenarios::round_trip(&client, &server, &entry, b"through a created flow", snat);

    // Another client with the same port, to the same backend: the kernel picks another port.
    let other = FlowTuple::udp("192.0.2.77:40000".parse().unwrap(), orig.dst);
    let clash = conntrack::create_nat_flow(&mut sock, &other, entry.backend, snat, minute).unwrap();
    let reply = clash.reply.unwrap();
    assert_eq!((reply.src, reply.dst.ip()), (entry.backend, snat));
    assert_ne!(reply.dst.port(), 40000, "two flows share one reply tuple");

    conntrack::set_flow_timeout(&mut sock, &orig, Duration::from_secs(600)).unwrap();
    let left = conntrack::get_flow(&mut sock, &orig).unwrap().unwrap();
    assert!(
        left.timeout.unwrap() > 500,
        "timeout not extended: {left:?}"
    );
    let gone = FlowTuple::udp("192.0.2.78:1".parse().unwrap(), orig.dst);
    let err = conntrack::set_flow_timeout(&mut sock, &gone, minute).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
}
