//! Reading `iptables-save -t nat` back: which of the proxy's chains and jump rules exist, and
//! the proxy's rules, parsed strictly (a rule the proxy did not write is reported, never
//! guessed at) by a small tokenizer that understands `iptables-save`'s quoting.

use std::net::{IpAddr, SocketAddr};

use super::rules::{comment_id, DnatRule, PostRule, Proto, Rule};
use super::{CHAIN, POST_CHAIN};
use crate::dataplane::entry::InstalledEntry;
use crate::dataplane::error::DataplaneError;
use crate::dataplane::family::Family;

/// The jump rule into [`CHAIN`], as `iptables-save` prints it.
pub(super) const PRE_JUMP: &str = "-A PREROUTING -j FASP_PROXY";
/// The jump rule into [`POST_CHAIN`], as `iptables-save` prints it.
pub(super) const POST_JUMP: &str = "-A POSTROUTING -j FASP_PROXY_POST";

impl Proto {
    /// `-p udp -m udp` or `-p tcp -m tcp`.
    fn parse(t: &mut Tokens<'_>) -> Result<Self, String> {
        t.expect("-p")?;
        let proto = match t.next("udp or tcp")? {
            "udp" => Proto::Udp,
            "tcp" => Proto::Tcp,
            other => return Err(format!("expected `udp` or `tcp`, found `{other}`")),
        };
        t.expect_all(&["-m", proto.name()])?;
        Ok(proto)
    }
}

impl DnatRule {
    /// Parses the tokens after `-A FASP_PROXY`, accepting exactly what [`DnatRule::spec`]
    /// writes (UDP with or without `--sport`, TCP without).
    pub(super) fn parse(t: &mut Tokens<'_>) -> Result<Self, String> {
        t.expect("-s")?;
        let client = t.host()?;
        let family = Family::of(client);
        let proto = Proto::parse(t)?;
        let client_port = if proto == Proto::Udp && t.eat("--sport") {
            Some(t.port()?)
        } else {
            None
        };
        t.expect("--dport")?;
        let proxy_port = t.port()?;
        t.expect_all(&["-m", "addrtype", "--dst-type", "LOCAL"])?;
        t.expect_all(&["-m", "comment", "--comment"])?;
        let comment = t.next("a comment")?.to_string();
        t.expect_all(&["-j", "DNAT", "--to-destination"])?;
        let backend = t.socket_addr(family)?;
        t.end()?;
        Ok(DnatRule {
            proto,
            comment,
            client,
            client_port,
            proxy_port,
            backend,
        })
    }
}

impl PostRule {
    /// Parses the tokens after `-A FASP_PROXY_POST`, accepting exactly what
    /// [`PostRule::spec`] writes (UDP with or without `--ctorigsrcport`, TCP without).
    pub(super) fn parse(t: &mut Tokens<'_>) -> Result<Self, String> {
        t.expect("-s")?;
        let client = t.host()?;
        let family = Family::of(client);
        t.expect("-d")?;
        let backend_ip = t.host()?;
        if Family::of(backend_ip) != family {
            return Err(format!(
                "{client} and {backend_ip} are of different families"
            ));
        }
        let proto = Proto::parse(t)?;
        t.expect("--dport")?;
        let backend = SocketAddr::new(backend_ip, t.port()?);
        t.expect_all(&["-m", "conntrack", "--ctstate", "DNAT"])?;
        let client_port = if proto == Proto::Udp && t.eat("--ctorigsrcport") {
            Some(t.port()?)
        } else {
            None
        };
        t.expect("--ctorigdstport")?;
        let proxy_port = t.port()?;
        t.expect_all(&["-m", "comment", "--comment"])?;
        let comment = t.next("a comment")?.to_string();
        t.expect("-j")?;
        let snat = match t.next("MASQUERADE or SNAT")? {
            "MASQUERADE" => None,
            "SNAT" => {
                t.expect("--to-source")?;
                let addr = t.addr()?;
                if Family::of(addr) != family {
                    return Err(format!("SNAT address {addr} is not of the client's family"));
                }
                Some(addr)
            }
            other => return Err(format!("expected MASQUERADE or SNAT, found `{other}`")),
        };
        t.end()?;
        Ok(PostRule {
            proto,
            comment,
            client,
            client_port,
            proxy_port,
            backend,
            snat,
        })
    }
}

