//! The checks of the proxy's own configuration: key files others can read, and settings that
//! open the proxy to every client or every destination.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::finding::{Check, Finding};
use crate::config::Config;
use crate::forward::users::users_path;
use crate::policy;

/// Every finding about the configuration `config`, read from `config_path`; `names` are the
/// account names a `<keyfile>` with `$(user)` is expanded for.
pub fn check(config: &Config, config_path: &Path, names: &[&str]) -> Vec<Finding> {
    let mut found: Vec<Finding> = key_files(config, config_path, names)
        .into_iter()
        .filter_map(|(path, what)| {
            let mode = std::fs::metadata(&path).ok()?.permissions().mode();
            key_mode(&path, &what, mode)
        })
        .collect();
    found.extend(proxy_settings(config));
    found
}

/// The findings that depend on the configuration alone.
pub fn proxy_settings(config: &Config) -> Vec<Finding> {
    let mut found = Vec::new();
    let rproxy = &config.server.rproxy;
    let proxy = &config.server.proxy;
    if rproxy.enabled && rproxy.allowed_clients.is_empty() {
        found.push(Finding::setting(
            Check::AllClientsAllowed,
            format!(
                "the reverse proxy is on and <allowed_clients> is empty: any address may open \
                 SSH connections to {}",
                rproxy.ssh_listen
            ),
            "list your clients' networks in <rproxy><allowed_clients><cidr>…</cidr>".to_string(),
        ));
    }
    if rproxy.enabled && rproxy.ssh_rsa_legacy {
        found.push(Finding::setting(
            Check::SshRsaLegacy,
            "<ssh_rsa_legacy> is true: the front end accepts ssh-rsa (SHA-1) signatures for host \
             and user keys"
                .to_string(),
            "set <ssh_rsa_legacy>false</ssh_rsa_legacy> once no client needs it (IBM ascp 3.x \
             does)"
                .to_string(),
        ));
    }
    if rproxy.enabled && rproxy.accept_new_host_keys {
        found.push(Finding::setting(
            Check::AcceptNewHostKeys,
            "<accept_new_host_keys> is true: an internal server's unknown host key is trusted \
             on first use, so a machine answering first at its address is believed"
                .to_string(),
            "record each server's key with `fasp-proxy trust-host HOST:PORT`, then set \
             <accept_new_host_keys>false</accept_new_host_keys>"
                .to_string(),
        ));
    }
    if proxy.enabled && !proxy.authentication {
        found.push(Finding::setting(
            Check::ForwardWithoutAuthentication,
            "the forward proxy is on and <authentication> is false: anyone who reaches its API \
             can open forwardings"
                .to_string(),
            "set <proxy><authentication>true</authentication> and add users with \
             `fasp-proxy node-user add NAME`"
                .to_string(),
        ));
    }
    if proxy.enabled && proxy.allowed_destinations.is_empty() {
        found.push(Finding::setting(
            Check::ForwardToAnyDestination,
            "the forward proxy is on and <allowed_destinations> is empty: it forwards to every \
             address not in <denied_destinations>"
                .to_string(),
            "list the partners' networks in <proxy><allowed_destinations><cidr>…</cidr>"
                .to_string(),
        ));
    }
    found
}

/// The finding for a key file `path` (`what` says which) with permission bits `mode`, if group
/// or others may read or write it.
pub fn key_mode(path: &Path, what: &str, mode: u32) -> Option<Finding> {
    let mode = mode & 0o7777;
    if mode & 0o066 == 0 {
        return None;
    }
    let mut who = Vec::new();
    if mode & 0o044 != 0 {
        who.push("readable by group or others");
    }
    if mode & 0o022 != 0 {
        who.push("writable by group or others");
    }
    Some(Finding::setting(
        Check::KeyFileReadable,
        format!(
            "{} ({what}) has mode {mode:04o}: {}",
            path.display(),
            who.join(", ")
        ),
        format!("chmod 600 {}", path.display()),
    ))
}

