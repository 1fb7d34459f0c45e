//! The iptables backend: the shared scenarios in its own lab topology, plus its format checks
//! (the exact `iptables-save` lines, the `iptables -t nat -L -n` shape, the jump rules) and what
//! only it can meet (a rule in its chains it did not write).

use std::path::Path;

use fasp_proxy::dataplane::iptables::IptablesForwarder;
use fasp_proxy::dataplane::{Backend, Forwarder, SessionEntry};
use uuid::Uuid;

use crate::lab::{self, Netns, Topology};
use crate::scenarios::{
    self, entry_v4, entry_v6, installed, tcp_entry_v4, tcp_entry_v6, KernelLab, PORT, TCP_PORT,
};

const IPTABLES: &str = "/usr/sbin/iptables";

/// Opens an iptables forwarder inside `ns` and prepares it.
pub fn open_in(ns: &Netns) -> IptablesForwarder {
    let mut fw = ns
        .run_in(|| IptablesForwarder::open(Path::new(IPTABLES)))
        .unwrap_or_else(|e| panic!("opening the iptables forwarder: {e}"));
    fw.prepare().unwrap_or_else(|e| panic!("prepare: {e}"));
    fw
}

/// The iptables backend in a fresh one-server topology.
struct Ipt {
    topo: Topology,
}

impl Ipt {
    fn new() -> Ipt {
        Ipt {
            topo: Topology::new(1),
        }
    }
}

impl KernelLab for Ipt {
    fn topo(&self) -> &Topology {
        &self.topo
    }

    fn open(&self) -> Box<dyn Forwarder> {
        Box::new(open_in(&self.topo.proxy))
    }

