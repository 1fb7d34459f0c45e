//! Path CPU per delivered packet (issue 15): what the kernel spends to carry one UDP datagram
//! client → proxy → server, routed (no proxy entry) and through the proxy's data plane, side by
//! side in one run. See docs/benchmarks.md, "Data path CPU", and `scripts/bench-path.sh`.
//!
//! Lab: three throw-away namespaces on two veth pairs (MTU 1500, the veth defaults: no GRO, no
//! XDP): client `eth0` 192.0.2.2 — `eth-client` 192.0.2.1 proxy `eth-server` 198.51.100.1 —
//! `eth0` 198.51.100.2 server, forwarding on in the proxy namespace, no bridge.
//!
//! Method: a sender thread in the client namespace (pinned to CPU 0) sends UDP at a fixed rate
//! (`sendmmsg`, paced every ~250 µs) or as fast as it can; a receiver thread in the server
//! namespace (pinned to CPU 1) counts what arrives (`recvmmsg`). veth delivers a packet by
//! queueing it to the sending CPU's backlog and running that softirq when the sender's
//! `sendmsg` re-enables bottom halves, so the proxy namespace's forwarding runs in the sender's
//! context (or in `ksoftirqd` when it overflows). The path CPU of a run is the sum of the
//! sender's, the receiver's and every `ksoftirqd/N` thread's run time (`/proc/.../schedstat`,
//! nanoseconds; this kernel has no IRQ time accounting, so softirq time is charged to the
//! thread it interrupts), taken over the measured window, divided by the datagrams the receiver
//! got in that window. System-wide `/proc/stat` is not used: it is not reliable on these VMs.
//!
//! Cases, run in one process, interleaved (each round runs them in the opposite order of the
//! round before), with ratios taken within a round:
//! - `routed`: the client sends to the server's address; the proxy namespace has no nftables
//!   table at all (a plain router, no conntrack);
//! - `nft1`: the client sends to the proxy's address; one session entry in the nftables
//!   backend ([`NftablesForwarder`], the product's default) DNATs it to the server, masqueraded;
//! - `nftN`: the same, with N - 1 further sessions installed (default N = 10,000);
//! - `bpf1`, `bpfN`: the same under the BPF fast path ([`FastPathForwarder`], `<fast_path>true`).
//!
//! Loads: 1400-byte datagrams at 200, 400 and 800 Mbit/s of UDP payload; 64-byte datagrams as
//! fast as the sender can (the packets-per-second ceiling of the path: delivered pps); and new
//! flows: 64-byte datagrams at 10,000/s, each from a new client source port (1024 and up, sent
//! from a raw socket; every flow's first packet, to an any-port session on port 33002; conntrack is flushed before
//! each run), which prices conntrack's flow creation and the NAT lookup. The two `-sink` loads
//! (1400B@800M-sink, 64B@max-sink) have no receiving socket: the server namespace drops the
//! datagrams at prerouting and its interface's counter says what was delivered, which takes the
//! receiver's wake-ups (most of the spread) out of the figure.
//!
//! Run (as root): `scripts/bench-path.sh`, or `cargo bench --bench path` (`cargo test` runs it
//! once, short, as a smoke test: every case and load must work, no figures). Environment:
//! `BENCH_ROUNDS` (5), `BENCH_SECS` (3, the measured window of one run), `BENCH_SESSIONS`
//! (10000), `BENCH_LOADS` and `BENCH_CASES` (comma-separated names to keep, e.g.
//! `BENCH_LOADS=1400B@800M BENCH_CASES=routed,nft1`). Every kernel change happens inside the
//! lab's namespaces, which are removed when the benchmark ends (also on panic).

