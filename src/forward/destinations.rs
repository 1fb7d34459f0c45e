//! Which outside servers the forward proxy may forward to: `<denied_destinations>` first, then
//! `<allowed_destinations>` (empty = every destination not denied), and never an address that
//! is not a real remote unicast host (loopback, unspecified, multicast, broadcast, link-local,
//! or one of the proxy's own addresses, which would reach the proxy's own services).

use std::net::IpAddr;

use ipnet::IpNet;

/// Why a destination is refused (answered with 403 and logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a remote unicast host.
    #[error("{addr} is {what}, never a forwarding destination")]
    NotRemote {
        /// The destination.
        addr: IpAddr,
        /// What kind of address it is.
        what: &'static str,
    },
    /// Inside a `<denied_destinations>` prefix.
    #[error("{addr} is denied by <denied_destinations> {net}")]
    Denied {
        /// The destination.
        addr: IpAddr,
        /// The prefix that denies it.
        net: IpNet,
    },
    /// Outside every `<allowed_destinations>` prefix.
    #[error("{addr} is not in <allowed_destinations>")]
    NotAllowed {
        /// The destination.
        addr: IpAddr,
    },
}

/// The destination rules of `<proxy>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations {
    /// `<allowed_destinations>`; empty allows every destination not denied.
    pub allowed: Vec<IpNet>,
    /// `<denied_destinations>`, checked first.
    pub denied: Vec<IpNet>,
}

impl Destinations {
    /// Checks `addr`; `own` are the proxy host's own addresses.
    pub fn check(&self, addr: IpAddr, own: &[IpAddr]) -> Result<(), Refused> {
        let addr = addr.to_canonical();
        if let Some(what) = not_remote(addr) {
            return Err(Refused::NotRemote { addr, what });
        }
        if own.iter().any(|o| o.to_canonical() == addr) {
            return Err(Refused::NotRemote {
                addr,
                what: "an address of the proxy itself",
            });
        }
        if let Some(net) = self.denied.iter().find(|n| n.contains(&addr)) {
            return Err(Refused::Denied { addr, net: *net });
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|n| n.contains(&addr)) {
            return Err(Refused::NotAllowed { addr });
        }
        Ok(())
    }
}

/// What kind of non-remote address `addr` is, if it is one.
fn not_remote(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(a) if a.is_unspecified() => Some("unspecified"),
        IpAddr::V4(a) if a.is_loopback() => Some("a loopback address"),
        IpAddr::V4(a) if a.is_multicast() => Some("a multicast address"),
        IpAddr::V4(a) if a.is_broadcast() => Some("the broadcast address"),
        IpAddr::V4(a) if a.is_link_local() => Some("a link-local address"),
        IpAddr::V4(a) if a.octets()[0] == 0 => Some("in 0.0.0.0/8 (this network)"),
        IpAddr::V6(a) if a.is_unspecified() => Some("unspecified"),
        IpAddr::V6(a) if a.is_loopback() => Some("a loopback address"),
        IpAddr::V6(a) if a.is_multicast() => Some("a multicast address"),
        IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80 => Some("a link-local address"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn empty_lists_allow_any_remote_unicast_host() {
        let d = Destinations::default();
        assert_eq!(d.check(ip("203.0.113.23"), &[]), Ok(()));
        for (addr, what) in [
            ("127.0.0.1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("169.254.1.1", "link-local"),
            ("0.1.2.3", "this network"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("fe80::1", "link-local"),
        ] {
            let err = d.check(ip(addr), &[]).unwrap_err().to_string();
            assert!(err.contains(what), "{addr}: {err}");
        }
    }

    #[test]
    fn the_proxys_own_addresses_are_refused() {
        let d = Destinations::default();
        let own = [ip("192.0.2.1"), ip("198.51.100.1")];
        assert_eq!(
            d.check(ip("198.51.100.1"), &own),
            Err(Refused::NotRemote {
                addr: ip("198.51.100.1"),
                what: "an address of the proxy itself"
            })
        );
        assert_eq!(d.check(ip("198.51.100.2"), &own), Ok(()));
    }

    #[test]
    fn denied_wins_over_allowed_and_allowed_limits() {
        let d = Destinations {
            allowed: vec![net("203.0.113.0/24")],
            denied: vec![net("203.0.113.128/25")],
        };
        assert_eq!(d.check(ip("203.0.113.23"), &[]), Ok(()));
        assert_eq!(
            d.check(ip("203.0.113.200"), &[]).unwrap_err().to_string(),
            "203.0.113.200 is denied by <denied_destinations> 203.0.113.128/25"
        );
        assert_eq!(
            d.check(ip("198.51.100.9"), &[]).unwrap_err().to_string(),
            "198.51.100.9 is not in <allowed_destinations>"
        );
    }
}
