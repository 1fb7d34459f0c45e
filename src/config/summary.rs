//! A short human summary of a valid configuration, as `check-config` prints it.

use std::fmt::Write;

use super::docroot::PathSettings;
use super::model::{display_net, Config, Rule};

/// Describes what the configuration does: the proxy modes and, for each rule, what it matches,
/// where it forwards, as whom, and on which ports.
pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    let server = &config.server;
    let r = &server.rproxy;
    if r.enabled {
        let _ = writeln!(
            out,
            "reverse proxy: enabled; {}; {}; forwarding via {}; at most {} sessions; {}",
            match r.frontend {
                super::model::Frontend::Builtin => format!("SSH on {}", r.ssh_listen),
                super::model::Frontend::Openssh => format!(
                    "SSH by OpenSSH's sshd, sessions handed over {} by aspshell",
                    r.handoff_socket.display()
                ),
                super::model::Frontend::Both => format!(
                    "SSH on {}, and by OpenSSH's sshd through aspshell over {}",
                    r.ssh_listen,
                    r.handoff_socket.display()
                ),
            },
            if r.frontend == super::model::Frontend::Openssh {
                "logins checked by sshd".to_string()
            } else if r.password_authentication {
                format!("public keys or passwords (PAM service {})", r.pam_service)
            } else {
                "public keys only".to_string()
            },
            server.forwarding_type,
            r.max_sessions,
            if r.allowed_clients.is_empty() {
                "clients from anywhere".to_string()
            } else {
                let list: Vec<String> = r.allowed_clients.iter().map(display_net).collect();
                format!("clients from {}", list.join(", "))
            }
        );
        let _ = writeln!(
            out,
            "IBM clients: {}; SSH {}",
            if r.opaque_commands.is_empty() {
                "opaque sessions off (only fasp-proxy's ascp --server)".to_string()
            } else {
                let shapes: Vec<String> =
                    r.opaque_commands.iter().map(|c| format!("'{c}'")).collect();
                format!("opaque sessions for {}", shapes.join(", "))
            },
            match (r.ssh_rsa_legacy, &r.ssh_host_rsa_key) {
                (true, Some(_)) => "ssh-rsa (SHA-1) accepted, RSA host key too (legacy on)",
                (true, None) => "ssh-rsa (SHA-1) accepted for user keys, but no RSA host key",
                (false, Some(_)) => "SHA-2 only, RSA host key too",
                (false, None) => "SHA-2 only",
            }
        );
        let _ = writeln!(
            out,
            "SSH logins: random early drop from {} connections not logged in ({}% rising to all \
             at {}); version line within {} s, key exchange within {} s, login within {} s of \
             connecting; a command within {} s of logging in",
            r.max_startups.start,
            r.max_startups.rate,
            r.max_startups.full,
            r.banner_timeout.as_secs(),
            r.kex_timeout.as_secs(),
            r.login_grace_time.as_secs(),
            r.session_open_timeout.as_secs()
        );
    } else {
        let _ = writeln!(
            out,
            "reverse proxy: disabled ({} rules defined)",
            r.rules.len()
        );
    }
    for rule in &r.rules {
        describe_rule(rule, &mut out);
    }
    let p = &server.proxy;
    if p.enabled {
        let _ = writeln!(
            out,
            "forward proxy: enabled on {}; ports {}-{}; authentication {}; API {}",
            p.bind_ip_address,
            p.port_range_low,
            p.port_range_high,
            on_off(p.authentication),
            api(config)
        );
        let list = |nets: &[ipnet::IpNet]| {
            nets.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "  destinations: {}{}; source {}",
            if p.allowed_destinations.is_empty() {
                "any (no <allowed_destinations>)".to_string()
            } else {
                format!("only {}", list(&p.allowed_destinations))
            },
            if p.denied_destinations.is_empty() {
                String::new()
            } else {
                format!(", never {}", list(&p.denied_destinations))
            },
            p.bind_source_address
                .map_or_else(|| "masquerade".to_string(), |a| a.to_string())
        );
    } else {
        let _ = writeln!(out, "forward proxy: disabled");
    }
    if r.enabled || p.enabled {
        describe_per_source(config, &mut out);
    }
    describe_access(config, &mut out);
    out
}

