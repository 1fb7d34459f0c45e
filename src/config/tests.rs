//! Tests of the whole parse: every tag, every default, every error path, through [`parse_str`].

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::*;

/// Parses `text` as the file `test.conf` (shared with the other config modules' tests).
pub(super) fn parse(text: &str) -> Result<Loaded, ConfigError> {
    parse_str(text, Path::new("test.conf"))
}

/// Wraps rule bodies into a complete document with the reverse proxy on.
fn rules(body: &str) -> String {
    format!("<CONF>\n<server>\n<rproxy>\n<enabled>true</enabled>\n<rules>\n{body}\n</rules>\n</rproxy>\n</server>\n</CONF>\n")
}

/// The diagnostics of a refused document, as `line | rule | message | hint` (shared with the
/// other config modules' tests).
pub(super) fn errors(text: &str) -> Vec<String> {
    error_lines(text, |d| d.rule.clone())
}

/// The errors of a refused document as `line | WHERE | message | hint`, `WHERE` picked by `place`.
fn error_lines(text: &str, place: impl Fn(&Diagnostic) -> Option<String>) -> Vec<String> {
    let err = match parse(text) {
        Ok(loaded) => panic!("accepted: {:?}", loaded.config),
        Err(e) => e,
    };
    err.diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| {
            format!(
                "{} | {} | {} | {}",
                d.pos.map_or(0, |p| p.line),
                place(d).unwrap_or_default(),
                d.message,
                d.hint.clone().unwrap_or_default()
            )
        })
        .collect()
}

fn one_error(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.into_iter().next().unwrap_or_default()
}

const GOOD_RULE: &str = "<rule><host>198.51.100.2</host><keyfile>/k</keyfile></rule>";

