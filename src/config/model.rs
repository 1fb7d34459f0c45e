//! The typed configuration, after validation. Every value here is known to be well formed.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

pub use super::command::CommandShape;
pub use super::docroot::{DefaultSettings, UserSettings};

/// The whole `aspera.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `<server>`.
    pub server: Server,
    /// `<default>`: the docroot of every user and aspshell's extra commands.
    pub default: DefaultSettings,
    /// `<aaa><realms><realm><users><user>`, in file order: users with settings of their own.
    pub users: Vec<UserSettings>,
}

/// `<server>`: both proxy modes and the settings they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `<rproxy>`.
    pub rproxy: ReverseProxy,
    /// `<proxy>`.
    pub proxy: ForwardProxy,
    /// `<per_source>`: limits and penalties per client address.
    pub per_source: PerSource,
    /// `<enable_http>`: serve the forward-proxy API over HTTP.
    pub enable_http: bool,
    /// `<enable_https>`: serve the forward-proxy API over HTTPS.
    pub enable_https: bool,
    /// `<http_port>`.
    pub http_port: u16,
    /// `<https_port>`.
    pub https_port: u16,
    /// `<https_certificate>`: the HTTPS API's PEM certificate chain.
    pub https_certificate: PathBuf,
    /// `<https_private_key>`: the HTTPS API's PEM private key.
    pub https_private_key: PathBuf,
    /// `<forwarding_type>`: which kernel interface programs the DNAT entries.
    pub forwarding_type: ForwardingType,
    /// `<iptables_path>`: the iptables binary for [`ForwardingType::Iptables`].
    pub iptables_path: PathBuf,
    /// `<enable_ip_forwarding>`: the proxy may turn IP forwarding on at start.
    pub enable_ip_forwarding: bool,
    /// `<fast_path>`: sessions' UDP is also forwarded by the BPF fast path
    /// ([`crate::dataplane::fast_path`]).
    pub fast_path: bool,
    /// `<enable_metrics>`, `<metrics_bind_address>`, `<metrics_port>`: where Prometheus
    /// metrics are served; `None` when they are off.
    pub metrics_listen: Option<SocketAddr>,
    /// `<admin_group>`: the group (besides root) allowed on the control socket; `None` = root
    /// only.
    pub admin_group: Option<String>,
}

impl Server {
    /// Which IP families the proxy forwards: (IPv4, IPv6), from the reverse proxy's rules'
    /// servers, and IPv4 when the forward proxy is on (it forwards IPv4 only).
    pub fn forwarded_families(&self) -> (bool, bool) {
        let hosts = self.rproxy.rules.iter().flat_map(|r| r.hosts.iter());
        let v4 = hosts.clone().any(|h| h.is_ipv4()) || self.proxy.enabled;
        let v6 = hosts.clone().any(|h| h.is_ipv6());
        (v4, v6)
    }

    /// The ports the proxy itself listens on, which the forward proxy must never hand out: the
    /// SSH front end (when the reverse proxy is on), the reverse proxy's client-facing UDP ports,
    /// and the API's HTTP/HTTPS ports when enabled.
    pub fn own_ports(&self) -> std::collections::BTreeSet<u16> {
        let mut ports = std::collections::BTreeSet::new();
        if self.rproxy.enabled {
            ports.insert(self.rproxy.ssh_listen.port());
            for rule in &self.rproxy.rules {
                ports.insert(rule.backend_udp_port);
                if rule.proxy_port != 0 {
                    ports.insert(rule.proxy_port);
                }
            }
        }
        if self.enable_http {
            ports.insert(self.http_port);
        }
        if self.enable_https {
            ports.insert(self.https_port);
        }
        ports
    }
}

/// `<max_startups>` `start:rate:full`, as OpenSSH's `MaxStartups`: with `n` connections not yet
/// logged in, a new one is dropped with no chance below `start`, `rate` % at `start`, rising
/// linearly to 100 % at `full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxStartups {
    /// Where random dropping starts.
    pub start: u32,
    /// The drop chance at `start`, in percent.
    pub rate: u8,
    /// Where every new connection is dropped.
    pub full: u32,
}

impl MaxStartups {
    /// The chance, in percent, that a new connection is dropped while `n` are not yet logged in.
    pub fn drop_percent(&self, n: u32) -> u32 {
        if n >= self.full {
            100
        } else if n < self.start {
            0
        } else {
            let rate = u32::from(self.rate);
            rate + (100 - rate) * (n - self.start) / (self.full - self.start).max(1)
        }
    }
}