/// One rule line of the proxy's chains as `iptables-save` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SavedRule {
    /// The whole line, `-A FASP_PROXY …`.
    pub(super) line: String,
    /// What it says, or why it is not of the shape this module writes.
    pub(super) rule: Result<Rule, String>,
}

impl SavedRule {
    /// The same rule with `-D` instead of `-A`: deletes it whatever it says (also a line the
    /// parser does not understand; `iptables-save` output is valid `iptables-restore` input).
    pub(super) fn delete_line(&self) -> String {
        match self.line.strip_prefix("-A ") {
            Some(rest) => format!("-D {rest}"),
            None => self.line.clone(),
        }
    }

    pub(super) fn parse_error(&self, save: &str, why: &str) -> DataplaneError {
        DataplaneError::io(
            format!("reading the proxy's rules ({save} -t nat)"),
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "rule `{}` is not of the shape the proxy writes: {why}",
                    self.line
                ),
            ),
        )
    }
}

/// What the proxy owns in one family's table nat.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct NatState {
    pub(super) has_chain: bool,
    pub(super) has_post_chain: bool,
    /// How many `-A PREROUTING -j FASP_PROXY` rules exist.
    pub(super) pre_jumps: usize,
    /// How many `-A POSTROUTING -j FASP_PROXY_POST` rules exist.
    pub(super) post_jumps: usize,
    /// The rules of both chains, in order.
    pub(super) rules: Vec<SavedRule>,
}

impl NatState {
    /// Reads `iptables-save -t nat` output. Only the proxy's chains, their rules and the two
    /// jump rules are looked at; everything else is foreign and ignored.
    pub(super) fn parse(family: Family, text: &str) -> NatState {
        let mut state = NatState::default();
        let mut in_nat = false;
        for raw in text.lines() {
            let line = raw.trim_end();
            if line.starts_with('*') {
                in_nat = line == "*nat";
                continue;
            }
            if !in_nat || line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line == "COMMIT" {
                in_nat = false;
            } else if let Some(decl) = line.strip_prefix(':') {
                match decl.split_whitespace().next() {
                    Some(CHAIN) => state.has_chain = true,
                    Some(POST_CHAIN) => state.has_post_chain = true,
                    _ => {}
                }
            } else if line == PRE_JUMP {
                state.pre_jumps += 1;
            } else if line == POST_JUMP {
                state.post_jumps += 1;
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, _) = rest.split_once(' ').unwrap_or((rest, ""));
                if chain == CHAIN || chain == POST_CHAIN {
                    state.rules.push(SavedRule {
                        line: line.to_string(),
                        rule: parse_rule(family, line),
                    });
                }
            }
        }
        state
    }

    /// The installed entry of a (UDP) DNAT rule, with the SNAT address of its POST rule (same
    /// comment and key; masquerade when there is none) and the TCP backend of its TCP twin's
    /// DNAT rule (same comment and key), if there is one.
    pub(super) fn installed(&self, dnat: &DnatRule) -> InstalledEntry {
        let snat = self.rules.iter().find_map(|r| match &r.rule {
            Ok(Rule::Post(p))
                if p.proto == Proto::Udp
                    && p.comment == dnat.comment
                    && p.key() == dnat.key()
                    && p.backend == dnat.backend =>
            {
                Some(p.snat)
            }
            _ => None,
        });
        let tcp_backend = self.rules.iter().find_map(|r| match &r.rule {
            Ok(Rule::Dnat(t))
                if t.proto == Proto::Tcp && t.comment == dnat.comment && t.key() == dnat.key() =>
            {
                Some(t.backend)
            }
            _ => None,
        });
        InstalledEntry {
            id: comment_id(&dnat.comment),
            key: dnat.key(),
            backend: dnat.backend,
            tcp_backend,
            snat: snat.flatten(),
            expires: None,
        }
    }

    /// Whether `rule` belongs to a session whose UDP DNAT rule is here (same comment and key):
    /// a TCP twin's rule without it is a leftover.
    pub(super) fn has_udp_dnat_of(&self, rule: &Rule) -> bool {
        let (comment, key) = rule.comment_and_key();
        self.rules.iter().any(|r| {
            matches!(&r.rule, Ok(other) if other.udp_dnat().is_some_and(|d| d.comment == comment && d.key() == key))
        })
    }
}

