//! The BPF fast path (`bpf/fast_path.c`, `fasp_proxy::dataplane::fast_path`) on the real
//! kernel, in a lab of namespaces client — proxy — server. No nftables entry is installed: a
//! datagram that reaches the server from the SNAT address went through the fast path.
//!
//! The proxy's egress ports have transmit checksumming off, so a checksum the fast path got
//! wrong is finished in software at the proxy and refused by the receiving kernel; raw
//! datagrams with full (and deliberately wrong) checksums show the receiver really checks.

mod lab;

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use fasp_proxy::dataplane::fast_path::{FastPath, FastPathError, Flow, FlowKey, PROGRAM};
use lab::{Netns, Topology};
use nix::libc;

const PROXY_PORT: u16 = 33001;
const OTHER_PORT: u16 = 33002;
const CLIENT_PORT: u16 = 40000;
/// The backend's port and the SNAT port differ from the client's and the proxy's, so the
/// ports are really rewritten (and their checksum updates really checked).
const BACKEND_PORT: u16 = 33011;
const SNAT_PORT: u16 = 41000;
/// How long a datagram that should arrive may take.
const ARRIVES: Duration = Duration::from_secs(3);
/// How long to wait for one that must not arrive.
const ABSENT: Duration = Duration::from_millis(400);
/// The TTL (hop limit) every test datagram is sent with.
const TTL: i32 = 9;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    V4,
    V6,
}

/// The lab's addresses for one family.
struct Addrs {
    client: IpAddr,
    proxy: IpAddr,
    snat: IpAddr,
    server: IpAddr,
}

impl Family {
    fn addrs(self) -> Addrs {
        match self {
            Family::V4 => Addrs {
                client: lab::CLIENT_V4.into(),
                proxy: lab::PROXY_CLIENT_V4.into(),
                snat: lab::PROXY_SERVER_V4.into(),
                server: lab::server_v4(0).into(),
            },
            Family::V6 => Addrs {
                client: lab::CLIENT_V6.into(),
                proxy: lab::PROXY_CLIENT_V6.into(),
                snat: lab::PROXY_SERVER_V6.into(),
                server: lab::server_v6(0).into(),
            },
        }
    }

    /// Bytes of IP and UDP header before the payload (what the counters add to it).
    fn headers(self) -> u64 {
        match self {
            Family::V4 => 20 + 8,
            Family::V6 => 40 + 8,
        }
    }
}

fn flow(f: Family) -> Flow {
    let a = f.addrs();
    Flow {
        client: SocketAddr::new(a.client, CLIENT_PORT),
        proxy: SocketAddr::new(a.proxy, PROXY_PORT),
        snat: SocketAddr::new(a.snat, SNAT_PORT),
        backend: SocketAddr::new(a.server, BACKEND_PORT),
    }
}

// --- sockets ------------------------------------------------------------------------------

fn setsockopt_int(sock: &impl AsRawFd, level: i32, name: i32, value: i32) {
    // SAFETY: a valid fd and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {name}): {}",
        io::Error::last_os_error()
    );
}

/// A UDP socket bound in `ns` that sends with TTL [`TTL`] and reports the TTL it receives.
fn socket(ns: &Netns, addr: SocketAddr, timeout: Duration) -> UdpSocket {
    let sock = lab::udp_socket(ns, addr, timeout);
    if addr.is_ipv4() {
        setsockopt_int(&sock, libc::IPPROTO_IP, libc::IP_TTL, TTL);
        setsockopt_int(&sock, libc::IPPROTO_IP, libc::IP_RECVTTL, 1);
    } else {
        setsockopt_int(&sock, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, TTL);
        setsockopt_int(&sock, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1);
    }
    sock
}

/// One datagram received: payload, source, TTL or hop limit.
#[derive(Debug)]
struct Received {
    payload: Vec<u8>,
    from: SocketAddr,
    ttl: i32,
}

