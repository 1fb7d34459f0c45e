//! Proof that the namespace lab works: kernel DNAT in the proxy namespace forwards client UDP
//! to a server and conntrack reverses the translation for the reply; and the lab leaves nothing
//! behind, also when a test panics.

mod lab;

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use lab::{Lab, Netns, Topology};

const PORT: u16 = 33001;
const TIMEOUT: Duration = Duration::from_secs(5);

const DNAT_V4: &str = "table ip labtest {
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        udp dport 33001 dnat to 198.51.100.2:33001
    }
}
";

const DNAT_V6: &str = "table ip6 labtest6 {
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        udp dport 33001 dnat to [2001:db8:2::2]:33001
    }
}
";

/// Binds a UDP socket to `addr` inside `ns`, with read and write timeouts.
fn udp_in(ns: &Netns, addr: SocketAddr, timeout: Duration) -> UdpSocket {
    let sock = ns
        .run_in(|| UdpSocket::bind(addr))
        .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.name()));
    sock.set_read_timeout(Some(timeout)).unwrap();
    sock.set_write_timeout(Some(timeout)).unwrap();
    sock
}

fn recv(sock: &UdpSocket, what: &str) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = lab::udp_recv_from(sock, &mut buf)
        .unwrap_or_else(|e| panic!("{what}: nothing received: {e}"));
    (buf[..n].to_vec(), from)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Client sends to the proxy's address; DNAT must deliver to the server, and the server's reply
/// must come back to the client appearing to come from the proxy address.
fn dnat_round_trip(topo: &Topology, proxy_addr: IpAddr, client_addr: IpAddr, server_addr: IpAddr) {
    let server = udp_in(topo.server(), SocketAddr::new(server_addr, PORT), TIMEOUT);
    let client = udp_in(&topo.client, SocketAddr::new(client_addr, 0), TIMEOUT);
    let client_local = client.local_addr().unwrap();
    let proxy_target = SocketAddr::new(proxy_addr, PORT);

    let request = b"fasp-lab request \x00\x01\x02\xff payload";
    client.send_to(request, proxy_target).unwrap();

    let (got, from) = recv(&server, "server waiting for the DNAT'd request");
    assert_eq!(got, request, "payload changed on the way");
    assert_eq!(
        from, client_local,
        "server must see the client's real address (DNAT only, no SNAT)"
    );

    let reply = b"fasp-lab reply \xfe\xfd";
    server.send_to(reply, from).unwrap();
    let (got, from) = recv(&client, "client waiting for the reply");
    assert_eq!(got, reply, "reply payload changed on the way");
    assert_eq!(
        from, proxy_target,
        "reply must appear to come from the proxy address (conntrack reverses the DNAT)"
    );
}

#[test]
fn udp_dnat_through_proxy_v4() {
    let topo = Topology::new(1);
    let proxy_addr = IpAddr::V4(lab::PROXY_CLIENT_V4);
    let server_addr = IpAddr::V4(lab::server_v4(0));

    // Negative control, before any rule: nothing reaches the server. A separate client socket
    // is used because the NAT decision is taken once per conntrack flow, on its first packet.
    {
        let server = udp_in(
            topo.server(),
            SocketAddr::new(server_addr, PORT),
            Duration::from_millis(300),
        );
        let client = udp_in(&topo.client, (lab::CLIENT_V4, 0).into(), TIMEOUT);
        client
            .send_to(b"before the rule", (proxy_addr, PORT))
            .unwrap();
        let mut buf = [0u8; 64];
        match lab::udp_recv_from(&server, &mut buf) {
            Err(e) if is_timeout(&e) => {}
            other => panic!("without a DNAT rule the server must receive nothing, got {other:?}"),
        }
    }

    topo.proxy.exec_with_stdin(&["nft", "-f", "-"], DNAT_V4);
    let listed = topo.proxy.exec(&["nft", "list", "table", "ip", "labtest"]);
    assert!(
        listed.contains("dnat to 198.51.100.2:33001"),
        "rule not installed: {listed}"
    );

    dnat_round_trip(&topo, proxy_addr, IpAddr::V4(lab::CLIENT_V4), server_addr);

    // The proxy's conntrack table (inside its namespace) holds the translated flow.
    let flows = topo.proxy.exec(&[
        "conntrack",
        "-L",
        "-p",
        "udp",
        "--orig-dst",
        "192.0.2.1",
        "--orig-port-dst",
        "33001",
    ]);
    assert!(
        flows.contains("src=198.51.100.2 dst=192.0.2.2 sport=33001"),
        "expected a DNAT'd flow in the proxy's conntrack table, got:\n{flows}"
    );
}

