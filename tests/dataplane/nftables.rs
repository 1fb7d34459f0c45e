//! The nftables backend: the shared scenarios in its own lab topology, plus what only it has
//! (the elements' text in `nft list`, element timeouts and refresh, the idempotent ruleset).

use fasp_proxy::dataplane::nftables::NftablesForwarder;
use fasp_proxy::dataplane::{Backend, Forwarder, SessionEntry};
use std::time::Duration;

use crate::lab::{Netns, Topology};
use crate::scenarios::{self, entry_v4, entry_v6, KernelLab, PORT};

/// Opens an nftables forwarder inside `ns` and prepares it.
pub fn open_in(ns: &Netns) -> NftablesForwarder {
    let mut fwd = ns
        .run_in(NftablesForwarder::open)
        .unwrap_or_else(|e| panic!("open the forwarder: {e}"));
    fwd.prepare().unwrap_or_else(|e| panic!("prepare: {e}"));
    fwd
}

/// The nftables backend in a fresh one-server topology.
struct Nft {
    topo: Topology,
}

impl Nft {
    fn new() -> Nft {
        Nft {
            topo: Topology::new(1),
        }
    }
}

impl KernelLab for Nft {
    fn topo(&self) -> &Topology {
        &self.topo
    }

    fn open(&self) -> Box<dyn Forwarder> {
        Box::new(open_in(&self.topo.proxy))
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
    let map = nft_list(&topo.proxy, "map", "ip", "sessions");
    assert!(!map.contains("40000"), "{map}");
    let masq = nft_list(&topo.proxy, "set", "ip", "masq_sessions");
    assert!(!masq.contains("40000") && masq.contains("40001"), "{masq}");
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