/// Waits up to `timeout` for one datagram on `sock` (recvmsg, for the TTL); `None` if none came.
fn recv(sock: &UdpSocket, timeout: Duration) -> Option<Received> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut control = [0u64; 16];
    // SAFETY: zeroed sockaddr_storage and msghdr are valid values.
    let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control);
    // SAFETY: msg points at buffers that live through the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            return None;
        }
        panic!("recvmsg: {e}");
    }
    buf.truncate(n as usize);
    let mut ttl = -1;
    // SAFETY: walking the control messages the kernel wrote into msg's buffer.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
            if (level == libc::IPPROTO_IP && kind == libc::IP_TTL)
                || (level == libc::IPPROTO_IPV6 && kind == libc::IPV6_HOPLIMIT)
            {
                ttl = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>());
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let from = match i32::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read((&name as *const libc::sockaddr_storage).cast()) };
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&name as *const libc::sockaddr_storage).cast()) };
            SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                0,
                0,
            ))
        }
        other => panic!("recvmsg: address family {other}"),
    };
    Some(Received {
        payload: buf,
        from,
        ttl,
    })
}

fn send(sock: &UdpSocket, payload: &[u8], to: SocketAddr) {
    let n = sock
        .send_to(payload, to)
        .unwrap_or_else(|e| panic!("send to {to}: {e}"));
    assert_eq!(n, payload.len());
}

/// What a raw datagram's UDP checksum is.
#[derive(Clone, Copy, Debug)]
enum Checksum {
    Right,
    Corrupt,
    /// 0: "no checksum", IPv4 only.
    Zero,
}

fn ones_complement_sum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in chunks {
        for pair in chunk.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The UDP datagram (header and payload) from `src` to `dst` with the checksum asked for.
fn udp_datagram(src: SocketAddr, dst: SocketAddr, payload: &[u8], checksum: Checksum) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut udp = Vec::new();
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let pseudo: Vec<u8> = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => [
            &s.octets()[..],
            &d.octets()[..],
            &[0, 17],
            &len.to_be_bytes()[..],
        ]
        .concat(),
        (IpAddr::V6(s), IpAddr::V6(d)) => [
            &s.octets()[..],
            &d.octets()[..],
            &u32::from(len).to_be_bytes()[..],
            &[0, 0, 0, 17],
        ]
        .concat(),
        _ => panic!("mixed families"),
    };
    let right = match ones_complement_sum(&[&pseudo, &udp]) {
        0 => 0xffff,
        c => c,
    };
    let value = match checksum {
        Checksum::Right => right,
        Checksum::Corrupt => right ^ 0x0101,
        Checksum::Zero => 0,
    };
    udp[6..8].copy_from_slice(&value.to_be_bytes());
    udp
}

/// Sends a UDP datagram built by hand through a raw socket in `ns` (the kernel adds only the
/// IP header, and leaves the UDP checksum as given).
fn send_raw(ns: &Netns, src: SocketAddr, dst: SocketAddr, payload: &[u8], checksum: Checksum) {
    use nix::sys::socket::{
        bind, sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
        SockaddrIn, SockaddrIn6,
    };
    let datagram = udp_datagram(src, dst, payload, checksum);
    ns.run_in(|| {
        let family = if src.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd = socket(family, SockType::Raw, SockFlag::empty(), SockProtocol::Udp)
            .expect("raw UDP socket");
        let sent = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(s, 0))).unwrap();
                sendto(
                    fd.as_raw_fd(),
                    &datagram,
                    &SockaddrIn::from(SocketAddrV4::new(d, 0)),
                    MsgFlags::empty(),
                )
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                bind(
                    fd.as_raw_fd(),
                    &SockaddrIn6::from(SocketAddrV6::new(s, 0, 0, 0)),
                )
                .unwrap();
                sendto(
                    fd.as_raw_fd(),
                    &datagram,
                    &SockaddrIn6::from(SocketAddrV6::new(d, 0, 0, 0)),
                    MsgFlags::empty(),
                )
            }
            _ => panic!("mixed families"),
        };
        assert_eq!(sent.expect("raw sendto"), datagram.len());
    });
}

