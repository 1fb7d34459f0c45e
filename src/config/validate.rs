//! Second pass: turns the raw text values into the typed [`Config`], checking every value and the
//! rules against each other. Each problem becomes a [`Diagnostic`] with its line, tag path and rule.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::diagnostic::{Diagnostic, Pos};
use super::ibm;
use super::model::*;
use super::raw::*;
use super::schema::{self, Kind};
use super::tree::Element;
use super::values;

/// `builtin`, `openssh` or `both`, for `<frontend>`.
fn frontend(s: &str) -> Result<Frontend, String> {
    match s {
        "builtin" => Ok(Frontend::Builtin),
        "openssh" => Ok(Frontend::Openssh),
        "both" => Ok(Frontend::Both),
        _ => Err(format!("\"{s}\" is not builtin, openssh or both")),
    }
}

/// `nftables` or `iptables`, for `<forwarding_type>`.
fn forwarding_type(s: &str) -> Result<ForwardingType, String> {
    match s {
        "nftables" => Ok(ForwardingType::Nftables),
        "iptables" => Ok(ForwardingType::Iptables),
        other => Err(
            match super::suggest::closest(other, ["nftables", "iptables"]) {
                Some(near) => {
                    format!("\"{other}\" is not nftables or iptables; did you mean {near}?")
                }
                None => format!("\"{other}\" is not nftables or iptables"),
            },
        ),
    }
}

/// Largest number of seconds accepted for a duration (about 10 years).
const MAX_SECONDS: u64 = 315_360_000;

/// Validates `raw`, locating problems with the tree `root` of the same document.
pub fn validate(raw: &RawConf, root: &Element) -> (Config, Vec<Diagnostic>) {
    let mut c = Checker::new(root);
    let config = Config {
        server: c.server(&raw.server),
        default: c.default_settings(&raw.default),
        users: c.users(&raw.aaa),
    };
    c.cross_checks(&config);
    (config, c.diagnostics)
}

/// The state of one validation: where each tag is, and what was found.
pub(super) struct Checker {
    positions: HashMap<String, Pos>,
    /// Paths of known tags that appear under a misspelt name (already reported as unknown
    /// tags with a suggestion), so that their absence is not reported a second time.
    misspelt: HashSet<String>,
    diagnostics: Vec<Diagnostic>,
    /// Label of the rule being checked, for messages.
    rule: Option<String>,
}

fn index_positions(e: &Element, out: &mut HashMap<String, Pos>, misspelt: &mut HashSet<String>) {
    // A tag given twice (an error of its own) is located at its first place, the one read.
    out.entry(e.path.clone()).or_insert(e.pos);
    let known = schema_tag(&e.path);
    for c in &e.children {
        if let Some(tag) = known {
            if tag.child(&c.name).is_none() {
                let names = tag.children().iter().map(|t| t.name);
                if let Some(near) = super::suggest::closest(&c.name, names) {
                    misspelt.insert(format!("{}/{near}", e.path));
                }
            }
        }
        index_positions(c, out, misspelt);
    }
}

/// The schema tag of a tag path (indexes like `[2]` are ignored).
fn schema_tag(path: &str) -> Option<&'static schema::Tag> {
    let mut tag = &schema::ROOT;
    for step in path.split('/').skip(1) {
        let name = step.split('[').next().unwrap_or(step);
        tag = tag.child(name)?;
    }
    Some(tag)
}

/// The schema default of a tag path; empty for sections.
fn schema_default(path: &str) -> &'static str {
    match schema_tag(path).map(|t| &t.kind) {
        Some(Kind::Leaf { default, .. }) => default,
        _ => "",
    }
}

fn schema_is_leaf(path: &str) -> bool {
    schema_tag(path).is_some_and(|t| t.is_leaf())
}

impl Checker {
    fn new(root: &Element) -> Self {
        let mut positions = HashMap::new();
        let mut misspelt = HashSet::new();
        index_positions(root, &mut positions, &mut misspelt);
        Checker {
            positions,
            misspelt,
            diagnostics: Vec::new(),
            rule: None,
        }
    }