#[path = "../tests/lab/mod.rs"]
mod lab;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use fasp_proxy::dataplane::fast_path::FastPathForwarder;
use fasp_proxy::dataplane::nftables::NftablesForwarder;
use fasp_proxy::dataplane::{Forwarder, SessionEntry};
use nix::libc;
use uuid::Uuid;

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const PROXY_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PROXY_SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The measured session's client source port.
const CLIENT_PORT: u16 = 40000;
/// Proxy port and backend port of the measured session.
const DATA_PORT: u16 = 33001;
/// Proxy port and backend port of the any-port session the new-flow load goes through.
const NEW_FLOW_PORT: u16 = 33002;
/// The new-flow load's first client source port (one port per flow, upwards).
const NEW_FLOW_FIRST_PORT: u16 = 1024;
/// Datagrams per `sendmmsg`/`recvmmsg` call at most.
const BATCH: usize = 64;
/// Time a run sends before its measured window opens (neighbour resolution, the first
/// packet's NAT decision, socket buffers).
const WARM_UP: Duration = Duration::from_millis(500);

/// How the sender paces.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// This many datagrams a second.
    Rate(u64),
    /// As fast as the sender can.
    Max,
}

/// One traffic pattern.
#[derive(Debug, Clone, Copy)]
struct Load {
    name: &'static str,
    /// UDP payload bytes.
    size: usize,
    pace: Pace,
    /// Every datagram from a new source port (a new flow) instead of one flow.
    new_flows: bool,
    /// No receiving socket: the server namespace drops the datagrams at prerouting (nftables),
    /// and "delivered" is its interface's receive counter. Takes the receiver's wake-ups (most of the
    /// noise) out of the figure, leaving send, forwarding and the veth hops.
    sink: bool,
}

const fn mbit(mbit_per_s: u64, size: usize) -> Pace {
    Pace::Rate(mbit_per_s * 1_000_000 / (size as u64 * 8))
}

const LOADS: [Load; 7] = [
    Load {
        name: "1400B@200M",
        size: 1400,
        pace: mbit(200, 1400),
        new_flows: false,
        sink: false,
    },
    Load {
        name: "1400B@400M",
        size: 1400,
        pace: mbit(400, 1400),
        new_flows: false,
        sink: false,
    },
    Load {
        name: "1400B@800M",
        size: 1400,
        pace: mbit(800, 1400),
        new_flows: false,
        sink: false,
    },
    Load {
        name: "64B@max",
        size: 64,
        pace: Pace::Max,
        new_flows: false,
        sink: false,
    },
    Load {
        name: "newflow@10k",
        size: 64,
        pace: Pace::Rate(10_000),
        new_flows: true,
        sink: false,
    },
    Load {
        name: "1400B@800M-sink",
        size: 1400,
        pace: mbit(800, 1400),
        new_flows: false,
        sink: true,
    },
    Load {
        name: "64B@max-sink",
        size: 64,
        pace: Pace::Max,
        new_flows: false,
        sink: true,
    },
];

/// What the proxy namespace's data plane holds during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// No proxy table: plain routing to the server's own address.
    Routed,
    /// The nftables backend with this many sessions (the measured one included).
    Nft(usize),
    /// The nftables backend under the BPF fast path (`<fast_path>true`), this many sessions.
    Bpf(usize),
}

impl Case {
    fn name(self) -> String {
        match self {
            Case::Routed => "routed".into(),
            Case::Nft(n) => format!("nft{n}"),
            Case::Bpf(n) => format!("bpf{n}"),
        }
    }

    /// The data plane of the case and its session count; `None` when routed.
    fn dataplane(self) -> Option<(bool, usize)> {
        match self {
            Case::Routed => None,
            Case::Nft(n) => Some((false, n)),
            Case::Bpf(n) => Some((true, n)),
        }
    }
}

/// The three namespaces, and the data plane of the proxy one.
struct Bench {
    lab: lab::Lab,
    client: lab::Netns,
    proxy: lab::Netns,
    server: lab::Netns,
    /// The proxy namespace's forwarder, and whether it has the fast path.
    dataplane: Option<(bool, Box<dyn Forwarder>)>,
    /// The fast path's capacity.
    capacity: u32,
    /// Background sessions installed (besides the two measured ones).
    background: usize,
    softirq_threads: Vec<u32>,
}