#[test]
fn every_default() {
    let c = parse("<CONF/>").unwrap().config;
    let r = &c.server.rproxy;
    assert!(!r.enabled);
    assert_eq!(r.log_level, 0);
    assert_eq!(r.log_directory, None);
    assert_eq!(r.ssh_listen, "0.0.0.0:33001".parse::<SocketAddr>().unwrap());
    assert_eq!(
        r.ssh_host_key,
        Path::new("/etc/fasp-proxy/ssh_host_ed25519_key")
    );
    assert_eq!(r.authorized_keys_file, "%h/.ssh/authorized_keys");
    assert!(!r.password_authentication);
    assert_eq!(r.pam_service, "fasp-proxy");
    assert!(r.allowed_clients.is_empty());
    assert_eq!(r.max_sessions, 1000);
    assert_eq!(r.session_idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(r.faulty_host_hold_time, Duration::from_secs(120));
    assert!(r.rules.is_empty());
    let p = &c.server.proxy;
    assert!(!p.enabled);
    assert!(!p.authentication);
    assert_eq!(p.bind_ip_address, "0.0.0.0".parse::<IpAddr>().unwrap());
    assert_eq!(p.bind_ip_netmask, None);
    assert_eq!((p.port_range_low, p.port_range_high), (5000, 10000));
    assert_eq!(p.cleanup_interval, None);
    assert_eq!(p.keepalive_interval, None);
    assert_eq!(p.session_timeout, None);
    assert_eq!(p.bind_source_address, None);
    assert!(p.allowed_destinations.is_empty() && p.denied_destinations.is_empty());
    let s = &c.server;
    assert!(!s.enable_http && !s.enable_https);
    assert_eq!((s.http_port, s.https_port), (9091, 9092));
    assert_eq!(
        s.https_certificate,
        Path::new("/etc/fasp-proxy/api_cert.pem")
    );
    assert_eq!(
        s.https_private_key,
        Path::new("/etc/fasp-proxy/api_key.pem")
    );
    assert_eq!(s.forwarding_type, ForwardingType::Nftables);
    assert_eq!(s.iptables_path, Path::new("/usr/sbin/iptables"));
    assert!(!s.enable_ip_forwarding);
    assert!(!s.fast_path);
    assert_eq!(c.default, DefaultSettings::default());
    assert!(c.users.is_empty());
    assert_eq!(
        c.docroot_for("alice", Path::new("/home/alice")),
        Ok(Docroot::unrestricted())
    );

    let rule = &parse(&rules(GOOD_RULE)).unwrap().config.server.rproxy.rules[0];
    assert!(rule.is_default());
    assert_eq!(
        rule.hosts,
        vec!["198.51.100.2:22".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(rule.balancing, None);
    assert_eq!(rule.proxy_port, 33001);
    assert_eq!(rule.squash_user, None);
    assert!(rule.src_port_filtering);
    assert!(rule.udp_port_reuse);
    assert!(rule.bind_source_addresses.is_empty());
}

#[test]
fn blank_values_take_the_default() {
    let c = parse("<CONF><server><http_port></http_port><rproxy><log_level/><ssh_port> </ssh_port></rproxy></server></CONF>")
        .unwrap()
        .config;
    assert_eq!(c.server.http_port, 9091);
    assert_eq!(c.server.rproxy.log_level, 0);
    assert_eq!(c.server.rproxy.ssh_listen.port(), 33001);
}

#[test]
fn every_tag_set() {
    let text = r#"<?xml version="1.0" encoding="UTF-8"?>
<CONF>
  <server>
    <rproxy>
      <enabled>true</enabled>
      <log_level>2</log_level>
      <log_directory>/var/log/fasp-proxy</log_directory>
      <ssh_bind_address>2001:db8::1</ssh_bind_address>
      <ssh_port>2233</ssh_port>
      <ssh_host_key>/srv/key</ssh_host_key>
      <ssh_host_rsa_key>/srv/rsa_key</ssh_host_rsa_key>
      <ssh_rsa_legacy>true</ssh_rsa_legacy>
      <opaque_sessions>true</opaque_sessions>
      <opaque_commands><command>ascp -S. -V1</command><command>myxfer -M {n} {arg}</command></opaque_commands>
      <authorized_keys_file>/etc/keys/%u</authorized_keys_file>
      <password_authentication>true</password_authentication>
      <pam_service>sshd</pam_service>
      <allowed_clients><cidr>192.0.2.0/24</cidr><cidr>198.51.100.7</cidr></allowed_clients>
      <max_sessions>50</max_sessions>
      <session_idle_timeout>0</session_idle_timeout>
      <faulty_host_hold_time>30</faulty_host_hold_time>
      <rules>
        <rule host_ip="203.0.113.0/24" host_domain="files.example.com:2233">
          <balancing>round_robin</balancing>
          <hosts><host>198.51.100.10:2222</host><host>198.51.100.11</host></hosts>
          <proxy_port>0</proxy_port>
          <backend_udp_port>33002</backend_udp_port>
          <squash_user>xfer</squash_user>
          <keyfile>/home/$(user)/.ssh/id_rsa</keyfile>
          <src_port_filtering>false</src_port_filtering>
          <udp_port_reuse>false</udp_port_reuse>
          <bind_source_address>198.51.100.1, 198.51.100.5</bind_source_address>
        </rule>
        <rule host_ip="2001:db8:1::/64"><host>[2001:db8:2::10]:2200</host><keyfile>/k6</keyfile></rule>
      </rules>
    </rproxy>
    <proxy>
      <enabled>true</enabled>
      <authentication>true</authentication>
      <bind_ip_address>192.0.2.1</bind_ip_address>
      <bind_ip_netmask>255.255.255.0</bind_ip_netmask>
      <port_range_low>6000</port_range_low>
      <port_range_high>6100</port_range_high>
      <cleanup_interval>10</cleanup_interval>
      <keepalive_interval>20</keepalive_interval>
      <session_timeout>5</session_timeout>
      <bind_source_address>203.0.113.1</bind_source_address>
      <denied_destinations><cidr>10.0.0.0/8</cidr></denied_destinations>
    </proxy>
    <enable_http>true</enable_http>
    <enable_https>true</enable_https>
    <https_certificate>/srv/api.crt</https_certificate>
    <https_private_key>/srv/api.key</https_private_key>
    <http_port>8091</http_port>
    <https_port>8092</https_port>
    <forwarding_type>iptables</forwarding_type>
    <iptables_path>/sbin/iptables</iptables_path>
    <enable_ip_forwarding>true</enable_ip_forwarding>
    <fast_path>true</fast_path>
  </server>
  <default>
    <file_system><access><paths>
      <path><absolute>/data/$(name)</absolute><read_allowed>true</read_allowed><write_allowed>false</write_allowed><dir_allowed>true</dir_allowed></path>
    </paths></access></file_system>
    <aspshell_commands><command>myxfer -q {n}</command></aspshell_commands>
  </default>
  <aaa><realms><realm><users>
    <user><name>alice</name><file_system><access><paths>
      <path><absolute>$(home)/in</absolute><read_allowed>false</read_allowed><write_allowed>true</write_allowed><dir_allowed>false</dir_allowed></path>
    </paths></access></file_system></user>
    <user><name>bob</name></user>
  </users></realm></realms></aaa>
</CONF>"#;
    let loaded = parse(text).unwrap();
    // Warned about: what opaque sessions cannot do (a host_domain rule), the legacy SHA-1
    // signatures, and the settings this version parses but does not act on.
    let warned: Vec<&str> = loaded
        .warnings
        .iter()
        .filter_map(|w| w.tag_path.as_deref())
        .collect();
    assert_eq!(
        warned,
        [
            "CONF/server/rproxy/ssh_rsa_legacy",
            "CONF/server/rproxy/rules/rule[1]",
            "CONF/server/proxy/allowed_destinations",
        ],
        "{:?}",
        loaded.warnings
    );
    assert!(loaded.warnings[0].message.contains("SHA-1"));
    assert!(loaded.warnings[1].message.contains("host name"));
    assert!(loaded.warnings[2].message.contains("open relay"));
    let c = loaded.config;
    let r = &c.server.rproxy;
    assert!(r.enabled);
    assert_eq!(r.log_level, 2);
    assert_eq!(
        r.log_directory.as_deref(),
        Some(Path::new("/var/log/fasp-proxy"))
    );
    assert_eq!(
        r.ssh_listen,
        "[2001:db8::1]:2233".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(r.ssh_host_key, Path::new("/srv/key"));
    assert_eq!(
        r.ssh_host_rsa_key.as_deref(),
        Some(Path::new("/srv/rsa_key"))
    );
    assert!(r.ssh_rsa_legacy);
    let shapes: Vec<String> = r.opaque_commands.iter().map(|c| c.to_string()).collect();
    assert_eq!(shapes, ["ascp -S. -V1", "myxfer -M {n} {arg}"]);
    assert_eq!(r.authorized_keys_file, "/etc/keys/%u");
    assert!(r.password_authentication);
    assert_eq!(r.pam_service, "sshd");
    assert_eq!(r.allowed_clients.len(), 2);
    assert_eq!(r.allowed_clients[1].to_string(), "198.51.100.7/32");
    assert_eq!(r.max_sessions, 50);
    assert_eq!(r.session_idle_timeout, None);
    assert_eq!(r.faulty_host_hold_time, Duration::from_secs(30));
    let rule = &r.rules[0];
    assert_eq!(rule.number, 1);
    assert_eq!(rule.pos.line, 23);
    assert_eq!(rule.host_ip.unwrap().to_string(), "203.0.113.0/24");
    let d = rule.host_domain.as_ref().unwrap();
    assert_eq!((d.name.as_str(), d.port), ("files.example.com", Some(2233)));
    assert_eq!(rule.balancing, Some(Balancing::RoundRobin));
    assert_eq!(rule.hosts.len(), 2);
    assert_eq!(rule.hosts[0].port(), 2222);
    assert_eq!(rule.hosts[1].port(), 22);
    assert_eq!(rule.proxy_port, 0);
    assert_eq!(rule.backend_udp_port, 33002);
    assert_eq!(rule.squash_user.as_deref(), Some("xfer"));
    assert_eq!(rule.keyfile, "/home/$(user)/.ssh/id_rsa");
    assert!(!rule.src_port_filtering);
    assert!(!rule.udp_port_reuse);
    assert_eq!(rule.bind_source_addresses.len(), 2);
    assert_eq!(
        r.rules[1].hosts[0],
        "[2001:db8:2::10]:2200".parse::<SocketAddr>().unwrap()
    );
    let p = &c.server.proxy;
    assert!(p.enabled && p.authentication);
    assert_eq!(p.bind_ip_address.to_string(), "192.0.2.1");
    assert_eq!(p.bind_ip_netmask, Some(24));
    assert_eq!((p.port_range_low, p.port_range_high), (6000, 6100));
    assert_eq!(p.cleanup_interval, Some(Duration::from_secs(10)));
    assert_eq!(p.keepalive_interval, Some(Duration::from_secs(20)));
    assert_eq!(p.session_timeout, Some(Duration::from_secs(5)));
    assert_eq!(p.bind_source_address, Some("203.0.113.1".parse().unwrap()));
    assert_eq!(p.denied_destinations[0].to_string(), "10.0.0.0/8");
    let s = &c.server;
    assert!(s.enable_http && s.enable_https);
    assert_eq!((s.http_port, s.https_port), (8091, 8092));
    assert_eq!(s.https_certificate, Path::new("/srv/api.crt"));
    assert_eq!(s.https_private_key, Path::new("/srv/api.key"));
    assert_eq!(s.forwarding_type, ForwardingType::Iptables);
    assert_eq!(s.iptables_path, Path::new("/sbin/iptables"));
    assert!(s.enable_ip_forwarding);
    assert!(s.fast_path);
    assert_eq!(s.forwarded_families(), (true, true));
    assert_eq!(
        c.default.path,
        PathSettings {
            absolute: Some("/data/$(name)".into()),
            read_allowed: Some(true),
            write_allowed: Some(false),
            dir_allowed: Some(true),
        }
    );
    let shapes: Vec<String> = c
        .aspshell_commands()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(shapes, ["myxfer -q {n}"]);
    assert_eq!(c.users.len(), 2);
    assert_eq!(
        (c.users[0].name.as_str(), c.users[0].pos.line),
        ("alice", 68)
    );
    assert_eq!(
        c.users[0].path,
        PathSettings {
            absolute: Some("$(home)/in".into()),
            read_allowed: Some(false),
            write_allowed: Some(true),
            dir_allowed: Some(false),
        }
    );
    assert_eq!(c.users[1].path, PathSettings::default());
}

#[test]
fn the_shipped_sample_is_valid() {
    let text = include_str!("../../etc/aspera.conf");
    let c = parse(text).unwrap().config;
    let rules = &c.server.rproxy.rules;
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0].squash_user.as_deref(), Some("xfer"));
    assert_eq!(rules[1].squash_user, None);
    assert!(rules[1].keyfile.contains("$(user)"));
    assert_eq!(rules[1].host_ip.unwrap().prefix_len(), 25);
    assert_eq!(rules[2].hosts.len(), 3);
}

#[test]
fn syntax_error_has_line_and_column() {
    let e = errors("<CONF>\n<server>\n  <http_port>1</http_prot>\n</server>\n</CONF>");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("3 | "), "{e:?}");
    assert!(
        e[0].contains("</http_prot> does not match <http_port>"),
        "{e:?}"
    );
    let err =
        parse("<CONF>\n<server>\n  <http_port>1</http_prot>\n</server>\n</CONF>").unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("test.conf:3:"), "{shown}");
}

