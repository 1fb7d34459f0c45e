//! Parsers for the value types of `aspera.conf`, each returning a message a person can act on.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::model::HostDomain;

/// `true` or `false` (any case).
pub fn boolean(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("\"{s}\" is not true or false")),
    }
}

/// A PAM service name: the name of a file in /etc/pam.d, so letters, digits, `.`, `_`, `-`,
/// not starting with a dot.
pub fn pam_service(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && !s.starts_with('.')
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "\"{s}\" is not a PAM service name (a file name in /etc/pam.d: letters, digits, '.', '_', '-')"
        ))
    }
}

/// A non-negative integer no larger than `max`.
pub fn integer(s: &str, max: u64) -> Result<u64, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("\"{s}\" is not a whole number"))?;
    if n > max {
        return Err(format!("{n} is too large (at most {max})"));
    }
    Ok(n)
}

/// A port, 0–65535 when `allow_zero`, else 1–65535.
pub fn port(s: &str, allow_zero: bool) -> Result<u16, String> {
    let n: i64 = s
        .parse()
        .map_err(|_| format!("\"{s}\" is not a port number"))?;
    let low = if allow_zero { 0 } else { 1 };
    if !(low..=65535).contains(&n) {
        return Err(format!("port {n} is out of range {low}-65535"));
    }
    u16::try_from(n).map_err(|_| format!("port {n} is out of range {low}-65535"))
}

/// An IP address (v4 or v6), no host names.
pub fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("\"{s}\" is not an IP address"))
}

/// A comma-separated list of IP addresses, all of one family.
pub fn ip_list(s: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("\"{s}\" has an empty entry"));
        }
        let addr = ip(part)?;
        if out.contains(&addr) {
            return Err(format!("{addr} is listed twice"));
        }
        if let Some(first) = out.first() {
            if std::mem::discriminant(first) != std::mem::discriminant(&addr) {
                return Err(format!("{addr} and {first} are of different IP families"));
            }
        }
        out.push(addr);
    }
    Ok(out)
}

/// An IP address or a CIDR prefix; a bare address becomes a full-length prefix.
/// A prefix with host bits set is refused, since it is usually a typo.
pub fn ip_or_prefix(s: &str) -> Result<IpNet, String> {
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    let net: IpNet = s
        .parse()
        .map_err(|_| format!("\"{s}\" is not an IP address or CIDR prefix (like 192.0.2.0/24)"))?;
    if net.trunc() != net {
        return Err(format!(
            "{s} has host bits set; write {} (or the single address without /{})",
            net.trunc(),
            net.prefix_len()
        ));
    }
    Ok(net)
}

/// A netmask written as dotted quad (255.255.255.0) or prefix length (24).
pub fn netmask(s: &str) -> Result<u8, String> {
    if let Ok(len) = s.parse::<u8>() {
        if len <= 32 {
            return Ok(len);
        }
        return Err(format!("prefix length {len} is larger than 32"));
    }
    let mask: std::net::Ipv4Addr = s
        .parse()
        .map_err(|_| format!("\"{s}\" is not a netmask (like 255.255.255.0 or 24)"))?;
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    if bits.checked_shl(len).unwrap_or(0) != 0 {
        return Err(format!("{s} is not a contiguous netmask"));
    }
    u8::try_from(len).map_err(|_| format!("{s} is not a netmask"))
}

/// `ip[:port]` with the port defaulting to `default_port`; IPv6 as `[addr]:port` or a bare address.
pub fn host_port(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(addr, default_port));
    }
    if let Ok(sock) = s.parse::<SocketAddr>() {
        if sock.port() == 0 {
            return Err(format!("\"{s}\": port 0 is out of range 1-65535"));
        }
        return Ok(sock);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let addr = rest.split(']').next().unwrap_or("");
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("\"{s}\": \"{addr}\" is not an IPv6 address"));
        }
    }
    if let Some((host, p)) = s.rsplit_once(':') {
        let bracketed_v6 = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
        if host.parse::<std::net::Ipv4Addr>().is_ok() || bracketed_v6 {
            if let Err(e) = port(p, false) {
                return Err(format!("\"{s}\": {e}"));
            }
        } else if !host.starts_with('[') {
            return Err(format!(
                "\"{s}\": \"{host}\" is not an IP address (host names are not accepted; IPv6 goes in brackets: [2001:db8::1]:22)"
            ));
        }
    }
    Err(format!(
        "\"{s}\" is not ip[:port] (like 198.51.100.10:22 or [2001:db8::10]:22)"
    ))
}