fn measured_entry() -> SessionEntry {
    SessionEntry {
        id: Uuid::from_u128(1),
        client: CLIENT.into(),
        client_port: Some(CLIENT_PORT),
        proxy_addr: PROXY_CLIENT.into(),
        proxy_port: DATA_PORT,
        backend: SocketAddr::new(SERVER.into(), DATA_PORT),
        tcp_backend: None,
        snat: None,
        lifetime: Duration::from_secs(3600),
    }
}

fn new_flow_entry() -> SessionEntry {
    SessionEntry {
        id: Uuid::from_u128(2),
        client_port: None,
        proxy_port: NEW_FLOW_PORT,
        backend: SocketAddr::new(SERVER.into(), NEW_FLOW_PORT),
        ..measured_entry()
    }
}

/// Background session `i`: other client addresses of 192.0.2.0/24 (never sending: key space
/// only), ports from 1024 up.
fn background_entry(i: usize) -> SessionEntry {
    SessionEntry {
        id: Uuid::from_u128(1000 + i as u128),
        client: Ipv4Addr::new(192, 0, 2, 10 + (i / 60_000) as u8).into(),
        client_port: Some(1024 + (i % 60_000) as u16),
        ..measured_entry()
    }
}

impl Bench {
    fn new() -> Bench {
        let lab = lab::Lab::new();
        let client = lab.add_netns("client");
        let proxy = lab.add_netns("proxy");
        let server = lab.add_netns("server");
        lab.veth(&client, "eth0", &proxy, "eth-client");
        lab.veth(&proxy, "eth-server", &server, "eth0");
        client.add_addr("eth0", &format!("{CLIENT}/24"));
        proxy.add_addr("eth-client", &format!("{PROXY_CLIENT}/24"));
        proxy.add_addr("eth-server", &format!("{PROXY_SERVER}/24"));
        server.add_addr("eth0", &format!("{SERVER}/24"));
        client.add_route("default", PROXY_CLIENT.into());
        server.add_route("default", PROXY_SERVER.into());
        proxy.enable_forwarding(false);
        // The flow counters `fasp-proxy run` turns on (its session counters read them).
        proxy.sysctl("net.netfilter.nf_conntrack_acct", "1");
        Bench {
            lab,
            client,
            proxy,
            server,
            dataplane: None,
            capacity: 0,
            background: 0,
            softirq_threads: softirq_threads(),
        }
    }

    /// Brings the proxy namespace's data plane to `case`.
    fn set(&mut self, case: Case) {
        let Some((fast, n)) = case.dataplane() else {
            if let Some((_, mut fwd)) = self.dataplane.take() {
                fwd.purge().expect("purge the nftables tables");
            }
            self.background = 0;
            return;
        };
        let want = n.saturating_sub(1);
        let same_kind = self.dataplane.as_ref().is_some_and(|(f, _)| *f == fast);
        if !same_kind || self.background > want {
            // Another kind, or shrinking: purging and starting again is faster than 10,000
            // removals.
            self.set(Case::Routed);
        }
        let capacity = self.capacity;
        let fwd = match &mut self.dataplane {
            Some((_, fwd)) => fwd,
            None => {
                let mut fwd = self.proxy.run_in(|| -> Box<dyn Forwarder> {
                    let nft = NftablesForwarder::open().expect("open nftables");
                    if fast {
                        Box::new(
                            FastPathForwarder::open(Box::new(nft), capacity)
                                .expect("load the fast path"),
                        )
                    } else {
                        Box::new(nft)
                    }
                });
                fwd.prepare().expect("prepare");
                fwd.install(&measured_entry()).expect("install");
                fwd.install(&new_flow_entry()).expect("install");
                &mut self.dataplane.insert((fast, fwd)).1
            }
        };
        let started = Instant::now();
        for i in self.background..want {
            fwd.install(&background_entry(i))
                .expect("install a background session");
        }
        if want > self.background + 1000 {
            eprintln!(
                "  ({}: installed {} background sessions in {:.2} s)",
                case.name(),
                want - self.background,
                started.elapsed().as_secs_f64()
            );
        }
        self.background = want;
    }

