//! The tag tree of `aspera.conf`: every tag and attribute the proxy knows, with its default and a
//! one-line meaning. The parser checks documents against it, `spec` prints it, and
//! `create-config` writes the default file from it, so the three can never disagree.

/// One tag of the configuration.
#[derive(Debug)]
pub struct Tag {
    /// The element name.
    pub name: &'static str,
    /// What the tag is for, in one line.
    pub meaning: &'static str,
    /// Whether the tag may appear more than once in its parent.
    pub repeated: bool,
    /// Section (has children) or leaf (has a value).
    pub kind: Kind,
}

/// What a tag holds.
#[derive(Debug)]
pub enum Kind {
    /// A tag that contains other tags, and possibly attributes.
    Section {
        /// The tags allowed inside.
        children: &'static [Tag],
        /// The attributes allowed on the tag.
        attributes: &'static [Attribute],
    },
    /// A tag that holds a value.
    Leaf {
        /// The default value as written in the file; empty means "blank (none)".
        default: &'static str,
        /// The kind of value, e.g. `true|false`, `port`, `IP address`.
        values: &'static str,
    },
}

/// One attribute of a section tag.
#[derive(Debug)]
pub struct Attribute {
    /// The attribute name.
    pub name: &'static str,
    /// The kind of value.
    pub values: &'static str,
    /// What the attribute is for.
    pub meaning: &'static str,
}

impl Tag {
    /// The tags allowed inside this one (none for a leaf).
    pub fn children(&self) -> &'static [Tag] {
        match self.kind {
            Kind::Section { children, .. } => children,
            Kind::Leaf { .. } => &[],
        }
    }

    /// The attributes allowed on this tag (none for a leaf).
    pub fn attributes(&self) -> &'static [Attribute] {
        match self.kind {
            Kind::Section { attributes, .. } => attributes,
            Kind::Leaf { .. } => &[],
        }
    }

    /// The child tag called `name`, if this tag allows one.
    pub fn child(&self, name: &str) -> Option<&'static Tag> {
        self.children().iter().find(|t| t.name == name)
    }

    /// Whether this tag holds a value rather than other tags.
    pub fn is_leaf(&self) -> bool {
        matches!(self.kind, Kind::Leaf { .. })
    }
}

const fn leaf(
    name: &'static str,
    default: &'static str,
    values: &'static str,
    meaning: &'static str,
) -> Tag {
    Tag {
        name,
        meaning,
        repeated: false,
        kind: Kind::Leaf { default, values },
    }
}

const fn section(name: &'static str, meaning: &'static str, children: &'static [Tag]) -> Tag {
    Tag {
        name,
        meaning,
        repeated: false,
        kind: Kind::Section {
            children,
            attributes: &[],
        },
    }
}

/// Default path of the SSH host key of the proxy's front end.
pub const DEFAULT_HOST_KEY: &str = "/etc/fasp-proxy/ssh_host_ed25519_key";

const RULE_CHILDREN: &[Tag] = &[
    leaf(
        "host",
        "",
        "ip[:port]",
        "internal server (SSH) this rule forwards to; port defaults to 22, IPv6 in brackets",
    ),
    section(
        "hosts",
        "list of internal servers to balance across (use instead of <host>)",
        &[Tag {
            name: "host",
            meaning: "one internal server, ip[:port]",
            repeated: true,
            kind: Kind::Leaf {
                default: "",
                values: "ip[:port]",
            },
        }],
    ),
    leaf(
        "balancing",
        "round_robin",
        "round_robin",
        "how <hosts> are chosen; round_robin is the only method",
    ),
    leaf(
        "proxy_port",
        "33001",
        "port",
        "proxy UDP port clients send data to; 0 = the internal server's own UDP port",
    ),
    leaf(
        "squash_user",
        "",
        "account name",
        "account used on the internal server for every user; blank = the user's own account",
    ),
    leaf(
        "keyfile",
        "",
        "path",
        "SSH private key for the internal server; $(user) expands to the user's name",
    ),
    leaf(
        "src_port_filtering",
        "true",
        "true|false",
        "forward UDP only from the client's announced source port",
    ),
    leaf(
        "udp_port_reuse",
        "true",
        "true|false",
        "sessions share the client-facing UDP port (told apart by client address and port); false = each live session gets a port of its own",
    ),
    leaf(
        "backend_udp_port",
        "33001",
        "port",
        "internal servers' UDP port for opaque sessions (IBM clients); the proxy forwards the same port number",
    ),
    leaf(
        "bind_source_address",
        "",
        "IP address[,IP address...]",
        "source address(es) for forwarded UDP towards the internal server (SNAT); blank = masquerade",
    ),
    leaf(
        "forwarding_type",
        "",
        "nftables|iptables",
        "as in IBM's files; blank = <server><forwarding_type>, which it must agree with (one backend)",
    ),
];

