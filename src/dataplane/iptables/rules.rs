//! The text of a session's rules (two, four with a TCP twin), one builder per rule, each next
//! to the `iptables-save` text it stands for. [`super::save`] parses the same text back.

use std::net::{IpAddr, SocketAddr};

use uuid::Uuid;

use super::{CHAIN, POST_CHAIN};
use crate::dataplane::entry::{SessionEntry, SessionKey};
use crate::dataplane::family::Family;

/// The session UUID in a rule comment, if it is one.
pub(super) fn comment_id(comment: &str) -> Option<Uuid> {
    Uuid::try_parse(comment).ok()
}

/// Which protocol a rule forwards: the session's UDP, or its TCP twin
/// ([`SessionEntry::tcp_backend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    /// `udp` or `tcp`, as `-p` and `-m` take it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// A session's DNAT rule in [`CHAIN`], for its UDP or for its TCP twin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DnatRule {
    pub(super) proto: Proto,
    pub(super) comment: String,
    pub(super) client: IpAddr,
    pub(super) client_port: Option<u16>,
    pub(super) proxy_port: u16,
    pub(super) backend: SocketAddr,
}

impl DnatRule {
    /// The session's UDP DNAT rule.
    pub(super) fn of(entry: &SessionEntry) -> Self {
        DnatRule {
            proto: Proto::Udp,
            comment: entry.id.to_string(),
            client: entry.client,
            client_port: entry.client_port,
            proxy_port: entry.proxy_port,
            backend: entry.backend,
        }
    }

    /// The DNAT rule of the session's TCP twin, if it has one: any client port (a TCP
    /// connection's source port is known only when it starts), to the TCP backend.
    pub(super) fn tcp_of(entry: &SessionEntry) -> Option<Self> {
        entry.tcp_backend.map(|backend| DnatRule {
            proto: Proto::Tcp,
            client_port: None,
            backend,
            ..DnatRule::of(entry)
        })
    }

    /// Whether this is the session's UDP rule, the one that holds its key and makes it listed.
    pub(super) fn is_udp(&self) -> bool {
        self.proto == Proto::Udp
    }

    pub(super) fn key(&self) -> SessionKey {
        SessionKey {
            client: self.client,
            client_port: self.client_port,
            proxy_port: self.proxy_port,
        }
    }

    /// The rule, as `iptables-save` prints it after `-A FASP_PROXY`. `addrtype LOCAL`: only
    /// datagrams addressed to the proxy itself, never the client's traffic the host routes
    /// elsewhere (the nftables backend's `fib daddr type local`):
    /// ```text
    /// -s 192.0.2.2/32 -p udp -m udp --sport 40000 --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment <uuid> -j DNAT --to-destination 198.51.100.2:33001
    /// -s 192.0.2.2/32 -p udp -m udp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment <uuid> -j DNAT --to-destination 198.51.100.2:33001
    /// -s 2001:db8:1::2/128 -p udp -m udp --sport 40000 --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment <uuid> -j DNAT --to-destination [2001:db8:2::2]:33001
    /// ```
    /// and the TCP twin's (never with `--sport`):
    /// ```text
    /// -s 192.0.2.2/32 -p tcp -m tcp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment <uuid> -j DNAT --to-destination 198.51.100.2:22
    /// -s 2001:db8:1::2/128 -p tcp -m tcp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment <uuid> -j DNAT --to-destination [2001:db8:2::2]:22
    /// ```
    pub(super) fn spec(&self) -> String {
        let family = Family::of(self.client);
        let sport = self
            .client_port
            .map(|p| format!(" --sport {p}"))
            .unwrap_or_default();
        let p = self.proto.name();
        format!(
            "-s {}/{} -p {p} -m {p}{sport} --dport {} -m addrtype --dst-type LOCAL -m comment --comment {} -j DNAT --to-destination {}",
            self.client,
            family.host_len(),
            self.proxy_port,
            self.comment,
            self.backend // `198.51.100.2:33001`, `[2001:db8:2::2]:33001`
        )
    }

    /// `-I FASP_PROXY 1 <spec>` with a client port (so it wins over any-port rules),
    /// `-A FASP_PROXY <spec>` without.
    pub(super) fn add_line(&self) -> String {
        add_line(CHAIN, self.client_port.is_some(), &self.spec())
    }