    /// Where the client sends in `case` for `load`.
    fn target(&self, case: Case, load: &Load) -> SocketAddr {
        let port = if load.new_flows {
            NEW_FLOW_PORT
        } else {
            DATA_PORT
        };
        match case {
            Case::Routed => SocketAddr::new(SERVER.into(), port),
            Case::Nft(_) | Case::Bpf(_) => SocketAddr::new(PROXY_CLIENT.into(), port),
        }
    }

    /// One run of `load` against what the data plane holds now.
    fn run(&self, case: Case, load: &Load, warm_up: Duration, window: Duration) -> Sample {
        if load.new_flows {
            self.proxy.exec(&["conntrack", "-F"]);
        }
        let target = self.target(case, load);
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let (tid_tx, tid_rx) = mpsc::channel::<u32>();

        let port = target.port();
        let receiver = if load.sink {
            // This kernel has neither cls_matchall nor act_gact: the earliest drop is an
            // nftables filter at prerouting (no conntrack: no NAT or ct expression there).
            self.server.exec_with_stdin(
                &["nft", "-f", "-"],
                "table ip sink {\n chain pre {\n  type filter hook prerouting priority raw;\n  \
                 udp dport { 33001, 33002 } drop\n }\n}\n",
            );
            // A thread that only lives in the server namespace: /proc/…/task/TID/net/dev is
            // that namespace's interface table.
            let (stop, anchor_tx) = (stop.clone(), tid_tx.clone());
            let handle = spawn_in(&self.server, 1, move || {
                anchor_tx.send(gettid()).expect("report tid");
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let anchor = tid_rx.recv().expect("anchor tid");
            Receiver::Sink { handle, anchor }
        } else {
            let (stop, received, tid_tx) = (stop.clone(), received.clone(), tid_tx.clone());
            Receiver::Socket(spawn_in(&self.server, 1, move || {
                let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V4(SERVER), port))
                    .expect("bind the receiver");
                set_buffer(&sock, libc::SO_RCVBUFFORCE, 16 << 20);
                sock.set_read_timeout(Some(Duration::from_millis(50)))
                    .expect("SO_RCVTIMEO");
                tid_tx.send(gettid()).expect("report tid");
                receive(&sock, &stop, &received);
            }))
        };
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let stop_sender = Arc::new(AtomicBool::new(false));
        let sender = {
            let (stop, sent, load) = (stop_sender.clone(), sent.clone(), *load);
            spawn_in(&self.client, 0, move || {
                tid_tx.send(gettid()).expect("report tid");
                go_rx.recv().expect("go");
                send(&load, target, &stop, &sent);
            })
        };
        let threads = match receiver {
            Receiver::Socket(_) => 2,
            Receiver::Sink { .. } => 1,
        };
        let tids: Vec<u32> = (0..threads)
            .map(|_| tid_rx.recv().expect("thread tid"))
            .collect();
        let delivered = |r: &Receiver| match r {
            Receiver::Socket(_) => received.load(Ordering::Relaxed),
            Receiver::Sink { anchor, .. } => rx_packets(*anchor, "eth0"),
        };
        let at_start = delivered(&receiver);
        go_tx.send(()).expect("start the sender");
        std::thread::sleep(warm_up);
        let before = self.snapshot(&tids, delivered(&receiver));
        std::thread::sleep(window);
        let after = self.snapshot(&tids, delivered(&receiver));
        stop_sender.store(true, Ordering::Relaxed);
        sender.join().expect("sender thread");
        // What is still on its way arrives within a few milliseconds.
        std::thread::sleep(Duration::from_millis(200));
        let received_in_run = delivered(&receiver) - at_start;
        stop.store(true, Ordering::Relaxed);
        match receiver {
            Receiver::Socket(handle) => handle.join().expect("receiver thread"),
            Receiver::Sink { handle, .. } => {
                handle.join().expect("anchor thread");
                self.server.exec(&["nft", "delete", "table", "ip", "sink"]);
            }
        }
        Sample {
            packets: after.received - before.received,
            cpu_ns: after.cpu_ns - before.cpu_ns,
            secs: (after.at - before.at).as_secs_f64(),
            sent_in_run: sent.load(Ordering::Relaxed),
            received_in_run,
        }
    }