impl fmt::Display for MaxStartups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.start, self.rate, self.full)
    }
}

/// `<server><per_source>`: limits and penalties per client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerSource {
    /// `<max_startups>`: SSH connections not yet logged in per source; 0 = no limit.
    pub max_startups: u32,
    /// `<max_api_connections>`: open API connections per source; 0 = no limit.
    pub max_api_connections: u32,
    /// `<ipv6_prefix>`: IPv6 sources count per prefix of this length.
    pub ipv6_prefix: u8,
    /// `<penalty_auth_failure>` (zero: none).
    pub penalty_auth_failure: Duration,
    /// `<penalty_no_auth>` (zero: none).
    pub penalty_no_auth: Duration,
    /// `<penalty_grace_exceeded>` (zero: none).
    pub penalty_grace_exceeded: Duration,
    /// `<penalty_max_startups>` (zero: none).
    pub penalty_max_startups: Duration,
    /// `<penalty_max>`.
    pub penalty_max: Duration,
    /// `<penalty_exempt_allowed_clients>`.
    pub penalty_exempt_allowed_clients: bool,
    /// `<max_tracked_sources>`.
    pub max_tracked_sources: u32,
}

/// `<rproxy><frontend>`: which front ends bring the reverse proxy its sessions
/// (docs/deployment.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// The daemon's own SSH server on `<ssh_bind_address>`:`<ssh_port>` (the default).
    Builtin,
    /// OpenSSH's `sshd`, whose users' login shell `aspshell` hands each session to the daemon
    /// over `<handoff_socket>`.
    Openssh,
    /// Both.
    Both,
}

impl Frontend {
    /// Whether the daemon's own SSH server runs.
    pub fn builtin(self) -> bool {
        matches!(self, Frontend::Builtin | Frontend::Both)
    }

    /// Whether sessions are taken from `aspshell` over the hand-off socket.
    pub fn openssh(self) -> bool {
        matches!(self, Frontend::Openssh | Frontend::Both)
    }
}

/// The kernel interface used for per-session forwarding entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardingType {
    /// Elements of nftables maps, over netlink (the default).
    Nftables,
    /// One iptables rule per session, through iptables-restore.
    Iptables,
}

impl fmt::Display for ForwardingType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForwardingType::Nftables => "nftables",
            ForwardingType::Iptables => "iptables",
        })
    }
}

/// `<rproxy>`: outside users reach inside servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseProxy {
    /// `<enabled>`.
    pub enabled: bool,
    /// `<log_level>`: 0 normal, 1–3 more debug detail.
    pub log_level: u8,
    /// `<log_directory>`: `None` logs to syslog.
    pub log_directory: Option<PathBuf>,
    /// `<ssh_bind_address>` and `<ssh_port>`: where the SSH front end listens.
    pub ssh_listen: SocketAddr,
    /// `<ssh_host_key>`: the front end's SSH host private key.
    pub ssh_host_key: PathBuf,
    /// `<ssh_host_rsa_key>`: a second host key (RSA), for clients that know no other kind.
    pub ssh_host_rsa_key: Option<PathBuf>,
    /// `<ssh_rsa_legacy>`: ssh-rsa (SHA-1) signatures accepted for host and user keys.
    pub ssh_rsa_legacy: bool,
    /// `<frontend>`: who serves the clients' SSH.
    pub frontend: Frontend,
    /// `<handoff_socket>`: where `aspshell` hands sessions over in the OpenSSH mode.
    pub handoff_socket: PathBuf,
    /// The commands accepted as opaque sessions (`<opaque_commands>`, IBM's when it is empty);
    /// empty when `<opaque_sessions>` is false.
    pub opaque_commands: Vec<CommandShape>,
    /// `<authorized_keys_file>`: pattern with `%u` and `%h`.
    pub authorized_keys_file: String,
    /// `<password_authentication>`: password logins (through PAM) besides public keys.
    pub password_authentication: bool,
    /// `<pam_service>`: the PAM service password logins are checked against.
    pub pam_service: String,
    /// `<allowed_clients>`: empty allows every client.
    pub allowed_clients: Vec<IpNet>,
    /// `<max_sessions>`.
    pub max_sessions: u32,
    /// `<session_idle_timeout>`: `None` never times out.
    pub session_idle_timeout: Option<Duration>,
    /// `<faulty_host_hold_time>`: how long a failed internal server is skipped.
    pub faulty_host_hold_time: Duration,
    /// `<accept_new_host_keys>`: trust an internal server's unknown host key on first use.
    pub accept_new_host_keys: bool,
    /// `<health_check_*>`: the active health checks of the internal servers.
    pub health_check: HealthCheck,
    /// `<max_startups>`: random early drop of connections not yet logged in.
    pub max_startups: MaxStartups,
    /// `<banner_timeout>`: time from connecting to the client's SSH version line.
    pub banner_timeout: Duration,
    /// `<kex_timeout>`: time from connecting to the end of the key exchange.
    pub kex_timeout: Duration,
    /// `<login_grace_time>`: time from connecting to a successful login.
    pub login_grace_time: Duration,
    /// `<session_open_timeout>`: time from login to an accepted command.
    pub session_open_timeout: Duration,
    /// `<rules>`, in file order.
    pub rules: Vec<Rule>,
}