#[test]
fn unknown_tag_in_rule_names_the_rule_path_and_suggestion() {
    let text = rules(
        "<rule host_ip=\"192.0.2.10\">\n<host>198.51.100.2</host>\n<keyﬁle>/k</keyﬁle>\n</rule>",
    );
    let err = parse(&text).unwrap_err();
    // Only the misspelt tag is reported, not also a missing <keyfile>.
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    let d = &err.diagnostics[0];
    assert_eq!(d.pos, Some(Pos { line: 8, column: 1 }));
    assert_eq!(
        d.tag_path.as_deref(),
        Some("CONF/server/rproxy/rules/rule[1]/keyﬁle")
    );
    assert_eq!(d.hint.as_deref(), Some("did you mean <keyfile>?"));
    assert!(
        err.to_string().contains(
            "test.conf:8:1: error: rule 1 (host_ip=\"192.0.2.10\"): unknown tag <keyﬁle>"
        ),
        "{err}"
    );
}

#[test]
fn value_errors_name_tag_line_and_rule() {
    let cases: &[(&str, &str)] = &[
        ("<CONF><server><rproxy><enabled>yes</enabled></rproxy></server></CONF>", "<enabled>: \"yes\" is not true or false"),
        ("<CONF><server><rproxy><log_level>4</log_level></rproxy></server></CONF>", "<log_level>: 4 is too large (at most 3)"),
        ("<CONF><server><rproxy><log_directory>logs</log_directory></rproxy></server></CONF>", "not an absolute path"),
        ("<CONF><server><rproxy><ssh_bind_address>0.0.0</ssh_bind_address></rproxy></server></CONF>", "\"0.0.0\" is not an IP address"),
        ("<CONF><server><rproxy><ssh_port>0</ssh_port></rproxy></server></CONF>", "port 0 is out of range 1-65535"),
        ("<CONF><server><rproxy><ssh_port>70000</ssh_port></rproxy></server></CONF>", "port 70000 is out of range"),
        ("<CONF><server><rproxy><ssh_host_key>key</ssh_host_key></rproxy></server></CONF>", "not an absolute path"),
        ("<CONF><server><rproxy><authorized_keys_file>%h/%x</authorized_keys_file></rproxy></server></CONF>", "%x is not known"),
        ("<CONF><server><rproxy><allowed_clients><cidr>192.0.2.0/33</cidr></allowed_clients></rproxy></server></CONF>", "not an IP address or CIDR prefix"),
        ("<CONF><server><rproxy><allowed_clients><cidr></cidr></allowed_clients></rproxy></server></CONF>", "<cidr> is empty"),
        ("<CONF><server><rproxy><max_sessions>0</max_sessions></rproxy></server></CONF>", "must be at least 1"),
        ("<CONF><server><rproxy><password_authentication>on</password_authentication></rproxy></server></CONF>", "\"on\" is not true or false"),
        ("<CONF><server><rproxy><pam_service>../shadow</pam_service></rproxy></server></CONF>", "not a PAM service name"),
        ("<CONF><server><rproxy><pam_service>a b</pam_service></rproxy></server></CONF>", "not a PAM service name"),
        ("<CONF><server><rproxy><session_idle_timeout>-5</session_idle_timeout></rproxy></server></CONF>", "not a whole number"),
        ("<CONF><server><rproxy><faulty_host_hold_time>99999999999</faulty_host_hold_time></rproxy></server></CONF>", "too large"),
        ("<CONF><server><proxy><enabled>1</enabled></proxy></server></CONF>", "<enabled>: \"1\" is not true or false"),
        ("<CONF><server><proxy><authentication>maybe</authentication></proxy></server></CONF>", "not true or false"),
        ("<CONF><server><proxy><bind_ip_address>host</bind_ip_address></proxy></server></CONF>", "not an IP address"),
        ("<CONF><server><proxy><bind_ip_netmask>255.0.255.0</bind_ip_netmask></proxy></server></CONF>", "not a contiguous netmask"),
        ("<CONF><server><proxy><port_range_low>0</port_range_low></proxy></server></CONF>", "out of range 1-65535"),
        ("<CONF><server><proxy><port_range_high>65536</port_range_high></proxy></server></CONF>", "out of range"),
        ("<CONF><server><proxy><port_range_low>7000</port_range_low><port_range_high>6000</port_range_high></proxy></server></CONF>", "<port_range_low> 7000 is above <port_range_high> 6000"),
        ("<CONF><server><proxy><cleanup_interval>x</cleanup_interval></proxy></server></CONF>", "not a whole number"),
        ("<CONF><server><proxy><keepalive_interval>1.5</keepalive_interval></proxy></server></CONF>", "not a whole number"),
        ("<CONF><server><proxy><session_timeout>-1</session_timeout></proxy></server></CONF>", "not a whole number"),
        ("<CONF><server><enable_http>on</enable_http></server></CONF>", "not true or false"),
        ("<CONF><server><enable_https>on</enable_https></server></CONF>", "not true or false"),
        ("<CONF><server><http_port>abc</http_port></server></CONF>", "not a port number"),
        ("<CONF><server><https_port>0</https_port></server></CONF>", "out of range"),
        ("<CONF><server><forwarding_type>nftable</forwarding_type></server></CONF>", "did you mean nftables?"),
        ("<CONF><server><forwarding_type>ebpf</forwarding_type></server></CONF>", "\"ebpf\" is not nftables or iptables"),
        ("<CONF><server><iptables_path>iptables</iptables_path></server></CONF>", "not an absolute path"),
        ("<CONF><server><enable_ip_forwarding>1</enable_ip_forwarding></server></CONF>", "not true or false"),
        ("<CONF><default><file_system><access><paths><path><absolute>data</absolute></path></paths></access></file_system></default></CONF>", "<absolute>: \"data\" is not an absolute path"),
        ("<CONF><default><file_system><access><paths><path><absolute>/d/$(user)</absolute></path></paths></access></file_system></default></CONF>", "allowed: $(name), $(home)"),
        ("<CONF><default><file_system><access><paths><path><read_allowed>y</read_allowed></path></paths></access></file_system></default></CONF>", "<read_allowed>: \"y\" is not true or false"),
        ("<CONF><default><file_system><access><paths><path><write_allowed>y</write_allowed></path></paths></access></file_system></default></CONF>", "<write_allowed>: \"y\" is not true or false"),
        ("<CONF><default><file_system><access><paths><path><dir_allowed>y</dir_allowed></path></paths></access></file_system></default></CONF>", "<dir_allowed>: \"y\" is not true or false"),
        ("<CONF><aaa><realms><realm><users><user><name>a</name><file_system><access><paths><path><dir_allowed>n</dir_allowed></path></paths></access></file_system></user></users></realm></realms></aaa></CONF>", "<dir_allowed>: \"n\" is not true or false"),
        ("<CONF><default><aspshell_commands><command>x;y</command></aspshell_commands></default></CONF>", "<command>: \"x;y\": ';' is not allowed"),
    ];
    for (text, wanted) in cases {
        let e = one_error(text);
        assert!(e.contains(wanted), "{text}\n  wanted: {wanted}\n  got: {e}");
        assert!(e.starts_with("1 | "), "no line for {text}: {e}");
    }
}