/// The receiving kernel's count of UDP datagrams dropped for a bad checksum, in `ns`.
fn udp_checksum_errors(ns: &Netns, f: Family) -> u64 {
    match f {
        Family::V4 => {
            let snmp = ns.exec(&["cat", "/proc/net/snmp"]);
            let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
            let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
            let i = names
                .split_whitespace()
                .position(|n| n == "InCsumErrors")
                .unwrap();
            values.split_whitespace().nth(i).unwrap().parse().unwrap()
        }
        Family::V6 => {
            let snmp = ns.exec(&["cat", "/proc/net/snmp6"]);
            let line = snmp
                .lines()
                .find(|l| l.starts_with("Udp6InCsumErrors"))
                .unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        }
    }
}

// --- what is attached ---------------------------------------------------------------------

/// Names of the TCX programs at ingress of `iface` in `ns`.
fn tcx_programs(ns: &Netns, iface: &str) -> Vec<String> {
    ns.run_in(|| FastPath::tcx_ingress_programs(iface))
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|(_, name)| name)
        .collect()
}

/// `tc filter show dev IFACE ingress` in `ns`: the netlink tc filters (none, ever).
fn tc_filters(ns: &Netns, iface: &str) -> String {
    lab::text(
        &ns.try_exec(&["tc", "filter", "show", "dev", iface, "ingress"])
            .stdout,
    )
}

// --- the scenario -------------------------------------------------------------------------