#[test]
fn udp_dnat_through_proxy_v6() {
    let topo = Topology::new(1);
    topo.proxy.exec_with_stdin(&["nft", "-f", "-"], DNAT_V6);
    dnat_round_trip(
        &topo,
        IpAddr::V6(lab::PROXY_CLIENT_V6),
        IpAddr::V6(lab::CLIENT_V6),
        IpAddr::V6(lab::server_v6(0)),
    );
}

#[test]
fn routed_reachability_to_every_server() {
    let topo = Topology::new(3);
    assert_eq!(topo.proxy.sysctl_get("net.ipv4.ip_forward"), "1");
    for (i, ns) in topo.servers.iter().enumerate() {
        for (client_addr, server_addr) in [
            (IpAddr::V4(lab::CLIENT_V4), IpAddr::V4(lab::server_v4(i))),
            (IpAddr::V6(lab::CLIENT_V6), IpAddr::V6(lab::server_v6(i))),
        ] {
            let server = udp_in(ns, SocketAddr::new(server_addr, PORT), TIMEOUT);
            let client = udp_in(&topo.client, SocketAddr::new(client_addr, 0), TIMEOUT);
            let msg = format!("hello server {i} at {server_addr}");
            client.send_to(msg.as_bytes(), (server_addr, PORT)).unwrap();
            let (got, from) = recv(&server, &msg);
            assert_eq!(got, msg.as_bytes());
            assert_eq!(from, client.local_addr().unwrap());
            server.send_to(b"ack", from).unwrap();
            let (got, from) = recv(&client, "ack");
            assert_eq!(got, b"ack");
            assert_eq!(from, SocketAddr::new(server_addr, PORT));
        }
    }
}

fn assert_gone(names: &[String]) {
    assert!(!names.is_empty());
    let listed = lab::list_netns();
    for name in names {
        assert!(
            !listed.contains(name),
            "namespace {name} still exists: {listed:?}"
        );
        assert!(!std::path::Path::new("/run/netns").join(name).exists());
    }
}

#[test]
fn lab_cleanup_on_drop() {
    let names;
    // Declared outside the block, so this handle outlives the lab: the lab must kill it.
    let mut proc;
    let daemon: u32;
    {
        let topo = Topology::new(2);
        names = topo.lab.netns_names();
        assert_eq!(names.len(), 4);
        let listed = lab::list_netns();
        for name in &names {
            assert!(listed.contains(name), "{name} missing from {listed:?}");
            assert_eq!(lab::owner_pid(name), Some(std::process::id()));
        }
        // A daemon that left our process group (setsid) must be killed too.
        proc = topo.server().spawn(&[
            "sh",
            "-c",
            "setsid -f sleep 602; echo forked; exec sleep 601",
        ]);
        assert!(proc.wait_for_log("forked", TIMEOUT), "log: {}", proc.log());
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", topo.server().name()])
            .output()
            .unwrap();
        let in_ns = String::from_utf8_lossy(&out.stdout);
        let pids: Vec<u32> = in_ns
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(
            pids.len(),
            2,
            "expected the spawned process and its daemon: {pids:?}"
        );
        assert!(pids.contains(&proc.pid()), "{pids:?}");
        daemon = *pids
            .iter()
            .find(|&&p| p != proc.pid())
            .expect("the setsid daemon runs in the namespace");
    }
    assert_gone(&names);
    assert!(
        lab::wait_until(TIMEOUT, || proc.try_wait().is_some()),
        "spawned process survived the lab"
    );
    assert!(
        lab::wait_until(TIMEOUT, || !process_running(daemon)),
        "daemon {daemon} survived the lab"
    );
}