    /// `-D FASP_PROXY <spec>`.
    pub(super) fn delete_line(&self) -> String {
        format!("-D {CHAIN} {}", self.spec())
    }
}

/// A session's SNAT or MASQUERADE rule in [`POST_CHAIN`], for its UDP or its TCP twin: only
/// packets this session's DNAT rule translated (conntrack status DNAT, original ports) are
/// rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PostRule {
    pub(super) proto: Proto,
    pub(super) comment: String,
    pub(super) client: IpAddr,
    pub(super) client_port: Option<u16>,
    pub(super) proxy_port: u16,
    pub(super) backend: SocketAddr,
    pub(super) snat: Option<IpAddr>,
}

impl PostRule {
    /// The session's UDP POST rule.
    pub(super) fn of(entry: &SessionEntry) -> Self {
        PostRule {
            proto: Proto::Udp,
            comment: entry.id.to_string(),
            client: entry.client,
            client_port: entry.client_port,
            proxy_port: entry.proxy_port,
            backend: entry.backend,
            snat: entry.snat,
        }
    }

    /// The POST rule of the session's TCP twin, if it has one (same SNAT or masquerade).
    pub(super) fn tcp_of(entry: &SessionEntry) -> Option<Self> {
        entry.tcp_backend.map(|backend| PostRule {
            proto: Proto::Tcp,
            client_port: None,
            backend,
            ..PostRule::of(entry)
        })
    }

    pub(super) fn key(&self) -> SessionKey {
        SessionKey {
            client: self.client,
            client_port: self.client_port,
            proxy_port: self.proxy_port,
        }
    }

    /// The rule, as `iptables-save` prints it after `-A FASP_PROXY_POST`:
    /// ```text
    /// -s 192.0.2.2/32 -d 198.51.100.2/32 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigsrcport 40000 --ctorigdstport 33001 -m comment --comment <uuid> -j MASQUERADE
    /// -s 192.0.2.2/32 -d 198.51.100.2/32 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigdstport 33001 -m comment --comment <uuid> -j SNAT --to-source 198.51.100.1
    /// -s 2001:db8:1::2/128 -d 2001:db8:2::2/128 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigsrcport 40000 --ctorigdstport 33001 -m comment --comment <uuid> -j MASQUERADE
    /// ```
    /// and the TCP twin's (never with `--ctorigsrcport`):
    /// ```text
    /// -s 192.0.2.2/32 -d 198.51.100.2/32 -p tcp -m tcp --dport 22 -m conntrack --ctstate DNAT --ctorigdstport 33001 -m comment --comment <uuid> -j MASQUERADE
    /// -s 192.0.2.2/32 -d 198.51.100.2/32 -p tcp -m tcp --dport 22 -m conntrack --ctstate DNAT --ctorigdstport 33001 -m comment --comment <uuid> -j SNAT --to-source 198.51.100.1
    /// -s 2001:db8:1::2/128 -d 2001:db8:2::2/128 -p tcp -m tcp --dport 22 -m conntrack --ctstate DNAT --ctorigdstport 33001 -m comment --comment <uuid> -j MASQUERADE
    /// ```
    pub(super) fn spec(&self) -> String {
        let len = Family::of(self.client).host_len();
        let sport = self
            .client_port
            .map(|p| format!(" --ctorigsrcport {p}"))
            .unwrap_or_default();
        let target = match self.snat {
            Some(addr) => format!("SNAT --to-source {addr}"),
            None => "MASQUERADE".to_string(),
        };
        let p = self.proto.name();
        format!(
            "-s {}/{len} -d {}/{len} -p {p} -m {p} --dport {} -m conntrack --ctstate DNAT{sport} \
             --ctorigdstport {} -m comment --comment {} -j {target}",
            self.client,
            self.backend.ip(),
            self.backend.port(),
            self.proxy_port,
            self.comment,
        )
    }

    /// `-I FASP_PROXY_POST 1 <spec>` with a client port, `-A FASP_PROXY_POST <spec>` without.
    pub(super) fn add_line(&self) -> String {
        add_line(POST_CHAIN, self.client_port.is_some(), &self.spec())
    }

    /// `-D FASP_PROXY_POST <spec>`.
    pub(super) fn delete_line(&self) -> String {
        format!("-D {POST_CHAIN} {}", self.spec())
    }
}