const RULE_ATTRIBUTES: &[Attribute] = &[
    Attribute {
        name: "host_ip",
        values: "IP address or CIDR prefix",
        meaning: "proxy address(es) the client dialled that select this rule",
    },
    Attribute {
        name: "host_domain",
        values: "name[:port]",
        meaning: "host name (and SSH port) the client asked for that selects this rule",
    },
];

const RPROXY_CHILDREN: &[Tag] = &[
    leaf(
        "enabled",
        "false",
        "true|false",
        "turn the reverse proxy on",
    ),
    leaf(
        "log_level",
        "0",
        "0-3",
        "0 = normal logging; 1-3 = more debug detail",
    ),
    leaf(
        "log_directory",
        "",
        "path",
        "directory for log files; blank = log to syslog",
    ),
    leaf(
        "ssh_bind_address",
        "0.0.0.0",
        "IP address",
        "address the SSH front end listens on (:: for all IPv6 and IPv4)",
    ),
    leaf(
        "ssh_port",
        "33001",
        "port",
        "TCP port the SSH front end listens on",
    ),
    leaf(
        "ssh_host_key",
        DEFAULT_HOST_KEY,
        "path",
        "SSH host private key of the front end (create-config makes one)",
    ),
    leaf(
        "ssh_host_rsa_key",
        "",
        "path",
        "a second host key, RSA (create-config makes one): for clients that know no other kind; blank = none",
    ),
    leaf(
        "frontend",
        "builtin",
        "builtin|openssh|both",
        "who serves the clients' SSH: builtin = this daemon on ssh_port; openssh = OpenSSH's sshd, whose users' login shell aspshell hands each session over handoff_socket; both",
    ),
    leaf(
        "handoff_socket",
        "/run/fasp-proxy/handoff.sock",
        "path",
        "the Unix socket aspshell hands sessions to in the openssh mode",
    ),
    leaf(
        "ssh_rsa_legacy",
        "false",
        "true|false",
        "also accept ssh-rsa (SHA-1) signatures from host key and user keys, as IBM ascp 3.x needs; off = SHA-2 only",
    ),
    leaf(
        "authorized_keys_file",
        "%h/.ssh/authorized_keys",
        "path pattern",
        "where a proxy user's public keys are; %u = user name, %h = home directory",
    ),
    leaf(
        "password_authentication",
        "false",
        "true|false",
        "also accept password logins, checked by PAM (service pam_service); off = public keys only",
    ),
    leaf(
        "pam_service",
        "fasp-proxy",
        "PAM service name",
        "PAM service for password logins: /etc/pam.d/<name> (missing file = PAM's 'other')",
    ),
    leaf(
        "opaque_sessions",
        "true",
        "true|false",
        "accept IBM's transfer commands (opaque_commands) and bridge them byte for byte to the internal server",
    ),
    section(
        "opaque_commands",
        "the remote commands run as opaque sessions; empty = IBM's: ascp -S. -V1, ascp4 -S., ascp --no-mgmt-port-files -M {n} -S. -V1 {arg}, async -q -S -s-, ascmd",
        &[Tag {
            name: "command",
            meaning: "one command shape: literal words, {n} = a number, {arg} = one plain argument",
            repeated: true,
            kind: Kind::Leaf {
                default: "",
                values: "command shape",
            },
        }],
    ),
    section(
        "allowed_clients",
        "client addresses allowed to connect, checked before SSH; empty = everyone",
        &[Tag {
            name: "cidr",
            meaning: "one allowed client address or CIDR prefix",
            repeated: true,
            kind: Kind::Leaf {
                default: "",
                values: "IP address or CIDR prefix",
            },
        }],
    ),
    leaf(
        "max_sessions",
        "1000",
        "integer >= 1",
        "maximum concurrent sessions; more are refused",
    ),
    leaf(
        "session_idle_timeout",
        "300",
        "seconds",
        "close a session idle this long (no control or data traffic); 0 = never",
    ),
    leaf(
        "faulty_host_hold_time",
        "120",
        "seconds",
        "how long an internal server that failed is skipped",
    ),
    leaf(
        "accept_new_host_keys",
        "false",
        "true|false",
        "connect to an internal server whose host key is not yet in known_hosts and record it \
         (trust on first use); false = only servers recorded with `fasp-proxy trust-host`",
    ),
    leaf(
        "health_check_interval",
        "10",
        "seconds, 0 = off",
        "how often every internal server in <hosts> gets an SSH handshake (banner and host key \
         check) as a health check",
    ),
    leaf(
        "health_check_timeout",
        "5",
        "seconds",
        "a health check's handshake must finish this soon",
    ),
    leaf(
        "health_check_failures",
        "3",
        "1-100",
        "consecutive failed health checks that mark a server faulty",
    ),
    leaf(
        "health_check_successes",
        "2",
        "1-100",
        "consecutive passed health checks that clear a server's health-check mark",
    ),
    leaf(
        "max_startups",
        "100:30:300",
        "start:rate:full (or one number N = N:100:N)",
        "connections not yet logged in, in all: from `start` on, new ones are dropped at random with \
         `rate` % chance, rising to 100 % at `full` (OpenSSH's MaxStartups)",
    ),
    leaf(
        "banner_timeout",
        "5",
        "seconds",
        "a client must send its SSH version line this soon after connecting",
    ),
    leaf(
        "kex_timeout",
        "10",
        "seconds",
        "a client must finish the SSH key exchange this soon after connecting",
    ),
    leaf(
        "login_grace_time",
        "30",
        "seconds",
        "a client must log in this soon after connecting (OpenSSH's LoginGraceTime)",
    ),
    leaf(
        "session_open_timeout",
        "30",
        "seconds",
        "a logged-in connection must start its command (a session channel with exec) this soon",
    ),
    section(
        "rules",
        "forwarding rules, tried in file order",
        &[Tag {
            name: "rule",
            meaning: "one forwarding rule; no attribute = the default rule",
            repeated: true,
            kind: Kind::Section {
                children: RULE_CHILDREN,
                attributes: RULE_ATTRIBUTES,
            },
        }],
    ),
];

