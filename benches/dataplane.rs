//! Data plane costs, measured in the namespace lab (needs root):
//!
//! - `install+remove/<backend>/<live>`: installing and removing one session while `live - 1`
//!   other sessions are installed, for the nftables and the iptables backend;
//! - `new_flows_100/<backend>/<live>`: 100 UDP datagrams client → proxy → server, each the first
//!   packet of a new flow (NAT is looked up on a flow's first packet only; later packets follow
//!   conntrack), through an any-port session installed after `live - 1` others. With nftables
//!   the lookup is a map lookup and must not grow with the session count; with iptables it is a
//!   walk down the chain.
//!
//! Run: `cargo bench --bench dataplane` (as root). Every kernel change happens inside the lab's
//! network namespaces, which are removed when the benchmark ends.

#[path = "../tests/lab/mod.rs"]
mod lab;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use fasp_proxy::dataplane::iptables::IptablesForwarder;
use fasp_proxy::dataplane::nftables::NftablesForwarder;
use fasp_proxy::dataplane::{Forwarder, SessionEntry};
use uuid::Uuid;

const LIVE: [usize; 3] = [1, 1_000, 10_000];

fn entry(i: usize) -> SessionEntry {
    // Sessions differ by client address and port: 192.0.2.2 plus ports from 1024 up, then
    // further client addresses of the documentation range (never routed: key space only).
    let host = 2 + (i / 60_000) as u8;
    SessionEntry {
        id: Uuid::new_v4(),
        client: std::net::Ipv4Addr::new(192, 0, 2, host).into(),
        client_port: Some(1024 + (i % 60_000) as u16),
        proxy_addr: lab::PROXY_CLIENT_V4.into(),
        proxy_port: 33001,
        backend: SocketAddr::new(lab::server_v4(0).into(), 33001),
        tcp_backend: None,
        snat: None,
        lifetime: Duration::from_secs(600),
    }
}

/// The backend under test; iptables can be filled in bulk (one process per rule would take
/// minutes for 10,000 sessions).
enum Backend {
    Nft(NftablesForwarder),
    Ipt(IptablesForwarder),
}

impl Backend {
    fn open(topo: &lab::Topology, name: &str) -> Backend {
        let mut b = match name {
            "nftables" => Backend::Nft(
                topo.proxy
                    .run_in(NftablesForwarder::open)
                    .expect("open nftables"),
            ),
            _ => Backend::Ipt(
                topo.proxy
                    .run_in(|| IptablesForwarder::open(Path::new("/usr/sbin/iptables")))
                    .expect("open iptables"),
            ),
        };
        b.fwd().prepare().expect("prepare");
        b
    }

    fn fwd(&mut self) -> &mut dyn Forwarder {
        match self {
            Backend::Nft(f) => f,
            Backend::Ipt(f) => f,
        }
    }

    /// Installs background sessions 1.. up to `live - 1` (session 0 is the measured one).
    fn fill(&mut self, installed: &mut usize, live: usize) {
        let new: Vec<SessionEntry> = (*installed + 1..live).map(entry).collect();
        *installed = (*installed).max(live.saturating_sub(1));
        match self {
            Backend::Nft(f) => {
                for e in &new {
                    f.install(e).expect("background install");
                }
            }
            Backend::Ipt(f) => f.install_many(&new).expect("background install"),
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .configure_from_args();
    let topo = lab::Topology::new(1);
    for backend in ["nftables", "iptables"] {
        let mut backend_under_test = Backend::open(&topo, backend);
        let measured = SessionEntry {
            client_port: None,
            proxy_port: 33002,
            backend: SocketAddr::new(lab::server_v4(0).into(), 33002),
            tcp_backend: None,
            ..entry(0)
        };
        let server = lab::udp_socket(topo.server(), measured.backend, Duration::from_secs(5));
        let senders: Vec<std::net::UdpSocket> = (0..100)
            .map(|i| {
                lab::udp_socket(
                    &topo.client,
                    SocketAddr::new(measured.client, 62000 + i),
                    Duration::from_secs(5),
                )
            })
            .collect();
        let mut installed = 0;
        for live in LIVE {
            backend_under_test.fill(&mut installed, live);
            let fwd = backend_under_test.fwd();
            let single = entry(0);
            c.benchmark_group("install+remove").bench_function(
                BenchmarkId::new(backend, live),
                |b| {
                    b.iter(|| {
                        fwd.install(&single).expect("install");
                        fwd.remove(&single).expect("remove");
                    })
                },
            );
            fwd.install(&measured).expect("install");
            let target = SocketAddr::new(measured.proxy_addr, measured.proxy_port);
            let mut buf = [0u8; 2048];
            c.benchmark_group("new_flows_100").bench_function(
                BenchmarkId::new(backend, live),
                |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            // Forget the flows of the last round so every datagram is a first packet.
                            topo.proxy.exec(&["conntrack", "-F"]);
                            let start = Instant::now();
                            for s in &senders {
                                s.send_to(&[0u8; 64], target).expect("send");
                            }
                            for _ in 0..senders.len() {
                                lab::udp_recv_from(&server, &mut buf).expect("datagram lost");
                            }
                            total += start.elapsed();
                        }
                        total
                    })
                },
            );
            fwd.remove(&measured).expect("remove");
        }
        if let Err(e) = backend_under_test.fwd().purge() {
            eprintln!("{backend}: purge: {e}");
        }
    }
    c.final_summary();
}
