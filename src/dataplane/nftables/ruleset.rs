//! The nftables objects the proxy owns, per family: one table `fasp_proxy` holding the session
//! maps and the two NAT chains that look them up. Created from nft text at start, idempotently,
//! without touching the elements already there; nothing else is ever written by nft text.
//!
//! A packet is forwarded by a map lookup, never by a per-session rule, so the per-packet cost
//! does not grow with the number of sessions.

use super::elements::{Family, Kind, SetRef};

/// The table the proxy owns, in both the `ip` and the `ip6` family.
pub const TABLE: &str = "fasp_proxy";

const KEY_WITH_PORT: &[Kind] = &[Kind::Addr, Kind::Port, Kind::Port];
const KEY_ANY_PORT: &[Kind] = &[Kind::Addr, Kind::Port];
const ADDR_PORT: &[Kind] = &[Kind::Addr, Kind::Port];
const ADDR: &[Kind] = &[Kind::Addr];

/// The three collections a session has an element in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// DNAT map: client address . [client port .] proxy port : backend address . port.
    Sessions,
    /// SNAT map of sessions with a `bind_source_address`: same key : source address.
    SourceNat,
    /// Set of masqueraded sessions: same key.
    Masquerade,
}

/// The set or map of `collection` in `family`, keyed with the client port or without it
/// (`src_port_filtering false`).
pub fn set(family: Family, collection: Collection, with_client_port: bool) -> SetRef {
    let key = if with_client_port {
        KEY_WITH_PORT
    } else {
        KEY_ANY_PORT
    };
    let (name, data) = match (collection, with_client_port) {
        (Collection::Sessions, true) => ("sessions", Some(ADDR_PORT)),
        (Collection::Sessions, false) => ("sessions_any_port", Some(ADDR_PORT)),
        (Collection::SourceNat, true) => ("source_nat", Some(ADDR)),
        (Collection::SourceNat, false) => ("source_nat_any_port", Some(ADDR)),
        (Collection::Masquerade, true) => ("masq_sessions", None),
        (Collection::Masquerade, false) => ("masq_sessions_any_port", None),
    };
    SetRef {
        family,
        table: TABLE,
        name,
        key,
        data,
    }
}

/// Every set and map of `family`.
pub fn all_sets(family: Family) -> Vec<SetRef> {
    let mut out = Vec::with_capacity(6);
    for collection in [
        Collection::Sessions,
        Collection::SourceNat,
        Collection::Masquerade,
    ] {
        for with_port in [true, false] {
            out.push(set(family, collection, with_port));
        }
    }
    out
}