/// `name[:port]`: a DNS host name, optionally with the SSH port the client dialled.
pub fn host_domain(s: &str) -> Result<HostDomain, String> {
    let (name, port_text) = match s.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (s, None),
    };
    let port = port_text.map(|p| port(p, false)).transpose()?;
    let name = name.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 {
        return Err(format!("\"{s}\" is not a host name"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "\"{s}\" is not a host name (letters, digits, '-' and '.' only)"
            ));
        }
    }
    Ok(HostDomain {
        name: name.to_ascii_lowercase(),
        port,
    })
}

/// An absolute path (may hold `$(var)` for the variables in `vars`).
pub fn absolute_path(s: &str, vars: &[&str]) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("\"{s}\" is not an absolute path"));
    }
    check_variables(s, vars)?;
    Ok(s.to_string())
}

/// A docroot (`<absolute>`): an absolute path, or one starting with `$(home)`, that may hold
/// `$(name)`, with no `..` component (it would climb out before the kernel's containment could
/// say so).
pub fn docroot(s: &str) -> Result<String, String> {
    if s.contains("://") {
        return Err(format!(
            "\"{s}\" is a URI; fasp-proxy's docroots are directories of this host (an absolute path)"
        ));
    }
    if !s.starts_with('/') && !s.starts_with("$(home)") {
        return Err(format!(
            "\"{s}\" is not an absolute path (start it with / or $(home))"
        ));
    }
    check_variables(s, &["name", "home"])?;
    if s.match_indices("$(home)").any(|(i, _)| i != 0) {
        return Err(format!(
            "\"{s}\": $(home) is an absolute path and can only begin the docroot"
        ));
    }
    if s.split('/').any(|c| c == "..") {
        return Err(format!(
            "\"{s}\" holds \"..\": write the directory it means"
        ));
    }
    if s.contains('\0') {
        return Err(format!("\"{s}\" holds a NUL character"));
    }
    Ok(s.to_string())
}

/// The `<name>` of a `<user>`: a login name that can stand for `$(name)` in a path (no `/`,
/// no white space or control characters, not `.` or `..`), at most 256 bytes.
pub fn login_name(s: &str) -> Result<String, String> {
    if s == "." || s == ".." {
        return Err(format!("\"{s}\" is not a user name"));
    }
    if let Some(bad) = s
        .chars()
        .find(|&c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("\"{s}\" is not a user name: it holds {bad:?}"));
    }
    if s.len() > 256 {
        return Err(format!("\"{s:.40}…\" is longer than 256 bytes"));
    }
    Ok(s.to_string())
}

/// Checks that every `$(name)` in `s` is one of `vars`.
pub fn check_variables(s: &str, vars: &[&str]) -> Result<(), String> {
    let mut rest = s;
    while let Some(i) = rest.find("$(") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else {
            return Err(format!("\"{s}\" has an unclosed $("));
        };
        let name = &after[..end];
        if !vars.contains(&name) {
            let allowed: Vec<String> = vars.iter().map(|v| format!("$({v})")).collect();
            return Err(if allowed.is_empty() {
                format!("\"{s}\": $({name}) is not allowed here")
            } else {
                format!(
                    "\"{s}\": $({name}) is not a known variable (allowed: {})",
                    allowed.join(", ")
                )
            });
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// A path pattern with `%u` (user), `%h` (home) and `%%`, like OpenSSH's AuthorizedKeysFile.
pub fn key_path_pattern(s: &str) -> Result<String, String> {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('u' | 'h' | '%') => {}
                Some(o) => return Err(format!("\"{s}\": %{o} is not known (use %u, %h or %%)")),
                None => return Err(format!("\"{s}\" ends with a lone %")),
            }
        }
    }
    if !s.starts_with('/') && !s.starts_with("%h") {
        return Err(format!(
            "\"{s}\" must be absolute or start with %h (the user's home directory)"
        ));
    }
    Ok(s.to_string())
}