/// `<health_check_*>`: an SSH handshake with every internal server of every rule, every
/// `interval`; `failures` failed in a row mark a server faulty, `successes` passed clear it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    /// `<health_check_interval>`: `None` = no active checks.
    pub interval: Option<Duration>,
    /// `<health_check_timeout>`.
    pub timeout: Duration,
    /// `<health_check_failures>`.
    pub failures: u32,
    /// `<health_check_successes>`.
    pub successes: u32,
}

impl ReverseProxy {
    /// Every distinct internal server of every rule (`<host>`, `<hosts>`), in address order.
    pub fn servers(&self) -> std::collections::BTreeSet<SocketAddr> {
        self.rules
            .iter()
            .flat_map(|r| r.hosts.iter().copied())
            .collect()
    }
}

/// `name[:port]` of a `host_domain` attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostDomain {
    /// Lower-case host name without a trailing dot.
    pub name: String,
    /// The SSH port the client dialled, if the rule restricts it.
    pub port: Option<u16>,
}

impl HostDomain {
    /// Whether a request that matches `other` always matches `self` too.
    pub fn covers(&self, other: &HostDomain) -> bool {
        self.name == other.name && (self.port.is_none() || self.port == other.port)
    }
}

impl fmt::Display for HostDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{}", self.name, p),
            None => f.write_str(&self.name),
        }
    }
}

/// Load-balancing method of a rule with `<hosts>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balancing {
    /// Take the hosts in turn, skipping faulty ones.
    RoundRobin,
}

/// One `<rule>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Position in the file, from 1.
    pub number: usize,
    /// Where the `<rule>` tag is in the file.
    pub pos: super::Pos,
    /// `host_ip`: proxy address or prefix the client dialled.
    pub host_ip: Option<IpNet>,
    /// `host_domain`: host name (and port) the client asked for.
    pub host_domain: Option<HostDomain>,
    /// `<host>` or `<hosts>`: the internal SSH servers, at least one.
    pub hosts: Vec<SocketAddr>,
    /// `<balancing>`: set when the rule has `<hosts>`.
    pub balancing: Option<Balancing>,
    /// `<proxy_port>`: client-facing UDP port; 0 = the internal server's own port.
    pub proxy_port: u16,
    /// `<backend_udp_port>`: the internal servers' UDP port for opaque sessions (also the
    /// client-facing port of their kernel entries).
    pub backend_udp_port: u16,
    /// `<squash_user>`: `None` means each user logs in as themself.
    pub squash_user: Option<String>,
    /// `<keyfile>`: private key path, may hold `$(user)`.
    pub keyfile: String,
    /// `<src_port_filtering>`.
    pub src_port_filtering: bool,
    /// `<udp_port_reuse>`.
    pub udp_port_reuse: bool,
    /// `<bind_source_address>`: SNAT addresses; empty = masquerade.
    pub bind_source_addresses: Vec<IpAddr>,
}

impl Rule {
    /// Whether the rule has neither `host_ip` nor `host_domain`.
    pub fn is_default(&self) -> bool {
        self.host_ip.is_none() && self.host_domain.is_none()
    }

    /// Whether every connection this rule matches is also matched by `earlier`, for a non-default
    /// `earlier` rule (a default rule is only a fallback and shadows nothing).
    pub fn is_shadowed_by(&self, earlier: &Rule) -> bool {
        if earlier.is_default() {
            return self.is_default();
        }
        let ip_covered = match (&earlier.host_ip, &self.host_ip) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(e), Some(s)) => e.contains(s),
        };
        let domain_covered = match (&earlier.host_domain, &self.host_domain) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(e), Some(s)) => e.covers(s),
        };
        ip_covered && domain_covered
    }

    /// A short name for messages: `rule 2 (host_ip="192.0.2.0/24")` or `rule 3 (default rule)`.
    pub fn label(&self) -> String {
        rule_label(
            self.number,
            self.host_ip.map(|n| display_net(&n)).as_deref(),
            self.host_domain.as_ref().map(|d| d.to_string()).as_deref(),
        )
    }
}