const PROXY_CHILDREN: &[Tag] = &[
    leaf(
        "enabled",
        "false",
        "true|false",
        "turn the forward proxy on",
    ),
    leaf(
        "authentication",
        "false",
        "true|false",
        "require clients to authenticate to the forward proxy",
    ),
    leaf(
        "bind_ip_address",
        "0.0.0.0",
        "IP address",
        "address the forward proxy binds to and clients connect to",
    ),
    leaf(
        "bind_ip_netmask",
        "",
        "netmask",
        "netmask of bind_ip_address; blank = none",
    ),
    leaf(
        "port_range_low",
        "5000",
        "port",
        "lowest port handed out for forwardings",
    ),
    leaf(
        "port_range_high",
        "10000",
        "port",
        "highest port handed out for forwardings",
    ),
    leaf(
        "cleanup_interval",
        "0",
        "seconds",
        "how often expired forwardings are swept; 0 = every 10 s",
    ),
    leaf(
        "keepalive_interval",
        "0",
        "seconds",
        "a forwarding expires after this long without keepalives; 0 = 180 s (three of IBM ascp's default 60 s keepalives)",
    ),
    leaf(
        "session_timeout",
        "0",
        "seconds",
        "keepalive interval propagated to clients; 0 = the client's default",
    ),
    leaf(
        "bind_source_address",
        "",
        "IPv4 address",
        "source address of forwarded traffic as outside servers see it; blank = masquerade (the outgoing interface's address)",
    ),
    section(
        "allowed_destinations",
        "outside servers clients may reach; empty = every destination not denied (an open relay for the clients)",
        &[Tag {
            name: "cidr",
            meaning: "one allowed destination address or CIDR prefix",
            repeated: true,
            kind: Kind::Leaf {
                default: "",
                values: "IP address or CIDR prefix",
            },
        }],
    ),
    section(
        "denied_destinations",
        "outside servers clients may not reach, checked before <allowed_destinations>",
        &[Tag {
            name: "cidr",
            meaning: "one denied destination address or CIDR prefix",
            repeated: true,
            kind: Kind::Leaf {
                default: "",
                values: "IP address or CIDR prefix",
            },
        }],
    ),
];