    fn snapshot(&self, tids: &[u32], received: u64) -> Snapshot {
        let pid = std::process::id();
        let mut cpu_ns = 0;
        for tid in tids {
            cpu_ns += run_time_ns(&format!("/proc/{pid}/task/{tid}/schedstat"));
        }
        for pid in &self.softirq_threads {
            cpu_ns += run_time_ns(&format!("/proc/{pid}/schedstat"));
        }
        Snapshot {
            received,
            cpu_ns,
            at: Instant::now(),
        }
    }
}

/// What counts the delivered datagrams of a run.
enum Receiver {
    /// A socket on a thread (whose CPU counts).
    Socket(std::thread::JoinHandle<()>),
    /// The server interface's receive counter, read through an idle thread in its namespace.
    Sink {
        handle: std::thread::JoinHandle<()>,
        anchor: u32,
    },
}

/// The received-packets counter of `iface` in the network namespace of thread `tid` of this
/// process (`/proc/PID/task/TID/net/dev`).
fn rx_packets(tid: u32, iface: &str) -> u64 {
    let path = format!("/proc/{}/task/{tid}/net/dev", std::process::id());
    let table = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    table
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{iface}:")))
        .and_then(|fields| fields.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{path}: no {iface} line"))
}

struct Snapshot {
    received: u64,
    cpu_ns: u64,
    at: Instant,
}

/// One measured window.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Datagrams the receiver got.
    packets: u64,
    /// Path CPU (sender + receiver + ksoftirqd threads).
    cpu_ns: u64,
    secs: f64,
    /// Datagrams sent in the whole run (warm-up included).
    sent_in_run: u64,
    /// Datagrams received in the whole run.
    received_in_run: u64,
}

impl Sample {
    fn ns_per_packet(&self) -> f64 {
        self.cpu_ns as f64 / self.packets.max(1) as f64
    }
    fn pps(&self) -> f64 {
        self.packets as f64 / self.secs
    }
    fn loss(&self) -> f64 {
        // A sink's interface also counts the ARP exchange: never below zero.
        (1.0 - self.received_in_run as f64 / self.sent_in_run.max(1) as f64).max(0.0)
    }
}

/// Sends `load` until `stop`, counting datagrams the kernel accepted in `sent`: from one
/// socket connected to `target`, or, for new flows, from a raw socket writing each datagram's
/// IPv4 and UDP headers itself, every one from the next source port.
fn send(load: &Load, target: SocketAddr, stop: &AtomicBool, sent: &AtomicU64) {
    let payload = vec![0x5au8; load.size];
    let sock = if load.new_flows {
        None
    } else {
        let sock = UdpSocket::bind(SocketAddr::new(CLIENT.into(), CLIENT_PORT)).expect("bind");
        sock.connect(target).expect("connect");
        set_buffer(&sock, libc::SO_SNDBUFFORCE, 4 << 20);
        Some(sock)
    };
    let mut flows = NewFlows::open(target, load.size);
    let start = Instant::now();
    let mut done: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = match load.pace {
            Pace::Rate(pps) => (start.elapsed().as_secs_f64() * pps as f64) as u64,
            Pace::Max => done + BATCH as u64,
        };
        let n = due.saturating_sub(done).min(BATCH as u64) as usize;
        if n == 0 {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        match &sock {
            Some(sock) => done += send_batch(sock, &payload, n),
            None => match flows.send(n) {
                Some(ok) => done += ok,
                None => break, // out of source ports: the window is over by now
            },
        }
        sent.store(done, Ordering::Relaxed);
    }
}