/// `-I CHAIN 1 spec` (port-specific sessions go first) or `-A CHAIN spec`.
pub(super) fn add_line(chain: &str, first: bool, spec: &str) -> String {
    if first {
        format!("-I {chain} 1 {spec}")
    } else {
        format!("-A {chain} {spec}")
    }
}

/// A rule of one of the proxy's chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rule {
    Dnat(DnatRule),
    Post(PostRule),
}

impl Rule {
    pub(super) fn id(&self) -> Option<Uuid> {
        match self {
            Rule::Dnat(d) => comment_id(&d.comment),
            Rule::Post(p) => comment_id(&p.comment),
        }
    }

    /// The rule if it is a session's UDP DNAT rule: the one that holds the key and stands for
    /// the session in list, reconcile and purge (its TCP twin shares the key).
    pub(super) fn udp_dnat(&self) -> Option<&DnatRule> {
        match self {
            Rule::Dnat(d) if d.is_udp() => Some(d),
            _ => None,
        }
    }

    /// The comment and key of the session this rule belongs to.
    pub(super) fn comment_and_key(&self) -> (&str, SessionKey) {
        match self {
            Rule::Dnat(d) => (&d.comment, d.key()),
            Rule::Post(p) => (&p.comment, p.key()),
        }
    }

    /// Whether this is one of a TCP twin's rules.
    pub(super) fn is_tcp(&self) -> bool {
        match self {
            Rule::Dnat(d) => d.proto == Proto::Tcp,
            Rule::Post(p) => p.proto == Proto::Tcp,
        }
    }
}

/// The `iptables-restore` lines that add a session: its UDP DNAT and POST rules, then its TCP
/// twin's, when it has one (one batch: all or nothing).
pub(super) fn add_lines(entry: &SessionEntry) -> Vec<String> {
    let mut lines = vec![
        DnatRule::of(entry).add_line(),
        PostRule::of(entry).add_line(),
    ];
    lines.extend(DnatRule::tcp_of(entry).map(|r| r.add_line()));
    lines.extend(PostRule::tcp_of(entry).map(|r| r.add_line()));
    lines
}