    /// Table nat of both families, without the `# Generated` comments.
    fn ours(&self) -> String {
        [false, true]
            .iter()
            .map(|&v6| strip_comments(&save(&self.topo.proxy, v6)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The rule lines of the proxy's chains, both families.
    fn session_objects(&self) -> String {
        [false, true]
            .iter()
            .flat_map(|&v6| our_rules(&self.topo.proxy, v6))
            .map(|l| l + "\n")
            .collect()
    }

    /// A TCP twin's DNAT and MASQUERADE rules, exactly as the backend writes them, without the
    /// UDP DNAT rule of their key.
    fn add_tcp_leftover(&self, id: Uuid, proxy_port: u16) {
        let (client, server) = (lab::CLIENT_V4, lab::server_v4(0));
        let batch = format!(
            "*nat\n\
             -A FASP_PROXY -s {client}/32 -p tcp -m tcp --dport {proxy_port} -m addrtype --dst-type LOCAL -m comment --comment {id} -j DNAT --to-destination {server}:{TCP_PORT}\n\
             -A FASP_PROXY_POST -s {client}/32 -d {server}/32 -p tcp -m tcp --dport {TCP_PORT} -m conntrack --ctstate DNAT --ctorigdstport {proxy_port} -m comment --comment {id} -j MASQUERADE\n\
             COMMIT\n"
        );
        self.topo
            .proxy
            .exec_with_stdin(&[&tool(false, "tables-restore"), "--noflush"], &batch);
    }
}

fn tool(v6: bool, name: &str) -> String {
    if v6 {
        format!("/usr/sbin/ip6{name}")
    } else {
        format!("/usr/sbin/ip{name}")
    }
}

/// `iptables-save -t nat` (or ip6tables-save) inside `ns`.
fn save(ns: &Netns, v6: bool) -> String {
    ns.exec(&[&tool(v6, "tables-save"), "-t", "nat"])
}

fn strip_comments(saved: &str) -> String {
    saved
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Our rule lines (`-A FASP_PROXY…`), as `iptables-save` prints them.
fn our_rules(ns: &Netns, v6: bool) -> Vec<String> {
    save(ns, v6)
        .lines()
        .filter(|l| l.starts_with("-A FASP_PROXY"))
        .map(str::to_owned)
        .collect()
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

// The shared scenarios.

#[test]
fn install_list_refresh_remove() {
    let lab = Ipt::new();
    scenarios::install_list_refresh_remove(&mut *lab.open());
}

#[test]
fn a_taken_key_is_refused_and_the_first_entry_untouched() {
    let lab = Ipt::new();
    scenarios::a_taken_key_is_refused_and_the_first_entry_untouched(&mut *lab.open());
}

#[test]
fn port_and_any_port_keys_are_distinct() {
    let lab = Ipt::new();
    scenarios::port_and_any_port_keys_are_distinct(&mut *lab.open());
}

#[test]
fn reconcile_keeps_live_sessions_and_drops_the_rest() {
    let lab = Ipt::new();
    scenarios::reconcile_keeps_live_sessions_and_drops_the_rest(&mut *lab.open());
}

#[test]
fn purge_removes_everything_twice_in_a_row() {
    let lab = Ipt::new();
    let before = lab.ours();
    scenarios::purge_removes_everything_twice_in_a_row(&mut *lab.open());
    for v6 in [false, true] {
        let saved = save(&lab.topo.proxy, v6);
        assert!(!saved.contains("FASP"), "purge left something:\n{saved}");
    }
    assert_eq!(
        lab.ours(),
        before,
        "after purge table nat is as before the proxy touched it"
    );
}

#[test]
fn install_after_purge_needs_prepare() {
    let lab = Ipt::new();
    scenarios::install_after_purge_needs_prepare(&mut *lab.open());
}

#[test]
fn forwards_both_ways_and_stops_at_once_on_remove() {
    scenarios::forwards_both_ways_and_stops_at_once_on_remove(&Ipt::new());
}

#[test]
fn install_clears_a_stale_flow_that_would_shadow_the_session() {
    scenarios::install_clears_a_stale_flow_that_would_shadow_the_session(&Ipt::new());
}

#[test]
fn source_port_filtering_and_any_port_sessions() {
    scenarios::source_port_filtering_and_any_port_sessions(&Ipt::new());
}

#[test]
fn thousands_of_flows_are_all_deleted() {
    scenarios::thousands_of_flows_are_all_deleted(&Ipt::new());
}

#[test]
fn bind_source_address_snats_to_it() {
    scenarios::bind_source_address_snats_to_it(&Ipt::new());
}

#[test]
fn ipv6_sessions_work_like_ipv4() {
    scenarios::ipv6_sessions_work_like_ipv4(&Ipt::new());
}

#[test]
fn a_taken_key_leaves_the_running_flow_alone() {
    scenarios::a_taken_key_leaves_the_running_flow_alone(&Ipt::new());
}

#[test]
fn after_a_crash_reconcile_drops_what_no_live_session_owns_and_nothing_else() {
    let lab = Ipt::new();
    scenarios::after_a_crash_reconcile_drops_what_no_live_session_owns_and_nothing_else(&lab);
    for v6 in [false, true] {
        let saved = save(&lab.topo.proxy, v6);
        assert!(!saved.contains("FASP"), "purge left something:\n{saved}");
    }
}

#[test]
fn a_tcp_twin_is_listed_with_its_session_and_shares_its_key() {
    let lab = Ipt::new();
    scenarios::a_tcp_twin_is_listed_with_its_session_and_shares_its_key(&mut *lab.open());
}

#[test]
fn tcp_twin_forwards_connections_masqueraded_or_snated() {
    scenarios::tcp_twin_forwards_connections_masqueraded_or_snated(&Ipt::new());
}

#[test]
fn removing_a_tcp_twin_stops_new_and_running_connections() {
    scenarios::removing_a_tcp_twin_stops_new_and_running_connections(&Ipt::new());
}

#[test]
fn ipv6_tcp_twin_works_like_ipv4() {
    scenarios::ipv6_tcp_twin_works_like_ipv4(&Ipt::new());
}

#[test]
fn reconcile_and_purge_remove_tcp_twins_and_tcp_only_leftovers() {
    let lab = Ipt::new();
    scenarios::reconcile_and_purge_remove_tcp_twins_and_tcp_only_leftovers(&lab);
    for v6 in [false, true] {
        let saved = save(&lab.topo.proxy, v6);
        assert!(!saved.contains("FASP"), "purge left something:\n{saved}");
    }
}

// The format checks and what only iptables meets.

#[test]
fn a_tcp_twin_is_two_more_rules_as_iptables_save_prints_them() {
    let topo = Topology::new(1);
    let mut fw = open_in(&topo.proxy);
    let masq = tcp_entry_v4(PORT);
    let snat = SessionEntry {
        snat: Some(lab::PROXY_SERVER_V4.into()),
        ..tcp_entry_v4(PORT + 1)
    };
    fw.install(&masq).unwrap();
    fw.install(&snat).unwrap();
    let (m, s) = (masq.id, snat.id);
    assert_eq!(
        our_rules(&topo.proxy, false),
        vec![
            format!("-A FASP_PROXY -s 192.0.2.2/32 -p udp -m udp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment {m} -j DNAT --to-destination 198.51.100.2:33001"),
            format!("-A FASP_PROXY -s 192.0.2.2/32 -p tcp -m tcp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment {m} -j DNAT --to-destination 198.51.100.2:22"),
            format!("-A FASP_PROXY -s 192.0.2.2/32 -p udp -m udp --dport 33002 -m addrtype --dst-type LOCAL -m comment --comment {s} -j DNAT --to-destination 198.51.100.2:33001"),
            format!("-A FASP_PROXY -s 192.0.2.2/32 -p tcp -m tcp --dport 33002 -m addrtype --dst-type LOCAL -m comment --comment {s} -j DNAT --to-destination 198.51.100.2:22"),
            format!("-A FASP_PROXY_POST -s 192.0.2.2/32 -d 198.51.100.2/32 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigdstport 33001 -m comment --comment {m} -j MASQUERADE"),
            format!("-A FASP_PROXY_POST -s 192.0.2.2/32 -d 198.51.100.2/32 -p tcp -m tcp --dport 22 -m conntrack --ctstate DNAT --ctorigdstport 33001 -m comment --comment {m} -j MASQUERADE"),
            format!("-A FASP_PROXY_POST -s 192.0.2.2/32 -d 198.51.100.2/32 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigdstport 33002 -m comment --comment {s} -j SNAT --to-source 198.51.100.1"),
            format!("-A FASP_PROXY_POST -s 192.0.2.2/32 -d 198.51.100.2/32 -p tcp -m tcp --dport 22 -m conntrack --ctstate DNAT --ctorigdstport 33002 -m comment --comment {s} -j SNAT --to-source 198.51.100.1"),
        ]
    );
    let listing = topo.proxy.exec(&[IPTABLES, "-t", "nat", "-L", "-n"]);
    let line = listing
        .lines()
        .find(|l| l.starts_with("DNAT") && l.contains("dpt:33001") && l.contains("tcp"))
        .unwrap_or_else(|| panic!("no TCP DNAT line in:\n{listing}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words,
        [
            "DNAT",
            "6",
            "--",
            "192.0.2.2",
            "0.0.0.0/0",
            "tcp",
            "dpt:33001",
            "ADDRTYPE",
            "match",
            "dst-type",
            "LOCAL",
            "/*",
            &m.to_string(),
            "*/",
            "to:198.51.100.2:22",
        ]
    );

    let v6 = tcp_entry_v6(PORT);
    fw.install(&v6).unwrap();
    let id = v6.id;
    assert_eq!(
        our_rules(&topo.proxy, true),
        vec![
            format!("-A FASP_PROXY -s 2001:db8:1::2/128 -p udp -m udp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment {id} -j DNAT --to-destination [2001:db8:2::2]:33001"),
            format!("-A FASP_PROXY -s 2001:db8:1::2/128 -p tcp -m tcp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment {id} -j DNAT --to-destination [2001:db8:2::2]:22"),
            format!("-A FASP_PROXY_POST -s 2001:db8:1::2/128 -d 2001:db8:2::2/128 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigdstport 33001 -m comment --comment {id} -j MASQUERADE"),
            format!("-A FASP_PROXY_POST -s 2001:db8:1::2/128 -d 2001:db8:2::2/128 -p tcp -m tcp --dport 22 -m conntrack --ctstate DNAT --ctorigdstport 33001 -m comment --comment {id} -j MASQUERADE"),
        ]
    );
    let mut listed = fw.list().unwrap();
    listed.sort_by_key(|e| e.key);
    assert_eq!(
        listed,
        vec![installed(&masq), installed(&snat), installed(&v6)]
    );

    // install_many writes the twins too, and refuses a key a twin's session holds.
    for e in [&masq, &snat, &v6] {
        fw.remove(e).unwrap();
    }
    assert!(our_rules(&topo.proxy, false).is_empty() && our_rules(&topo.proxy, true).is_empty());
    fw.install_many(&[masq.clone(), snat.clone(), v6.clone()])
        .unwrap();
    assert_eq!(our_rules(&topo.proxy, false).len(), 8);
    assert_eq!(our_rules(&topo.proxy, true).len(), 4);
    let taken = entry_v4(None, PORT);
    assert!(fw.install_many(&[taken]).is_err());
    assert_eq!(our_rules(&topo.proxy, false).len(), 8);
}

#[test]
fn a_tcp_dnat_rule_alone_does_not_take_the_key() {
    let lab = Ipt::new();
    let mut fw = open_in(&lab.topo.proxy);
    let live = tcp_entry_v4(PORT);
    // A leftover of another session on the same key: TCP rules only.
    lab.add_tcp_leftover(Uuid::new_v4(), PORT);
    // Not a session, so the key is free (the leftover goes with the next reconcile).
    fw.install(&live).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fw.list().unwrap(), vec![installed(&live)]);
}

#[test]
fn rules_jumps_and_listing_are_in_the_documented_shape() {
    let topo = Topology::new(1);
    let mut fw = open_in(&topo.proxy);
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

    // prepare again: nothing duplicated, nothing dropped (declaring an existing chain in an
    // iptables-restore --noflush batch would flush it).
    let before = save(&topo.proxy, false);
    fw.prepare().unwrap();
    assert_eq!(
        strip_comments(&save(&topo.proxy, false)),
        strip_comments(&before)
    );
    assert_eq!(fw.list().unwrap(), vec![installed(&entry)]);

    // Without a client port: no `spt:`, appended after the port-keyed rules.
    let any = entry_v4(None, PORT + 1);
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
            "dpt:33002",
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

    // IPv6: in ip6tables only.
    let v6 = entry_v6(Some(40000), PORT);
    fw.install(&v6).unwrap();
    let id = v6.id;
    assert_eq!(
        our_rules(&topo.proxy, true),
        vec![
            format!("-A FASP_PROXY -s 2001:db8:1::2/128 -p udp -m udp --sport 40000 --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment {id} -j DNAT --to-destination [2001:db8:2::2]:33001"),
            format!("-A FASP_PROXY_POST -s 2001:db8:1::2/128 -d 2001:db8:2::2/128 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigsrcport 40000 --ctorigdstport 33001 -m comment --comment {id} -j MASQUERADE"),
        ]
    );
    assert_eq!(our_rules(&topo.proxy, false).len(), 4, "v4 rules only");
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
    fw.remove(&v6).unwrap();
    assert!(our_rules(&topo.proxy, true).is_empty());
    assert!(!save(&topo.proxy, true).contains(&id.to_string()));
}

#[test]
fn a_rule_in_our_chains_the_proxy_did_not_write_is_reported_and_reconciled_away() {
    let topo = Topology::new(1);
    let live = entry_v4(Some(40000), PORT);
    {
        let mut fw = open_in(&topo.proxy);
        fw.install(&live).unwrap();
    }
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
    let mut fw = open_in(&topo.proxy);
    assert_eq!(our_rules(&topo.proxy, false).len(), 3);
    let err = fw.list().unwrap_err().to_string();
    assert!(
        err.contains("-A FASP_PROXY -s 192.0.2.77/32 -p udp -j RETURN"),
        "list names the line it cannot read: {err}"
    );
    let report = fw.reconcile(&[live.id]).unwrap();
    assert_eq!((report.kept, report.removed.len()), (1, 0));
    assert_eq!(fw.list().unwrap(), vec![installed(&live)]);
    assert_eq!(our_rules(&topo.proxy, false).len(), 2);

    fw.reconcile(&[]).unwrap();
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
}
