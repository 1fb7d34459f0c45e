//! The IP family of a session, shared by both backends: the nftables backend keeps one table
//! per family (`ip`, `ip6`), the iptables backend one tool per family (`iptables`, `ip6tables`).

use std::net::IpAddr;

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4: nft `table ip …`, `iptables`.
    V4,
    /// IPv6: nft `table ip6 …`, `ip6tables`.
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The nft family keyword: `ip` or `ip6`.
    pub fn nft_keyword(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    /// Length of an address in bytes: 4 or 16.
    pub fn addr_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }

    /// Prefix length of a single host: 32 or 128.
    pub fn host_len(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_of_addresses_and_their_names() {
        let v4 = Family::of("192.0.2.2".parse().unwrap());
        let v6 = Family::of("2001:db8::2".parse().unwrap());
        assert_eq!((v4, v6), (Family::V4, Family::V6));
        assert_eq!((v4.nft_keyword(), v6.nft_keyword()), ("ip", "ip6"));
        assert_eq!((v4.addr_len(), v6.addr_len()), (4, 16));
        assert_eq!((v4.host_len(), v6.host_len()), (32, 128));
    }
}