/// The `iptables-restore` lines that delete exactly the rules [`add_lines`] adds.
pub(super) fn delete_lines(entry: &SessionEntry) -> Vec<String> {
    let mut lines = vec![
        DnatRule::of(entry).delete_line(),
        PostRule::of(entry).delete_line(),
    ];
    lines.extend(DnatRule::tcp_of(entry).map(|r| r.delete_line()));
    lines.extend(PostRule::tcp_of(entry).map(|r| r.delete_line()));
    lines
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::dataplane::entry::sample_entry;

    /// The id of [`sample_entry`], as rule comments show it.
    const UUID: &str = "3a9fd819-59c3-42bc-b0a2-d26304a1eb84";

    pub(crate) fn v6_entry() -> SessionEntry {
        SessionEntry {
            client: "2001:db8:1::2".parse().unwrap(),
            proxy_addr: "2001:db8:1::1".parse().unwrap(),
            backend: "[2001:db8:2::2]:33001".parse().unwrap(),
            tcp_backend: None,
            ..sample_entry()
        }
    }

    #[test]
    fn dnat_rule_text_v4_with_and_without_source_port() {
        let mut e = sample_entry();
        assert_eq!(
            DnatRule::of(&e).add_line(),
            format!(
                "-I FASP_PROXY 1 -s 192.0.2.2/32 -p udp -m udp --sport 40000 --dport 33001 \
                 -m addrtype --dst-type LOCAL -m comment --comment {UUID} -j DNAT --to-destination 198.51.100.2:33001"
            )
        );
        e.client_port = None;
        assert_eq!(
            DnatRule::of(&e).add_line(),
            format!(
                "-A FASP_PROXY -s 192.0.2.2/32 -p udp -m udp --dport 33001 \
                 -m addrtype --dst-type LOCAL -m comment --comment {UUID} -j DNAT --to-destination 198.51.100.2:33001"
            )
        );
        assert_eq!(
            DnatRule::of(&e).delete_line(),
            format!(
                "-D FASP_PROXY -s 192.0.2.2/32 -p udp -m udp --dport 33001 \
                 -m addrtype --dst-type LOCAL -m comment --comment {UUID} -j DNAT --to-destination 198.51.100.2:33001"
            )
        );
    }

    #[test]
    fn dnat_rule_text_v6() {
        assert_eq!(
            DnatRule::of(&v6_entry()).add_line(),
            format!(
                "-I FASP_PROXY 1 -s 2001:db8:1::2/128 -p udp -m udp --sport 40000 --dport 33001 \
                 -m addrtype --dst-type LOCAL -m comment --comment {UUID} -j DNAT --to-destination [2001:db8:2::2]:33001"
            )
        );
    }

    #[test]
    fn tcp_twin_rule_text_v4_and_v6() {
        let mut e = sample_entry();
        assert_eq!(DnatRule::tcp_of(&e), None);
        assert_eq!(add_lines(&e).len(), 2);
        e.client_port = None;
        e.tcp_backend = Some("198.51.100.2:22".parse().unwrap());
        let lines = add_lines(&e);
        assert_eq!(
            lines[2..],
            [
                format!(
                    "-A FASP_PROXY -s 192.0.2.2/32 -p tcp -m tcp --dport 33001 \
                     -m addrtype --dst-type LOCAL -m comment --comment {UUID} -j DNAT --to-destination 198.51.100.2:22"
                ),
                format!(
                    "-A FASP_PROXY_POST -s 192.0.2.2/32 -d 198.51.100.2/32 -p tcp -m tcp --dport 22 \
                     -m conntrack --ctstate DNAT --ctorigdstport 33001 \
                     -m comment --comment {UUID} -j MASQUERADE"
                ),
            ]
        );
        assert_eq!(lines[0], DnatRule::of(&e).add_line(), "UDP first");
        e.snat = Some("198.51.100.1".parse().unwrap());
        assert!(delete_lines(&e)[3]
            .starts_with("-D FASP_PROXY_POST -s 192.0.2.2/32 -d 198.51.100.2/32 -p tcp"));
        assert!(delete_lines(&e)[3].ends_with("-j SNAT --to-source 198.51.100.1"));
        let mut e = v6_entry();
        e.client_port = None;
        e.tcp_backend = Some("[2001:db8:2::2]:22".parse().unwrap());
        assert_eq!(
            DnatRule::tcp_of(&e).unwrap().delete_line(),
            format!(
                "-D FASP_PROXY -s 2001:db8:1::2/128 -p tcp -m tcp --dport 33001 \
                 -m addrtype --dst-type LOCAL -m comment --comment {UUID} -j DNAT --to-destination [2001:db8:2::2]:22"
            )
        );
        let dnat = DnatRule::tcp_of(&e).unwrap();
        assert!(!dnat.is_udp() && Rule::Dnat(dnat.clone()).udp_dnat().is_none());
        assert_eq!(
            dnat.key(),
            DnatRule::of(&e).key(),
            "the twin shares the key"
        );
    }

    #[test]
    fn post_rule_text_masquerade_and_snat() {
        let mut e = sample_entry();
        assert_eq!(
            PostRule::of(&e).add_line(),
            format!(
                "-I FASP_PROXY_POST 1 -s 192.0.2.2/32 -d 198.51.100.2/32 -p udp -m udp --dport 33001 \
                 -m conntrack --ctstate DNAT --ctorigsrcport 40000 --ctorigdstport 33001 \
                 -m comment --comment {UUID} -j MASQUERADE"
            )
        );
        e.client_port = None;
        e.snat = Some("198.51.100.1".parse().unwrap());
        assert_eq!(
            PostRule::of(&e).add_line(),
            format!(
                "-A FASP_PROXY_POST -s 192.0.2.2/32 -d 198.51.100.2/32 -p udp -m udp --dport 33001 \
                 -m conntrack --ctstate DNAT --ctorigdstport 33001 \
                 -m comment --comment {UUID} -j SNAT --to-source 198.51.100.1"
            )
        );
        let mut e = v6_entry();
        e.snat = Some("2001:db8:2::1".parse().unwrap());
        assert_eq!(
            PostRule::of(&e).delete_line(),
            format!(
                "-D FASP_PROXY_POST -s 2001:db8:1::2/128 -d 2001:db8:2::2/128 -p udp -m udp --dport 33001 \
                 -m conntrack --ctstate DNAT --ctorigsrcport 40000 --ctorigdstport 33001 \
                 -m comment --comment {UUID} -j SNAT --to-source 2001:db8:2::1"
            )
        );
    }
}