#[test]
fn rule_errors_name_the_rule() {
    let cases: &[(&str, &str, &str)] = &[
        ("<rule host_ip=\"192.0.2.300\"><host>198.51.100.2</host><keyfile>/k</keyfile></rule>", "rule 1 (host_ip=\"192.0.2.300\")", "host_ip \"192.0.2.300\" is not an IP address or CIDR prefix"),
        ("<rule host_ip=\"192.0.2.1/24\"><host>198.51.100.2</host><keyfile>/k</keyfile></rule>", "rule 1", "write 192.0.2.0/24"),
        ("<rule host_ip=\"\"><host>198.51.100.2</host><keyfile>/k</keyfile></rule>", "rule 1", "host_ip is empty"),
        ("<rule host_domain=\"bad_name\"><host>198.51.100.2</host><keyfile>/k</keyfile></rule>", "rule 1 (host_domain=\"bad_name\")", "host_domain \"bad_name\" is not a host name"),
        ("<rule host_domain=\"\"><host>198.51.100.2</host><keyfile>/k</keyfile></rule>", "rule 1", "host_domain is empty"),
        ("<rule><host>198.51.100.2</host><hosts><host>198.51.100.3</host></hosts><keyfile>/k</keyfile></rule>", "rule 1 (default rule)", "both <host> and <hosts>"),
        ("<rule><keyfile>/k</keyfile></rule>", "rule 1 (default rule)", "no <host> or <hosts>"),
        ("<rule><host></host><keyfile>/k</keyfile></rule>", "rule 1", "<host> is empty"),
        ("<rule><hosts></hosts><keyfile>/k</keyfile></rule>", "rule 1", "<hosts> lists no <host>"),
        ("<rule><hosts><host>198.51.100.3</host><host></host></hosts><keyfile>/k</keyfile></rule>", "rule 1", "<host> is empty"),
        ("<rule><host>server1:22</host><keyfile>/k</keyfile></rule>", "rule 1", "host names are not accepted"),
        ("<rule><host>198.51.100.2:0</host><keyfile>/k</keyfile></rule>", "rule 1", "out of range"),
        ("<rule><host>198.51.100.2:65536</host><keyfile>/k</keyfile></rule>", "rule 1", "out of range"),
        ("<rule><hosts><host>198.51.100.2:99999</host></hosts><keyfile>/k</keyfile></rule>", "rule 1", "out of range"),
        ("<rule host_ip=\"192.0.2.1\"><host>[2001:db8::2]:22</host><keyfile>/k</keyfile></rule>", "rule 1", "different IP families"),
        ("<rule><balancing>random</balancing><hosts><host>198.51.100.3</host></hosts><keyfile>/k</keyfile></rule>", "rule 1", "unknown method \"random\"; round_robin is the only one"),
        ("<rule><balancing>round-robin</balancing><hosts><host>198.51.100.3</host></hosts><keyfile>/k</keyfile></rule>", "rule 1", "did you mean round_robin?"),
        ("<rule><balancing>round_robin</balancing><host>198.51.100.3</host><keyfile>/k</keyfile></rule>", "rule 1", "<balancing> needs a <hosts> list"),
        ("<rule><host>198.51.100.2</host></rule>", "rule 1", "no <keyfile>"),
        ("<rule><host>198.51.100.2</host><keyfile>id_rsa</keyfile></rule>", "rule 1", "not an absolute path"),
        ("<rule><host>198.51.100.2</host><keyfile>/home/$(name)/k</keyfile></rule>", "rule 1", "$(name) is not a known variable (allowed: $(user))"),
        ("<rule><host>198.51.100.2</host><keyfile>/k</keyfile><squash_user>x y</squash_user></rule>", "rule 1", "not a valid account name"),
        ("<rule><host>198.51.100.2</host><keyfile>/k</keyfile><proxy_port>65536</proxy_port></rule>", "rule 1", "port 65536 is out of range 0-65535"),
        ("<rule><host>198.51.100.2</host><keyfile>/k</keyfile><src_port_filtering>no</src_port_filtering></rule>", "rule 1", "not true or false"),
        ("<rule><host>198.51.100.2</host><keyfile>/k</keyfile><udp_port_reuse>no</udp_port_reuse></rule>", "rule 1", "not true or false"),
        ("<rule><host>198.51.100.2</host><keyfile>/k</keyfile><bind_source_address>198.51.100.x</bind_source_address></rule>", "rule 1", "not an IP address"),
        ("<rule><host>198.51.100.2</host><keyfile>/k</keyfile><bind_source_address>198.51.100.1,2001:db8::1</bind_source_address></rule>", "rule 1", "different IP families"),
        ("<rule><host>198.51.100.2</host><keyfile>/k</keyfile><bind_source_address>2001:db8::1</bind_source_address></rule>", "rule 1", "different IP families"),
    ];
    for (body, rule, wanted) in cases {
        let e = one_error(&rules(body));
        assert!(e.contains(wanted), "{body}\n  wanted: {wanted}\n  got: {e}");
        assert!(
            e.contains(&format!("| {rule}")),
            "{body}\n  wanted rule: {rule}\n  got: {e}"
        );
        assert!(e.starts_with("6 | "), "{body}: wrong line: {e}");
    }
}

#[test]
fn all_errors_are_reported_together() {
    let text = rules(
        "<rule host_ip=\"192.0.2.300\"><host>x</host></rule>\n<rule><host>198.51.100.2:70000</host><keyfile>k</keyfile></rule>",
    );
    let e = errors(&text);
    assert_eq!(e.len(), 6, "{e:#?}");
    assert!(
        e.iter()
            .any(|l| l.contains("| host_ip \"192.0.2.300\" is not an IP address")),
        "{e:#?}"
    );
    assert!(e[0].starts_with("6 | rule 1"), "{e:#?}");
    assert!(e[5].starts_with("7 | rule 2"), "{e:#?}");
}

#[test]
fn structure_and_value_errors_are_reported_in_one_run() {
    let text = rules(
        "<rule host_ip=\"192.0.2.0/24\">\n<host>198.51.100.2:99999</host>\n<keyﬁle>/k</keyﬁle>\n</rule>\n\
         <rule host_ip=\"192.0.2.10\"><hots>198.51.100.3</hots><keyfile>/k</keyfile></rule>",
    );
    let e = errors(&text);
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(
        e[0].starts_with("7 | rule 1") && e[0].contains("port 99999 is out of range"),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("8 | rule 1") && e[1].contains("did you mean <keyfile>?"),
        "{e:#?}"
    );
    assert!(
        e[2].contains("rule 2") && e[2].contains("can never match"),
        "{e:#?}"
    );
    assert!(
        e[3].contains("rule 2") && e[3].contains("did you mean <host>?"),
        "{e:#?}"
    );
}

#[test]
fn duplicate_host_is_a_warning() {
    let loaded = parse(&rules(
        "<rule><hosts><host>198.51.100.3</host><host>198.51.100.3:22</host></hosts><keyfile>/k</keyfile></rule>",
    ))
    .unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].message.contains("listed twice"));
    assert_eq!(
        loaded.config.server.rproxy.rules[0].balancing,
        Some(Balancing::RoundRobin)
    );
}

#[test]
fn rules_that_cannot_be_told_apart() {
    let same = rules(&format!(
        "<rule host_ip=\"192.0.2.10\">{0}</rule>\n<rule host_ip=\"192.0.2.10\">{0}</rule>",
        "<host>198.51.100.2</host><keyfile>/k</keyfile>"
    ));
    let e = one_error(&same);
    assert!(e.starts_with("7 | rule 2 (host_ip=\"192.0.2.10\")"), "{e}");
    assert!(
        e.contains("can never be told apart from rule 1 (host_ip=\"192.0.2.10\") (line 6)"),
        "{e}"
    );

    let shadowed = rules(&format!(
        "<rule host_ip=\"192.0.2.0/24\">{0}</rule>\n<rule host_ip=\"192.0.2.10\" host_domain=\"a.example\">{0}</rule>",
        "<host>198.51.100.2</host><keyfile>/k</keyfile>"
    ));
    let e = one_error(&shadowed);
    assert!(
        e.contains("rule 2") && e.contains("can never match: rule 1"),
        "{e}"
    );

    let two_defaults = rules(&format!("{GOOD_RULE}\n{GOOD_RULE}"));
    assert!(one_error(&two_defaults).contains("can never be told apart"));

    // Different names, or a narrower rule first, are fine; a default rule shadows nothing.
    let fine = rules(&format!(
        "{GOOD_RULE}\n<rule host_ip=\"192.0.2.10\">{0}</rule>\n<rule host_ip=\"192.0.2.0/24\">{0}</rule>\n\
         <rule host_domain=\"a.example\">{0}</rule>\n<rule host_domain=\"b.example\">{0}</rule>",
        "<host>198.51.100.2</host><keyfile>/k</keyfile>"
    ));
    assert_eq!(parse(&fine).unwrap().config.server.rproxy.rules.len(), 5);
}