/// The nft script that creates the table of `family` if missing and (re)writes its two chains,
/// keeping every map element. Applying it twice changes nothing.
///
/// For `ip` it reads:
/// ```text
/// add table ip fasp_proxy
/// add map ip fasp_proxy sessions { type ipv4_addr . inet_service . inet_service : ipv4_addr . inet_service; flags timeout; }
/// add map ip fasp_proxy sessions_any_port { type ipv4_addr . inet_service : ipv4_addr . inet_service; flags timeout; }
/// add map ip fasp_proxy source_nat { type ipv4_addr . inet_service . inet_service : ipv4_addr; flags timeout; }
/// add map ip fasp_proxy source_nat_any_port { type ipv4_addr . inet_service : ipv4_addr; flags timeout; }
/// add set ip fasp_proxy masq_sessions { type ipv4_addr . inet_service . inet_service; flags timeout; }
/// add set ip fasp_proxy masq_sessions_any_port { type ipv4_addr . inet_service; flags timeout; }
/// add chain ip fasp_proxy prerouting { type nat hook prerouting priority dstnat; policy accept; }
/// add chain ip fasp_proxy postrouting { type nat hook postrouting priority srcnat; policy accept; }
/// flush chain ip fasp_proxy prerouting
/// flush chain ip fasp_proxy postrouting
/// # UDP to one of the proxy's own addresses, from a session's client: DNAT to its backend.
/// add rule ip fasp_proxy prerouting fib daddr type local dnat ip to ip saddr . udp sport . udp dport map @sessions
/// add rule ip fasp_proxy prerouting fib daddr type local dnat ip to ip saddr . udp dport map @sessions_any_port
/// # Only flows this proxy DNAT'ed (ct status dnat, and the session's original tuple in our
/// # maps) get their source rewritten, so replies come back through the proxy.
/// add rule ip fasp_proxy postrouting ct status dnat meta l4proto udp snat ip to ct original ip saddr . ct original proto-src . ct original proto-dst map @source_nat
/// add rule ip fasp_proxy postrouting ct status dnat meta l4proto udp snat ip to ct original ip saddr . ct original proto-dst map @source_nat_any_port
/// add rule ip fasp_proxy postrouting ct status dnat meta l4proto udp ct original ip saddr . ct original proto-src . ct original proto-dst @masq_sessions masquerade
/// add rule ip fasp_proxy postrouting ct status dnat meta l4proto udp ct original ip saddr . ct original proto-dst @masq_sessions_any_port masquerade
/// ```
pub fn prepare_script(family: Family) -> String {
    let f = family.nft_keyword();
    let addr = match family {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    };
    let mut s = format!("add table {f} {TABLE}\n");
    for set in all_sets(family) {
        let key: Vec<&str> = set.key.iter().map(|k| type_name(*k, addr)).collect();
        let (kind, data) = match set.data {
            Some(d) => {
                let d: Vec<&str> = d.iter().map(|k| type_name(*k, addr)).collect();
                ("map", format!(" : {}", d.join(" . ")))
            }
            None => ("set", String::new()),
        };
        s.push_str(&format!(
            "add {kind} {f} {TABLE} {} {{ type {}{data}; flags timeout; }}\n",
            set.name,
            key.join(" . ")
        ));
    }
    s.push_str(&format!(
        "add chain {f} {TABLE} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}\n\
         add chain {f} {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain {f} {TABLE} prerouting\n\
         flush chain {f} {TABLE} postrouting\n\
         add rule {f} {TABLE} prerouting fib daddr type local dnat {f} to {f} saddr . udp sport . udp dport map @sessions\n\
         add rule {f} {TABLE} prerouting fib daddr type local dnat {f} to {f} saddr . udp dport map @sessions_any_port\n\
         add rule {f} {TABLE} postrouting ct status dnat meta l4proto udp snat {f} to ct original {f} saddr . ct original proto-src . ct original proto-dst map @source_nat\n\
         add rule {f} {TABLE} postrouting ct status dnat meta l4proto udp snat {f} to ct original {f} saddr . ct original proto-dst map @source_nat_any_port\n\
         add rule {f} {TABLE} postrouting ct status dnat meta l4proto udp ct original {f} saddr . ct original proto-src . ct original proto-dst @masq_sessions masquerade\n\
         add rule {f} {TABLE} postrouting ct status dnat meta l4proto udp ct original {f} saddr . ct original proto-dst @masq_sessions_any_port masquerade\n"
    ));
    s
}

fn type_name(kind: Kind, addr: &'static str) -> &'static str {
    match kind {
        Kind::Addr => addr,
        Kind::Port => "inet_service",
    }
}

/// The nft script that deletes the table of `family` if it exists (creating it first makes the
/// delete succeed either way, in one transaction): `add table ip fasp_proxy` then
/// `delete table ip fasp_proxy`.
pub fn purge_script(family: Family) -> String {
    let f = family.nft_keyword();
    format!("add table {f} {TABLE}\ndelete table {f} {TABLE}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_script_matches_the_documented_text() {
        let script = prepare_script(Family::V4);
        // The doc comment above is the script: keep them identical.
        let documented: String = include_str!("ruleset.rs")
            .lines()
            .skip_while(|l| !l.starts_with("/// add table ip fasp_proxy"))
            .take_while(|l| l.starts_with("/// "))
            .map(|l| l.trim_start_matches("/// "))
            .filter(|l| !l.starts_with('#') && !l.starts_with("```"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(script, documented);
    }

    #[test]
    fn ip6_script_uses_ip6_types_and_expressions() {
        let script = prepare_script(Family::V6);
        assert!(script.contains("add map ip6 fasp_proxy sessions { type ipv6_addr . inet_service . inet_service : ipv6_addr . inet_service; flags timeout; }"));
        assert!(script.contains("dnat ip6 to ip6 saddr . udp sport . udp dport map @sessions"));
        assert!(script.contains("ct original ip6 saddr"));
        assert!(!script.contains("ipv4_addr"));
        assert!(!script.contains(" ip "));
    }

    #[test]
    fn six_collections_per_family() {
        let names: Vec<&str> = all_sets(Family::V4).iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "sessions",
                "sessions_any_port",
                "source_nat",
                "source_nat_any_port",
                "masq_sessions",
                "masq_sessions_any_port"
            ]
        );
    }
}
