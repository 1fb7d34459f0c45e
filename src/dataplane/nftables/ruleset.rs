//! The nftables objects the proxy owns, per family: one table `fasp_proxy` holding the session
//! maps (UDP, and the TCP twin of entries that have one) and the two NAT chains that look them
//! up. Created from nft text at start, idempotently, without touching the elements already
//! there; nothing else is ever written by nft text.
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

/// The three collections a session has an element in (per keying, see [`Keying`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// DNAT map: client address . [client port .] proxy port : backend address . port.
    Sessions,
    /// SNAT map of sessions with a `bind_source_address`: same key : source address.
    SourceNat,
    /// Set of masqueraded sessions: same key.
    Masquerade,
}

/// Which flows of a session a collection is for, and so how its keys are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keying {
    /// UDP from one client port: client address . client port . proxy port.
    ClientPort,
    /// UDP from any client port (`src_port_filtering false`): client address . proxy port.
    AnyPort,
    /// The entry's TCP twin ([`crate::dataplane::SessionEntry::tcp_backend`]): client
    /// address . proxy port (a TCP connection's source port is known only when it starts).
    Tcp,
}

/// Every collection of a family, in the order [`all_sets`] and the script list them.
const COLLECTIONS: [(Collection, Keying); 9] = [
    (Collection::Sessions, Keying::ClientPort),
    (Collection::Sessions, Keying::AnyPort),
    (Collection::SourceNat, Keying::ClientPort),
    (Collection::SourceNat, Keying::AnyPort),
    (Collection::Masquerade, Keying::ClientPort),
    (Collection::Masquerade, Keying::AnyPort),
    (Collection::Sessions, Keying::Tcp),
    (Collection::SourceNat, Keying::Tcp),
    (Collection::Masquerade, Keying::Tcp),
];

/// The name of a collection: the one place a name is tied to what it holds (nothing is ever
/// inferred from a name's shape, see [`role`]).
fn name(collection: Collection, keying: Keying) -> &'static str {
    match (collection, keying) {
        (Collection::Sessions, Keying::ClientPort) => "sessions",
        (Collection::Sessions, Keying::AnyPort) => "sessions_any_port",
        (Collection::Sessions, Keying::Tcp) => "tcp_sessions",
        (Collection::SourceNat, Keying::ClientPort) => "source_nat",
        (Collection::SourceNat, Keying::AnyPort) => "source_nat_any_port",
        (Collection::SourceNat, Keying::Tcp) => "tcp_source_nat",
        (Collection::Masquerade, Keying::ClientPort) => "masq_sessions",
        (Collection::Masquerade, Keying::AnyPort) => "masq_sessions_any_port",
        (Collection::Masquerade, Keying::Tcp) => "tcp_masq_sessions",
    }
}

/// The set or map of `collection` in `family` for UDP, keyed with the client port or without
/// it (`src_port_filtering false`).
pub fn set(family: Family, collection: Collection, with_client_port: bool) -> SetRef {
    let keying = if with_client_port {
        Keying::ClientPort
    } else {
        Keying::AnyPort
    };
    set_of(family, collection, keying)
}

/// The set or map of `collection` in `family` for an entry's TCP twin.
pub fn tcp_set(family: Family, collection: Collection) -> SetRef {
    set_of(family, collection, Keying::Tcp)
}

/// The set or map of `collection` and `keying` in `family`.
pub fn set_of(family: Family, collection: Collection, keying: Keying) -> SetRef {
    let key = match keying {
        Keying::ClientPort => KEY_WITH_PORT,
        Keying::AnyPort | Keying::Tcp => KEY_ANY_PORT,
    };
    let data = match collection {
        Collection::Sessions => Some(ADDR_PORT),
        Collection::SourceNat => Some(ADDR),
        Collection::Masquerade => None,
    };
    SetRef {
        family,
        table: TABLE,
        name: name(collection, keying),
        key,
        data,
    }
}

/// What the set or map named `name` holds; `None` for a name that is not one of ours.
pub fn role(set_name: &str) -> Option<(Collection, Keying)> {
    COLLECTIONS
        .into_iter()
        .find(|(c, k)| name(*c, *k) == set_name)
}

