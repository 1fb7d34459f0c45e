//! Checks of a valid configuration against the machine it runs on: addresses no interface holds,
//! key files that do not exist. These are warnings: the machine may change before the proxy starts.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::diagnostic::Diagnostic;
use super::model::{display_net, Config};
use crate::sysctl;

/// What the checks need to know about the machine.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// Addresses held by local interfaces.
    pub local_addresses: Vec<IpAddr>,
    /// Files known to exist; `None` asks the file system.
    pub existing_files: Option<Vec<PathBuf>>,
    /// `net.ipv4.ip_forward` and `net.ipv6.conf.all.forwarding`, when they could be read.
    pub ip_forwarding: (Option<bool>, Option<bool>),
}

/// The addresses held by this machine's interfaces (in its current network namespace); empty
/// when they cannot be read.
pub fn local_addresses() -> Vec<IpAddr> {
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs
            .filter_map(|a| a.address)
            .filter_map(|s| {
                if let Some(v4) = s.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

impl Machine {
    /// Reads the local interface addresses of this machine (its current network namespace).
    pub fn probe() -> Machine {
        let local_addresses = local_addresses();
        let sysctl = |path: &str| sysctl::is_on(path).ok();
        Machine {
            local_addresses,
            existing_files: None,
            ip_forwarding: (sysctl(sysctl::IPV4_FORWARD), sysctl(sysctl::IPV6_FORWARD)),
        }
    }

    fn exists(&self, path: &Path) -> bool {
        match &self.existing_files {
            Some(files) => files.iter().any(|f| f == path),
            None => path.exists(),
        }
    }
}

/// Warnings about `config` on `machine`.
pub fn check(config: &Config, machine: &Machine) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let rproxy = &config.server.rproxy;
    for rule in &rproxy.rules {
        let at = |d: Diagnostic| {
            d.in_rule(rule.label())
                .at_path(format!("CONF/server/rproxy/rules/rule[{}]", rule.number))
        };
        let pos = Some(rule.pos);
        if let Some(net) = rule.host_ip {
            if !machine.local_addresses.iter().any(|a| net.contains(a)) {
                out.push(at(Diagnostic::warning(
                    pos,
                    format!(
                        "no local interface holds an address in host_ip {}; the rule matches nothing until one does",
                        display_net(&net)
                    ),
                )));
            }
        }
        if !rule.keyfile.contains("$(") && !rule.keyfile.is_empty() {
            let key = Path::new(&rule.keyfile);
            if !machine.exists(key) {
                out.push(at(Diagnostic::warning(
                    pos,
                    format!("keyfile {} does not exist", rule.keyfile),
                )));
            }
        }
    }
    if rproxy.enabled && !config.server.enable_ip_forwarding {
        let (v4, v6) = config.server.forwarded_families();
        for (needed, on, name) in [
            (v4, machine.ip_forwarding.0, "net.ipv4.ip_forward"),
            (v6, machine.ip_forwarding.1, "net.ipv6.conf.all.forwarding"),
        ] {
            if needed && on == Some(false) {
                out.push(
                    Diagnostic::warning(
                        None,
                        format!(
                            "{name} is 0 on this machine: the proxy will refuse to start; turn it on \
                             (sysctl -w {name}=1) or set <enable_ip_forwarding>true</enable_ip_forwarding>"
                        ),
                    )
                    .at_path("CONF/server/enable_ip_forwarding"),
                );
            }
        }
    }
    if rproxy.enabled {
        if !machine.exists(&rproxy.ssh_host_key) {
            out.push(
                Diagnostic::warning(
                    None,
                    format!(
                        "SSH host key {} does not exist; `fasp-proxy create-config` makes one",
                        rproxy.ssh_host_key.display()
                    ),
                )
                .at_path("CONF/server/rproxy/ssh_host_key"),
            );
        }
        if rproxy.password_authentication {
            let service = Path::new("/etc/pam.d").join(&rproxy.pam_service);
            if !machine.exists(&service) {
                out.push(
                    Diagnostic::warning(
                        None,
                        format!(
                            "{} does not exist: PAM checks passwords with /etc/pam.d/other; \
                             install etc/pam.d/fasp-proxy there (see docs/operations.md)",
                            service.display()
                        ),
                    )
                    .at_path("CONF/server/rproxy/pam_service"),
                );
            }
        }
        let bind = rproxy.ssh_listen.ip();
        if !bind.is_unspecified() && !machine.local_addresses.contains(&bind) {
            out.push(
                Diagnostic::warning(
                    None,
                    format!("no local interface holds ssh_bind_address {bind}"),
                )
                .at_path("CONF/server/rproxy/ssh_bind_address"),
            );
        }
    }
    let server = &config.server;
    if server.proxy.enabled {
        if server.enable_https {
            for (file, what, path) in [
                (
                    &server.https_certificate,
                    "HTTPS API certificate",
                    "CONF/server/https_certificate",
                ),
                (
                    &server.https_private_key,
                    "HTTPS API private key",
                    "CONF/server/https_private_key",
                ),
            ] {
                if !machine.exists(file) {
                    out.push(
                        Diagnostic::warning(
                            None,
                            format!(
                                "{what} {} does not exist: `fasp-proxy run` will refuse to start; \
                                 `fasp-proxy create-certificate` makes a self-signed pair",
                                file.display()
                            ),
                        )
                        .at_path(path),
                    );
                }
            }
        }
        let bind = server.proxy.bind_ip_address;
        if !bind.is_unspecified() && !machine.local_addresses.contains(&bind) {
            out.push(
                Diagnostic::warning(
                    None,
                    format!("no local interface holds the forward proxy's bind_ip_address {bind}"),
                )
                .at_path("CONF/server/proxy/bind_ip_address"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    const CONF: &str = r#"<CONF><server><rproxy><enabled>true</enabled>
<ssh_host_key>/etc/fp/key</ssh_host_key><rules>
<rule host_ip="192.0.2.10"><host>198.51.100.2</host><keyfile>/k1</keyfile></rule>
<rule host_ip="203.0.113.0/24"><host>198.51.100.3</host><keyfile>/home/$(user)/.ssh/id</keyfile></rule>
</rules></rproxy></server></CONF>"#;

    #[test]
    fn warns_about_addresses_and_files_not_on_this_machine() {
        let loaded = parse_str(CONF, Path::new("t.conf")).unwrap();
        let machine = Machine {
            local_addresses: vec!["203.0.113.9".parse().unwrap()],
            existing_files: Some(vec![]),
            ip_forwarding: (Some(false), Some(false)),
        };
        let w: Vec<String> = check(&loaded.config, &machine)
            .iter()
            .map(|d| format!("{} {}", d.rule.clone().unwrap_or_default(), d.message))
            .collect();
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].starts_with("rule 1 (host_ip=\"192.0.2.10\") no local interface holds an address in host_ip 192.0.2.10"));
        assert!(w[1].contains("keyfile /k1 does not exist"));
        assert!(w[2].contains("net.ipv4.ip_forward is 0"), "{w:?}");
        assert!(w[3].contains("SSH host key /etc/fp/key does not exist"));

        let machine = Machine {
            local_addresses: vec![
                "192.0.2.10".parse().unwrap(),
                "203.0.113.9".parse().unwrap(),
            ],
            existing_files: Some(vec!["/k1".into(), "/etc/fp/key".into()]),
            // IPv6 forwarding off does not matter: no rule forwards to IPv6 servers.
            ip_forwarding: (Some(true), Some(false)),
        };
        assert!(check(&loaded.config, &machine).is_empty());
    }

    #[test]
    fn warns_when_the_pam_service_file_is_missing() {
        let text = CONF.replace(
            "<rules>",
            "<password_authentication>true</password_authentication><pam_service>fp</pam_service><rules>",
        );
        let loaded = parse_str(&text, Path::new("t.conf")).unwrap();
        let mut machine = Machine {
            local_addresses: vec![
                "192.0.2.10".parse().unwrap(),
                "203.0.113.9".parse().unwrap(),
            ],
            existing_files: Some(vec!["/k1".into(), "/etc/fp/key".into()]),
            ip_forwarding: (Some(true), Some(true)),
        };
        let w = check(&loaded.config, &machine);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].message.contains("/etc/pam.d/fp does not exist"),
            "{w:?}"
        );
        assert_eq!(
            w[0].tag_path.as_deref(),
            Some("CONF/server/rproxy/pam_service")
        );
        machine
            .existing_files
            .as_mut()
            .unwrap()
            .push("/etc/pam.d/fp".into());
        assert!(check(&loaded.config, &machine).is_empty());
    }

    #[test]
    fn probe_finds_loopback() {
        let m = Machine::probe();
        assert!(m.local_addresses.iter().any(|a| a.is_loopback()), "{m:?}");
    }
}
