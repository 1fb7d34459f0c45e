//! The data plane, one test binary for every backend.
//!
//! The behaviour is written once in [`scenarios`] over `&mut dyn Forwarder` and run:
//! - against the nftables backend ([`nftables`]) and the iptables backend ([`iptables`]), each in
//!   its own lab topology (real kernel forwarding, read back with real `nft`, `iptables-save`
//!   and `conntrack`; needs root), every forwarder opened inside the lab's proxy namespace and
//!   then driven from the test's thread, which also proves that a forwarder acts in the
//!   namespace it was opened in;
//! - the bookkeeping scenarios also against `MemoryForwarder` ([`memory`], no root), so the fake
//!   the daemon's tests use keeps the real backends' promises.
//!
//! Each backend's file adds only its format checks (`nft list`, `iptables -L` /
//! `iptables-save`) and what only it has (nftables element timeouts). This file holds what
//! belongs to no backend: the IP forwarding sysctl and the `purge` command.

#[path = "../lab/mod.rs"]
mod lab;

mod fast_path;
mod iptables;
mod memory;
mod nftables;
mod scenarios;

use fasp_proxy::dataplane::Forwarder;
use fasp_proxy::sysctl;
use lab::Topology;
use scenarios::{entry_v4, PORT};

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
    let mut nft = nftables::open_in(&topo.proxy);
    nft.install(&entry_v4(Some(40000), PORT)).unwrap();
    nft.install(&entry_v4(None, PORT + 1)).unwrap();
    let mut ipt = iptables::open_in(&topo.proxy);
    ipt.install(&entry_v4(Some(40000), PORT + 2)).unwrap();
    let out = topo.proxy.exec(&[
        env!("CARGO_BIN_EXE_fasp-proxy"),
        "--config",
        "/nonexistent/aspera.conf",
        "purge",
    ]);
    assert!(
        out.contains(
            "nftables: removed 2 session entries and the proxy's tables (ip and ip6 fasp_proxy)"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "iptables: removed 1 session entry and the proxy's chains (FASP_PROXY, FASP_PROXY_POST)"
        ),
        "{out}"
    );
    let tables = topo.proxy.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("fasp_proxy"), "{tables}");
    let saved = topo.proxy.exec(&["iptables-save", "-t", "nat"]);
    assert!(!saved.contains("FASP_PROXY"), "{saved}");
    // Twice is fine.
    let out = topo.proxy.exec(&[
        env!("CARGO_BIN_EXE_fasp-proxy"),
        "--config",
        "/nonexistent",
        "purge",
    ]);
    assert!(out.contains("nftables: removed 0 session entries"), "{out}");
    assert!(out.contains("iptables: removed 0 session entries"), "{out}");
}