const PER_SOURCE_CHILDREN: &[Tag] = &[
    leaf(
        "max_startups",
        "32",
        "integer, 0 = no limit",
        "SSH connections not yet logged in from one source; more are refused at once, before any \
         crypto, and the source is penalised (OpenSSH's PerSourceMaxStartups)",
    ),
    leaf(
        "max_api_connections",
        "32",
        "integer, 0 = no limit",
        "open connections to the forward proxy's API from one source; more are refused at once",
    ),
    leaf(
        "ipv6_prefix",
        "64",
        "1-128",
        "IPv6 sources sharing this prefix count as one source (OpenSSH's PerSourceNetBlockSize)",
    ),
    leaf(
        "penalty_auth_failure",
        "5",
        "seconds, 0 = none",
        "a source whose login failed (SSH or API) is refused this long; doubled for each further \
         offence while it keeps offending",
    ),
    leaf(
        "penalty_no_auth",
        "1",
        "seconds, 0 = none",
        "penalty of a source that closed an SSH connection without trying to log in",
    ),
    leaf(
        "penalty_grace_exceeded",
        "10",
        "seconds, 0 = none",
        "penalty of a source that missed <banner_timeout>, <kex_timeout> or <login_grace_time>",
    ),
    leaf(
        "penalty_max_startups",
        "5",
        "seconds, 0 = none",
        "penalty of a source that tripped <max_startups> or <max_api_connections>",
    ),
    leaf(
        "penalty_max",
        "600",
        "seconds",
        "the longest penalty",
    ),
    leaf(
        "penalty_exempt_allowed_clients",
        "false",
        "true|false",
        "sources in <rproxy><allowed_clients> are never penalised (the per-source caps still apply)",
    ),
    leaf(
        "max_tracked_sources",
        "65536",
        "integer >= 1",
        "most sources the penalty table remembers; the one that offended longest ago is forgotten \
         first",
    ),
];