/// A raw IPv4 socket (`IPPROTO_RAW`, the headers written here) sending each datagram from the
/// next client source port: every one the first packet of a new flow.
struct NewFlows {
    fd: std::os::fd::OwnedFd,
    target: libc::sockaddr_in,
    packet: Vec<u8>,
    next_port: u32,
}

impl NewFlows {
    fn open(target: SocketAddr, size: usize) -> NewFlows {
        // SAFETY: plain socket(2) call; the fd is owned right after.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(raw >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let IpAddr::V4(dst) = target.ip() else {
            panic!("new flows are IPv4")
        };
        let mut packet = vec![0u8; 28 + size];
        packet[0] = 0x45; // IPv4, 20-byte header
        let total = packet.len() as u16;
        packet[2..4].copy_from_slice(&total.to_be_bytes()); // the kernel fills it in anyway
        packet[8] = 64; // TTL
        packet[9] = libc::IPPROTO_UDP as u8;
        packet[12..16].copy_from_slice(&CLIENT.octets());
        packet[16..20].copy_from_slice(&dst.octets());
        packet[22..24].copy_from_slice(&target.port().to_be_bytes());
        packet[24..26].copy_from_slice(&(8 + size as u16).to_be_bytes());
        // UDP checksum 0: none (IPv4); the IP header checksum is filled in by the kernel.
        for b in &mut packet[28..] {
            *b = 0x5a;
        }
        let target = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        NewFlows {
            fd,
            target,
            packet,
            next_port: u32::from(NEW_FLOW_FIRST_PORT),
        }
    }

    /// Sends `n` datagrams, each from a new source port; `None` once the ports are used up.
    fn send(&mut self, n: usize) -> Option<u64> {
        let mut ok = 0;
        for _ in 0..n {
            let port = u16::try_from(self.next_port).ok()?;
            self.next_port += 1;
            self.packet[20..22].copy_from_slice(&port.to_be_bytes());
            // SAFETY: sendto with a live buffer and a sockaddr_in of the right length.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    self.packet.as_ptr() as *const libc::c_void,
                    self.packet.len(),
                    0,
                    &self.target as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if rc > 0 {
                ok += 1;
            }
        }
        Some(ok)
    }
}

/// `sendmmsg` of `n` copies of `payload` on a connected socket; how many were sent.
fn send_batch(sock: &UdpSocket, payload: &[u8], n: usize) -> u64 {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: zeroed mmsghdr is valid (null name, no control data); each points at `iov`,
    // which outlives the call and is only read by the kernel.
    let mut msgs: Vec<libc::mmsghdr> = (0..n)
        .map(|_| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: `msgs` holds `n` initialised headers for the duration of the call.
    let rc = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
    rc.max(0) as u64
}

/// Receives until `stop`, adding datagrams to `received`.
fn receive(sock: &UdpSocket, stop: &AtomicBool, received: &AtomicU64) {
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdr is valid; each points at its own iovec, alive during the calls.
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut total = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `msgs` and the buffers they point to are valid for the call.
        let rc = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if rc > 0 {
            total += rc as u64;
            received.store(total, Ordering::Relaxed);
        }
    }
}

/// Runs `f` on a new thread inside `ns`, pinned to `cpu`.
fn spawn_in(
    ns: &lab::Netns,
    cpu: usize,
    f: impl FnOnce() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let path = format!("/run/netns/{}", ns.name());
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    std::thread::spawn(move || {
        // SAFETY: setns(2) on a valid fd; it only affects this fresh thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).expect("cpu index");
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin the thread");
        f()
    })
}

fn gettid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}

