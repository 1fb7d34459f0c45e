//! The forward proxy's HTTP API as IBM's `ascp --proxy dnat[s]://` speaks it: the bodies of
//! `POST /proxy/open`, `/proxy/keepalive` and `/proxy/close`, and the reply to an open.
//!
//! IBM's client writes its request bodies by hand, JSON-looking but not JSON: the host is copied
//! as typed, never escaped (`srv"x\y` arrives as `"srv"x\y"`):
//! ```text
//! {"host_spec" : "IPv4", "host" : "203.0.113.23", "tcp_port" : 22, "udp_port" : 33001}
//! {"proxy_id" : "7"}
//! ```
//! So a body is read as JSON when it is JSON, and otherwise in IBM's fixed shape; whatever is
//! read, the host must then be a host name or an IP literal, so nothing odd gets further. The
//! reply is real JSON, which the client reads by key:
//! ```text
//! {"proxy_id":"7","proxy_spec":"IPv4","server_addr":"203.0.113.23","proxy_addr":"192.0.2.1","proxy_tcp_port":5000,"proxy_udp_port":5000,"proxy_keepalive":5}
//! ```

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The largest request body the API reads (IBM's open body is under 200 bytes).
pub const MAX_BODY: usize = 4096;
/// The longest host name accepted (DNS's limit).
pub const MAX_HOST: usize = 253;
/// `host_spec` and `proxy_spec`: the only address family IBM's client proxies.
pub const SPEC_IPV4: &str = "IPv4";

/// Why a body cannot be read; answered with 400 and this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

fn bad(why: impl Into<String>) -> WireError {
    WireError(why.into())
}

/// `POST /proxy/open`: where the client wants to go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenRequest {
    /// `IPv4` (the only family IBM's client proxies).
    pub host_spec: String,
    /// The server as the user typed it: a host name or an IP literal.
    pub host: String,
    /// The server's SSH port (`ascp -P`).
    pub tcp_port: u16,
    /// The server's FASP UDP port (`ascp -O`).
    pub udp_port: u16,
}

impl OpenRequest {
    /// The body in IBM's own shape (spaces around the colons, this order), so an IBM proxy
    /// reads ours as it reads IBM's; the host is checked first, so nothing needs escaping.
    pub fn to_body(&self) -> Result<String, WireError> {
        check_host(&self.host)?;
        Ok(format!(
            "{{\"host_spec\" : \"{}\", \"host\" : \"{}\", \"tcp_port\" : {}, \"udp_port\" : {}}}",
            self.host_spec, self.host, self.tcp_port, self.udp_port
        ))
    }

    /// Reads an open body: JSON, or IBM's unescaped shape; then checks it (IPv4 only, a host
    /// name or IP literal, ports 1–65535).
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let text = body_text(body)?;
        let request = match serde_json::from_str::<OpenRequest>(text) {
            Ok(r) => r,
            Err(json) => ibm_open(text).ok_or_else(|| {
                bad(format!(
                    "the body is not an open request ({json}); expected \
                     {{\"host_spec\" : \"IPv4\", \"host\" : \"…\", \"tcp_port\" : 22, \"udp_port\" : 33001}}"
                ))
            })?,
        };
        if request.host_spec != SPEC_IPV4 {
            return Err(bad(format!(
                "host_spec {:?} is not supported: this proxy forwards IPv4 only",
                request.host_spec
            )));
        }
        check_host(&request.host)?;
        if request.tcp_port == 0 || request.udp_port == 0 {
            return Err(bad("tcp_port and udp_port must be 1-65535"));
        }
        Ok(request)
    }
}

/// `POST /proxy/keepalive` and `/proxy/close`: which forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRequest {
    /// The `proxy_id` the open's reply gave.
    pub proxy_id: u64,
}

impl IdRequest {
    /// The body as IBM's client writes it: `{"proxy_id" : "7"}`.
    pub fn to_body(&self) -> String {
        format!("{{\"proxy_id\" : \"{}\"}}", self.proxy_id)
    }