/// Every set and map of `family`.
pub fn all_sets(family: Family) -> Vec<SetRef> {
    COLLECTIONS
        .into_iter()
        .map(|(c, k)| set_of(family, c, k))
        .collect()
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
/// add map ip fasp_proxy tcp_sessions { type ipv4_addr . inet_service : ipv4_addr . inet_service; flags timeout; }
/// add map ip fasp_proxy tcp_source_nat { type ipv4_addr . inet_service : ipv4_addr; flags timeout; }
/// add set ip fasp_proxy tcp_masq_sessions { type ipv4_addr . inet_service; flags timeout; }
/// add chain ip fasp_proxy prerouting { type nat hook prerouting priority dstnat; policy accept; }
/// add chain ip fasp_proxy postrouting { type nat hook postrouting priority srcnat; policy accept; }
/// flush chain ip fasp_proxy prerouting
/// flush chain ip fasp_proxy postrouting
/// # UDP to one of the proxy's own addresses, from a session's client: DNAT to its backend.
/// add rule ip fasp_proxy prerouting fib daddr type local dnat ip to ip saddr . udp sport . udp dport map @sessions
/// add rule ip fasp_proxy prerouting fib daddr type local dnat ip to ip saddr . udp dport map @sessions_any_port
/// # TCP to the same address and port from an entry's client (its TCP twin): DNAT to the
/// # TCP backend (`tcp dport` implies `meta l4proto tcp`, so UDP never matches it).
/// add rule ip fasp_proxy prerouting fib daddr type local dnat ip to ip saddr . tcp dport map @tcp_sessions
/// # Only flows this proxy DNAT'ed (ct status dnat, and the session's original tuple in our
/// # maps) get their source rewritten, so replies come back through the proxy.
/// add rule ip fasp_proxy postrouting ct status dnat meta l4proto udp snat ip to ct original ip saddr . ct original proto-src . ct original proto-dst map @source_nat
/// add rule ip fasp_proxy postrouting ct status dnat meta l4proto udp snat ip to ct original ip saddr . ct original proto-dst map @source_nat_any_port
/// add rule ip fasp_proxy postrouting ct status dnat meta l4proto udp ct original ip saddr . ct original proto-src . ct original proto-dst @masq_sessions masquerade
/// add rule ip fasp_proxy postrouting ct status dnat meta l4proto udp ct original ip saddr . ct original proto-dst @masq_sessions_any_port masquerade
/// # The TCP twin's source, keyed as its DNAT (client address . proxy port).
/// add rule ip fasp_proxy postrouting ct status dnat meta l4proto tcp snat ip to ct original ip saddr . ct original proto-dst map @tcp_source_nat
/// add rule ip fasp_proxy postrouting ct status dnat meta l4proto tcp ct original ip saddr . ct original proto-dst @tcp_masq_sessions masquerade
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
         add rule {f} {TABLE} prerouting fib daddr type local dnat {f} to {f} saddr . tcp dport map @tcp_sessions\n\
         add rule {f} {TABLE} postrouting ct status dnat meta l4proto udp snat {f} to ct original {f} saddr . ct original proto-src . ct original proto-dst map @source_nat\n\
         add rule {f} {TABLE} postrouting ct status dnat meta l4proto udp snat {f} to ct original {f} saddr . ct original proto-dst map @source_nat_any_port\n\
         add rule {f} {TABLE} postrouting ct status dnat meta l4proto udp ct original {f} saddr . ct original proto-src . ct original proto-dst @masq_sessions masquerade\n\
         add rule {f} {TABLE} postrouting ct status dnat meta l4proto udp ct original {f} saddr . ct original proto-dst @masq_sessions_any_port masquerade\n\
         add rule {f} {TABLE} postrouting ct status dnat meta l4proto tcp snat {f} to ct original {f} saddr . ct original proto-dst map @tcp_source_nat\n\
         add rule {f} {TABLE} postrouting ct status dnat meta l4proto tcp ct original {f} saddr . ct original proto-dst @tcp_masq_sessions masquerade\n"
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
        assert!(script.contains("add map ip6 fasp_proxy tcp_sessions { type ipv6_addr . inet_service : ipv6_addr . inet_service; flags timeout; }"));
        assert!(script.contains("dnat ip6 to ip6 saddr . tcp dport map @tcp_sessions"));
        assert!(!script.contains("ipv4_addr"));
        assert!(!script.contains(" ip "));
    }

    #[test]
    fn nine_collections_per_family_each_named_once() {
        let names: Vec<&str> = all_sets(Family::V4).iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "sessions",
                "sessions_any_port",
                "source_nat",
                "source_nat_any_port",
                "masq_sessions",
                "masq_sessions_any_port",
                "tcp_sessions",
                "tcp_source_nat",
                "tcp_masq_sessions"
            ]
        );
        for set in all_sets(Family::V6) {
            let (collection, keying) = role(set.name).unwrap();
            assert_eq!(set_of(Family::V6, collection, keying), set);
        }
        assert_eq!(
            role("tcp_sessions"),
            Some((Collection::Sessions, Keying::Tcp))
        );
        assert_eq!(role("sessions_tcp"), None);
        let tcp = tcp_set(Family::V4, Collection::SourceNat);
        assert_eq!((tcp.key, tcp.data), (KEY_ANY_PORT, Some(ADDR)));
    }
}
