//! The text of a session's two rules, one builder per rule, each next to the `iptables-save`
//! text it stands for. [`super::save`] parses the same text back.

use std::net::{IpAddr, SocketAddr};

use uuid::Uuid;

use super::{CHAIN, POST_CHAIN};
use crate::dataplane::entry::{SessionEntry, SessionKey};
use crate::dataplane::family::Family;

/// The session UUID in a rule comment, if it is one.
pub(super) fn comment_id(comment: &str) -> Option<Uuid> {
    Uuid::try_parse(comment).ok()
}

/// A session's DNAT rule in [`CHAIN`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DnatRule {
    pub(super) comment: String,
    pub(super) client: IpAddr,
    pub(super) client_port: Option<u16>,
    pub(super) proxy_port: u16,
    pub(super) backend: SocketAddr,
}

impl DnatRule {
    pub(super) fn of(entry: &SessionEntry) -> Self {
        DnatRule {
            comment: entry.id.to_string(),
            client: entry.client,
            client_port: entry.client_port,
            proxy_port: entry.proxy_port,
            backend: entry.backend,
        }
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
    pub(super) fn spec(&self) -> String {
        let family = Family::of(self.client);
        let sport = self
            .client_port
            .map(|p| format!(" --sport {p}"))
            .unwrap_or_default();
        format!(
            "-s {}/{} -p udp -m udp{sport} --dport {} -m addrtype --dst-type LOCAL -m comment --comment {} -j DNAT --to-destination {}",
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

/// A session's SNAT or MASQUERADE rule in [`POST_CHAIN`]: only packets this session's DNAT
/// rule translated (conntrack status DNAT, original ports) are rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PostRule {
    pub(super) comment: String,
    pub(super) client: IpAddr,
    pub(super) client_port: Option<u16>,
    pub(super) proxy_port: u16,
    pub(super) backend: SocketAddr,
    pub(super) snat: Option<IpAddr>,
}

impl PostRule {
    pub(super) fn of(entry: &SessionEntry) -> Self {
        PostRule {
            comment: entry.id.to_string(),
            client: entry.client,
            client_port: entry.client_port,
            proxy_port: entry.proxy_port,
            backend: entry.backend,
            snat: entry.snat,
        }
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
        format!(
            "-s {}/{len} -d {}/{len} -p udp -m udp --dport {} -m conntrack --ctstate DNAT{sport} \
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
