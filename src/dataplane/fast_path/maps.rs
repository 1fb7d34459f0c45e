//! The `#[repr(C)]` mirrors of `bpf/fast_path.c`'s map keys and values, their conversion from
//! and to plain addresses, and the check that the object speaks the same layout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use object::{Object, ObjectSection};

/// `FP_MAGIC` of `bpf/fast_path.c` ("fasp").
pub const MAGIC: u32 = 0x6661_7370;
/// `FP_VERSION` of `bpf/fast_path.c`: the layout of the structs below.
pub const VERSION: u32 = 1;
/// The object section holding the layout record (`struct fp_layout`).
pub const LAYOUT_SECTION: &str = ".rodata.layout";
/// `AF_INET`, the family byte of an IPv4 key.
pub const FAMILY_V4: u8 = libc::AF_INET as u8;
/// `AF_INET6`, the family byte of an IPv6 key.
pub const FAMILY_V6: u8 = libc::AF_INET6 as u8;

/// `struct fp_forward_key`: client address . client UDP port . proxy UDP port, as the
/// nftables `sessions` map's key. Ports in network order.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ForwardKey {
    /// Client address; IPv4 in the first 4 bytes, the rest zero.
    pub addr: [u8; 16],
    /// Client UDP source port, big-endian.
    pub sport: [u8; 2],
    /// Proxy UDP port, big-endian.
    pub dport: [u8; 2],
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Zero.
    pub pad: [u8; 3],
}

/// `struct fp_reply_key`: a reply's backend address . SNAT address . backend port . SNAT port.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReplyKey {
    /// Backend address (the reply's source).
    pub saddr: [u8; 16],
    /// SNAT address (the reply's destination).
    pub daddr: [u8; 16],
    /// Backend port, big-endian.
    pub sport: [u8; 2],
    /// SNAT port, big-endian.
    pub dport: [u8; 2],
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Zero.
    pub pad: [u8; 3],
}

/// `struct fp_rewrite`: what a matching packet becomes, and the packets and bytes counted.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rewrite {
    /// The destination address a packet must have to match.
    pub match_daddr: [u8; 16],
    /// New source address.
    pub saddr: [u8; 16],
    /// New destination address.
    pub daddr: [u8; 16],
    /// New source port, big-endian.
    pub sport: [u8; 2],
    /// New destination port, big-endian.
    pub dport: [u8; 2],
    /// Zero.
    pub pad: u32,
    /// Packets forwarded.
    pub packets: u64,
    /// Their L3 bytes.
    pub bytes: u64,
}

/// The sizes `bpf/fast_path.c` asserts (`_Static_assert`) and records in its layout.
pub const FORWARD_KEY_SIZE: usize = 24;
/// See [`FORWARD_KEY_SIZE`].
pub const REPLY_KEY_SIZE: usize = 40;
/// See [`FORWARD_KEY_SIZE`].
pub const REWRITE_SIZE: usize = 72;

const _: () = assert!(std::mem::size_of::<ForwardKey>() == FORWARD_KEY_SIZE);
const _: () = assert!(std::mem::size_of::<ReplyKey>() == REPLY_KEY_SIZE);
const _: () = assert!(std::mem::size_of::<Rewrite>() == REWRITE_SIZE);

// SAFETY: plain `#[repr(C)]` structs of integers and byte arrays, with explicit padding fields,
// so every bit pattern is valid and there are no implicit padding bytes.
unsafe impl aya::Pod for ForwardKey {}
// SAFETY: as above.
unsafe impl aya::Pod for ReplyKey {}
// SAFETY: as above (the u64 counters start at offset 56, 8-aligned, no implicit padding).
unsafe impl aya::Pod for Rewrite {}

/// `struct fp_layout` as read from the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// [`MAGIC`] in a good object.
    pub magic: u32,
    /// The layout version.
    pub version: u32,
    /// `sizeof(struct fp_forward_key)`.
    pub forward_key_size: u32,
    /// `sizeof(struct fp_reply_key)`.
    pub reply_key_size: u32,
    /// `sizeof(struct fp_rewrite)`.
    pub rewrite_size: u32,
}

impl Layout {
    /// The layout this crate's structs have.
    pub const EXPECTED: Layout = Layout {
        magic: MAGIC,
        version: VERSION,
        forward_key_size: FORWARD_KEY_SIZE as u32,
        reply_key_size: REPLY_KEY_SIZE as u32,
        rewrite_size: REWRITE_SIZE as u32,
    };