fn forwards_both_directions_counts_and_stops(f: Family) {
    let topo = Topology::new(1);
    let (proxy, client, server) = (&topo.proxy, &topo.client, topo.server());
    let a = f.addrs();
    let flow = flow(f);
    // Partial checksums are finished in software on the way out of the proxy.
    for port in [lab::PROXY_CLIENT_IF, "eth-srv0"] {
        proxy.exec(&["ethtool", "-K", port, "tx", "off"]);
    }

    let client_sock = socket(client, flow.client, ARRIVES);
    let server_sock = socket(server, flow.backend, ARRIVES);
    // Catch what is delivered locally to the proxy: with the entry, nothing must be.
    let proxy_sock = socket(proxy, flow.proxy, ABSENT);
    let other_sock = socket(proxy, SocketAddr::new(a.proxy, OTHER_PORT), ARRIVES);

    let (mut fp, load, attach) = proxy.run_in(|| {
        let started = Instant::now();
        let mut fp = FastPath::load(1024).unwrap_or_else(|e| panic!("{e}"));
        let load = started.elapsed();
        let started = Instant::now();
        fp.attach(lab::PROXY_CLIENT_IF).unwrap();
        fp.attach(lab::PROXY_SERVER_IF).unwrap();
        let attach = started.elapsed() / 2;
        fp.attach(lab::PROXY_CLIENT_IF).unwrap(); // again: nothing changes
        (fp, load, attach)
    });
    eprintln!(
        "{f:?}: load {load:?} (loader's own {:?}), attach {attach:?} per interface, {:?} \
         instructions verified",
        fp.load_time(),
        fp.verified_instructions()
    );
    for iface in [lab::PROXY_CLIENT_IF, lab::PROXY_SERVER_IF] {
        assert_eq!(tcx_programs(proxy, iface), [PROGRAM], "{iface}");
        assert_eq!(tc_filters(proxy, iface), "", "no netlink filter on {iface}");
    }

    fp.insert(&flow).unwrap();
    let listed = fp.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].flow, flow);
    assert_eq!(listed[0].counters, Default::default());

    // Client → proxy:33001 arrives at the server from the SNAT address, TTL - 1.
    let payload = lab::content(1200, 1);
    send(&client_sock, &payload, flow.proxy);
    let got = recv(&server_sock, ARRIVES).expect("the forwarded datagram at the server");
    assert_eq!(got.from, flow.snat);
    assert!(got.payload == payload, "payload changed on the way");
    assert_eq!(got.ttl, TTL - 1, "TTL decremented once");
    assert!(
        recv(&proxy_sock, ABSENT).is_none(),
        "nothing delivered locally"
    );

    // The reply arrives at the client from proxy:33001, TTL - 1.
    let reply = lab::content(700, 2);
    send(&server_sock, &reply, flow.snat);
    let got = recv(&client_sock, ARRIVES).expect("the reply at the client");
    assert_eq!(got.from, flow.proxy);
    assert!(got.payload == reply, "reply payload changed on the way");
    assert_eq!(got.ttl, TTL - 1);

    let counters = fp.counters(&flow.key()).unwrap().unwrap();
    assert_eq!(counters.forward.packets, 1);
    assert_eq!(counters.forward.bytes, f.headers() + 1200);
    assert_eq!(counters.reply.packets, 1);
    assert_eq!(counters.reply.bytes, f.headers() + 700);

    // Full checksums (raw datagrams): the right one is rewritten correctly and arrives; a
    // corrupt one is forwarded too but the server's kernel drops it, so checksums are checked.
    let errors_before = udp_checksum_errors(server, f);
    send_raw(
        client,
        flow.client,
        flow.proxy,
        b"corrupt",
        Checksum::Corrupt,
    );
    send_raw(client, flow.client, flow.proxy, b"right", Checksum::Right);
    let got = recv(&server_sock, ARRIVES).expect("the raw datagram at the server");
    assert_eq!(
        got.payload, b"right",
        "the corrupt one was dropped, the right one kept"
    );
    assert_eq!(got.from, flow.snat);
    let mut forwarded = 3;
    if f == Family::V4 {
        // "No checksum" stays 0 through the rewrite (else the server would drop it).
        send_raw(client, flow.client, flow.proxy, b"zero", Checksum::Zero);
        let got = recv(&server_sock, ARRIVES).expect("the checksum-less datagram");
        assert_eq!(got.payload, b"zero");
        forwarded += 1;
    }
    assert_eq!(udp_checksum_errors(server, f), errors_before + 1);
    assert!(recv(&server_sock, ABSENT).is_none());
    let counters = fp.counters(&flow.key()).unwrap().unwrap();
    assert_eq!(counters.forward.packets, forwarded);

    // A datagram the maps do not hold passes unchanged to the proxy's own socket.
    send(
        &client_sock,
        b"not ours",
        SocketAddr::new(a.proxy, OTHER_PORT),
    );
    let got = recv(&other_sock, ARRIVES).expect("the fall-through datagram in the proxy");
    assert_eq!(
        (got.payload.as_slice(), got.from, got.ttl),
        (&b"not ours"[..], flow.client, TTL)
    );
    assert!(recv(&server_sock, ABSENT).is_none());

    // The flow's own datagrams fall through (to the proxy's socket, unforwarded, uncounted)
    // when the kernel must answer them: TTL 1 (time exceeded), and too big for the backend's
    // link (fragmentation needed / packet too big).
    let ttl_option = match f {
        Family::V4 => (libc::IPPROTO_IP, libc::IP_TTL),
        Family::V6 => (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS),
    };
    setsockopt_int(&client_sock, ttl_option.0, ttl_option.1, 1);
    send(&client_sock, b"ttl 1", flow.proxy);
    let got = recv(&proxy_sock, ARRIVES).expect("the TTL 1 datagram in the proxy");
    assert_eq!((got.payload.as_slice(), got.ttl), (&b"ttl 1"[..], 1));
    setsockopt_int(&client_sock, ttl_option.0, ttl_option.1, TTL);
    proxy.ip(&["link", "set", lab::PROXY_SERVER_IF, "mtu", "1280"]);
    send(&client_sock, &lab::content(1300, 3), flow.proxy);
    let got = recv(&proxy_sock, ARRIVES).expect("the too-big datagram in the proxy");
    assert_eq!(got.payload.len(), 1300);
    proxy.ip(&["link", "set", lab::PROXY_SERVER_IF, "mtu", "1500"]);
    assert!(recv(&server_sock, ABSENT).is_none());
    let counters = fp.counters(&flow.key()).unwrap().unwrap();
    assert_eq!(
        counters.forward.packets, forwarded,
        "fall-throughs are not counted"
    );

    // After remove, the flow's next datagram is no longer forwarded: it falls through and is
    // delivered locally (forwarding is on, but no nft entry rewrites it).
    assert_eq!(fp.remove(&flow.key()).unwrap(), Some(flow));
    assert_eq!(
        fp.remove(&flow.key()).unwrap(),
        None,
        "removing twice is fine"
    );
    assert!(fp.list().unwrap().is_empty());
    assert_eq!(fp.counters(&flow.key()).unwrap(), None);
    send(&client_sock, b"after remove", flow.proxy);
    let got = recv(&proxy_sock, ARRIVES).expect("the datagram delivered to the proxy");
    assert_eq!(
        (got.payload.as_slice(), got.from),
        (&b"after remove"[..], flow.client)
    );
    assert!(
        recv(&server_sock, ABSENT).is_none(),
        "not forwarded after remove"
    );
    send(&server_sock, b"late reply", flow.snat);
    assert!(recv(&client_sock, ABSENT).is_none(), "replies stop too");

    // Dropping the FastPath leaves nothing attached.
    drop(fp);
    for iface in [lab::PROXY_CLIENT_IF, lab::PROXY_SERVER_IF] {
        assert_eq!(tcx_programs(proxy, iface), Vec::<String>::new(), "{iface}");
        assert_eq!(tc_filters(proxy, iface), "");
    }
}