    /// Reads `{"proxy_id" : "7"}` (the id as a string or a number).
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        #[derive(Deserialize)]
        struct Raw {
            proxy_id: serde_json::Value,
        }
        let text = body_text(body)?;
        let raw: Raw = serde_json::from_str(text)
            .map_err(|e| bad(format!("the body is not {{\"proxy_id\" : \"N\"}}: {e}")))?;
        let id = match &raw.proxy_id {
            serde_json::Value::String(s) => s.parse::<u64>().ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        };
        id.map(|proxy_id| IdRequest { proxy_id })
            .ok_or_else(|| bad(format!("proxy_id {} is not a forwarding id", raw.proxy_id)))
    }
}

/// The reply to a successful open (status 200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenReply {
    /// The forwarding's id, a decimal number as a string; echoed in keepalive and close.
    pub proxy_id: String,
    /// `IPv4`.
    pub proxy_spec: String,
    /// The server's address: the client's FASP peer identity.
    pub server_addr: String,
    /// Where the client connects (TCP and UDP); absent = the proxy URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_addr: Option<String>,
    /// The proxy's TCP port that leads to the server's SSH.
    pub proxy_tcp_port: u16,
    /// The proxy's UDP port that leads to the server's FASP port.
    pub proxy_udp_port: u16,
    /// Seconds between keepalives; 0 or absent = 60.
    #[serde(default)]
    pub proxy_keepalive: u64,
}

impl OpenReply {
    /// The reply as JSON.
    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads and checks a reply as IBM's client would: `proxy_id` a decimal u64, `proxy_spec`
    /// `IPv4`, `server_addr` and `proxy_addr` IPv4 literals, ports 1–65535.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let text = body_text(body)?;
        let reply: OpenReply = serde_json::from_str(text)
            .map_err(|e| bad(format!("the proxy's reply to open is not understood: {e}")))?;
        reply.proxy_id()?;
        if reply.proxy_spec != SPEC_IPV4 {
            return Err(bad(format!(
                "the proxy offers {:?}, not IPv4",
                reply.proxy_spec
            )));
        }
        reply.server_addr()?;
        reply.proxy_addr()?;
        if reply.proxy_tcp_port == 0 || reply.proxy_udp_port == 0 {
            return Err(bad("the proxy's reply has port 0"));
        }
        Ok(reply)
    }

    /// `proxy_id` as a number.
    pub fn proxy_id(&self) -> Result<u64, WireError> {
        self.proxy_id
            .parse()
            .map_err(|_| bad(format!("proxy_id {:?} is not a number", self.proxy_id)))
    }

    /// `server_addr` as an address.
    pub fn server_addr(&self) -> Result<Ipv4Addr, WireError> {
        self.server_addr.parse().map_err(|_| {
            bad(format!(
                "server_addr {:?} is not an IPv4 address",
                self.server_addr
            ))
        })
    }

    /// `proxy_addr` as an address, if given.
    pub fn proxy_addr(&self) -> Result<Option<Ipv4Addr>, WireError> {
        self.proxy_addr
            .as_deref()
            .map(|a| {
                a.parse()
                    .map_err(|_| bad(format!("proxy_addr {a:?} is not an IPv4 address")))
            })
            .transpose()
    }

    /// Seconds between keepalives, with the client's default of 60 for 0.
    pub fn keepalive_secs(&self) -> u64 {
        if self.proxy_keepalive == 0 {
            60
        } else {
            self.proxy_keepalive
        }
    }
}

/// The reply to a keepalive or a close: `{"proxy_id":"7"}`.
pub fn id_reply(proxy_id: u64) -> String {
    format!("{{\"proxy_id\":\"{proxy_id}\"}}")
}