#[test]
fn whole_configuration_checks() {
    let e = one_error("<CONF><server><rproxy><enabled>true</enabled></rproxy></server></CONF>");
    assert!(e.contains("enabled but has no <rule>"), "{e}");
    let e = one_error("<CONF><server><enable_http>true</enable_http><enable_https>true</enable_https><https_port>9091</https_port></server></CONF>");
    assert!(
        e.contains("<https_port> 9091 is already used by <http_port>"),
        "{e}"
    );
    let e = one_error(&rules(GOOD_RULE).replace(
        "<server>",
        "<server><enable_http>true</enable_http><http_port>33001</http_port>",
    ));
    assert!(
        e.contains("<http_port> 33001 is already used by <ssh_port>"),
        "{e}"
    );
    let w = parse("<CONF/>").unwrap().warnings;
    assert!(w[0]
        .message
        .contains("neither <rproxy> nor <proxy> is enabled"));
}

#[test]
fn hostile_input_is_refused_without_panic() {
    for text in [
        "<",
        "<CONF",
        "<CONF><server><rproxy><rules><rule host_ip='1' host_ip='2'/></rules></rproxy></server></CONF>",
        "<!DOCTYPE x [<!ENTITY a \"aaaa\">]><CONF><server><http_port>&a;</http_port></server></CONF>",
        "<CONF><![CDATA[x]]></CONF>",
        "\u{feff}<CONF><server><http_port>\u{0}</http_port></server></CONF>",
        "<CONF>\u{202e}</CONF>",
        &"<CONF>".repeat(10_000),
    ] {
        assert!(parse(text).is_err(), "accepted: {text:.60}");
    }
}

