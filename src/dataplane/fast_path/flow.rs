//! What the fast path holds per session, in plain Rust types: a [`Flow`] (both directions'
//! addresses), its [`FlowKey`] (the nftables `sessions` map's key) and its [`FlowCounters`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::error::FastPathError;

/// One session's UDP forwarding in both directions: the client sends from `client` to
/// `proxy`; the fast path sends that on from `snat` to `backend`, and the backend's replies
/// (from `backend` to `snat`) back from `proxy` to `client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// The client's address and UDP source port.
    pub client: SocketAddr,
    /// The proxy address and UDP port the client sends to.
    pub proxy: SocketAddr,
    /// The source the backend sees (`bind_source_address` and the port SNAT keeps).
    pub snat: SocketAddr,
    /// The internal server's address and UDP port.
    pub backend: SocketAddr,
}

/// What makes a flow unique in the forward map: client address . client port . proxy port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// The client's address.
    pub client: IpAddr,
    /// The client's UDP source port.
    pub client_port: u16,
    /// The proxy's UDP port.
    pub proxy_port: u16,
}

/// Packets and L3 bytes counted in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Packets forwarded.
    pub packets: u64,
    /// Their IP length (header and payload), as conntrack counts.
    pub bytes: u64,
}

/// A flow's counters, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowCounters {
    /// Client to backend.
    pub forward: Counters,
    /// Backend to client.
    pub reply: Counters,
}

/// A flow as the maps hold it, with its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstalledFlow {
    /// The flow.
    pub flow: Flow,
    /// What it forwarded so far.
    pub counters: FlowCounters,
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> proxy port {}",
            SocketAddr::new(self.client, self.client_port),
            self.proxy_port
        )
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} => {} -> {}",
            self.client, self.proxy, self.snat, self.backend
        )
    }
}

impl Flow {
    /// The flow's forward-map key.
    pub fn key(&self) -> FlowKey {
        FlowKey {
            client: self.client.ip(),
            client_port: self.client.port(),
            proxy_port: self.proxy.port(),
        }
    }

    /// Checks the flow can be held: one IP family, no port 0, no unspecified address.
    pub fn validate(&self) -> Result<(), FastPathError> {
        let bad = |why: &str| FastPathError::InvalidFlow {
            flow: self.to_string(),
            why: why.to_string(),
        };
        let all = [self.client, self.proxy, self.snat, self.backend];
        if all.iter().any(|a| a.is_ipv4() != self.client.is_ipv4()) {
            return Err(bad("addresses of different IP families"));
        }
        if all.iter().any(|a| a.port() == 0) {
            return Err(bad("UDP port 0 cannot be forwarded"));
        }
        if all.iter().any(|a| a.ip().is_unspecified()) {
            return Err(bad("an unspecified address cannot be forwarded"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            client: "192.0.2.2:40000".parse().unwrap(),
            proxy: "192.0.2.1:33001".parse().unwrap(),
            snat: "198.51.100.1:40000".parse().unwrap(),
            backend: "198.51.100.2:33001".parse().unwrap(),
        }
    }

    #[test]
    fn validation_names_the_flow_and_the_fault() {
        assert!(flow().validate().is_ok());
        let mut f = flow();
        f.backend = "[2001:db8:2::2]:33001".parse().unwrap();
        let e = f.validate().unwrap_err().to_string();
        assert!(e.contains("different IP families"), "{e}");
        assert!(e.contains("192.0.2.2:40000 -> 192.0.2.1:33001"), "{e}");
        let mut f = flow();
        f.snat.set_port(0);
        assert!(f.validate().unwrap_err().to_string().contains("port 0"));
        let mut f = flow();
        f.proxy.set_ip("0.0.0.0".parse().unwrap());
        assert!(f
            .validate()
            .unwrap_err()
            .to_string()
            .contains("unspecified"));
    }
}