/// Parses one `-A FASP_PROXY …` or `-A FASP_PROXY_POST …` line of `family`.
pub(super) fn parse_rule(family: Family, line: &str) -> Result<Rule, String> {
    let tokens = tokenize(line)?;
    let mut t = Tokens {
        tokens: &tokens,
        pos: 0,
    };
    t.expect("-A")?;
    let rule = match t.next("a chain")? {
        CHAIN => Rule::Dnat(DnatRule::parse(&mut t)?),
        POST_CHAIN => Rule::Post(PostRule::parse(&mut t)?),
        other => return Err(format!("`{other}` is not one of the proxy's chains")),
    };
    let client = match &rule {
        Rule::Dnat(d) => d.client,
        Rule::Post(p) => p.client,
    };
    if Family::of(client) != family {
        return Err(format!("address {client} in the wrong family's table"));
    }
    Ok(rule)
}

/// Splits an `iptables-save` line into words; a word may be double-quoted with `\"` and `\\`
/// escapes inside (iptables-save quotes comments that need it).
pub(super) fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(tokens);
        };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => word.push(c),
                        None => return Err("unterminated escape".into()),
                    },
                    Some(c) => word.push(c),
                    None => return Err("unterminated quoted string".into()),
                }
            }
            if chars.peek().is_some_and(|c| !c.is_ascii_whitespace()) {
                return Err("text right after a closing quote".into());
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_ascii_whitespace()) {
                word.push(c);
            }
        }
        tokens.push(word);
    }
}

/// A cursor over the words of a rule, for the strict parsers.
pub(super) struct Tokens<'a> {
    pub(super) tokens: &'a [String],
    pub(super) pos: usize,
}