const SERVER_CHILDREN: &[Tag] = &[
    section(
        "rproxy",
        "reverse proxy: outside users reach inside servers",
        RPROXY_CHILDREN,
    ),
    section(
        "proxy",
        "forward proxy: inside users reach outside servers",
        PROXY_CHILDREN,
    ),
    section(
        "per_source",
        "limits and penalties per client address, for the SSH front end and the node API",
        PER_SOURCE_CHILDREN,
    ),
    leaf(
        "enable_http",
        "false",
        "true|false",
        "serve the forward-proxy API over HTTP",
    ),
    leaf(
        "enable_https",
        "false",
        "true|false",
        "serve the forward-proxy API over HTTPS",
    ),
    leaf("http_port", "9091", "port", "TCP port of the HTTP API"),
    leaf(
        "enable_metrics",
        "false",
        "true|false",
        "serve Prometheus metrics over HTTP at /metrics",
    ),
    leaf(
        "metrics_bind_address",
        "127.0.0.1",
        "IP address",
        "address the metrics listener binds to",
    ),
    leaf("metrics_port", "9094", "port", "TCP port of the metrics listener"),
    leaf(
        "admin_group",
        "",
        "group name",
        "Unix group whose members may list and close sessions (`fasp-proxy sessions`); root \
         always may; blank = root only",
    ),
    leaf("https_port", "9092", "port", "TCP port of the HTTPS API"),
    leaf(
        "https_certificate",
        "/etc/fasp-proxy/api_cert.pem",
        "absolute path",
        "PEM certificate (chain) of the HTTPS API; `fasp-proxy create-config` makes a self-signed one",
    ),
    leaf(
        "https_private_key",
        "/etc/fasp-proxy/api_key.pem",
        "absolute path",
        "PEM private key of the HTTPS API's certificate",
    ),
    leaf(
        "forwarding_type",
        "nftables",
        "nftables|iptables",
        "kernel interface for the per-session DNAT entries",
    ),
    leaf(
        "enable_ip_forwarding",
        "false",
        "true|false",
        "let the proxy turn on IP forwarding (net.ipv4.ip_forward, IPv6 forwarding) if it is off",
    ),
    leaf(
        "fast_path",
        "false",
        "true|false",
        "forward established reverse-proxy sessions' UDP with a BPF program at the interfaces' \
         ingress (tc), ahead of nftables or iptables; packets it does not hold take the usual path",
    ),
    leaf(
        "iptables_path",
        super::DEFAULT_IPTABLES_PATH,
        "path",
        "iptables binary used when forwarding_type is iptables (its -restore sibling is run)",
    ),
];

const PATH_CHILDREN: &[Tag] = &[
    leaf(
        "absolute",
        "",
        "absolute path, may start with $(home), may hold $(name)",
        "the docroot users are confined to; $(name) = user name, $(home) = home directory; blank = as in <default>, else the whole file system",
    ),
    leaf(
        "read_allowed",
        "",
        "true|false",
        "users may transfer from the docroot; blank = as in <default>, else true",
    ),
    leaf(
        "write_allowed",
        "",
        "true|false",
        "users may transfer to the docroot; blank = as in <default>, else true",
    ),
    leaf(
        "dir_allowed",
        "",
        "true|false",
        "users may browse the docroot (list, stat, mkdir, rename, delete); blank = as in <default>, else true",
    ),
];

/// `<file_system>` in `<default>` and in a `<user>`: the docroot (IBM's other `<file_system>`
/// settings are accepted and not used).
const FILE_SYSTEM_CHILDREN: &[Tag] = &[section(
    "access",
    "what users may reach (IBM's layout)",
    &[section(
        "paths",
        "the docroot: one <path>",
        &[section(
            "path",
            "the docroot and its permissions (one: IBM's several docroots per user are refused)",
            PATH_CHILDREN,
        )],
    )],
)];

const DEFAULT_CHILDREN: &[Tag] = &[
    section(
        "file_system",
        "file access for every user, unless their <user> says otherwise",
        FILE_SYSTEM_CHILDREN,
    ),
    section(
        "aspshell_commands",
        "commands aspshell runs besides its built-in ones",
        &[Tag {
            name: "command",
            meaning: "one command shape: literal words, {n} = a number, {arg} = one plain argument",
            repeated: true,
            kind: Kind::Leaf {
                default: "",
                values: "command shape",
            },
        }],
    ),
];

const USER_CHILDREN: &[Tag] = &[
    leaf(
        "name",
        "",
        "user name",
        "the user these settings are for: their login name on this host (required)",
    ),
    section(
        "file_system",
        "this user's file access; each value set here overrides <default>'s",
        FILE_SYSTEM_CHILDREN,
    ),
];