/// Every key file the configuration names that exists, with what it is; each path once.
pub fn key_files(config: &Config, config_path: &Path, names: &[&str]) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let rproxy = &config.server.rproxy;
    files.push((
        rproxy.ssh_host_key.clone(),
        "the front end's host key, <ssh_host_key>".to_string(),
    ));
    if let Some(rsa) = &rproxy.ssh_host_rsa_key {
        files.push((
            rsa.clone(),
            "the front end's RSA host key, <ssh_host_rsa_key>".to_string(),
        ));
    }
    for rule in &rproxy.rules {
        let what = format!("<keyfile> of {} at line {}", rule.label(), rule.pos.line);
        if rule.keyfile.contains("$(user)") {
            for name in names {
                if let Ok(path) = policy::keyfile(rule, name) {
                    files.push((path, format!("{what}, for user {name}")));
                }
            }
        } else {
            files.push((PathBuf::from(&rule.keyfile), what));
        }
    }
    files.push((
        config.server.https_private_key.clone(),
        "the HTTPS API's private key, <https_private_key>".to_string(),
    ));
    files.push((
        users_path(config_path),
        "the node-API users file".to_string(),
    ));
    let mut seen = BTreeSet::new();
    files
        .into_iter()
        .filter(|(path, _)| seen.insert(path.clone()) && path.exists())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn parse(text: &str) -> Config {
        config::parse_str(text, Path::new("/t/aspera.conf"))
            .unwrap_or_else(|e| panic!("{e}"))
            .config
    }

    #[test]
    fn key_modes() {
        let p = Path::new("/etc/fasp-proxy/k");
        assert_eq!(key_mode(p, "k", 0o100600), None);
        assert_eq!(key_mode(p, "k", 0o100400), None);
        assert_eq!(key_mode(p, "k", 0o100700), None);
        let f = key_mode(p, "rule 1's <keyfile>", 0o100644).unwrap();
        assert_eq!(
            f.detail,
            "/etc/fasp-proxy/k (rule 1's <keyfile>) has mode 0644: readable by group or others"
        );
        assert_eq!(f.fix, "chmod 600 /etc/fasp-proxy/k");
        assert_eq!(f.user, None);
        let f = key_mode(p, "k", 0o100620).unwrap();
        assert!(
            f.detail.ends_with("mode 0620: writable by group or others"),
            "{}",
            f.detail
        );
        assert!(key_mode(p, "k", 0o100640).is_some());
    }

    const OPEN: &str = r#"<CONF><server>
  <rproxy><enabled>true</enabled><ssh_rsa_legacy>true</ssh_rsa_legacy>
    <rules><rule><host>198.51.100.2:22</host><keyfile>/k/$(user)</keyfile></rule></rules>
  </rproxy>
  <proxy><enabled>true</enabled><authentication>false</authentication>
    <bind_ip_address>192.0.2.1</bind_ip_address></proxy>
  <enable_http>true</enable_http>
</server></CONF>"#;

    #[test]
    fn open_proxy_settings() {
        let found: Vec<Check> = proxy_settings(&parse(OPEN))
            .into_iter()
            .map(|f| f.check)
            .collect();
        assert_eq!(
            found,
            [
                Check::AllClientsAllowed,
                Check::SshRsaLegacy,
                Check::ForwardWithoutAuthentication,
                Check::ForwardToAnyDestination
            ]
        );
    }

    #[test]
    fn closed_proxy_settings() {
        let closed = OPEN
            .replace("<ssh_rsa_legacy>true", "<ssh_rsa_legacy>false")
            .replace(
                "<enabled>true</enabled><ssh_rsa",
                "<enabled>true</enabled><allowed_clients><cidr>192.0.2.0/24</cidr></allowed_clients><ssh_rsa",
            )
            .replace("<authentication>false", "<authentication>true")
            .replace(
                "<bind_ip_address>",
                "<allowed_destinations><cidr>198.51.100.0/24</cidr></allowed_destinations><bind_ip_address>",
            );
        assert_eq!(proxy_settings(&parse(&closed)), []);
        // Nothing on: nothing to say.
        assert_eq!(proxy_settings(&parse("<CONF/>")), []);
    }

    #[test]
    fn key_files_expand_user_templates_and_skip_missing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let text = format!(
            r#"<CONF><server><rproxy><enabled>true</enabled>
  <ssh_host_key>{d}/host</ssh_host_key>
  <allowed_clients><cidr>192.0.2.0/24</cidr></allowed_clients>
  <rules>
    <rule host_ip="192.0.2.1"><host>198.51.100.2:22</host><keyfile>{d}/keys/$(user)</keyfile></rule>
    <rule><host>198.51.100.3:22</host><keyfile>{d}/squash</keyfile></rule>
  </rules></rproxy></server></CONF>"#
        );
        let config = parse(&text);
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        for (name, mode) in [("host", 0o600), ("squash", 0o640), ("keys/bob", 0o644)] {
            let path = dir.path().join(name);
            std::fs::write(&path, "key").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let conf_path = dir.path().join("aspera.conf");
        std::fs::write(dir.path().join("node-users"), "").unwrap();
        std::fs::set_permissions(
            dir.path().join("node-users"),
            std::fs::Permissions::from_mode(0o604),
        )
        .unwrap();
        let files = key_files(&config, &conf_path, &["alice", "bob", "../x"]);
        let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(
            paths,
            [
                dir.path().join("host"),
                dir.path().join("keys/bob"),
                dir.path().join("squash"),
                dir.path().join("node-users"),
            ]
        );
        assert!(files[1].1.contains("for user bob") && files[1].1.contains("at line 5"));
        let found = check(&config, &conf_path, &["alice", "bob"]);
        let details: Vec<&str> = found.iter().map(|f| f.detail.as_str()).collect();
        assert_eq!(found.len(), 3, "{details:?}");
        assert!(found.iter().all(|f| f.check == Check::KeyFileReadable));
        assert!(details[0].contains("keys/bob") && details[0].contains("0644"));
        assert!(details[1].contains("squash") && details[1].contains("0640"));
        assert!(details[2].contains("node-users") && details[2].contains("0604"));
    }
}