#[test]
fn opaque_commands_default_to_ibms_can_be_replaced_or_turned_off_and_bad_ones_are_errors() {
    let base = |rproxy: &str| {
        format!(
            "<CONF><server><rproxy>{rproxy}<rules><rule><host>198.51.100.2</host><keyfile>/k</keyfile></rule></rules></rproxy></server></CONF>"
        )
    };
    let c = parse(&base("")).unwrap().config;
    assert_eq!(c.server.rproxy.opaque_commands, CommandShape::ibm());
    assert_eq!(c.server.rproxy.rules[0].backend_udp_port, 33001);
    assert!(!c.server.rproxy.ssh_rsa_legacy);
    assert_eq!(c.server.rproxy.ssh_host_rsa_key, None);
    let c = parse(&base("<opaque_sessions>false</opaque_sessions>"))
        .unwrap()
        .config;
    assert!(c.server.rproxy.opaque_commands.is_empty());
    let err = parse(&base(
        "<opaque_commands><command>ascp -S. ; id</command><command>ascp --server</command></opaque_commands>",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("opaque_commands/command[1]"), "{err}");
    assert!(err.contains("fasp-proxy's own transfer command"), "{err}");
    // A <proxy_port> other than the backend's UDP port cannot apply to IBM clients: said.
    let loaded =
        parse(&base("").replace("<keyfile>", "<proxy_port>40000</proxy_port><keyfile>")).unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.message.contains("cannot have their UDP port rewritten")),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn the_forward_proxys_range_leaves_out_the_proxys_own_ports() {
    let e = errors("<CONF><server><enable_http>true</enable_http><http_port>9091</http_port><proxy><enabled>true</enabled><port_range_low>9091</port_range_low><port_range_high>9091</port_range_high></proxy></server></CONF>");
    assert!(
        e.iter()
            .any(|m| m.contains("(9091-9091) is one the proxy listens on itself")),
        "{e:#?}"
    );
    // IBM's defaults (5000-10000 around the API's 9091 and 9092) load: those two are skipped.
    let loaded = parse(&rules(GOOD_RULE)).unwrap();
    let mut server = loaded.config.server;
    (server.enable_http, server.enable_https) = (true, true);
    let own = server.own_ports();
    assert_eq!(own.into_iter().collect::<Vec<_>>(), [9091, 9092, 33001]);
}

// ---- Docroots, per-user settings and aspshell commands (`<default>`, `<aaa>`). ----

/// A `<path>` with `body` inside, in a `<user>` named `name`.
fn user(name: &str, body: &str) -> String {
    format!(
        "<user><name>{name}</name><file_system><access><paths><path>{body}</path></paths></access>\
         </file_system></user>"
    )
}

/// A document with `default` inside `<default><file_system><access><paths>` and `users` inside
/// `<aaa><realms><realm><users>`, one tag per line from line 2 on.
fn access(default: &str, users: &str) -> String {
    format!(
        "<CONF version=\"2\">\n<default>\n<file_system>\n<access>\n<paths>\n{default}\n</paths>\n\
         </access>\n</file_system>\n</default>\n<aaa>\n<realms>\n<realm>\n<users>\n{users}\n</users>\n\
         </realm>\n</realms>\n</aaa>\n</CONF>\n"
    )
}

/// The errors of `text` as `line | path | message | hint`.
fn located_errors(text: &str) -> Vec<String> {
    error_lines(text, |d| d.tag_path.clone())
}

const USERS: &str = "CONF/aaa/realms/realm/users";
const DEFAULT_PATHS: &str = "CONF/default/file_system/access/paths";

#[test]
fn docroot_settings_that_cannot_be_honoured_are_errors_with_line_and_path() {
    // (document, line, tag path, start of the message)
    let path = |body: &str| format!("<path>{body}</path>");
    let cases: Vec<(String, u32, String, &str)> = vec![
        (
            access(&format!("{}\n{}", path("<absolute>/a</absolute>"), path("<absolute>/b</absolute>")), ""), 7, format!("{DEFAULT_PATHS}/path"),
            "<path> appears twice in <paths>; the first is at line 6, column 1 | fasp-proxy enforces one docroot per user; IBM's several docroots (told apart by <show_as>) are not supported: keep one <path>",
        ),
        (
            access("", &format!("{}\n<user><name>al</name><file_system><access><paths><path/><path/></paths></access></file_system></user>", user("x", ""))),
            16, format!("{USERS}/user[2]/file_system/access/paths/path"),
            "<path> appears twice in <paths>; the first is at line 16, column 50",
        ),
        (
            access(&path("<absolute>/a</absolute><show_as>/</show_as>"), ""), 6, format!("{DEFAULT_PATHS}/path/show_as"),
            "<show_as> is not supported",
        ),
        (
            access("", &user("al", "<filter>*.key</filter>")), 15,
            format!("{USERS}/user[1]/file_system/access/paths/path/filter[1]"),
            "<filter> \"*.key\" is not supported: ignored, it would let users reach what it hides",
        ),
        (
            access(&path("<restrictions><restriction>s3://*</restriction></restrictions>"), ""), 6,
            format!("{DEFAULT_PATHS}/path/restrictions"),
            "<restrictions> are not supported",
        ),
        (
            access("", &format!("{}\n{}", user("al", ""), user("al", "<absolute>/x</absolute>"))), 16,
            format!("{USERS}/user[2]/name"),
            "user al is listed twice; the first <user> is at line 15: merge the two",
        ),
        (
            access(&path("<absolute>data/$(name)</absolute>"), ""), 6, format!("{DEFAULT_PATHS}/path/absolute"),
            "<absolute>: \"data/$(name)\" is not an absolute path (start it with / or $(home))",
        ),
        (
            access("", &user("al", "<absolute>/d/$(user)</absolute>")), 15,
            format!("{USERS}/user[1]/file_system/access/paths/path/absolute"),
            "<absolute>: \"/d/$(user)\": $(user) is not a known variable (allowed: $(name), $(home))",
        ),
        (
            access(&path("<absolute>/data/../etc</absolute>"), ""), 6, format!("{DEFAULT_PATHS}/path/absolute"),
            "<absolute>: \"/data/../etc\" holds \"..\"",
        ),
        (
            access(&path("<absolute>s3://k:s@s3.amazonaws.com/b</absolute>"), ""), 6, format!("{DEFAULT_PATHS}/path/absolute"),
            "<absolute>: \"s3://k:s@s3.amazonaws.com/b\" is a URI",
        ),
        (
            access("", "<user><name> </name></user>"), 15, format!("{USERS}/user[1]/name"),
            "<name> is blank: say which user these settings are for",
        ),
        (
            access("", "<user><file_system/></user>"), 15, format!("{USERS}/user[1]"),
            "<user> has no <name>: say which user these settings are for",
        ),
        (
            access("", "<user><name>a/b</name></user>"), 15, format!("{USERS}/user[1]/name"),
            "<name>: \"a/b\" is not a user name: it holds '/'",
        ),
        (
            access("", "<user><name>..</name></user>"), 15, format!("{USERS}/user[1]/name"),
            "<name>: \"..\" is not a user name",
        ),
        (
            access(&path("<absolute peer_ip=\"192.0.2.1\">/a</absolute>"), ""), 6, format!("{DEFAULT_PATHS}/path/absolute"),
            "unknown attribute peer_ip on <absolute>",
        ),
        (
            "<CONF>\n<aaa><realms><realm><groups><group><name>g</name></group></groups></realm></realms></aaa>\n</CONF>".to_string(),
            2, "CONF/aaa/realms/realm/groups".to_string(),
            "<groups> are not supported: ignored, their users would get <default>'s access instead of the group's",
        ),
        (
            "<CONF>\n<aaa><realms><realm/>\n<realm/></realms></aaa>\n</CONF>".to_string(),
            3, "CONF/aaa/realms/realm".to_string(),
            "<realm> appears twice in <realms>; the first is at line 2, column 14 | fasp-proxy reads one <realm>: put every <user> in it",
        ),
        (
            "<CONF>\n<file_system><access><paths><path><absolute>/a</absolute></path></paths></access></file_system>\n</CONF>".to_string(),
            2, "CONF/file_system".to_string(),
            "unknown tag <file_system> in <CONF>",
        ),
        (
            "<CONF>\n<default>\n<authorization><transfer><in>\n<value>deny</value></in></transfer></authorization>\n</default>\n</CONF>".to_string(),
            4, "CONF/default/authorization/transfer/in/value".to_string(),
            "<authorization><transfer><in><value> deny is not supported: fasp-proxy would let those transfers through",
        ),
        (
            access("", "<user><name>al</name>\n<authorization><transfer><out><value>token</value></out></transfer></authorization></user>"),
            16, format!("{USERS}/user[1]/authorization/transfer/out/value"),
            "<authorization><transfer><out><value> token is not supported",
        ),
        (
            "<CONF>\n<default><file_system>\n<filters><filter>- *.key</filter></filters>\n</file_system></default>\n</CONF>".to_string(),
            3, "CONF/default/file_system/filters".to_string(),
            "<filters> (IBM's include/exclude patterns for transfers) are not supported",
        ),
        (
            "<CONF>\n<default><aspshell_commands>\n<command>bash</command></aspshell_commands></default>\n</CONF>".to_string(),
            3, "CONF/default/aspshell_commands/command[1]".to_string(),
            "<command> \"bash\": bash runs other programs, so users could run anything",
        ),
        (
            "<CONF>\n<default><aspshell_commands>\n<command>/usr/bin/env {arg}</command></aspshell_commands></default>\n</CONF>".to_string(),
            3, "CONF/default/aspshell_commands/command[1]".to_string(),
            "<command> \"/usr/bin/env {arg}\": /usr/bin/env runs other programs",
        ),
        (
            "<CONF>\n<default><aspshell_commands>\n<command> </command></aspshell_commands></default>\n</CONF>".to_string(),
            3, "CONF/default/aspshell_commands/command[1]".to_string(),
            "<command>: the command is empty",
        ),
    ];
    for (text, line, tag_path, message) in &cases {
        let e = located_errors(text);
        assert_eq!(e.len(), 1, "{text}\n{e:#?}");
        let wanted = format!("{line} | {tag_path} | {message}");
        assert!(
            e[0].starts_with(&wanted),
            "{text}\n  wanted: {wanted}\n  got:    {}",
            e[0]
        );
    }
    // With two <path>s, the first is the one read, and its errors are located there.
    let e = located_errors(&access(
        "<path><absolute>rel</absolute></path>\n<path><absolute>/b</absolute></path>",
        "",
    ));
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].starts_with(&format!(
            "6 | {DEFAULT_PATHS}/path/absolute | <absolute>: \"rel\""
        )),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with(&format!("7 | {DEFAULT_PATHS}/path | <path> appears twice")),
        "{e:#?}"
    );
    // The hints say what to do instead.
    let hint = |text: &str| {
        located_errors(text)[0]
            .rsplit(" | ")
            .next()
            .map(str::to_owned)
    };
    let top = hint("<CONF><file_system/></CONF>").unwrap_or_default();
    assert!(
        top.contains("<default><file_system><access><paths><path> for every user")
            && top.contains("was never enforced"),
        "{top}"
    );
    let conditional = hint(&access(
        "<path><absolute peer_ip=\"192.0.2.1\">/a</absolute></path>",
        "",
    ));
    assert!(conditional
        .unwrap_or_default()
        .contains("conditional docroots"));
}

#[test]
fn ibm_tags_that_narrow_nothing_are_ignored_with_a_warning() {
    // Blank <show_as>, <filter>, <restrictions>, an empty <groups>, <authorization> allow, and
    // the harmless tags of a <path> and a <user>.
    let text = access(
        "<path><absolute>/d</absolute><show_as/><filter></filter><restrictions/>\
         <description>shared</description><filter_scope>String</filter_scope>\
         <reporting_allowed>false</reporting_allowed></path>",
        "<user><name>al</name><transfer><in><bandwidth><flow><target_rate><cap>100</cap>\
         </target_rate></flow></bandwidth></in></transfer>\
         <authorization><transfer><in><value>allow</value></in></transfer></authorization>\
         <aspshell_commands><command>bash</command></aspshell_commands></user>",
    )
    .replace("</users>", "</users><groups/>");
    let loaded = parse(&text).unwrap();
    let ignored: Vec<&str> = loaded
        .warnings
        .iter()
        .filter(|w| w.message.contains("is not used by fasp-proxy"))
        .filter_map(|w| w.tag_path.as_deref())
        .collect();
    let p = format!("{DEFAULT_PATHS}/path");
    let u = format!("{USERS}/user[1]");
    assert_eq!(
        ignored,
        [
            format!("{p}/show_as"),
            format!("{p}/filter[1]"),
            format!("{p}/restrictions"),
            format!("{p}/description"),
            format!("{p}/filter_scope"),
            format!("{p}/reporting_allowed"),
            format!("{u}/transfer"),
            format!("{u}/authorization"),
            format!("{u}/aspshell_commands"),
            "CONF/aaa/realms/realm/groups".to_string(),
        ]
    );
    assert_eq!(
        loaded.config.docroot_for("al", Path::new("/h")),
        Ok(Docroot {
            root: Some("/d".into()),
            ..Docroot::unrestricted()
        })
    );
}

