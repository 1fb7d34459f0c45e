//! What changed between two configurations, in words: the one log line of a reload
//! (`fasp-proxy reload`, SIGHUP) says it, and the daemon uses [`restart_only`] to keep the
//! settings a running daemon cannot change.

use std::fmt::Debug;

use super::model::{Config, Rule};

/// Every change from `old` to `new`, one phrase each (`<max_sessions> 1000 → 200`,
/// `rule 2 (host_ip="192.0.2.0/24") added`), in the order of the schema; empty when nothing
/// changed.
pub fn changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |name: &str, a: &dyn Debug, b: &dyn Debug, same: bool| {
        if !same {
            out.push(format!("<{name}> {} → {}", short(a), short(b)));
        }
    };
    macro_rules! compare {
        ($($path:ident).+ as $name:literal) => {
            field(
                $name,
                &old.$($path).+,
                &new.$($path).+,
                old.$($path).+ == new.$($path).+,
            )
        };
    }
    compare!(server.rproxy.enabled as "rproxy><enabled");
    compare!(server.rproxy.log_level as "log_level");
    compare!(server.rproxy.log_directory as "log_directory");
    compare!(server.rproxy.ssh_listen as "ssh_bind_address>:<ssh_port");
    compare!(server.rproxy.ssh_host_key as "ssh_host_key");
    compare!(server.rproxy.ssh_host_rsa_key as "ssh_host_rsa_key");
    compare!(server.rproxy.ssh_rsa_legacy as "ssh_rsa_legacy");
    compare!(server.rproxy.frontend as "frontend");
    compare!(server.rproxy.handoff_socket as "handoff_socket");
    compare!(server.rproxy.opaque_commands as "opaque_commands");
    compare!(server.rproxy.authorized_keys_file as "authorized_keys_file");
    compare!(server.rproxy.password_authentication as "password_authentication");
    compare!(server.rproxy.pam_service as "pam_service");
    compare!(server.rproxy.allowed_clients as "allowed_clients");
    compare!(server.rproxy.max_sessions as "max_sessions");
    compare!(server.rproxy.session_idle_timeout as "session_idle_timeout");
    compare!(server.rproxy.faulty_host_hold_time as "faulty_host_hold_time");
    compare!(server.rproxy.accept_new_host_keys as "accept_new_host_keys");
    compare!(server.rproxy.health_check as "health_check_*");
    compare!(server.rproxy.max_startups as "max_startups");
    compare!(server.rproxy.banner_timeout as "banner_timeout");
    compare!(server.rproxy.kex_timeout as "kex_timeout");
    compare!(server.rproxy.login_grace_time as "login_grace_time");
    compare!(server.rproxy.session_open_timeout as "session_open_timeout");
    compare!(server.proxy as "proxy");
    compare!(server.per_source as "per_source");
    compare!(server.enable_http as "enable_http");
    compare!(server.enable_https as "enable_https");
    compare!(server.http_port as "http_port");
    compare!(server.https_port as "https_port");
    compare!(server.https_certificate as "https_certificate");
    compare!(server.https_private_key as "https_private_key");
    compare!(server.forwarding_type as "forwarding_type");
    compare!(server.iptables_path as "iptables_path");
    compare!(server.enable_ip_forwarding as "enable_ip_forwarding");
    compare!(server.fast_path as "fast_path");
    compare!(server.metrics_listen as "enable_metrics/metrics_bind_address/metrics_port");
    compare!(server.admin_group as "admin_group");
    compare!(default as "default");
    compare!(users as "aaa");
    out.extend(rule_changes(
        &old.server.rproxy.rules,
        &new.server.rproxy.rules,
    ));
    out
}