impl Tokens<'_> {
    pub(super) fn next(&mut self, what: &str) -> Result<&str, String> {
        let token = self
            .tokens
            .get(self.pos)
            .ok_or_else(|| format!("expected {what}, found the end of the line"))?;
        self.pos += 1;
        Ok(token)
    }

    pub(super) fn expect(&mut self, word: &str) -> Result<(), String> {
        match self.tokens.get(self.pos) {
            Some(t) if t == word => {
                self.pos += 1;
                Ok(())
            }
            Some(t) => Err(format!("expected `{word}`, found `{t}`")),
            None => Err(format!("expected `{word}`, found the end of the line")),
        }
    }

    pub(super) fn expect_all(&mut self, words: &[&str]) -> Result<(), String> {
        words.iter().try_for_each(|w| self.expect(w))
    }

    /// Consumes `word` if it comes next.
    pub(super) fn eat(&mut self, word: &str) -> bool {
        let found = self.tokens.get(self.pos).is_some_and(|t| t == word);
        if found {
            self.pos += 1;
        }
        found
    }

    pub(super) fn end(&self) -> Result<(), String> {
        match self.tokens.get(self.pos..) {
            Some([]) | None => Ok(()),
            Some(rest) => Err(format!("unexpected `{}` at the end", rest.join(" "))),
        }
    }

    /// A single host: `192.0.2.2/32` or `2001:db8::2/128`.
    pub(super) fn host(&mut self) -> Result<IpAddr, String> {
        let token = self.next("an address")?;
        let (addr, len) = token
            .split_once('/')
            .ok_or_else(|| format!("expected ADDRESS/PREFIX, found `{token}`"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        if len != Family::of(addr).host_len().to_string() {
            return Err(format!("`{token}` is not a single host"));
        }
        Ok(addr)
    }

    pub(super) fn addr(&mut self) -> Result<IpAddr, String> {
        let token = self.next("an address")?;
        token
            .parse()
            .map_err(|_| format!("`{token}` is not an IP address"))
    }

    /// A port, 1..=65535.
    pub(super) fn port(&mut self) -> Result<u16, String> {
        let token = self.next("a port")?;
        match token.parse::<u16>() {
            Ok(p) if p != 0 => Ok(p),
            _ => Err(format!("`{token}` is not a port (1..=65535)")),
        }
    }

    /// `198.51.100.2:33001` or `[2001:db8:2::2]:33001`, of `family`.
    pub(super) fn socket_addr(&mut self, family: Family) -> Result<SocketAddr, String> {
        let token = self.next("ADDRESS:PORT")?;
        let addr: SocketAddr = token
            .parse()
            .map_err(|_| format!("`{token}` is not a single ADDRESS:PORT"))?;
        if Family::of(addr.ip()) != family || addr.port() == 0 {
            return Err(format!("`{token}` is not a usable target"));
        }
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules::tests::v6_entry;
    use super::*;
    use crate::dataplane::entry::{sample_entry, SessionEntry};
    use uuid::Uuid;

    /// `iptables-save -t nat` output as v1.8.9 prints it, with foreign rules around ours.
    fn saved(body: &str) -> String {
        format!(
            "# Generated by iptables-save v1.8.9 (nf_tables) on Sat Nov 21 05:53:13 2026\n\
             *nat\n\
             :PREROUTING ACCEPT [0:0]\n\
             :INPUT ACCEPT [0:0]\n\
             :OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [3:180]\n\
             :DOCKER - [0:0]\n\
             :FASP_PROXY - [0:0]\n\
             :FASP_PROXY_POST - [0:0]\n\
             -A PREROUTING -j FASP_PROXY\n\
             -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
             -A POSTROUTING -j FASP_PROXY_POST\n\
             -A DOCKER -i docker0 -j RETURN\n\
             {body}\
             COMMIT\n\
             # Completed on Sat Nov 21 05:53:13 2026\n"
        )
    }

    /// What `iptables-save` prints for an entry's two rules (`-A` whatever the insert position).
    fn saved_lines(e: &SessionEntry) -> String {
        format!(
            "-A FASP_PROXY {}\n-A FASP_PROXY_POST {}\n",
            DnatRule::of(e).spec(),
            PostRule::of(e).spec()
        )
    }

    #[test]
    fn parser_reads_back_every_shape_it_writes() {
        let mut entries = Vec::new();
        for v6 in [false, true] {
            for port in [Some(40000), None] {
                for snat in [false, true] {
                    let mut e = if v6 { v6_entry() } else { sample_entry() };
                    e.id = Uuid::new_v4();
                    e.client_port = port;
                    e.proxy_port = 33001 + entries.len() as u16;
                    if snat {
                        e.snat = Some(
                            if v6 { "2001:db8:2::1" } else { "198.51.100.1" }
                                .parse()
                                .unwrap(),
                        );
                    }
                    entries.push(e);
                }
            }
        }
        for family in Family::ALL {
            let mine: Vec<&SessionEntry> = entries
                .iter()
                .filter(|e| Family::of(e.client) == family)
                .collect();
            let body: String = mine.iter().map(|e| saved_lines(e)).collect();
            let state = NatState::parse(family, &saved(&body));
            assert!(state.has_chain && state.has_post_chain);
            assert_eq!((state.pre_jumps, state.post_jumps), (1, 1));
            assert_eq!(
                state.rules.len(),
                2 * mine.len(),
                "foreign rules are not ours"
            );
            for (i, e) in mine.iter().enumerate() {
                let dnat = &state.rules[2 * i];
                assert_eq!(dnat.rule, Ok(Rule::Dnat(DnatRule::of(e))), "{}", dnat.line);
                let post = &state.rules[2 * i + 1];
                assert_eq!(post.rule, Ok(Rule::Post(PostRule::of(e))), "{}", post.line);
                let Ok(Rule::Dnat(d)) = &dnat.rule else {
                    unreachable!()
                };
                assert_eq!(
                    state.installed(d),
                    InstalledEntry {
                        id: Some(e.id),
                        key: e.key(),
                        backend: e.backend,
                        tcp_backend: e.tcp_backend,
                        snat: e.snat,
                        expires: None,
                    }
                );
            }
        }
    }

    /// Exactly what `iptables-save` (v1.8.9, nf_tables) printed back for a TCP twin's rules.
    const TCP_TWIN_SAVED: &str = "\
-A FASP_PROXY -s 192.0.2.2/32 -p udp -m udp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment 3a9fd819-59c3-42bc-b0a2-d26304a1eb84 -j DNAT --to-destination 198.51.100.2:33001
-A FASP_PROXY -s 192.0.2.2/32 -p tcp -m tcp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment 3a9fd819-59c3-42bc-b0a2-d26304a1eb84 -j DNAT --to-destination 198.51.100.2:22
-A FASP_PROXY_POST -s 192.0.2.2/32 -d 198.51.100.2/32 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigdstport 33001 -m comment --comment 3a9fd819-59c3-42bc-b0a2-d26304a1eb84 -j SNAT --to-source 198.51.100.1
-A FASP_PROXY_POST -s 192.0.2.2/32 -d 198.51.100.2/32 -p tcp -m tcp --dport 22 -m conntrack --ctstate DNAT --ctorigdstport 33001 -m comment --comment 3a9fd819-59c3-42bc-b0a2-d26304a1eb84 -j SNAT --to-source 198.51.100.1
";

    #[test]
    fn parser_reads_back_a_tcp_twin_as_part_of_its_session() {
        let mut e = sample_entry();
        e.client_port = None;
        e.tcp_backend = Some("198.51.100.2:22".parse().unwrap());
        e.snat = Some("198.51.100.1".parse().unwrap());
        let state = NatState::parse(Family::V4, &saved(TCP_TWIN_SAVED));
        let rules: Vec<Rule> = state
            .rules
            .iter()
            .map(|r| r.rule.clone().unwrap())
            .collect();
        assert_eq!(
            rules,
            [
                Rule::Dnat(DnatRule::of(&e)),
                Rule::Dnat(DnatRule::tcp_of(&e).unwrap()),
                Rule::Post(PostRule::of(&e)),
                Rule::Post(PostRule::tcp_of(&e).unwrap()),
            ]
        );
        // What the builders write is what iptables-save printed.
        let mut written = String::new();
        for r in &rules {
            match r {
                Rule::Dnat(d) => written.push_str(&format!("-A FASP_PROXY {}\n", d.spec())),
                Rule::Post(p) => written.push_str(&format!("-A FASP_PROXY_POST {}\n", p.spec())),
            }
        }
        assert_eq!(written, TCP_TWIN_SAVED);
        let udp: Vec<&DnatRule> = rules.iter().filter_map(Rule::udp_dnat).collect();
        assert_eq!(udp.len(), 1, "the twin is not a session of its own");
        assert_eq!(
            state.installed(udp[0]),
            InstalledEntry {
                id: Some(e.id),
                key: e.key(),
                backend: e.backend,
                tcp_backend: e.tcp_backend,
                snat: e.snat,
                expires: None,
            }
        );
        assert!(rules.iter().all(|r| state.has_udp_dnat_of(r)));
        // Without the UDP DNAT rule the twin's rules are leftovers.
        let orphans: String = TCP_TWIN_SAVED
            .lines()
            .skip(1)
            .map(|l| format!("{l}\n"))
            .collect();
        let state = NatState::parse(Family::V4, &saved(&orphans));
        let tcp = state.rules[0].rule.as_ref().unwrap();
        assert!(tcp.is_tcp() && !state.has_udp_dnat_of(tcp));
        // The IPv6 twin.
        let mut e = v6_entry();
        e.client_port = None;
        e.tcp_backend = Some("[2001:db8:2::2]:22".parse().unwrap());
        let body = format!(
            "{}-A FASP_PROXY {}\n-A FASP_PROXY_POST {}\n",
            saved_lines(&e),
            DnatRule::tcp_of(&e).unwrap().spec(),
            PostRule::tcp_of(&e).unwrap().spec()
        );
        let state = NatState::parse(Family::V6, &saved(&body));
        let Ok(Rule::Dnat(d)) = &state.rules[0].rule else {
            panic!("{:?}", state.rules[0])
        };
        assert_eq!(state.installed(d).tcp_backend, e.tcp_backend);
    }

    #[test]
    fn parser_reports_malformed_lines_and_deletes_them_verbatim() {
        let bad = [
            // no comment
            (
                "-A FASP_PROXY -s 192.0.2.77/32 -p udp -m udp --dport 33001 -j DNAT --to-destination 198.51.100.2:33001",
                "expected `-m`, found `-j`",
            ),
            // a port range as target
            (
                "-A FASP_PROXY -s 192.0.2.2/32 -p udp -m udp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment x -j DNAT --to-destination 198.51.100.2:1000-2000",
                "not a single ADDRESS:PORT",
            ),
            // a network, not a host
            (
                "-A FASP_PROXY -s 192.0.2.0/24 -p udp -m udp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment x -j DNAT --to-destination 198.51.100.2:33001",
                "not a single host",
            ),
            // something after the target
            (
                "-A FASP_PROXY_POST -s 192.0.2.2/32 -d 198.51.100.2/32 -p udp -m udp --dport 33001 -m conntrack --ctstate DNAT --ctorigdstport 33001 -m comment --comment x -j MASQUERADE --random",
                "unexpected `--random`",
            ),
            // a TCP twin never filters on the client's source port
            (
                "-A FASP_PROXY -s 192.0.2.2/32 -p tcp -m tcp --sport 40000 --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment x -j DNAT --to-destination 198.51.100.2:22",
                "expected `--dport`, found `--sport`",
            ),
            (
                "-A FASP_PROXY_POST -s 192.0.2.2/32 -d 198.51.100.2/32 -p tcp -m tcp --dport 22 -m conntrack --ctstate DNAT --ctorigsrcport 40000 --ctorigdstport 33001 -m comment --comment x -j MASQUERADE",
                "expected `--ctorigdstport`, found `--ctorigsrcport`",
            ),
            // neither UDP nor TCP, or a match that is not the protocol's
            (
                "-A FASP_PROXY -s 192.0.2.2/32 -p sctp -m sctp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment x -j DNAT --to-destination 198.51.100.2:22",
                "expected `udp` or `tcp`, found `sctp`",
            ),
            (
                "-A FASP_PROXY -s 192.0.2.2/32 -p tcp -m udp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment x -j DNAT --to-destination 198.51.100.2:22",
                "expected `tcp`, found `udp`",
            ),
            // a quoted comment is read, but the rule is still not ours
            (
                "-A FASP_PROXY -s 192.0.2.4/32 -m comment --comment \"a b \\\"c\" -j RETURN",
                "expected `-p`, found `-m`",
            ),
            (
                "-A FASP_PROXY -s 192.0.2.4/32 -p udp -m udp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment \"open",
                "unterminated quoted string",
            ),
        ];
        for (line, why) in bad {
            let state = NatState::parse(Family::V4, &saved(&format!("{line}\n")));
            assert_eq!(state.rules.len(), 1);
            let r = &state.rules[0];
            let err = r.rule.as_ref().unwrap_err();
            assert!(err.contains(why), "{line}: {err}");
            assert_eq!(r.delete_line(), line.replacen("-A ", "-D ", 1));
            let msg = r.parse_error("/usr/sbin/iptables-save", err).to_string();
            assert!(
                msg.contains(line) && msg.contains("iptables-save -t nat"),
                "{msg}"
            );
        }
        // an IPv4 rule in the IPv6 table
        let state = NatState::parse(Family::V6, &saved(&saved_lines(&sample_entry())));
        assert!(state.rules[0]
            .rule
            .as_ref()
            .unwrap_err()
            .contains("wrong family"));
    }

    #[test]
    fn non_uuid_comment_gives_an_entry_without_id() {
        let line = "-A FASP_PROXY -s 192.0.2.2/32 -p udp -m udp --dport 33001 -m addrtype --dst-type LOCAL -m comment --comment \"not a uuid\" -j DNAT --to-destination 198.51.100.2:33001\n";
        let state = NatState::parse(Family::V4, &saved(line));
        let Ok(Rule::Dnat(d)) = &state.rules[0].rule else {
            panic!("{:?}", state.rules[0])
        };
        assert_eq!(d.comment, "not a uuid");
        let entry = state.installed(d);
        assert_eq!(entry.id, None);
        assert_eq!(entry.snat, None);
    }

    #[test]
    fn empty_table_and_missing_chains() {
        let state = NatState::parse(
            Family::V4,
            "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n",
        );
        assert_eq!(state, NatState::default());
        // a chain whose name only starts like ours is foreign
        let state = NatState::parse(
            Family::V4,
            "*nat\n:FASP_PROXY_OLD - [0:0]\n-A FASP_PROXY_OLD -j RETURN\n-A PREROUTING -j FASP_PROXY_OLD\nCOMMIT\n",
        );
        assert_eq!(state, NatState::default());
    }
}
