//! What a session asks of the data plane, and what the kernel holds.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use uuid::Uuid;

/// One session's forwarding: UDP from `client[:client_port]` to `proxy_addr:proxy_port` is sent
/// on to `backend`, with the source rewritten to `snat` (or masqueraded) so replies come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    /// The session UUID; the entry's comment in the kernel.
    pub id: Uuid,
    /// The client's address.
    pub client: IpAddr,
    /// The client's UDP source port; `None` forwards any source port (`src_port_filtering false`).
    pub client_port: Option<u16>,
    /// The proxy address the client sends to (needed to find the flow's conntrack entry).
    pub proxy_addr: IpAddr,
    /// The client-facing UDP port on the proxy.
    pub proxy_port: u16,
    /// The internal server's UDP address and port.
    pub backend: SocketAddr,
    /// Where TCP to `proxy_addr:proxy_port` from the client goes too (the forward proxy: the
    /// client's SSH reaches the outside server through the same port); `None` = UDP only.
    pub tcp_backend: Option<SocketAddr>,
    /// Source address for the forwarded packets (`bind_source_address`); `None` = masquerade.
    pub snat: Option<IpAddr>,
    /// How long the entry lives unless refreshed.
    pub lifetime: Duration,
}

/// What makes a session's DNAT entry unique: two live sessions may not share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    /// The client's address.
    pub client: IpAddr,
    /// The client's UDP source port, or `None` for any.
    pub client_port: Option<u16>,
    /// The client-facing UDP port on the proxy.
    pub proxy_port: u16,
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.client_port {
            Some(p) => write!(f, "{} port {p}", self.client),
            None => write!(f, "{} any port", self.client),
        }?;
        write!(f, " -> proxy port {}", self.proxy_port)
    }
}

impl SessionEntry {
    /// The DNAT key of this session.
    pub fn key(&self) -> SessionKey {
        SessionKey {
            client: self.client,
            client_port: self.client_port,
            proxy_port: self.proxy_port,
        }
    }

    /// Whether the session is IPv4 (else IPv6).
    pub fn is_ipv4(&self) -> bool {
        self.client.is_ipv4()
    }

    /// Checks the entry can be programmed: one IP family throughout, no port 0, a lifetime the
    /// kernel can hold.
    pub fn validate(&self) -> Result<(), EntryError> {
        let bad = |why: String| EntryError { id: self.id, why };
        let v4 = self.client.is_ipv4();
        let mut addrs = vec![
            ("proxy address", self.proxy_addr),
            ("backend", self.backend.ip()),
        ];
        if let Some(s) = self.snat {
            addrs.push(("SNAT address", s));
        }
        if let Some(t) = self.tcp_backend {
            addrs.push(("TCP backend", t.ip()));
            if t.port() == 0 || t.ip().is_unspecified() {
                return Err(bad(format!(
                    "TCP backend {t} is not a real address and port"
                )));
            }
            // A TCP connection has one source port, known only when it starts: the TCP twin is
            // keyed on the client address alone.
            if self.client_port.is_some() {
                return Err(bad(
                    "TCP forwarding needs an entry for any client port (client_port None)".into(),
                ));
            }
        }
        for (what, addr) in addrs {
            if addr.is_ipv4() != v4 {
                return Err(bad(format!(
                    "client {} and {what} {addr} are of different IP families",
                    self.client
                )));
            }
        }
        if self.client.is_unspecified() || self.backend.ip().is_unspecified() {
            return Err(bad("client and backend must be real addresses".into()));
        }
        if self.client_port == Some(0) || self.proxy_port == 0 || self.backend.port() == 0 {
            return Err(bad("UDP port 0 cannot be forwarded".into()));
        }
        // Under 1 ms the kernel would get timeout 0: an element that never expires.
        if self.lifetime < Duration::from_millis(1)
            || self.lifetime > Duration::from_secs(30 * 24 * 3600)
        {
            return Err(bad(format!(
                "lifetime {:?} is outside 1 ms..30 days",
                self.lifetime
            )));
        }
        Ok(())
    }
}