fn set_buffer(sock: &UdpSocket, option: libc::c_int, bytes: libc::c_int) {
    // SAFETY: setsockopt with a pointer to a live c_int of the right size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            &bytes as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

/// Nanoseconds a thread has run: the first field of its `schedstat`.
fn run_time_ns(path: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{path}: unexpected {text:?}"))
}

/// PIDs of the `ksoftirqd/N` kernel threads.
fn softirq_threads() -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            if comm.starts_with("ksoftirqd/") {
                pids.push(pid);
            }
        }
    }
    assert!(!pids.is_empty(), "no ksoftirqd threads found in /proc");
    pids
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn env_filter(name: &str) -> Option<Vec<String>> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    // `cargo bench` passes `--bench`. Without it (`cargo test --all-targets`, the test command)
    // one short round with 100 sessions checks that every case and load works: no figures.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rounds = if smoke {
        1
    } else {
        env_usize("BENCH_ROUNDS", 5).max(1)
    };
    let window = if smoke {
        Duration::from_millis(200)
    } else {
        Duration::from_secs_f64(env_usize("BENCH_SECS", 3).max(1) as f64)
    };
    let warm_up = if smoke {
        Duration::from_millis(100)
    } else {
        WARM_UP
    };
    let sessions = if smoke {
        100
    } else {
        env_usize("BENCH_SESSIONS", 10_000).max(2)
    };
    let load_filter = env_filter("BENCH_LOADS");
    let case_filter = env_filter("BENCH_CASES");

    let loads: Vec<Load> = LOADS
        .iter()
        .filter(|l| {
            load_filter
                .as_ref()
                .is_none_or(|f| f.iter().any(|n| n == l.name))
        })
        .copied()
        .collect();
    let cases: Vec<Case> = [
        Case::Routed,
        Case::Nft(1),
        Case::Nft(sessions),
        Case::Bpf(1),
        Case::Bpf(sessions),
    ]
    .into_iter()
    .filter(|c| *c == Case::Routed || case_filter.as_ref().is_none_or(|f| f.contains(&c.name())))
    .collect();
    let mut bench = Bench::new();
    bench.capacity = u32::try_from(sessions + 16).expect("BENCH_SESSIONS too large");
    eprintln!(
        "path CPU per delivered packet: {} rounds x {} cases x {} loads, {} s windows; \
         ksoftirqd threads {:?}",
        rounds,
        cases.len(),
        loads.len(),
        window.as_secs(),
        bench.softirq_threads
    );
    // samples[load][case] = one Sample per round
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); cases.len()]; loads.len()];
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..cases.len()).collect()
        } else {
            (0..cases.len()).rev().collect()
        };
        for &ci in &order {
            let case = cases[ci];
            bench.set(case);
            for (li, load) in loads.iter().enumerate() {
                let s = bench.run(case, load, warm_up, window);
                eprintln!(
                    "round {} {:>8} {:>12}: {:>7.0} ns/pkt {:>9.0} pps loss {:>5.2}%",
                    round + 1,
                    case.name(),
                    load.name,
                    s.ns_per_packet(),
                    s.pps(),
                    100.0 * s.loss()
                );
                samples[li][ci].push(s);
            }
        }
    }
    bench.set(Case::Routed);
    drop(bench.lab);

    println!();
    println!(
        "| load | case | CPU/pkt µs (median) | ÷ routed min / median / max | delivered pps (median) | loss (median) |"
    );
    println!("|---|---|---|---|---|---|");
    for (li, load) in loads.iter().enumerate() {
        let routed = &samples[li][0];
        for (ci, case) in cases.iter().enumerate() {
            let runs = &samples[li][ci];
            let mut ratios: Vec<f64> = runs
                .iter()
                .zip(routed)
                .map(|(s, r)| s.ns_per_packet() / r.ns_per_packet())
                .collect();
            let mut ns: Vec<f64> = runs.iter().map(Sample::ns_per_packet).collect();
            let mut pps: Vec<f64> = runs.iter().map(Sample::pps).collect();
            let mut loss: Vec<f64> = runs.iter().map(Sample::loss).collect();
            let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let max = ratios.iter().copied().fold(0.0, f64::max);
            println!(
                "| {} | {} | {:.2} | {:.3} / {:.3} / {:.3} | {:.0} | {:.2}% |",
                load.name,
                case.name(),
                median(&mut ns) / 1000.0,
                min,
                median(&mut ratios),
                max,
                median(&mut pps),
                100.0 * median(&mut loss)
            );
        }
    }
}