/// A value for a log line: its debug form, cut at 80 characters.
fn short(value: &dyn Debug) -> String {
    let text = format!("{value:?}");
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// Rules are matched by their selector (`host_ip`, `host_domain`): added, removed, changed
/// (anything but the line they are on), or moved in the order they are tried.
fn rule_changes(old: &[Rule], new: &[Rule]) -> Vec<String> {
    let selector = |r: &Rule| (r.host_ip, r.host_domain.clone());
    let same = |a: &Rule, b: &Rule| {
        a.hosts == b.hosts
            && a.balancing == b.balancing
            && a.proxy_port == b.proxy_port
            && a.backend_udp_port == b.backend_udp_port
            && a.squash_user == b.squash_user
            && a.keyfile == b.keyfile
            && a.src_port_filtering == b.src_port_filtering
            && a.udp_port_reuse == b.udp_port_reuse
            && a.bind_source_addresses == b.bind_source_addresses
    };
    let mut out = Vec::new();
    for r in new {
        match old.iter().find(|o| selector(o) == selector(r)) {
            None => out.push(format!("{} added", r.label())),
            Some(o) if !same(o, r) => out.push(format!("{} changed", r.label())),
            Some(o) if o.number != r.number => {
                out.push(format!("{} moved (was rule {})", r.label(), o.number))
            }
            Some(_) => {}
        }
    }
    for o in old {
        if !new.iter().any(|r| selector(r) == selector(o)) {
            out.push(format!("{} removed", o.label()));
        }
    }
    out
}

/// The settings a running daemon keeps until it restarts, with their values in `old`: `new`
/// with those put back, and the phrases naming each one that differed (`<forwarding_type>
/// nftables → iptables`).
pub fn restart_only(old: &Config, new: &Config) -> (Config, Vec<String>) {
    let mut kept = new.clone();
    let mut differed = Vec::new();
    macro_rules! keep {
        ($($path:ident).+ as $name:literal) => {
            if old.$($path).+ != new.$($path).+ {
                differed.push(format!(
                    "<{}> {} → {}",
                    $name,
                    short(&old.$($path).+),
                    short(&new.$($path).+)
                ));
                kept.$($path).+ = old.$($path).+.clone();
            }
        };
    }
    keep!(server.forwarding_type as "forwarding_type");
    keep!(server.iptables_path as "iptables_path");
    keep!(server.enable_ip_forwarding as "enable_ip_forwarding");
    keep!(server.fast_path as "fast_path");
    keep!(server.rproxy.enabled as "rproxy><enabled");
    keep!(server.rproxy.frontend as "frontend");
    keep!(server.rproxy.handoff_socket as "handoff_socket");
    keep!(server.rproxy.log_directory as "log_directory");
    keep!(server.proxy.enabled as "proxy><enabled");
    (kept, differed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use std::path::Path;

    fn config(rules: &str, extra: &str) -> Config {
        let text = format!(
            "<CONF><server>{extra}<rproxy><enabled>true</enabled><rules>{rules}</rules></rproxy>\
             </server></CONF>"
        );
        parse_str(&text, Path::new("t")).unwrap().config
    }

    const A: &str =
        r#"<rule host_ip="192.0.2.0/24"><host>198.51.100.10</host><keyfile>/k</keyfile></rule>"#;
    const B: &str = r#"<rule><host>198.51.100.20</host><keyfile>/k</keyfile></rule>"#;
    const B2: &str = r#"<rule><host>198.51.100.21</host><keyfile>/k</keyfile></rule>"#;

    #[test]
    fn nothing_changed_says_nothing() {
        assert!(changes(&config(A, ""), &config(A, "")).is_empty());
    }

    #[test]
    fn rules_added_removed_changed_and_settings_named() {
        let old = config(&format!("{A}{B}"), "");
        let new = config(B2, "<admin_group>xfer</admin_group>");
        let c = changes(&old, &new);
        assert!(
            c.contains(&"<admin_group> None → Some(\"xfer\")".to_string()),
            "{c:?}"
        );
        assert!(
            c.contains(&"rule 1 (default rule) changed".to_string()),
            "{c:?}"
        );
        assert!(
            c.contains(&"rule 1 (host_ip=\"192.0.2.0/24\") removed".to_string()),
            "{c:?}"
        );
        let moved = changes(
            &config(&format!("{A}{B}"), ""),
            &config(&format!("{B}{A}"), ""),
        );
        assert_eq!(moved.len(), 2, "{moved:?}");
        assert!(moved.iter().all(|m| m.contains("moved")), "{moved:?}");
    }

    #[test]
    fn restart_only_settings_are_kept_and_named() {
        let old = config(A, "");
        let new = config(B, "<forwarding_type>iptables</forwarding_type>");
        let (kept, differed) = restart_only(&old, &new);
        assert_eq!(kept.server.forwarding_type, old.server.forwarding_type);
        assert_eq!(kept.server.rproxy.rules, new.server.rproxy.rules);
        assert_eq!(differed.len(), 1, "{differed:?}");
        assert!(differed[0].starts_with("<forwarding_type>"), "{differed:?}");
    }
}