/// Writes a prefix, leaving out `/32` and `/128` on single addresses.
pub fn display_net(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// The label of a rule from its number and the raw attribute texts.
pub fn rule_label(number: usize, host_ip: Option<&str>, host_domain: Option<&str>) -> String {
    let mut attrs = Vec::new();
    if let Some(ip) = host_ip {
        attrs.push(format!("host_ip=\"{ip}\""));
    }
    if let Some(d) = host_domain {
        attrs.push(format!("host_domain=\"{d}\""));
    }
    if attrs.is_empty() {
        format!("rule {number} (default rule)")
    } else {
        format!("rule {number} ({})", attrs.join(" "))
    }
}

/// `<proxy>`: inside users reach outside servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardProxy {
    /// `<enabled>`.
    pub enabled: bool,
    /// `<authentication>`: clients must authenticate.
    pub authentication: bool,
    /// `<bind_ip_address>`.
    pub bind_ip_address: IpAddr,
    /// `<bind_ip_netmask>` as a prefix length, if set.
    pub bind_ip_netmask: Option<u8>,
    /// `<port_range_low>`.
    pub port_range_low: u16,
    /// `<port_range_high>`.
    pub port_range_high: u16,
    /// `<cleanup_interval>`: `None` = the built-in sweep (`forward::table::DEFAULT_SWEEP`).
    pub cleanup_interval: Option<Duration>,
    /// `<keepalive_interval>`: `None` = the built-in expiry (`forward::table::DEFAULT_EXPIRY`).
    pub keepalive_interval: Option<Duration>,
    /// `<session_timeout>`: keepalive interval told to clients; `None` = their default.
    pub session_timeout: Option<Duration>,
    /// `<bind_source_address>`: the source address outside servers see; `None` = masquerade.
    pub bind_source_address: Option<IpAddr>,
    /// `<allowed_destinations>`: empty = every destination not denied.
    pub allowed_destinations: Vec<IpNet>,
    /// `<denied_destinations>`: checked first.
    pub denied_destinations: Vec<IpNet>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(number: usize, ip: Option<&str>, domain: Option<(&str, Option<u16>)>) -> Rule {
        Rule {
            number,
            pos: Default::default(),
            host_ip: ip.map(|s| s.parse().unwrap()),
            host_domain: domain.map(|(n, p)| HostDomain {
                name: n.into(),
                port: p,
            }),
            hosts: vec!["198.51.100.2:22".parse().unwrap()],
            balancing: None,
            proxy_port: 33001,
            backend_udp_port: 33001,
            squash_user: None,
            keyfile: "/k".into(),
            src_port_filtering: true,
            udp_port_reuse: true,
            bind_source_addresses: vec![],
        }
    }

    #[test]
    fn shadowing() {
        let wide = rule(1, Some("192.0.2.0/24"), None);
        let narrow = rule(2, Some("192.0.2.7/32"), None);
        let narrow_named = rule(3, Some("192.0.2.7/32"), Some(("a.example", None)));
        let named = rule(4, None, Some(("a.example", None)));
        let named_port = rule(5, None, Some(("a.example", Some(33001))));
        let default = rule(6, None, None);
        assert!(narrow.is_shadowed_by(&wide));
        assert!(!wide.is_shadowed_by(&narrow));
        assert!(narrow_named.is_shadowed_by(&wide));
        assert!(!named.is_shadowed_by(&wide));
        assert!(named_port.is_shadowed_by(&named));
        assert!(!named.is_shadowed_by(&named_port));
        assert!(narrow_named.is_shadowed_by(&named));
        assert!(!narrow.is_shadowed_by(&default));
        assert!(default.is_shadowed_by(&rule(7, None, None)));
    }

    #[test]
    fn labels() {
        assert_eq!(
            rule(2, Some("192.0.2.7/32"), None).label(),
            "rule 2 (host_ip=\"192.0.2.7\")"
        );
        assert_eq!(
            rule(3, Some("192.0.2.0/24"), Some(("a.example", Some(22)))).label(),
            "rule 3 (host_ip=\"192.0.2.0/24\" host_domain=\"a.example:22\")"
        );
        assert_eq!(rule(4, None, None).label(), "rule 4 (default rule)");
    }
}
