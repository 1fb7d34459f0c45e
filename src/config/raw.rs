//! The document as serde reads it with quick-xml: the tag structure, every value still text.
//! Typing and checking the values is [`validate`](super::validate)'s job, so that each error can
//! name its line, its tag and its rule.

use serde::Deserialize;

/// `<CONF>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConf {
    /// `<server>`.
    pub server: RawServer,
    /// `<default>`.
    pub default: RawDefault,
    /// `<aaa>`.
    pub aaa: RawAaa,
}

/// `<server>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawServer {
    /// `<rproxy>`.
    pub rproxy: RawReverseProxy,
    /// `<proxy>`.
    pub proxy: RawForwardProxy,
    /// `<per_source>`.
    pub per_source: RawPerSource,
    /// `<enable_http>`.
    pub enable_http: Option<String>,
    /// `<enable_https>`.
    pub enable_https: Option<String>,
    /// `<http_port>`.
    pub http_port: Option<String>,
    /// `<https_port>`.
    pub https_port: Option<String>,
    /// `<https_certificate>`.
    pub https_certificate: Option<String>,
    /// `<https_private_key>`.
    pub https_private_key: Option<String>,
    /// `<forwarding_type>`.
    pub forwarding_type: Option<String>,
    /// `<iptables_path>`.
    pub iptables_path: Option<String>,
    /// `<enable_ip_forwarding>`.
    pub enable_ip_forwarding: Option<String>,
    /// `<fast_path>`.
    pub fast_path: Option<String>,
    /// `<enable_metrics>`.
    pub enable_metrics: Option<String>,
    /// `<metrics_bind_address>`.
    pub metrics_bind_address: Option<String>,
    /// `<metrics_port>`.
    pub metrics_port: Option<String>,
    /// `<admin_group>`.
    pub admin_group: Option<String>,
}

/// `<rproxy>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawReverseProxy {
    /// `<enabled>`.
    pub enabled: Option<String>,
    /// `<log_level>`.
    pub log_level: Option<String>,
    /// `<log_directory>`.
    pub log_directory: Option<String>,
    /// `<ssh_bind_address>`.
    pub ssh_bind_address: Option<String>,
    /// `<ssh_port>`.
    pub ssh_port: Option<String>,
    /// `<ssh_host_key>`.
    pub ssh_host_key: Option<String>,
    /// `<ssh_host_rsa_key>`.
    pub ssh_host_rsa_key: Option<String>,
    /// `<ssh_rsa_legacy>`.
    pub ssh_rsa_legacy: Option<String>,
    /// `<frontend>`.
    pub frontend: Option<String>,
    /// `<handoff_socket>`.
    pub handoff_socket: Option<String>,
    /// `<opaque_sessions>`.
    pub opaque_sessions: Option<String>,
    /// `<opaque_commands>`.
    pub opaque_commands: RawCommands,
    /// `<authorized_keys_file>`.
    pub authorized_keys_file: Option<String>,
    /// `<password_authentication>`.
    pub password_authentication: Option<String>,
    /// `<pam_service>`.
    pub pam_service: Option<String>,
    /// `<allowed_clients>`.
    pub allowed_clients: RawCidrList,
    /// `<max_sessions>`.
    pub max_sessions: Option<String>,
    /// `<session_idle_timeout>`.
    pub session_idle_timeout: Option<String>,
    /// `<faulty_host_hold_time>`.
    pub faulty_host_hold_time: Option<String>,
    /// `<accept_new_host_keys>`.
    pub accept_new_host_keys: Option<String>,
    /// `<health_check_interval>`.
    pub health_check_interval: Option<String>,
    /// `<health_check_timeout>`.
    pub health_check_timeout: Option<String>,
    /// `<health_check_failures>`.
    pub health_check_failures: Option<String>,
    /// `<health_check_successes>`.
    pub health_check_successes: Option<String>,
    /// `<max_startups>`.
    pub max_startups: Option<String>,
    /// `<banner_timeout>`.
    pub banner_timeout: Option<String>,
    /// `<kex_timeout>`.
    pub kex_timeout: Option<String>,
    /// `<login_grace_time>`.
    pub login_grace_time: Option<String>,
    /// `<session_open_timeout>`.
    pub session_open_timeout: Option<String>,
    /// `<rules>`.
    pub rules: RawRules,
}

/// `<per_source>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawPerSource {
    /// `<max_startups>`.
    pub max_startups: Option<String>,
    /// `<max_api_connections>`.
    pub max_api_connections: Option<String>,
    /// `<ipv6_prefix>`.
    pub ipv6_prefix: Option<String>,
    /// `<penalty_auth_failure>`.
    pub penalty_auth_failure: Option<String>,
    /// `<penalty_no_auth>`.
    pub penalty_no_auth: Option<String>,
    /// `<penalty_grace_exceeded>`.
    pub penalty_grace_exceeded: Option<String>,
    /// `<penalty_max_startups>`.
    pub penalty_max_startups: Option<String>,
    /// `<penalty_max>`.
    pub penalty_max: Option<String>,
    /// `<penalty_exempt_allowed_clients>`.
    pub penalty_exempt_allowed_clients: Option<String>,
    /// `<max_tracked_sources>`.
    pub max_tracked_sources: Option<String>,
}