#[test]
fn a_default_holding_only_ibm_settings_gets_one_warning() {
    let only_ibm = "<CONF>\n<default>\n<file_system><resume_suffix>.x</resume_suffix>\
                    <storage_rc><adaptive>true</adaptive></storage_rc></file_system>\n\
                    <transfer><in><bandwidth/></in></transfer>\n</default>\n</CONF>";
    let loaded = parse(only_ibm).unwrap();
    let ignored: Vec<String> = loaded
        .warnings
        .iter()
        .filter(|w| w.message.contains("is not used by fasp-proxy"))
        .map(|w| format!("{:?} {}", w.tag_path, w.message))
        .collect();
    assert_eq!(
        ignored,
        ["Some(\"CONF/default\") <default> (IBM's aspera.conf schema) is not used by fasp-proxy: \
          ignored, with the 7 tags inside it"]
    );
    // With a docroot inside, each IBM tag is named on its own.
    let with_docroot = only_ibm.replace(
        "<resume_suffix>",
        "<access><paths><path><absolute>/d</absolute></path></paths></access><resume_suffix>",
    );
    let loaded = parse(&with_docroot).unwrap();
    let ignored: Vec<&str> = loaded
        .warnings
        .iter()
        .filter(|w| w.message.contains("is not used by fasp-proxy"))
        .filter_map(|w| w.tag_path.as_deref())
        .collect();
    assert_eq!(
        ignored,
        [
            "CONF/default/file_system/resume_suffix",
            "CONF/default/file_system/storage_rc",
            "CONF/default/transfer"
        ]
    );
    assert_eq!(loaded.config.default.path.absolute.as_deref(), Some("/d"));
}

#[test]
fn a_users_settings_override_the_defaults_field_by_field() {
    let text = access(
        "<path><absolute>/data/$(name)</absolute><read_allowed>false</read_allowed>\
         <dir_allowed>false</dir_allowed></path>",
        &[
            user("alice", "<read_allowed>true</read_allowed>"),
            user(
                "bob",
                "<absolute>$(home)/out</absolute><write_allowed>false</write_allowed>",
            ),
            user("carol", "<absolute></absolute><read_allowed/>"),
            user("root", "<absolute>/</absolute>"),
        ]
        .join("\n"),
    );
    let c = parse(&text).unwrap().config;
    let docroot = |name: &str| c.docroot_for(name, &Path::new("/home").join(name));
    let d = |root: &str, read, write, dir| {
        Ok(Docroot {
            root: Some(root.into()),
            read_allowed: read,
            write_allowed: write,
            dir_allowed: dir,
        })
    };
    // No <user>: <default>'s, with IBM's default (true) for what it leaves out.
    assert_eq!(docroot("dave"), d("/data/dave", false, true, false));
    // The user's fields win where set, <default>'s fill the rest.
    assert_eq!(docroot("alice"), d("/data/alice", true, true, false));
    assert_eq!(docroot("bob"), d("/home/bob/out", false, false, false));
    // Blank is not set: inherited.
    assert_eq!(docroot("carol"), d("/data/carol", false, true, false));
    assert_eq!(docroot("root"), d("/", false, true, false));
    // Names match exactly.
    assert_eq!(docroot("Alice"), d("/data/Alice", false, true, false));
    // Without any docroot anywhere: the whole file system.
    let c = parse(&access(
        "",
        &user("eve", "<write_allowed>false</write_allowed>"),
    ))
    .unwrap()
    .config;
    assert_eq!(
        c.docroot_for("eve", Path::new("/home/eve")),
        Ok(Docroot {
            write_allowed: false,
            ..Docroot::unrestricted()
        })
    );
}

#[test]
fn substitution_refuses_names_and_homes_that_would_leave_the_docroot() {
    let c = parse(&access(
        "<path><absolute>/data/$(name)</absolute></path>",
        &user("alice", "<absolute>$(home)/files</absolute>"),
    ))
    .unwrap()
    .config;
    for bad in ["", ".", "..", "../etc", "a/b"] {
        let e = c.docroot_for(bad, Path::new("/home/x")).unwrap_err();
        assert!(
            e.contains("user name") || e.contains("empty"),
            "{bad:?}: {e}"
        );
    }
    assert_eq!(
        c.docroot_for("alice", Path::new("/home/alice/"))
            .map(|d| d.root),
        Ok(Some("/home/alice/files".into()))
    );
    let e = c.docroot_for("alice", Path::new("relative")).unwrap_err();
    assert_eq!(
        e,
        "docroot of user alice: the <absolute> of <user> alice (line 15), \"$(home)/files\": \
         the home directory \"relative\" of user alice is not an absolute path"
    );
    let e = c
        .docroot_for("alice", Path::new("/home/../root"))
        .unwrap_err();
    assert!(e.contains("holds \"..\""), "{e}");
    // <default>'s $(home)-less docroot does not look at the home directory.
    assert_eq!(
        c.docroot_for("bob", Path::new("")).map(|d| d.root),
        Ok(Some("/data/bob".into()))
    );
}

/// IBM's usual `<default>` transfer settings, with docroots for every user and two of their own.
const IBM_SERVER_CONF: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<CONF version="2">
<server>
    <server_name>files.example.com</server_name>
</server>
<default>
    <transfer>
        <in>
            <bandwidth><flow>
                <target_rate><cap></cap><default>100000</default></target_rate>
                <policy><default>fair</default></policy>
            </flow></bandwidth>
        </in>
        <out><bandwidth><flow><target_rate><default>100000</default></target_rate></flow></bandwidth></out>
        <protocol_options><bind_udp_port>33001</bind_udp_port></protocol_options>
        <encryption><allowed_cipher>aes-128</allowed_cipher></encryption>
    </transfer>
    <authorization>
        <transfer><in><value>allow</value></in><out><value>allow</value></out></transfer>
    </authorization>
    <file_system>
        <access>
            <paths>
                <path>
                    <absolute>/data/$(name)</absolute>
                    <read_allowed>true</read_allowed>
                    <write_allowed>true</write_allowed>
                    <dir_allowed>true</dir_allowed>
                </path>
            </paths>
        </access>
        <resume_suffix>.aspera-ckpt</resume_suffix>
        <partial_file_suffix>.partial</partial_file_suffix>
        <replace_illegal_chars>_</replace_illegal_chars>
    </file_system>
</default>
<aaa>
    <realms>
        <realm>
            <users>
                <user>
                    <name>alice</name>
                    <transfer><in><bandwidth><flow><target_rate><cap>50000</cap></target_rate></flow></bandwidth></in></transfer>
                    <file_system>
                        <access><paths><path>
                            <absolute>$(home)/outbox</absolute>
                            <write_allowed>false</write_allowed>
                        </path></paths></access>
                    </file_system>
                </user>
                <user>
                    <name>ops</name>
                    <file_system><access><paths><path>
                        <absolute>/</absolute>
                        <dir_allowed>false</dir_allowed>
                    </path></paths></access></file_system>
                </user>
            </users>
        </realm>
    </realms>
</aaa>
</CONF>
"#;