/// True if `pid` exists and is not a zombie.
fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next()),
            Some(Some('Z' | 'X'))
        ),
    }
}

#[test]
fn lab_cleanup_on_panic() {
    let mut names = Vec::new();
    let mut pid = 0;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let topo = Topology::new(1);
        names = topo.lab.netns_names();
        let proc = topo.proxy.spawn(&["sleep", "600"]);
        pid = proc.pid();
        panic!("deliberate panic inside a lab test");
    }));
    assert!(result.is_err(), "the closure must have panicked");
    assert_eq!(names.len(), 3);
    assert_gone(&names);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} survived the panic"
    );
}

#[test]
fn spawned_process_killed_on_handle_drop() {
    let lab = Lab::new();
    let ns = lab.add_netns("spawn");
    let mut proc = ns.spawn(&["sh", "-c", "echo started; exec sleep 600"]);
    assert!(proc.wait_for_log("started", TIMEOUT), "log: {}", proc.log());
    assert!(proc.try_wait().is_none(), "exited early");
    // It really runs inside the namespace.
    let identified = ns.exec(&["sh", "-c", "ip netns identify $$"]);
    assert_eq!(identified.trim(), ns.name());
    let pid = proc.pid();
    drop(proc);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn stale_namespaces_are_swept() {
    // Names not of our exact shape are never touched.
    assert_eq!(lab::owner_pid("fplx-1-0"), None);
    assert_eq!(lab::owner_pid("fpl-12a-0"), None);
    assert_eq!(lab::owner_pid("fpl-12-0-client"), Some(12));

    // Fake a namespace left by a crashed run: our name shape with a PID that is certainly
    // dead (a child we started and reaped). A lab created concurrently by another test may
    // sweep it while `ip netns add` is still setting it up, so retry until it was created.
    let mut stale = None;
    for _ in 0..20 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        assert!(!std::path::Path::new(&format!("/proc/{dead}")).exists());
        let name = format!("{}-{dead}-0-stale", lab::NETNS_PREFIX);
        let out = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        if out.status.success() {
            stale = Some(name);
            break;
        }
    }
    let stale = stale.expect("could not create the fake stale namespace");

    let lab = Lab::new();
    let present = lab::list_netns().contains(&stale);
    if present {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &stale])
            .status();
    }
    assert!(!present, "stale namespace {stale} was not swept");
    drop(lab);
}

#[test]
fn failing_command_reports_command_status_and_stderr() {
    let lab = Lab::new();
    let ns = lab.add_netns("fail");
    let err = catch_unwind(AssertUnwindSafe(|| {
        ns.exec(&["ip", "link", "show", "nosuchdev0"]);
    }))
    .expect_err("must fail");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("ip link show nosuchdev0"), "{msg}");
    assert!(msg.contains("exit status"), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
}

#[test]
fn only_documentation_addresses_are_accepted() {
    assert!(lab::is_documentation_addr("203.0.113.9".parse().unwrap()));
    assert!(lab::is_documentation_addr(
        "2001:db8:ffff::1".parse().unwrap()
    ));
    assert!(!lab::is_documentation_addr("10.0.0.1".parse().unwrap()));
    assert!(!lab::is_documentation_addr("2001:db9::1".parse().unwrap()));
    for bad in ["10.0.0.1/24", "192.0.2.1/16", "2001:db8::1/16", "192.0.2.1"] {
        assert!(
            catch_unwind(|| lab::check_documentation_cidr(bad)).is_err(),
            "{bad} accepted"
        );
    }
    assert!(catch_unwind(|| lab::check_ifname("this-name-is-too-long")).is_err());
}