    /// Reads the layout record from a BPF object (ELF, little-endian as the BPF target of
    /// this machine); a message saying what is wrong otherwise.
    pub fn of_object(elf: &[u8]) -> Result<Layout, String> {
        let file =
            object::File::parse(elf).map_err(|e| format!("not a readable ELF object: {e}"))?;
        let section = file
            .section_by_name(LAYOUT_SECTION)
            .ok_or_else(|| format!("no {LAYOUT_SECTION} section"))?;
        let data = section
            .data()
            .map_err(|e| format!("reading {LAYOUT_SECTION}: {e}"))?;
        let word = |i: usize| -> Result<u32, String> {
            data.get(i * 4..i * 4 + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| {
                    format!(
                        "{LAYOUT_SECTION} is {} bytes, too short for the layout record",
                        data.len()
                    )
                })
        };
        Ok(Layout {
            magic: word(0)?,
            version: word(1)?,
            forward_key_size: word(2)?,
            reply_key_size: word(3)?,
            rewrite_size: word(4)?,
        })
    }
}

/// An address as the maps hold it: 16 bytes (IPv4 in the first 4) and the family byte.
pub fn addr_bytes(ip: IpAddr) -> ([u8; 16], u8) {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (b, FAMILY_V4)
        }
        IpAddr::V6(v6) => (v6.octets(), FAMILY_V6),
    }
}

/// The address back from its map form; `None` for an unknown family byte.
pub fn ip_from(bytes: [u8; 16], family: u8) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        FAMILY_V6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
        _ => None,
    }
}

/// The key of a client's packets to the proxy port.
pub fn forward_key(client: SocketAddr, proxy_port: u16) -> ForwardKey {
    let (addr, family) = addr_bytes(client.ip());
    ForwardKey {
        addr,
        sport: client.port().to_be_bytes(),
        dport: proxy_port.to_be_bytes(),
        family,
        pad: [0; 3],
    }
}

/// The key of a backend's replies to the SNAT address and port.
pub fn reply_key(backend: SocketAddr, snat: SocketAddr) -> ReplyKey {
    let (saddr, family) = addr_bytes(backend.ip());
    let (daddr, _) = addr_bytes(snat.ip());
    ReplyKey {
        saddr,
        daddr,
        sport: backend.port().to_be_bytes(),
        dport: snat.port().to_be_bytes(),
        family,
        pad: [0; 3],
    }
}

/// A rewrite for packets sent to `match_daddr`: from `from`, to `to`; counters zero.
pub fn rewrite(match_daddr: IpAddr, from: SocketAddr, to: SocketAddr) -> Rewrite {
    Rewrite {
        match_daddr: addr_bytes(match_daddr).0,
        saddr: addr_bytes(from.ip()).0,
        daddr: addr_bytes(to.ip()).0,
        sport: from.port().to_be_bytes(),
        dport: to.port().to_be_bytes(),
        pad: 0,
        packets: 0,
        bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The object build.rs made, as the loader embeds it.
    const OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fast_path.o"));

    #[test]
    fn the_object_has_the_layout_of_these_structs() {
        assert_eq!(Layout::of_object(OBJECT), Ok(Layout::EXPECTED));
        assert_eq!(std::mem::align_of::<Rewrite>(), 8);
        // Field offsets the C side has (offsetof in struct fp_rewrite).
        assert_eq!(std::mem::offset_of!(Rewrite, sport), 48);
        assert_eq!(std::mem::offset_of!(Rewrite, packets), 56);
        assert_eq!(std::mem::offset_of!(ReplyKey, sport), 32);
        assert_eq!(std::mem::offset_of!(ForwardKey, family), 20);
    }

    #[test]
    fn a_foreign_object_is_refused_with_the_reason() {
        assert!(Layout::of_object(b"not elf")
            .unwrap_err()
            .contains("not a readable ELF object"));
    }

    #[test]
    fn keys_hold_addresses_and_ports_in_network_order() {
        let k = forward_key("192.0.2.2:40000".parse().unwrap(), 33001);
        assert_eq!(&k.addr[..4], &[192, 0, 2, 2]);
        assert!(k.addr[4..].iter().all(|&b| b == 0));
        assert_eq!(k.sport, [0x9c, 0x40]);
        assert_eq!(k.dport, [0x80, 0xe9]);
        assert_eq!(k.family, 2);
        let r = reply_key(
            "[2001:db8:2::2]:33001".parse().unwrap(),
            "[2001:db8:2::1]:40000".parse().unwrap(),
        );
        assert_eq!(r.family, 10);
        assert_eq!(
            ip_from(r.saddr, r.family),
            Some("2001:db8:2::2".parse().unwrap())
        );
        assert_eq!(
            ip_from(r.daddr, r.family),
            Some("2001:db8:2::1".parse().unwrap())
        );
        assert_eq!(ip_from(r.daddr, 7), None);
        let (b, f) = addr_bytes("198.51.100.1".parse().unwrap());
        assert_eq!(ip_from(b, f), Some("198.51.100.1".parse().unwrap()));
    }
}