/// The docroots and aspshell's extra commands, when the file sets any: `<default>`'s, then
/// each user's as in force for them (their own over `<default>`'s).
fn describe_access(config: &Config, out: &mut String) {
    if !config.default.path.is_empty() || !config.users.is_empty() {
        let _ = writeln!(
            out,
            "docroots (for ascp --server, ascmd and aspshell reading this file): every user: {}",
            docroot(&config.default.path)
        );
        for user in &config.users {
            let _ = writeln!(
                out,
                "  user {} (line {}): {}",
                user.name,
                user.pos.line,
                docroot(&config.path_settings_for(&user.name))
            );
        }
    }
    if !config.aspshell_commands().is_empty() {
        let shapes: Vec<String> = config
            .aspshell_commands()
            .iter()
            .map(|c| format!("'{c}'"))
            .collect();
        let _ = writeln!(out, "aspshell: also runs {}", shapes.join(", "));
    }
}

/// `/data/$(name); read on, write off, browse on`, IBM's defaults for what is not set.
fn docroot(p: &PathSettings) -> String {
    format!(
        "{}; read {}, write {}, browse {}",
        p.absolute.as_deref().unwrap_or("the whole file system"),
        on_off(p.read_allowed.unwrap_or(true)),
        on_off(p.write_allowed.unwrap_or(true)),
        on_off(p.dir_allowed.unwrap_or(true))
    )
}

fn describe_per_source(config: &Config, out: &mut String) {
    let s = &config.server.per_source;
    let cap = |n: u32, what: &str| match n {
        0 => format!("no limit of {what}"),
        n => format!("at most {n} {what}"),
    };
    let penalty = |d: std::time::Duration| match d.as_secs() {
        0 => "none".to_string(),
        n => format!("{n} s"),
    };
    let _ = writeln!(
        out,
        "per source (IPv6 per /{}): {}, {}; penalties: failed login {}, no login attempt {}, \
         too slow {}, over a cap {}, doubled for each repeat after serving one, at most {} s; {}; \
         {} sources remembered",
        s.ipv6_prefix,
        cap(s.max_startups, "SSH connections not logged in"),
        cap(s.max_api_connections, "API connections"),
        penalty(s.penalty_auth_failure),
        penalty(s.penalty_no_auth),
        penalty(s.penalty_grace_exceeded),
        penalty(s.penalty_max_startups),
        s.penalty_max.as_secs(),
        if s.penalty_exempt_allowed_clients {
            "<allowed_clients> exempt"
        } else {
            "no source exempt"
        },
        s.max_tracked_sources
    );
}

fn describe_rule(rule: &Rule, out: &mut String) {
    let _ = writeln!(out, "  {} at line {}", rule.label(), rule.pos.line);
    let address = match &rule.host_ip {
        Some(net) if net.prefix_len() == net.max_prefix_len() => {
            format!("connections to {}", net.addr())
        }
        Some(net) => format!("connections to any address in {net}"),
        None => "connections to any proxy address".to_string(),
    };
    let name = match &rule.host_domain {
        Some(d) => format!("asking for host {d}"),
        None => "any host name".to_string(),
    };
    let matches = if rule.is_default() {
        "every connection no other rule takes (default rule)".to_string()
    } else {
        format!("{address}, {name}")
    };
    let _ = writeln!(out, "    matches   {matches}");
    let hosts: Vec<String> = rule.hosts.iter().map(ToString::to_string).collect();
    let forwards = if rule.balancing.is_some() {
        format!("round robin over {}", hosts.join(", "))
    } else {
        hosts.join(", ")
    };
    let _ = writeln!(out, "    forwards  to {forwards}");
    let login = match &rule.squash_user {
        Some(u) => format!("every user as squash user {u}"),
        None => "each user as their own account (individual)".to_string(),
    };
    let _ = writeln!(out, "    logs in   {login}, key {}", rule.keyfile);
    let port = if rule.proxy_port == 0 {
        "the internal server's own UDP port".to_string()
    } else {
        format!("UDP port {}", rule.proxy_port)
    };
    let snat = if rule.bind_source_addresses.is_empty() {
        "masquerade".to_string()
    } else {
        let list: Vec<String> = rule
            .bind_source_addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        format!("SNAT to {}", list.join(", "))
    };
    let _ = writeln!(
        out,
        "    data      {port}; source-port filtering {}; UDP port reuse {}; {snat}",
        on_off(rule.src_port_filtering),
        on_off(rule.udp_port_reuse)
    );
}