#[test]
fn ibms_usual_server_file_with_docroots_loads_and_gives_each_user_theirs() {
    let loaded = parse(IBM_SERVER_CONF).unwrap();
    assert!(
        loaded.warnings.iter().all(|w| !w.is_error()),
        "{:?}",
        loaded.warnings
    );
    let ignored: Vec<&str> = loaded
        .warnings
        .iter()
        .filter(|w| w.message.contains("is not used by fasp-proxy"))
        .filter_map(|w| w.tag_path.as_deref())
        .collect();
    assert_eq!(
        ignored,
        [
            "CONF/server/server_name",
            "CONF/default/transfer",
            "CONF/default/authorization",
            "CONF/default/file_system/resume_suffix",
            "CONF/default/file_system/partial_file_suffix",
            "CONF/default/file_system/replace_illegal_chars",
            "CONF/aaa/realms/realm/users/user[1]/transfer",
        ]
    );
    let c = &loaded.config;
    assert_eq!(
        c.docroot_for("bob", Path::new("/home/bob")),
        Ok(Docroot {
            root: Some("/data/bob".into()),
            ..Docroot::unrestricted()
        })
    );
    assert_eq!(
        c.docroot_for("alice", Path::new("/home/alice")),
        Ok(Docroot {
            root: Some("/home/alice/outbox".into()),
            read_allowed: true,
            write_allowed: false,
            dir_allowed: true,
        })
    );
    assert_eq!(
        c.docroot_for("ops", Path::new("/root")),
        Ok(Docroot {
            root: Some("/".into()),
            dir_allowed: false,
            ..Docroot::unrestricted()
        })
    );
    assert!(c.aspshell_commands().is_empty());
    let summary = summary::describe(c);
    assert!(
        summary.contains(
            "docroots (for ascp --server, ascmd and aspshell reading this file): every user: \
             /data/$(name); read on, write on, browse on\n  user alice (line 41): \
             $(home)/outbox; read on, write off, browse on\n  user ops (line 51): /; read on, \
             write on, browse off\n"
        ),
        "{summary}"
    );
}

/// Writes `text` as `aspera.conf` in a fresh directory.
fn conf_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aspera.conf");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn load_docroot_reads_a_file_with_only_default_and_aaa() {
    // No <server>, no rules, no host keys: what an internal server's file holds.
    let (_dir, path) = conf_file(IBM_SERVER_CONF);
    assert_eq!(
        load_docroot(&path, "alice", Path::new("/home/alice")).map(|d| d.root),
        Ok(Some("/home/alice/outbox".into()))
    );
    let (_dir, path) = conf_file(&access("<path><absolute>/d/$(name)</absolute></path>", ""));
    assert_eq!(
        load_docroot(&path, "x", Path::new("/home/x")).map(|d| d.root),
        Ok(Some("/d/x".into()))
    );
    // The configuration itself, for aspshell's commands: none without a file.
    let shapes = load_quiet(&path).map(|c| c.map(|c| c.aspshell_commands().len()));
    assert_eq!(shapes, Ok(Some(0)));
    assert!(matches!(
        load_quiet(&path.with_file_name("none.conf")),
        Ok(None)
    ));
    // A user name that cannot be put in a path is refused, naming the file.
    let e = load_docroot(&path, "..", Path::new("/")).unwrap_err();
    assert!(
        e.starts_with(&format!("{}: user name", path.display())),
        "{e}"
    );
}

#[test]
fn load_docroot_without_a_file_is_ibms_default() {
    let dir = tempfile::tempdir().unwrap();
    for missing in [
        dir.path().join("aspera.conf"),
        dir.path().join("no/such/dir/aspera.conf"),
    ] {
        assert_eq!(
            load_docroot(&missing, "alice", Path::new("/home/alice")),
            Ok(Docroot::unrestricted()),
            "{}",
            missing.display()
        );
    }
}

#[test]
fn load_docroot_refuses_what_it_cannot_read_or_check() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let home = Path::new("/home/alice");
    // A path through a file (ENOTDIR): not "missing", so not IBM's default.
    let through = file.join("aspera.conf");
    let e = load_docroot(&through, "alice", home).unwrap_err();
    assert!(
        e.starts_with(&format!("{}: cannot read: ", through.display()))
            && e.contains("os error 20"),
        "{e}"
    );
    // A directory, and a link to nothing.
    let e = load_docroot(dir.path(), "alice", home).unwrap_err();
    assert_eq!(
        e,
        format!("{}: is not a regular file", dir.path().display())
    );
    let dangling = dir.path().join("dangling.conf");
    std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).unwrap();
    let e = load_docroot(&dangling, "alice", home).unwrap_err();
    assert!(e.contains("cannot read: No such file"), "{e}");
    // Not UTF-8.
    std::fs::write(&file, b"<CONF>\n\xff</CONF>").unwrap();
    let e = load_docroot(&file, "alice", home).unwrap_err();
    assert!(
        e.ends_with("line 2, column 1: the file is not UTF-8 text"),
        "{e}"
    );
    // Invalid: every error, each with its line and path, and no warning.
    let (_d, bad) = conf_file(&access(
        "<path><absolute>rel</absolute><show_as>/x</show_as></path>",
        "<user><name>al</name></user><user><name>al</name></user>",
    ));
    let e = load_docroot(&bad, "alice", home).unwrap_err();
    let lines: Vec<&str> = e.lines().collect();
    let f = bad.display();
    assert_eq!(
        lines,
        [
            format!("{f}: 3 errors in configuration"),
            format!("{f}:6:7: error: <absolute>: \"rel\" is not an absolute path (start it with / or $(home)) [at {DEFAULT_PATHS}/path/absolute]"),
            format!("{f}:6:31: error: <show_as> is not supported: IBM's virtual docroot names (and several docroots per user) are not; fasp-proxy confines each user to one docroot [at {DEFAULT_PATHS}/path/show_as]; remove <show_as>; keep one <path> per <default> or <user>"),
            format!("{f}:15:35: error: user al is listed twice; the first <user> is at line 15: merge the two [at {USERS}/user[2]/name]"),
        ]
    );
}

/// Set by [`load_docroot_refuses_a_file_it_may_not_read`] for the copy of the test binary it
/// runs as another user: the file to load.
const AS_NOBODY: &str = "FASP_PROXY_TEST_LOAD_DOCROOT_AS_NOBODY";

#[test]
fn load_docroot_refuses_a_file_it_may_not_read() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("aspera.conf");
    std::fs::write(&path, IBM_SERVER_CONF).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let result = if nix::unistd::geteuid().is_root() {
        // Root reads any file: run the check as nobody, in a copy of this test binary.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "config::tests::load_docroot_as_another_user",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(AS_NOBODY, &path)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}");
        stdout
            .lines()
            .find_map(|l| l.split_once("load_docroot: ").map(|(_, result)| result))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no result: {stdout}"))
    } else {
        format!(
            "{:?}",
            load_docroot(&path, "alice", Path::new("/home/alice"))
        )
    };
    assert_eq!(
        result,
        format!(
            "{:?}",
            Err::<Docroot, String>(format!(
                "{}: cannot read: Permission denied (os error 13)",
                path.display()
            ))
        )
    );
}

/// The half of [`load_docroot_refuses_a_file_it_may_not_read`] that runs as another user.
#[test]
#[ignore = "run by load_docroot_refuses_a_file_it_may_not_read as another user"]
fn load_docroot_as_another_user() {
    let path =
        std::env::var_os(AS_NOBODY).expect("run by load_docroot_refuses_a_file_it_may_not_read");
    let result = load_docroot(Path::new(&path), "alice", Path::new("/home/alice"));
    println!("load_docroot: {result:?}");
}

#[test]
fn load_docroot_takes_microseconds_on_a_typical_file() {
    // IBM's usual server file (above) with 20 more users.
    let more: String = (0..20)
        .map(|i| {
            user(
                &format!("user{i}"),
                &format!("<absolute>/data/u{i}</absolute>"),
            )
        })
        .collect();
    let text = IBM_SERVER_CONF.replace("<users>", &format!("<users>{more}"));
    let (_dir, path) = conf_file(&text);
    let home = Path::new("/home/alice");
    assert!(load_docroot(&path, "alice", home).is_ok());
    let runs = 200u32;
    let start = std::time::Instant::now();
    for _ in 0..runs {
        let d = load_docroot(&path, "alice", home);
        assert!(d.is_ok());
    }
    let each = start.elapsed() / runs;
    eprintln!(
        "load_docroot: {} bytes, {} users: {each:?} per call",
        text.len(),
        22
    );
    // Generous for an unoptimised build on a busy machine; a quadratic slip would exceed it.
    assert!(each < Duration::from_millis(20), "{each:?}");
}