/// An error reply's body: `{"error":"…"}` (IBM's client ignores it; people and logs do not).
pub fn error_reply(why: &str) -> String {
    serde_json::json!({ "error": why }).to_string()
}

fn body_text(body: &[u8]) -> Result<&str, WireError> {
    if body.len() > MAX_BODY {
        return Err(bad(format!(
            "the body is {} bytes, over the limit of {MAX_BODY}",
            body.len()
        )));
    }
    std::str::from_utf8(body)
        .map(str::trim)
        .map_err(|_| bad("the body is not UTF-8 text"))
}

/// IBM's shape, read literally: the four keys in this order, the host up to the last
/// `", "tcp_port" : ` (so quotes inside it do not end it early; the host check refuses them).
fn ibm_open(text: &str) -> Option<OpenRequest> {
    let rest = text.strip_prefix('{')?.strip_suffix('}')?.trim();
    let rest = rest.strip_prefix("\"host_spec\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let (host_spec, rest) = rest.split_once('"')?;
    let rest = rest.trim_start().strip_prefix(',')?.trim_start();
    let rest = rest.strip_prefix("\"host\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let tcp_at = rest.rfind("\"tcp_port\"")?;
    let host = rest[..tcp_at]
        .trim_end()
        .strip_suffix(',')?
        .trim_end()
        .strip_suffix('"')?;
    let rest = rest[tcp_at..].strip_prefix("\"tcp_port\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let (tcp_port, rest) = rest.split_once(',')?;
    let rest = rest.trim_start().strip_prefix("\"udp_port\"")?.trim_start();
    let udp_port = rest.strip_prefix(':')?.trim();
    Some(OpenRequest {
        host_spec: host_spec.to_string(),
        host: host.to_string(),
        tcp_port: tcp_port.trim().parse().ok()?,
        udp_port: udp_port.parse().ok()?,
    })
}

/// A host name (letters, digits, `-`, `.`, `_`) or an IP literal; nothing else.
fn check_host(host: &str) -> Result<(), WireError> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let name_ok = !host.is_empty()
        && host.len() <= MAX_HOST
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !host.starts_with(['-', '.']);
    if name_ok {
        Ok(())
    } else {
        let shown: String = host.chars().take(80).collect();
        Err(bad(format!(
            "host {shown:?} is not a host name or an IP address"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IBM_OPEN: &str =
        r#"{"host_spec" : "IPv4", "host" : "203.0.113.23", "tcp_port" : 22, "udp_port" : 33001}"#;

    #[test]
    fn reads_ibm_open_and_writes_the_same_shape() {
        let r = OpenRequest::parse(IBM_OPEN.as_bytes()).unwrap();
        assert_eq!(r.host, "203.0.113.23");
        assert_eq!((r.tcp_port, r.udp_port), (22, 33001));
        assert_eq!(r.to_body().unwrap(), IBM_OPEN);
    }

    #[test]
    fn an_unescaped_host_is_read_then_refused_with_a_reason() {
        let body =
            r#"{"host_spec" : "IPv4", "host" : "srv"x\y", "tcp_port" : 22, "udp_port" : 33001}"#;
        let e = OpenRequest::parse(body.as_bytes()).unwrap_err();
        assert!(
            e.0.contains(r#"host "srv\"x\\y" is not a host name"#),
            "{e}"
        );
        let body = r#"{"host_spec" : "IPv4", "host" : "a", "tcp_port" : 1, "tcp_port" : 22, "udp_port" : 33001}"#;
        assert!(OpenRequest::parse(body.as_bytes()).is_err());
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for body in [
            "",
            "{}",
            "not json",
            r#"{"host_spec" : "IPv6", "host" : "2001:db8::1", "tcp_port" : 22, "udp_port" : 33001}"#,
            r#"{"host_spec" : "IPv4", "host" : "", "tcp_port" : 22, "udp_port" : 33001}"#,
            r#"{"host_spec" : "IPv4", "host" : "h", "tcp_port" : 0, "udp_port" : 33001}"#,
            r#"{"host_spec" : "IPv4", "host" : "h", "tcp_port" : 70000, "udp_port" : 33001}"#,
            r#"{"host_spec" : "IPv4", "host" : "h", "tcp_port" : -1, "udp_port" : 33001}"#,
            r#"{"host_spec" : "IPv4", "host" : "h", "tcp_port" : 22}"#,
        ] {
            assert!(OpenRequest::parse(body.as_bytes()).is_err(), "{body}");
        }
        let big = format!("{{\"host\" : \"{}\"}}", "a".repeat(MAX_BODY));
        assert!(OpenRequest::parse(big.as_bytes())
            .unwrap_err()
            .0
            .contains("over the limit"));
        assert!(OpenRequest::parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn real_json_is_read_too() {
        let body =
            r#"{"udp_port":33001,"tcp_port":22,"host":"files.example.com","host_spec":"IPv4"}"#;
        let r = OpenRequest::parse(body.as_bytes()).unwrap();
        assert_eq!(r.host, "files.example.com");
    }

    #[test]
    fn ids_as_string_or_number() {
        assert_eq!(
            IdRequest::parse(br#"{"proxy_id" : "7"}"#).unwrap().proxy_id,
            7
        );
        assert_eq!(IdRequest::parse(br#"{"proxy_id":7}"#).unwrap().proxy_id, 7);
        assert_eq!(IdRequest { proxy_id: 7 }.to_body(), r#"{"proxy_id" : "7"}"#);
        for bad in [
            r#"{"proxy_id" : "x"}"#,
            r#"{"proxy_id" : -1}"#,
            "{}",
            r#"{"proxy_id" : null}"#,
        ] {
            assert!(IdRequest::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_reply_round_trips_and_is_checked() {
        let reply = OpenReply {
            proxy_id: "7".into(),
            proxy_spec: SPEC_IPV4.into(),
            server_addr: "203.0.113.23".into(),
            proxy_addr: Some("192.0.2.1".into()),
            proxy_tcp_port: 5000,
            proxy_udp_port: 5000,
            proxy_keepalive: 5,
        };
        let json = reply.to_json();
        assert_eq!(
            json,
            r#"{"proxy_id":"7","proxy_spec":"IPv4","server_addr":"203.0.113.23","proxy_addr":"192.0.2.1","proxy_tcp_port":5000,"proxy_udp_port":5000,"proxy_keepalive":5}"#
        );
        assert_eq!(OpenReply::parse(json.as_bytes()).unwrap(), reply);
        let mut no_keepalive: serde_json::Value = serde_json::from_str(&json).unwrap();
        no_keepalive
            .as_object_mut()
            .unwrap()
            .remove("proxy_keepalive");
        no_keepalive.as_object_mut().unwrap().remove("proxy_addr");
        let r = OpenReply::parse(no_keepalive.to_string().as_bytes()).unwrap();
        assert_eq!((r.keepalive_secs(), r.proxy_addr().unwrap()), (60, None));
        let bad = json.replace("203.0.113.23", "outside.example");
        assert!(OpenReply::parse(bad.as_bytes()).is_err());
        let bad = json.replace("\"7\"", "\"seven\"");
        assert!(OpenReply::parse(bad.as_bytes()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn no_body_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = OpenRequest::parse(&body);
            let _ = IdRequest::parse(&body);
            let _ = OpenReply::parse(&body);
        }

        #[test]
        fn any_accepted_host_is_plain(host in ".{0,40}") {
            let body = format!(
                "{{\"host_spec\" : \"IPv4\", \"host\" : \"{host}\", \"tcp_port\" : 22, \"udp_port\" : 33001}}"
            );
            if let Ok(r) = OpenRequest::parse(body.as_bytes()) {
                proptest::prop_assert!(!r.host.contains(['"', '\\', ' ', '/']));
            }
        }
    }
}