fn api(config: &Config) -> String {
    let s = &config.server;
    match (s.enable_http, s.enable_https) {
        (true, true) => format!("HTTP {} and HTTPS {}", s.http_port, s.https_port),
        (true, false) => format!("HTTP {}", s.http_port),
        (false, true) => format!("HTTPS {}", s.https_port),
        (false, false) => "off".to_string(),
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use std::path::Path;

    #[test]
    fn describes_each_rule() {
        let text = r#"<CONF><server><rproxy><enabled>true</enabled><rules>
<rule host_ip="192.0.2.10"><host>198.51.100.10</host><squash_user>xfer</squash_user><keyfile>/k</keyfile></rule>
<rule host_ip="192.0.2.128/25" host_domain="files.example.com"><balancing>round_robin</balancing>
<hosts><host>198.51.100.11</host><host>198.51.100.12:2222</host></hosts><keyfile>/home/$(user)/k</keyfile>
<proxy_port>0</proxy_port><src_port_filtering>false</src_port_filtering><bind_source_address>198.51.100.1,198.51.100.5</bind_source_address></rule>
<rule><host>198.51.100.13</host><keyfile>/k</keyfile></rule>
</rules></rproxy></server></CONF>"#;
        let loaded = parse_str(text, Path::new("t")).unwrap();
        let s = describe(&loaded.config);
        assert!(
            s.contains(
                "reverse proxy: enabled; SSH on 0.0.0.0:33001; public keys only; forwarding via nftables"
            ),
            "{s}"
        );
        assert!(
            s.contains("rule 1 (host_ip=\"192.0.2.10\") at line 2"),
            "{s}"
        );
        assert!(
            s.contains("matches   connections to 192.0.2.10, any host name"),
            "{s}"
        );
        assert!(s.contains("forwards  to 198.51.100.10:22"), "{s}");
        assert!(s.contains("every user as squash user xfer"), "{s}");
        assert!(
            s.contains(
                "connections to any address in 192.0.2.128/25, asking for host files.example.com"
            ),
            "{s}"
        );
        assert!(
            s.contains("round robin over 198.51.100.11:22, 198.51.100.12:2222"),
            "{s}"
        );
        assert!(
            s.contains("each user as their own account (individual)"),
            "{s}"
        );
        assert!(
            s.contains("the internal server's own UDP port; source-port filtering off"),
            "{s}"
        );
        assert!(s.contains("SNAT to 198.51.100.1, 198.51.100.5"), "{s}");
        assert!(s.contains("rule 3 (default rule)"), "{s}");
        assert!(s.contains("every connection no other rule takes"), "{s}");
        assert!(s.contains("forward proxy: disabled"), "{s}");
        assert!(
            s.contains("IBM clients: opaque sessions for 'ascp -S. -V1', 'ascp4 -S.'"),
            "{s}"
        );
        assert!(s.contains("; SSH SHA-2 only"), "{s}");
    }

    #[test]
    fn the_openssh_mode_names_its_socket_and_bad_values_are_refused() {
        let conf = |frontend: &str| {
            format!(
                "<CONF><server><rproxy><enabled>true</enabled><frontend>{frontend}</frontend>\
                 <rules><rule><host>198.51.100.10</host><keyfile>/k</keyfile></rule></rules>\
                 </rproxy></server></CONF>"
            )
        };
        let loaded = parse_str(&conf("openssh"), Path::new("t")).unwrap();
        assert!(loaded.config.server.rproxy.frontend.openssh());
        assert!(!loaded.config.server.rproxy.frontend.builtin());
        let s = describe(&loaded.config);
        assert!(
            s.contains("SSH by OpenSSH's sshd, sessions handed over /run/fasp-proxy/handoff.sock by aspshell; logins checked by sshd"),
            "{s}"
        );
        let both = parse_str(&conf("both"), Path::new("t")).unwrap();
        assert!(describe(&both.config).contains("SSH on 0.0.0.0:33001, and by OpenSSH's sshd"));
        let e = parse_str(&conf("sshd"), Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"sshd\" is not builtin, openssh or both"),
            "{e}"
        );
        let relative = conf("openssh").replace(
            "</frontend>",
            "</frontend><handoff_socket>run/h.sock</handoff_socket>",
        );
        let e = parse_str(&relative, Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an absolute path"), "{e}");
    }
}