/// A list of `<cidr>` tags (`<allowed_clients>`, `<allowed_destinations>`, `<denied_destinations>`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCidrList {
    /// `<cidr>` entries.
    pub cidr: Vec<String>,
}

/// A list of `<command>` tags (`<opaque_commands>`, `<aspshell_commands>`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCommands {
    /// `<command>` entries.
    pub command: Vec<String>,
}

/// `<rules>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRules {
    /// `<rule>` entries.
    pub rule: Vec<RawRule>,
}

/// `<rule>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRule {
    /// Attribute `host_ip`.
    #[serde(rename = "@host_ip")]
    pub host_ip: Option<String>,
    /// Attribute `host_domain`.
    #[serde(rename = "@host_domain")]
    pub host_domain: Option<String>,
    /// `<host>`.
    pub host: Option<String>,
    /// `<hosts>`.
    pub hosts: Option<RawHosts>,
    /// `<balancing>`.
    pub balancing: Option<String>,
    /// `<proxy_port>`.
    pub proxy_port: Option<String>,
    /// `<backend_udp_port>`.
    pub backend_udp_port: Option<String>,
    /// `<squash_user>`.
    pub squash_user: Option<String>,
    /// `<keyfile>`.
    pub keyfile: Option<String>,
    /// `<src_port_filtering>`.
    pub src_port_filtering: Option<String>,
    /// `<udp_port_reuse>`.
    pub udp_port_reuse: Option<String>,
    /// `<forwarding_type>`, as IBM's files have it in each rule.
    pub forwarding_type: Option<String>,
    /// `<bind_source_address>`.
    pub bind_source_address: Option<String>,
}

/// `<hosts>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawHosts {
    /// `<host>` entries.
    pub host: Vec<String>,
}

/// `<proxy>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawForwardProxy {
    /// `<enabled>`.
    pub enabled: Option<String>,
    /// `<authentication>`.
    pub authentication: Option<String>,
    /// `<bind_ip_address>`.
    pub bind_ip_address: Option<String>,
    /// `<bind_ip_netmask>`.
    pub bind_ip_netmask: Option<String>,
    /// `<port_range_low>`.
    pub port_range_low: Option<String>,
    /// `<port_range_high>`.
    pub port_range_high: Option<String>,
    /// `<cleanup_interval>`.
    pub cleanup_interval: Option<String>,
    /// `<keepalive_interval>`.
    pub keepalive_interval: Option<String>,
    /// `<session_timeout>`.
    pub session_timeout: Option<String>,
    /// `<bind_source_address>`.
    pub bind_source_address: Option<String>,
    /// `<allowed_destinations>`.
    pub allowed_destinations: RawCidrList,
    /// `<denied_destinations>`.
    pub denied_destinations: RawCidrList,
}

/// `<default>` (IBM's other tags in it are not read).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawDefault {
    /// `<file_system>`.
    pub file_system: RawFileSystem,
    /// `<aspshell_commands>`.
    pub aspshell_commands: RawCommands,
}

/// `<aaa>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAaa {
    /// `<realms>`.
    pub realms: RawRealms,
}

/// `<realms>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRealms {
    /// `<realm>`.
    pub realm: RawRealm,
}

/// `<realm>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRealm {
    /// `<users>`.
    pub users: RawUsers,
}

/// `<users>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawUsers {
    /// `<user>` entries.
    pub user: Vec<RawUser>,
}

/// `<user>` (IBM's other tags in it are not read).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawUser {
    /// `<name>`.
    pub name: Option<String>,
    /// `<file_system>`.
    pub file_system: RawFileSystem,
}

/// `<file_system>` (IBM's other tags in it are not read).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawFileSystem {
    /// `<access>`.
    pub access: RawAccess,
}

/// `<access>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAccess {
    /// `<paths>`.
    pub paths: RawPaths,
}

/// `<paths>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawPaths {
    /// `<path>` entries.
    pub path: Vec<RawPath>,
}

/// `<path>`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawPath {
    /// `<absolute>`.
    pub absolute: Option<String>,
    /// `<read_allowed>`.
    pub read_allowed: Option<String>,
    /// `<write_allowed>`.
    pub write_allowed: Option<String>,
    /// `<dir_allowed>`.
    pub dir_allowed: Option<String>,
}

/// Reads `text` with quick-xml's serde deserializer.
pub fn from_str(text: &str) -> Result<RawConf, quick_xml::DeError> {
    quick_xml::de::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rules_hosts_and_attributes() {
        let raw = from_str(
            r#"<?xml version="1.0"?>
            <CONF><!-- c --><server><rproxy><enabled>true</enabled><rules>
              <rule host_ip="192.0.2.10"><host>198.51.100.2:22</host><squash_user/></rule>
              <rule><hosts><host>198.51.100.3</host><host>198.51.100.4</host></hosts></rule>
            </rules></rproxy></server></CONF>"#,
        )
        .unwrap();
        let rules = &raw.server.rproxy.rules.rule;
        assert_eq!(raw.server.rproxy.enabled.as_deref(), Some("true"));
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].host_ip.as_deref(), Some("192.0.2.10"));
        assert_eq!(rules[0].host.as_deref(), Some("198.51.100.2:22"));
        assert!(rules[0].squash_user.as_deref().unwrap_or("").is_empty());
        assert_eq!(rules[1].hosts.as_ref().unwrap().host.len(), 2);
        assert_eq!(raw.server.http_port, None);
    }
}