/// A Unix account name.
pub fn user_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphanumeric() || c == '_' || (i > 0 && (c == '-' || c == '.'))
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("\"{s}\" is not a valid account name"))
    }
}

/// `start:rate:full` (OpenSSH's `MaxStartups`), or one number `N` meaning `N:100:N`.
pub fn max_startups(s: &str) -> Result<super::model::MaxStartups, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let number = |t: &str, what: &str| {
        integer(t.trim(), 1_000_000)
            .map_err(|e| format!("{what} of \"{s}\": {e} (write start:rate:full, e.g. 32:30:128)"))
    };
    let (start, rate, full) = match parts.as_slice() {
        [n] => {
            let n = number(n, "the limit")?;
            (n, 100, n)
        }
        [start, rate, full] => (
            number(start, "start")?,
            number(rate, "rate")?,
            number(full, "full")?,
        ),
        _ => {
            return Err(format!(
                "\"{s}\" is not start:rate:full (e.g. 32:30:128) or one number"
            ))
        }
    };
    if full == 0 {
        return Err(format!("full of \"{s}\" must be at least 1"));
    }
    if start > full {
        return Err(format!("start of \"{s}\" is above full"));
    }
    if rate > 100 {
        return Err(format!("rate of \"{s}\" is a percentage, at most 100"));
    }
    Ok(super::model::MaxStartups {
        start: start as u32,
        rate: rate as u8,
        full: full as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_integers_ports() {
        assert_eq!(boolean("TRUE"), Ok(true));
        assert_eq!(boolean("false"), Ok(false));
        assert!(boolean("yes").unwrap_err().contains("not true or false"));
        assert_eq!(integer("300", 1000), Ok(300));
        assert!(integer("-1", 10).is_err());
        assert!(integer("11", 10).unwrap_err().contains("at most 10"));
        assert_eq!(port("0", true), Ok(0));
        assert!(port("0", false)
            .unwrap_err()
            .contains("out of range 1-65535"));
        assert!(port("65536", true)
            .unwrap_err()
            .contains("out of range 0-65535"));
        assert!(port("http", true).is_err());
    }

    #[test]
    fn addresses_and_prefixes() {
        assert_eq!(
            ip_or_prefix("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            ip_or_prefix("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert!(ip_or_prefix("192.0.2.7/24")
            .unwrap_err()
            .contains("write 192.0.2.0/24"));
        assert!(ip_or_prefix("192.0.2.300").is_err());
        assert!(ip_or_prefix("example.com").is_err());
        assert_eq!(ip_list("192.0.2.1, 192.0.2.2").unwrap().len(), 2);
        assert!(ip_list("192.0.2.1,2001:db8::1")
            .unwrap_err()
            .contains("different IP families"));
        assert!(ip_list("192.0.2.1,192.0.2.1")
            .unwrap_err()
            .contains("twice"));
        assert!(ip_list("192.0.2.1,").is_err());
        assert_eq!(netmask("255.255.255.0"), Ok(24));
        assert_eq!(netmask("16"), Ok(16));
        assert!(netmask("255.0.255.0").unwrap_err().contains("contiguous"));
        assert!(netmask("33").is_err());
    }

    #[test]
    fn host_and_port() {
        assert_eq!(
            host_port("198.51.100.10", 22).unwrap().to_string(),
            "198.51.100.10:22"
        );
        assert_eq!(host_port("198.51.100.10:2222", 22).unwrap().port(), 2222);
        assert_eq!(host_port("[2001:db8::1]:33001", 22).unwrap().port(), 33001);
        assert_eq!(host_port("2001:db8::1", 22).unwrap().port(), 22);
        assert!(host_port("198.51.100.10:70000", 22)
            .unwrap_err()
            .contains("out of range"));
        assert!(host_port("198.51.100.10:0", 22)
            .unwrap_err()
            .contains("out of range"));
        assert!(host_port("server1:22", 22)
            .unwrap_err()
            .contains("host names are not accepted"));
        assert!(host_port("[2001:db8::zz]:22", 22)
            .unwrap_err()
            .contains("not an IPv6"));
        assert!(host_port("198.51.100", 22).is_err());
    }

    #[test]
    fn domains_paths_patterns_users() {
        let d = host_domain("Files.Example.com:33001").unwrap();
        assert_eq!(
            (d.name.as_str(), d.port),
            ("files.example.com", Some(33001))
        );
        assert_eq!(host_domain("files").unwrap().port, None);
        assert!(host_domain("bad_name").is_err());
        assert!(host_domain("a..b").is_err());
        assert!(host_domain("x:99999").is_err());
        assert!(absolute_path("/home/$(user)/.ssh/id_rsa", &["user"]).is_ok());
        assert!(absolute_path("/home/$(usr)/k", &["user"])
            .unwrap_err()
            .contains("allowed: $(user)"));
        assert!(absolute_path("keys/id", &["user"])
            .unwrap_err()
            .contains("absolute"));
        assert!(check_variables("/a/$(user", &["user"])
            .unwrap_err()
            .contains("unclosed"));
        assert!(key_path_pattern("%h/.ssh/authorized_keys").is_ok());
        assert!(key_path_pattern("/etc/keys/%u").is_ok());
        assert!(key_path_pattern("/etc/keys/%x").unwrap_err().contains("%x"));
        assert!(key_path_pattern("keys/%u").is_err());
        assert!(user_name("xfer").is_ok());
        assert!(user_name("x fer").is_err());
        assert!(user_name("-x").is_err());
    }

    #[test]
    fn docroots_and_login_names() {
        for ok in [
            "/",
            "/data/$(name)",
            "$(home)",
            "$(home)/in/$(name)",
            "/a/..b/c.",
        ] {
            assert_eq!(docroot(ok), Ok(ok.to_string()), "{ok}");
        }
        let cases = [
            ("data/$(name)", "not an absolute path"),
            ("~/x", "not an absolute path"),
            ("C:\\data", "not an absolute path"),
            ("s3://key:secret@bucket/x", "is a URI"),
            ("/d/$(user)", "allowed: $(name), $(home)"),
            ("/d/$(name", "unclosed"),
            ("/d$(home)", "can only begin"),
            ("/data/../etc", "holds \"..\""),
            ("/data/..", "holds \"..\""),
        ];
        for (bad, why) in cases {
            let e = docroot(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(login_name("alice").is_ok());
        assert!(login_name("alice@corp.example").is_ok());
        for bad in [".", "..", "a/b", "a b", "a\tb", &"x".repeat(257)] {
            assert!(login_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn max_startups_reads_openssh_s_shapes_and_drops_linearly() {
        let m = max_startups("10:30:100").unwrap();
        assert_eq!((m.start, m.rate, m.full), (10, 30, 100));
        assert_eq!(m.to_string(), "10:30:100");
        assert_eq!(
            [0, 9, 10, 55, 99, 100, 500].map(|n| m.drop_percent(n)),
            [0, 0, 30, 65, 99, 100, 100]
        );
        let one = max_startups("64").unwrap();
        assert_eq!((one.drop_percent(63), one.drop_percent(64)), (0, 100));
        for bad in [
            "",
            "10:30",
            "a:b:c",
            "10:130:100",
            "50:30:10",
            "0:30:0",
            "1:2:3:4",
        ] {
            assert!(max_startups(bad).is_err(), "{bad}");
        }
    }
}