    pub(super) fn pos(&self, path: &str) -> Option<Pos> {
        // Fall back to the nearest enclosing tag that exists in the document.
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            p = p.rsplit_once('/')?.0;
        }
    }

    fn report(&mut self, mut d: Diagnostic) {
        if let Some(rule) = &self.rule {
            d = d.in_rule(rule.clone());
        }
        self.diagnostics.push(d);
    }

    pub(super) fn error(&mut self, path: &str, message: impl Into<String>) {
        let d = Diagnostic::error(self.pos(path), message).at_path(path);
        self.report(d);
    }

    pub(super) fn warning(&mut self, path: &str, message: impl Into<String>) {
        let d = Diagnostic::warning(self.pos(path), message).at_path(path);
        self.report(d);
    }

    /// A value that is blank when unset: `None` then, else the parsed value.
    pub(super) fn optional<T>(
        &mut self,
        path: &str,
        raw: &Option<String>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = raw.as_deref().map(str::trim).unwrap_or("");
        let text = if text.is_empty() {
            schema_default(path)
        } else {
            text
        };
        if text.is_empty() {
            return None;
        }
        match parse(text) {
            Ok(v) => Some(v),
            Err(message) => {
                let tag = path.rsplit('/').next().unwrap_or(path);
                let tag = tag.split('[').next().unwrap_or(tag);
                if schema_is_leaf(path) {
                    self.error(path, format!("<{tag}>: {message}"));
                } else {
                    self.error(path, message);
                }
                None
            }
        }
    }

    /// A value with a schema default; on error the default is used so checking can go on.
    fn required<T>(
        &mut self,
        path: &str,
        raw: &Option<String>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        if let Some(v) = self.optional(path, raw, &parse) {
            return v;
        }
        match parse(schema_default(path)) {
            Ok(v) => v,
            // Unreachable for a consistent schema (a unit test parses every default).
            Err(e) => panic!("schema default of {path} does not parse: {e}"),
        }
    }

    fn seconds(&mut self, path: &str, raw: &Option<String>) -> Option<Duration> {
        let n = self.required(path, raw, |s| values::integer(s, MAX_SECONDS));
        (n > 0).then(|| Duration::from_secs(n))
    }

    fn server(&mut self, raw: &RawServer) -> Server {
        const P: &str = "CONF/server";
        Server {
            rproxy: self.rproxy(&raw.rproxy),
            proxy: self.forward_proxy(&raw.proxy),
            per_source: self.per_source(&raw.per_source),
            enable_http: self.required(
                &format!("{P}/enable_http"),
                &raw.enable_http,
                values::boolean,
            ),
            enable_https: self.required(
                &format!("{P}/enable_https"),
                &raw.enable_https,
                values::boolean,
            ),
            http_port: self.required(&format!("{P}/http_port"), &raw.http_port, |s| {
                values::port(s, false)
            }),
            https_port: self.required(&format!("{P}/https_port"), &raw.https_port, |s| {
                values::port(s, false)
            }),
            https_certificate: PathBuf::from(self.required(
                &format!("{P}/https_certificate"),
                &raw.https_certificate,
                |s| values::absolute_path(s, &[]),
            )),
            https_private_key: PathBuf::from(self.required(
                &format!("{P}/https_private_key"),
                &raw.https_private_key,
                |s| values::absolute_path(s, &[]),
            )),
            forwarding_type: self.forwarding_type(raw),
            enable_ip_forwarding: self.required(
                &format!("{P}/enable_ip_forwarding"),
                &raw.enable_ip_forwarding,
                values::boolean,
            ),
            fast_path: self.required(&format!("{P}/fast_path"), &raw.fast_path, values::boolean),
            iptables_path: PathBuf::from(self.required(
                &format!("{P}/iptables_path"),
                &raw.iptables_path,
                |s| values::absolute_path(s, &[]),
            )),
            metrics_listen: {
                let on = self.required(
                    &format!("{P}/enable_metrics"),
                    &raw.enable_metrics,
                    values::boolean,
                );
                let ip: IpAddr = self.required(
                    &format!("{P}/metrics_bind_address"),
                    &raw.metrics_bind_address,
                    values::ip,
                );
                let port = self.required(&format!("{P}/metrics_port"), &raw.metrics_port, |s| {
                    values::port(s, false)
                });
                on.then_some(SocketAddr::new(ip, port))
            },
            admin_group: self
                .optional(
                    &format!("{P}/admin_group"),
                    &raw.admin_group,
                    values::user_name,
                )
                .filter(|g| !g.is_empty()),
        }
    }

    /// The one backend: `<server><forwarding_type>` and the per-rule ones of IBM's files, which
    /// must agree (see [`ibm::one_forwarding_type`]).
    fn forwarding_type(&mut self, raw: &RawServer) -> ForwardingType {
        const P: &str = "CONF/server/forwarding_type";
        let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.trim().is_empty());
        let server = if set(&raw.forwarding_type) {
            match self.optional(P, &raw.forwarding_type, forwarding_type) {
                Some(value) => Some(ibm::ForwardingSetting {
                    value,
                    pos: self.pos(P),
                    path: P.to_string(),
                    rule: None,
                }),
                // Reported; comparing the rules with it would only repeat that.
                None => return self.required(P, &None, forwarding_type),
            }
        } else {
            None
        };
        let mut rules = Vec::new();
        for (i, r) in raw.rproxy.rules.rule.iter().enumerate() {
            let path = format!("CONF/server/rproxy/rules/rule[{}]/forwarding_type", i + 1);
            fn attribute(a: &Option<String>) -> Option<&str> {
                a.as_deref().map(str::trim).filter(|a| !a.is_empty())
            }
            self.rule = Some(rule_label(
                i + 1,
                attribute(&r.host_ip),
                attribute(&r.host_domain),
            ));
            if set(&r.forwarding_type) {
                if let Some(value) = self.optional(&path, &r.forwarding_type, forwarding_type) {
                    rules.push(ibm::ForwardingSetting {
                        value,
                        pos: self.pos(&path),
                        rule: self.rule.clone(),
                        path,
                    });
                }
            }
        }
        self.rule = None;
        let (chosen, errors) = ibm::one_forwarding_type(server.as_ref(), &rules);
        self.diagnostics.extend(errors);
        match chosen {
            Some(value) => value,
            None => self.required(P, &None, forwarding_type),
        }
    }

    fn rproxy(&mut self, raw: &RawReverseProxy) -> ReverseProxy {
        const P: &str = "CONF/server/rproxy";
        let bind: IpAddr = self.required(
            &format!("{P}/ssh_bind_address"),
            &raw.ssh_bind_address,
            values::ip,
        );
        let port = self.required(&format!("{P}/ssh_port"), &raw.ssh_port, |s| {
            values::port(s, false)
        });
        let allowed_clients = self.cidrs(&format!("{P}/allowed_clients"), &raw.allowed_clients);
        let opaque_sessions = self.required(
            &format!("{P}/opaque_sessions"),
            &raw.opaque_sessions,
            values::boolean,
        );
        let mut opaque_commands = Vec::new();
        for (i, text) in raw.opaque_commands.command.iter().enumerate() {
            let path = format!("{P}/opaque_commands/command[{}]", i + 1);
            match CommandShape::parse(text) {
                Ok(shape) if shape.program() == "ascp" && shape.matches("ascp --server") => {
                    self.error(&path, "\"ascp --server\" is fasp-proxy's own transfer command, always accepted and always parsed; it cannot be an opaque command");
                }
                Ok(shape) => opaque_commands.push(shape),
                Err(e) => self.error(&path, format!("<command>: {e}")),
            }
        }
        if opaque_commands.is_empty() {
            opaque_commands = CommandShape::ibm();
        }
        if !opaque_sessions {
            opaque_commands.clear();
        }
        let rules = raw
            .rules
            .rule
            .iter()
            .enumerate()
            .map(|(i, r)| self.rule(i + 1, r))
            .collect();
        self.rule = None;
        ReverseProxy {
            enabled: self.required(&format!("{P}/enabled"), &raw.enabled, values::boolean),
            log_level: self.required(&format!("{P}/log_level"), &raw.log_level, |s| {
                values::integer(s, 3).map(|n| n as u8)
            }),
            log_directory: self
                .optional(&format!("{P}/log_directory"), &raw.log_directory, |s| {
                    values::absolute_path(s, &[])
                })
                .map(PathBuf::from),
            ssh_listen: SocketAddr::new(bind, port),
            ssh_host_key: PathBuf::from(self.required(
                &format!("{P}/ssh_host_key"),
                &raw.ssh_host_key,
                |s| values::absolute_path(s, &[]),
            )),
            ssh_host_rsa_key: self
                .optional(
                    &format!("{P}/ssh_host_rsa_key"),
                    &raw.ssh_host_rsa_key,
                    |s| values::absolute_path(s, &[]),
                )
                .map(PathBuf::from),
            ssh_rsa_legacy: self.required(
                &format!("{P}/ssh_rsa_legacy"),
                &raw.ssh_rsa_legacy,
                values::boolean,
            ),
            frontend: self.required(&format!("{P}/frontend"), &raw.frontend, frontend),
            handoff_socket: PathBuf::from(self.required(
                &format!("{P}/handoff_socket"),
                &raw.handoff_socket,
                |s| values::absolute_path(s, &[]),
            )),
            opaque_commands,
            authorized_keys_file: self.required(
                &format!("{P}/authorized_keys_file"),
                &raw.authorized_keys_file,
                values::key_path_pattern,
            ),
            password_authentication: self.required(
                &format!("{P}/password_authentication"),
                &raw.password_authentication,
                values::boolean,
            ),
            pam_service: self.required(
                &format!("{P}/pam_service"),
                &raw.pam_service,
                values::pam_service,
            ),
            allowed_clients,
            max_sessions: self.required(&format!("{P}/max_sessions"), &raw.max_sessions, |s| {
                match values::integer(s, 1_000_000)? {
                    0 => Err("must be at least 1".to_string()),
                    n => Ok(n as u32),
                }
            }),
            session_idle_timeout: self.seconds(
                &format!("{P}/session_idle_timeout"),
                &raw.session_idle_timeout,
            ),
            faulty_host_hold_time: self
                .seconds(
                    &format!("{P}/faulty_host_hold_time"),
                    &raw.faulty_host_hold_time,
                )
                .unwrap_or(Duration::ZERO),
            accept_new_host_keys: self.required(
                &format!("{P}/accept_new_host_keys"),
                &raw.accept_new_host_keys,
                values::boolean,
            ),
            health_check: HealthCheck {
                interval: self.seconds(
                    &format!("{P}/health_check_interval"),
                    &raw.health_check_interval,
                ),
                timeout: self.deadline(
                    &format!("{P}/health_check_timeout"),
                    &raw.health_check_timeout,
                ),
                failures: self.count_1_100(
                    &format!("{P}/health_check_failures"),
                    &raw.health_check_failures,
                ),
                successes: self.count_1_100(
                    &format!("{P}/health_check_successes"),
                    &raw.health_check_successes,
                ),
            },
            max_startups: self.required(
                &format!("{P}/max_startups"),
                &raw.max_startups,
                values::max_startups,
            ),
            banner_timeout: self.deadline(&format!("{P}/banner_timeout"), &raw.banner_timeout),
            kex_timeout: self.deadline(&format!("{P}/kex_timeout"), &raw.kex_timeout),
            login_grace_time: self
                .deadline(&format!("{P}/login_grace_time"), &raw.login_grace_time),
            session_open_timeout: self.deadline(
                &format!("{P}/session_open_timeout"),
                &raw.session_open_timeout,
            ),
            rules,
        }
    }

    /// A count from 1 to 100.
    fn count_1_100(&mut self, path: &str, raw: &Option<String>) -> u32 {
        self.required(path, raw, |s| match values::integer(s, 100)? {
            0 => Err("must be 1 to 100".to_string()),
            n => Ok(n as u32),
        })
    }

    /// A deadline in seconds, at least 1.
    fn deadline(&mut self, path: &str, raw: &Option<String>) -> Duration {
        let n = self.required(path, raw, |s| match values::integer(s, 86_400)? {
            0 => Err("must be at least 1 second".to_string()),
            n => Ok(n),
        });
        Duration::from_secs(n)
    }

    /// A penalty in seconds; 0 = none.
    fn penalty(&mut self, path: &str, raw: &Option<String>) -> Duration {
        self.seconds(path, raw).unwrap_or(Duration::ZERO)
    }

    fn per_source(&mut self, raw: &RawPerSource) -> PerSource {
        const P: &str = "CONF/server/per_source";
        let count = |s: &str| values::integer(s, 1_000_000).map(|n| n as u32);
        PerSource {
            max_startups: self.required(&format!("{P}/max_startups"), &raw.max_startups, count),
            max_api_connections: self.required(
                &format!("{P}/max_api_connections"),
                &raw.max_api_connections,
                count,
            ),
            ipv6_prefix: self.required(&format!("{P}/ipv6_prefix"), &raw.ipv6_prefix, |s| {
                match values::integer(s, 128)? {
                    0 => Err("must be 1 to 128".to_string()),
                    n => Ok(n as u8),
                }
            }),
            penalty_auth_failure: self.penalty(
                &format!("{P}/penalty_auth_failure"),
                &raw.penalty_auth_failure,
            ),
            penalty_no_auth: self.penalty(&format!("{P}/penalty_no_auth"), &raw.penalty_no_auth),
            penalty_grace_exceeded: self.penalty(
                &format!("{P}/penalty_grace_exceeded"),
                &raw.penalty_grace_exceeded,
            ),
            penalty_max_startups: self.penalty(
                &format!("{P}/penalty_max_startups"),
                &raw.penalty_max_startups,
            ),
            penalty_max: self.deadline(&format!("{P}/penalty_max"), &raw.penalty_max),
            penalty_exempt_allowed_clients: self.required(
                &format!("{P}/penalty_exempt_allowed_clients"),
                &raw.penalty_exempt_allowed_clients,
                values::boolean,
            ),
            max_tracked_sources: self.required(
                &format!("{P}/max_tracked_sources"),
                &raw.max_tracked_sources,
                |s| match values::integer(s, 10_000_000)? {
                    0 => Err("must be at least 1".to_string()),
                    n => Ok(n as u32),
                },
            ),
        }
    }

    fn rule(&mut self, number: usize, raw: &RawRule) -> Rule {
        let p = format!("CONF/server/rproxy/rules/rule[{number}]");
        let pos = self.pos(&p).unwrap_or_default();
        let blank = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let host_ip_text = blank(&raw.host_ip);
        let host_domain_text = blank(&raw.host_domain);
        self.rule = Some(rule_label(
            number,
            host_ip_text.as_deref(),
            host_domain_text.as_deref(),
        ));

        let host_ip = self.optional(&p, &host_ip_text, |s| {
            values::ip_or_prefix(s).map_err(|e| format!("host_ip {e}"))
        });
        let host_domain = self.optional(&p, &host_domain_text, |s| {
            values::host_domain(s).map_err(|e| format!("host_domain {e}"))
        });
        if raw.host_ip.is_some() && host_ip_text.is_none() {
            self.error(
                &p,
                "host_ip is empty; leave the attribute out for a rule that matches any address",
            );
        }
        if raw.host_domain.is_some() && host_domain_text.is_none() {
            self.error(
                &p,
                "host_domain is empty; leave the attribute out for a rule that matches any name",
            );
        }

        let single = blank(&raw.host);
        let hosts = match (&single, &raw.hosts) {
            (Some(_), Some(_)) => {
                self.error(&format!("{p}/hosts"), "both <host> and <hosts>: use <host> for one server or <hosts> for a balanced list, not both");
                Vec::new()
            }
            (Some(h), None) => self
                .optional(&format!("{p}/host"), &Some(h.clone()), |s| {
                    values::host_port(s, 22)
                })
                .into_iter()
                .collect(),
            (None, Some(list)) => {
                if list.host.is_empty() {
                    self.error(&format!("{p}/hosts"), "<hosts> lists no <host>");
                }
                let mut out: Vec<SocketAddr> = Vec::new();
                for (i, h) in list.host.iter().enumerate() {
                    let path = format!("{p}/hosts/host[{}]", i + 1);
                    if h.trim().is_empty() {
                        self.error(&path, "<host> is empty");
                        continue;
                    }
                    if let Some(addr) =
                        self.optional(&path, &Some(h.clone()), |s| values::host_port(s, 22))
                    {
                        if out.contains(&addr) {
                            self.warning(&path, format!("{addr} is listed twice in <hosts>; it will get twice the share"));
                        }
                        out.push(addr);
                    }
                }
                out
            }
            (None, None) => {
                let misspelt = ["host", "hosts"]
                    .iter()
                    .any(|t| self.misspelt.contains(&format!("{p}/{t}")));
                if raw.host.is_some() {
                    self.error(&p, "<host> is empty");
                } else if !misspelt {
                    self.error(&p, "no <host> or <hosts>: the rule must name the internal server(s) to forward to");
                }
                Vec::new()
            }
        };
        if let Some(net) = host_ip {
            let family_v4 = net.addr().is_ipv4();
            for h in hosts.iter().filter(|h| h.is_ipv4() != family_v4) {
                self.error(&p, format!("host_ip {} and internal server {h} are of different IP families; the kernel cannot forward UDP between them", display_net(&net)));
            }
        }

        let balancing = match blank(&raw.balancing) {
            None => raw.hosts.is_some().then_some(Balancing::RoundRobin),
            Some(method) => {
                let path = format!("{p}/balancing");
                if method != "round_robin" {
                    let hint = if super::suggest::closest(&method, ["round_robin"]).is_some() {
                        "; did you mean round_robin?"
                    } else {
                        ""
                    };
                    self.error(&path, format!("<balancing>: unknown method \"{method}\"; round_robin is the only one{hint}"));
                    None
                } else if raw.hosts.is_none() {
                    self.error(&path, "<balancing> needs a <hosts> list to balance across");
                    None
                } else {
                    Some(Balancing::RoundRobin)
                }
            }
        };

        let keyfile = match self.optional(&format!("{p}/keyfile"), &raw.keyfile, |s| {
            values::absolute_path(s, &["user"])
        }) {
            Some(k) => k,
            None => {
                if blank(&raw.keyfile).is_none() && !self.misspelt.contains(&format!("{p}/keyfile"))
                {
                    self.error(&p, "no <keyfile>: the proxy needs a private key to log in to the internal server");
                }
                String::new()
            }
        };
        let bind_source_addresses: Vec<IpAddr> = self
            .optional(
                &format!("{p}/bind_source_address"),
                &raw.bind_source_address,
                values::ip_list,
            )
            .unwrap_or_default();
        if let (Some(first_src), Some(first_host)) = (bind_source_addresses.first(), hosts.first())
        {
            if first_src.is_ipv4() != first_host.is_ipv4() {
                self.error(&format!("{p}/bind_source_address"), format!("<bind_source_address> {first_src} and internal server {first_host} are of different IP families"));
            }
        }

        Rule {
            number,
            pos,
            host_ip,
            host_domain,
            hosts,
            balancing,
            proxy_port: self.required(&format!("{p}/proxy_port"), &raw.proxy_port, |s| {
                values::port(s, true)
            }),
            backend_udp_port: self.required(
                &format!("{p}/backend_udp_port"),
                &raw.backend_udp_port,
                |s| values::port(s, false),
            ),
            squash_user: self.optional(
                &format!("{p}/squash_user"),
                &raw.squash_user,
                values::user_name,
            ),
            keyfile,
            src_port_filtering: self.required(
                &format!("{p}/src_port_filtering"),
                &raw.src_port_filtering,
                values::boolean,
            ),
            udp_port_reuse: self.required(
                &format!("{p}/udp_port_reuse"),
                &raw.udp_port_reuse,
                values::boolean,
            ),
            bind_source_addresses,
        }
    }

    /// The prefixes of a `<cidr>` list at `path`; each bad or empty one reported.
    fn cidrs(&mut self, path: &str, raw: &RawCidrList) -> Vec<IpNet> {
        let mut nets = Vec::new();
        for (i, cidr) in raw.cidr.iter().enumerate() {
            let path = format!("{path}/cidr[{}]", i + 1);
            if let Some(net) = self.optional(&path, &Some(cidr.clone()), values::ip_or_prefix) {
                nets.push(net);
            } else if cidr.trim().is_empty() {
                self.error(&path, "<cidr> is empty");
            }
        }
        nets
    }

    fn forward_proxy(&mut self, raw: &RawForwardProxy) -> ForwardProxy {
        const P: &str = "CONF/server/proxy";
        let low = self.required(&format!("{P}/port_range_low"), &raw.port_range_low, |s| {
            values::port(s, false)
        });
        let high = self.required(&format!("{P}/port_range_high"), &raw.port_range_high, |s| {
            values::port(s, false)
        });
        if low > high {
            self.error(
                &format!("{P}/port_range_low"),
                format!("<port_range_low> {low} is above <port_range_high> {high}"),
            );
        }
        ForwardProxy {
            enabled: self.required(&format!("{P}/enabled"), &raw.enabled, values::boolean),
            authentication: self.required(
                &format!("{P}/authentication"),
                &raw.authentication,
                values::boolean,
            ),
            bind_ip_address: self.required(
                &format!("{P}/bind_ip_address"),
                &raw.bind_ip_address,
                values::ip,
            ),
            bind_ip_netmask: self.optional(
                &format!("{P}/bind_ip_netmask"),
                &raw.bind_ip_netmask,
                values::netmask,
            ),
            port_range_low: low,
            port_range_high: high,
            cleanup_interval: self.seconds(&format!("{P}/cleanup_interval"), &raw.cleanup_interval),
            keepalive_interval: self
                .seconds(&format!("{P}/keepalive_interval"), &raw.keepalive_interval),
            session_timeout: self.seconds(&format!("{P}/session_timeout"), &raw.session_timeout),
            bind_source_address: self.forward_source_address(raw),
            allowed_destinations: self.cidrs(
                &format!("{P}/allowed_destinations"),
                &raw.allowed_destinations,
            ),
            denied_destinations: self.cidrs(
                &format!("{P}/denied_destinations"),
                &raw.denied_destinations,
            ),
        }
    }

    /// `<proxy><bind_source_address>`: IPv4 only, as the forward proxy (IBM's client proxies
    /// IPv4 only).
    fn forward_source_address(&mut self, raw: &RawForwardProxy) -> Option<IpAddr> {
        let path = "CONF/server/proxy/bind_source_address";
        let addr = self.optional(path, &raw.bind_source_address, values::ip)?;
        if !addr.is_ipv4() || addr.is_unspecified() {
            self.error(
                path,
                format!(
                    "<bind_source_address> {addr} is not a usable IPv4 address: the forward proxy \
                     forwards IPv4 (the only family IBM's client proxies)"
                ),
            );
            return None;
        }
        Some(addr)
    }

    /// What opaque sessions (IBM clients) cannot do, said for the rules it concerns: their host
    /// name is inside IBM's own stream, so rules are matched by address alone, and their UDP
    /// port cannot be rewritten.
    fn opaque_checks(&mut self, rproxy: &ReverseProxy) {
        let rules_path = |r: &Rule| format!("CONF/server/rproxy/rules/rule[{}]", r.number);
        for rule in &rproxy.rules {
            self.rule = Some(rule.label());
            if rule.host_domain.is_some() {
                let goes = match rproxy.rules.iter().find(|r| {
                    r.host_domain.is_none() && (r.host_ip.is_none() || r.host_ip == rule.host_ip)
                }) {
                    Some(r) => format!("they go to {} instead", r.label()),
                    None => "they are refused unless another rule matches by address".to_string(),
                };
                self.warning(
                    &rules_path(rule),
                    format!(
                        "opaque sessions (IBM clients) carry the host name inside their own stream, \
                         so this host_domain rule never matches one; {goes}"
                    ),
                );
            }
            if rule.proxy_port != 0 && rule.proxy_port != rule.backend_udp_port {
                self.warning(
                    &format!("{}/proxy_port", rules_path(rule)),
                    format!(
                        "opaque sessions (IBM clients) cannot have their UDP port rewritten: they \
                         use port {} on the proxy and on the internal server, not <proxy_port> {}",
                        rule.backend_udp_port, rule.proxy_port
                    ),
                );
            }
        }
    }

    /// Checks that involve more than one value.
    fn cross_checks(&mut self, config: &Config) {
        let server = &config.server;
        let rproxy = &server.rproxy;
        let rules_path = |r: &Rule| format!("CONF/server/rproxy/rules/rule[{}]", r.number);
        for (i, rule) in rproxy.rules.iter().enumerate() {
            if let Some(earlier) = rproxy.rules[..i].iter().find(|e| rule.is_shadowed_by(e)) {
                self.rule = Some(rule.label());
                let same =
                    earlier.host_ip == rule.host_ip && earlier.host_domain == rule.host_domain;
                let message = if same {
                    format!("can never be told apart from {} (line {}): both match the same connections, and the first one wins", earlier.label(), earlier.pos.line)
                } else {
                    format!("can never match: {} (line {}) comes first and matches every connection this rule would", earlier.label(), earlier.pos.line)
                };
                self.error(&rules_path(rule), message);
            }
        }
        if !rproxy.opaque_commands.is_empty() {
            self.opaque_checks(rproxy);
        }
        self.rule = None;
        if rproxy.ssh_rsa_legacy {
            self.warning(
                "CONF/server/rproxy/ssh_rsa_legacy",
                "ssh-rsa (SHA-1) signatures are accepted from clients and offered for the RSA host \
                 key: needed by IBM ascp 3.x, weaker than SHA-2; turn it off once no such client \
                 is left",
            );
        }
        if rproxy.enabled && rproxy.accept_new_host_keys {
            self.warning(
                "CONF/server/rproxy/accept_new_host_keys",
                "internal servers' unknown host keys are trusted on first use and recorded: a \
                 machine answering first at a server's address is believed; record the keys \
                 with `fasp-proxy trust-host HOST:PORT` and set it to false",
            );
        }
        if rproxy.enabled && rproxy.rules.is_empty() {
            self.error(
                "CONF/server/rproxy/rules",
                "the reverse proxy is enabled but has no <rule>: every connection would be refused",
            );
        }
        let proxy = &server.proxy;
        if proxy.enabled && proxy.port_range_low <= proxy.port_range_high {
            let own = server.own_ports();
            let usable = (proxy.port_range_low..=proxy.port_range_high).any(|p| !own.contains(&p));
            if !usable {
                self.error(
                    "CONF/server/proxy/port_range_low",
                    format!(
                        "every port of <port_range_low>..<port_range_high> ({}-{}) is one the proxy \
                         listens on itself: no forwarding could be opened",
                        proxy.port_range_low, proxy.port_range_high
                    ),
                );
            }
        }
        if !rproxy.enabled && !server.proxy.enabled {
            self.warning(
                "CONF/server",
                "neither <rproxy> nor <proxy> is enabled: the daemon would do nothing",
            );
        }
        if proxy.enabled {
            if !server.enable_http && !server.enable_https {
                self.error(
                    "CONF/server/proxy/enabled",
                    "the forward proxy is enabled but neither <enable_http> nor <enable_https> is: \
                     clients could not reach its API",
                );
            }
            if proxy.allowed_destinations.is_empty() {
                self.warning(
                    "CONF/server/proxy/allowed_destinations",
                    "no <allowed_destinations>: the forward proxy forwards its clients to any \
                     outside server not in <denied_destinations> (an open relay for them); list \
                     the partners' prefixes",
                );
            }
            if !proxy.authentication {
                self.warning(
                    "CONF/server/proxy/authentication",
                    "<authentication> is false: anyone who reaches the API may open forwardings \
                     (any user name is accepted)",
                );
            }
        } else if server.enable_http || server.enable_https {
            self.warning(
                "CONF/server/enable_http",
                "<enable_http>/<enable_https> are on but the forward proxy (<proxy><enabled>) is \
                 off: no API listener is opened",
            );
        }
        let listeners = [
            (
                rproxy.enabled,
                rproxy.ssh_listen.port(),
                "ssh_port",
                "CONF/server/rproxy/ssh_port",
            ),
            (
                server.enable_http,
                server.http_port,
                "http_port",
                "CONF/server/http_port",
            ),
            (
                server.enable_https,
                server.https_port,
                "https_port",
                "CONF/server/https_port",
            ),
            (
                server.metrics_listen.is_some(),
                server.metrics_listen.map_or(0, |a| a.port()),
                "metrics_port",
                "CONF/server/metrics_port",
            ),
        ];
        for (i, (on_a, port_a, name_a, _)) in listeners.iter().enumerate() {
            for (on_b, port_b, name_b, path_b) in &listeners[i + 1..] {
                if *on_a && *on_b && port_a == port_b {
                    self.error(
                        path_b,
                        format!("<{name_b}> {port_b} is already used by <{name_a}>"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_default_parses() {
        // `required` panics if a default does not parse; an empty document exercises them all.
        let parsed = super::super::tree::parse("<CONF/>");
        let raw = from_str("<CONF/>").unwrap();
        let (config, diags) = validate(&raw, parsed.root.as_ref().unwrap());
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        assert_eq!(config.server.rproxy.ssh_listen.to_string(), "0.0.0.0:33001");
    }
}