#[test]
fn ipv4_forwards_both_directions_counts_and_stops() {
    forwards_both_directions_counts_and_stops(Family::V4);
}

#[test]
fn ipv6_forwards_both_directions_counts_and_stops() {
    forwards_both_directions_counts_and_stops(Family::V6);
}

#[test]
fn taken_keys_invalid_flows_and_a_full_map_are_refused() {
    let mut fp = FastPath::load(2).unwrap_or_else(|e| panic!("{e}"));
    let one = flow(Family::V4);
    fp.insert(&one).unwrap();

    // The same forward key: refused, the first flow unchanged.
    let mut same_key = one;
    same_key.backend.set_port(5000);
    same_key.snat.set_port(5000);
    let e = fp.insert(&same_key).unwrap_err();
    assert!(
        matches!(
            e,
            FastPathError::KeyTaken {
                map: "fp_forward",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("192.0.2.2:40000 -> proxy port 33001"),
        "{e}"
    );

    // The same reply tuple (backend . SNAT address and port) from another client: refused,
    // and nothing of it left behind.
    let mut same_reply = one;
    same_reply.client.set_port(40001);
    let e = fp.insert(&same_reply).unwrap_err();
    assert!(
        matches!(
            e,
            FastPathError::KeyTaken {
                map: "fp_reply",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(fp.counters(&same_reply.key()).unwrap(), None);
    assert_eq!(fp.list().unwrap().len(), 1);

    let mut mixed = one;
    mixed.backend = "[2001:db8:2::2]:33001".parse().unwrap();
    assert!(matches!(
        fp.insert(&mixed),
        Err(FastPathError::InvalidFlow { .. })
    ));

    // max_entries 2: a third flow does not fit, and says so.
    let mut two = flow(Family::V6);
    fp.insert(&two).unwrap();
    two.client.set_port(40002);
    two.snat.set_port(41002);
    let e = fp.insert(&two).unwrap_err().to_string();
    assert!(e.contains("the map is full (2 entries)"), "{e}");
    assert_eq!(fp.list().unwrap().len(), 2);

    let key = FlowKey {
        client: one.client.ip(),
        client_port: one.client.port(),
        proxy_port: one.proxy.port(),
    };
    assert_eq!(fp.remove(&key).unwrap(), Some(one));
    assert!(FastPath::load(0).is_err());
}

#[test]
fn attaching_to_a_missing_interface_names_it() {
    let lab = lab::Lab::new();
    let ns = lab.add_netns("proxy");
    let mut fp = FastPath::load(16).unwrap_or_else(|e| panic!("{e}"));
    let e = ns.run_in(|| fp.attach("nosuch0")).unwrap_err().to_string();
    assert!(e.starts_with("interface nosuch0: "), "{e}");
}

/// Environment variable telling [`load_as_nobody`] it was run by
/// [`loading_without_privilege_says_what_it_needs`].
const AS_NOBODY: &str = "FASP_PROXY_FAST_PATH_AS_NOBODY";

#[test]
fn loading_without_privilege_says_what_it_needs() {
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "load_as_nobody", "--ignored", "--nocapture"])
        .env(AS_NOBODY, "1")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = lab::text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", lab::text(&out.stderr));
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("load: "))
        .unwrap_or_else(|| panic!("no result: {stdout}"));
    assert!(
        result.starts_with("loading the BPF fast path: permission denied (")
            && result.ends_with("it needs root, or CAP_BPF and CAP_NET_ADMIN"),
        "{result}"
    );
}

/// The half of [`loading_without_privilege_says_what_it_needs`] that runs as nobody.
#[test]
#[ignore = "run by loading_without_privilege_says_what_it_needs as nobody"]
fn load_as_nobody() {
    std::env::var(AS_NOBODY).expect("run by loading_without_privilege_says_what_it_needs");
    match FastPath::load(16) {
        Ok(_) => println!("load: loaded"),
        Err(e) => println!("load: {e}"),
    }
}

/// Environment variable naming the interface [`child_holds_the_fast_path`] attaches to.
const CHILD_IFACE: &str = "FASP_PROXY_FAST_PATH_CHILD_IFACE";

#[test]
fn sigkill_of_the_attaching_process_leaves_nothing_attached() {
    let lab = lab::Lab::new();
    let ns = lab.add_netns("proxy");
    ns.ip(&["link", "add", "fp0", "type", "veth", "peer", "name", "fp1"]);
    ns.link_up("fp0");
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap();
    let child = ns.spawn(&[
        "env",
        &format!("{CHILD_IFACE}=fp0"),
        exe,
        "--exact",
        "child_holds_the_fast_path",
        "--ignored",
        "--nocapture",
    ]);
    assert!(
        child.wait_for_log("fast path attached to fp0", Duration::from_secs(30)),
        "the child did not attach:\n{}",
        child.log()
    );
    assert_eq!(tcx_programs(&ns, "fp0"), [PROGRAM]);
    let pid = child.pid();
    child.kill(); // SIGKILL, then reaped
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    let gone = lab::wait_until(Duration::from_secs(5), || {
        tcx_programs(&ns, "fp0").is_empty()
    });
    assert!(
        gone,
        "still attached after kill -9: {:?}",
        tcx_programs(&ns, "fp0")
    );
    assert_eq!(tc_filters(&ns, "fp0"), "");
}

/// The half of [`sigkill_of_the_attaching_process_leaves_nothing_attached`] that is killed:
/// loads and attaches the fast path in its own process, then waits.
#[test]
#[ignore = "run by sigkill_of_the_attaching_process_leaves_nothing_attached"]
fn child_holds_the_fast_path() {
    let iface = std::env::var(CHILD_IFACE)
        .expect("run by sigkill_of_the_attaching_process_leaves_nothing_attached");
    let mut fp = FastPath::load(16).unwrap_or_else(|e| panic!("{e}"));
    fp.attach(&iface).unwrap_or_else(|e| panic!("{e}"));
    println!("fast path attached to {iface}");
    std::thread::sleep(Duration::from_secs(60));
    panic!("not killed within 60 s");
}