/// Why a [`SessionEntry`] cannot be programmed (mixed IP families, port 0, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session {id}: {why}")]
pub struct EntryError {
    /// The session.
    pub id: Uuid,
    /// What is wrong.
    pub why: String,
}

/// A session entry as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledEntry {
    /// The session UUID from the entry's comment; `None` if the comment is not a UUID.
    pub id: Option<Uuid>,
    /// The DNAT key.
    pub key: SessionKey,
    /// Where the data goes.
    pub backend: SocketAddr,
    /// Where the client's TCP goes (forward proxy forwardings), `None` for UDP only.
    pub tcp_backend: Option<SocketAddr>,
    /// The SNAT address, `None` when masqueraded.
    pub snat: Option<IpAddr>,
    /// Time left before the kernel drops it, for backends whose entries expire.
    pub expires: Option<Duration>,
}

impl fmt::Display for InstalledEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self
            .id
            .map_or_else(|| "(no session id)".to_string(), |u| u.to_string());
        write!(f, "{id}: {} => {}", self.key, self.backend)?;
        if let Some(t) = self.tcp_backend {
            write!(f, ", tcp => {t}")?;
        }
        match self.snat {
            Some(s) => write!(f, ", snat {s}")?,
            None => write!(f, ", masquerade")?,
        }
        if let Some(e) = self.expires {
            write!(f, ", expires in {}s", e.as_secs())?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) fn sample_entry() -> SessionEntry {
    SessionEntry {
        id: Uuid::from_u128(0x3a9fd819_59c3_42bc_b0a2_d26304a1eb84),
        client: "192.0.2.2".parse().unwrap(),
        client_port: Some(40000),
        proxy_addr: "192.0.2.1".parse().unwrap(),
        proxy_port: 33001,
        backend: "198.51.100.2:33001".parse().unwrap(),
        tcp_backend: None,
        snat: None,
        lifetime: Duration::from_secs(60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_refuses_mixed_families_port_zero_and_bad_lifetimes() {
        let ok = sample_entry();
        assert!(ok.validate().is_ok());
        let mut e = ok.clone();
        e.backend = "[2001:db8::2]:33001".parse().unwrap();
        assert!(e
            .validate()
            .unwrap_err()
            .to_string()
            .contains("different IP families"));
        let mut e = ok.clone();
        e.snat = Some("2001:db8::1".parse().unwrap());
        assert!(e.validate().is_err());
        let mut e = ok.clone();
        e.client_port = Some(0);
        assert!(e.validate().unwrap_err().to_string().contains("port 0"));
        let mut e = ok.clone();
        e.lifetime = Duration::ZERO;
        assert!(e.validate().is_err());
        let mut e = ok.clone();
        e.client = "0.0.0.0".parse().unwrap();
        assert!(e.validate().is_err());
        let mut e = ok.clone();
        let refusal = |e: &SessionEntry| e.validate().unwrap_err().to_string();
        e.tcp_backend = Some("198.51.100.2:22".parse().unwrap());
        assert!(refusal(&e).contains("any client port"));
        e.client_port = None;
        assert!(e.validate().is_ok());
        e.tcp_backend = Some("198.51.100.2:0".parse().unwrap());
        assert!(refusal(&e).contains("not a real address and port"));
        e.tcp_backend = Some("[2001:db8::2]:22".parse().unwrap());
        assert!(refusal(&e).contains("different IP families"));
    }

    #[test]
    fn key_display() {
        let mut e = sample_entry();
        assert_eq!(
            e.key().to_string(),
            "192.0.2.2 port 40000 -> proxy port 33001"
        );
        e.client_port = None;
        assert_eq!(
            e.key().to_string(),
            "192.0.2.2 any port -> proxy port 33001"
        );
    }
}