const AAA_CHILDREN: &[Tag] = &[section(
    "realms",
    "IBM's layout: one <realm>",
    &[section(
        "realm",
        "the users with settings of their own (IBM's <groups> are refused)",
        &[section(
            "users",
            "one <user> per user",
            &[Tag {
                name: "user",
                meaning: "one user's settings",
                repeated: true,
                kind: Kind::Section {
                    children: USER_CHILDREN,
                    attributes: &[],
                },
            }],
        )],
    )],
)];

/// The root tag `<CONF>` and everything below it.
pub static ROOT: Tag = section(
    "CONF",
    "root of aspera.conf",
    &[
        section("server", "proxy server settings", SERVER_CHILDREN),
        section(
            "default",
            "settings for every user of ascp --server, ascmd and aspshell on this host",
            DEFAULT_CHILDREN,
        ),
        section("aaa", "settings for single users", AAA_CHILDREN),
    ],
);

/// Visits every tag below `tag` depth first, with its path of names from the root.
pub fn walk(
    tag: &'static Tag,
    path: &mut Vec<&'static str>,
    f: &mut dyn FnMut(&[&'static str], &'static Tag),
) {
    path.push(tag.name);
    f(path, tag);
    for child in tag.children() {
        walk(child, path, f);
    }
    path.pop();
}

/// Finds the paths (as `a/b/c`) of every tag called `name` anywhere in the schema.
pub fn paths_of(name: &str) -> Vec<String> {
    let mut found = Vec::new();
    walk(&ROOT, &mut Vec::new(), &mut |path, tag| {
        if tag.name == name {
            found.push(path.join("/"));
        }
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_has_a_meaning_and_names_are_unique_per_parent() {
        walk(&ROOT, &mut Vec::new(), &mut |path, tag| {
            assert!(!tag.meaning.is_empty(), "{} has no meaning", path.join("/"));
            let mut names: Vec<_> = tag.children().iter().map(|c| c.name).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(
                before,
                names.len(),
                "duplicate child under {}",
                path.join("/")
            );
        });
    }

    #[test]
    fn documented_defaults() {
        let rproxy = ROOT.child("server").unwrap().child("rproxy").unwrap();
        let rule = rproxy.child("rules").unwrap().child("rule").unwrap();
        let default_of = |t: &Tag| match t.kind {
            Kind::Leaf { default, .. } => default,
            Kind::Section { .. } => panic!("{} is a section", t.name),
        };
        assert_eq!(default_of(rule.child("proxy_port").unwrap()), "33001");
        assert_eq!(
            default_of(rule.child("src_port_filtering").unwrap()),
            "true"
        );
        assert_eq!(default_of(rproxy.child("ssh_port").unwrap()), "33001");
        assert_eq!(
            default_of(rproxy.child("faulty_host_hold_time").unwrap()),
            "120"
        );
        let proxy = ROOT.child("server").unwrap().child("proxy").unwrap();
        assert_eq!(default_of(proxy.child("port_range_low").unwrap()), "5000");
        assert_eq!(default_of(proxy.child("port_range_high").unwrap()), "10000");
        assert_eq!(
            paths_of("host"),
            vec![
                "CONF/server/rproxy/rules/rule/host",
                "CONF/server/rproxy/rules/rule/hosts/host"
            ]
        );
    }
}

#[cfg(test)]
mod documentation_tests {
    use super::*;

    #[test]
    fn docs_describe_every_tag_and_attribute() {
        let docs = include_str!("../../docs/configuration.md");
        walk(&ROOT, &mut Vec::new(), &mut |path, tag| {
            assert!(
                docs.contains(&format!("<{}>", tag.name)),
                "docs/configuration.md does not describe <{}> ({})",
                tag.name,
                path.join("/")
            );
            for a in tag.attributes() {
                assert!(
                    docs.contains(&format!("`{}`", a.name)),
                    "docs miss attribute {}",
                    a.name
                );
            }
        });
    }
}
