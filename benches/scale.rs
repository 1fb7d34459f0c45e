//! The data plane at scale (issue 15, part 3): 100,000 live sessions in the nftables backend and
//! under the BPF fast path. See docs/benchmarks.md, "Data plane at scale", and
//! `scripts/bench-scale.sh`.
//!
//! Per backend, in a throw-away network namespace (the proxy's: a veth pair with 192.0.2.1/24
//! and 198.51.100.1/24, forwarding on, conntrack accounting on, as `fasp-proxy run` has it):
//! 1. install N sessions one by one, as N sessions starting would (rate);
//! 2. one upkeep cycle as the daemon runs it every 20 s: `refresh` and `counters` of every
//!    session (its time must stay well under the period, or the entries would expire);
//! 3. the forwarder dropped without removing anything (the daemon killed), a new one opened,
//!    prepared and reconciled with no live session: what a restart after a crash does
//!    (time);
//! 4. install N again, then remove them one by one, as N sessions ending would (rate).
//!
//! Memory: this process's resident size before and with N sessions (the forwarder's own
//! bookkeeping: what the daemon would hold for them), and the conntrack entries (`conntrack
//! -C`: the fast path reserves one flow per session).
//!
//! Run (as root): `scripts/bench-scale.sh`, or `cargo bench --bench scale` (`cargo test` runs
//! it with 1,000 sessions as a smoke test). Environment:
//! `BENCH_SESSIONS` (100000), `BENCH_BACKENDS` (`nftables,fast_path`). Every kernel change
//! happens inside the namespace, removed when the benchmark ends (also on panic).

#[path = "../tests/lab/mod.rs"]
mod lab;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use fasp_proxy::dataplane::fast_path::FastPathForwarder;
use fasp_proxy::dataplane::nftables::NftablesForwarder;
use fasp_proxy::dataplane::{Forwarder, SessionEntry};
use uuid::Uuid;

/// Internal servers the sessions go to, round robin. One server address and port and one
/// source address leave 64,512 source ports (1024-65535), so at most that many NAT'ed flows to
/// one server: the kernel's limit, with or without the fast path.
const SERVERS: usize = 8;

/// Session `i`: client addresses from 192.0.2.10 up, 60,000 source ports each; servers
/// 198.51.100.2 to .9, port 33001.
fn entry(i: usize) -> SessionEntry {
    SessionEntry {
        id: Uuid::from_u128(i as u128 + 1),
        client: Ipv4Addr::new(192, 0, 2, 10 + (i / 60_000) as u8).into(),
        client_port: Some(1024 + (i % 60_000) as u16),
        proxy_addr: Ipv4Addr::new(192, 0, 2, 1).into(),
        proxy_port: 33001,
        backend: SocketAddr::new(
            Ipv4Addr::new(198, 51, 100, 2 + (i % SERVERS) as u8).into(),
            33001,
        ),
        tcp_backend: None,
        snat: None,
        lifetime: Duration::from_secs(600),
    }
}

fn open(ns: &lab::Netns, fast_path: bool, sessions: usize) -> Box<dyn Forwarder> {
    let mut fwd = ns.run_in(|| -> Box<dyn Forwarder> {
        let nft = NftablesForwarder::open().expect("open nftables");
        if fast_path {
            let capacity = u32::try_from(sessions).expect("too many sessions");
            Box::new(FastPathForwarder::open(Box::new(nft), capacity).expect("load the fast path"))
        } else {
            Box::new(nft)
        }
    });
    fwd.prepare().expect("prepare");
    fwd
}

/// This process's resident size, KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn per_second(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` (the test command) runs it
    // with 1,000 sessions as a smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let sessions: usize = match std::env::var("BENCH_SESSIONS") {
        _ if smoke => 1_000,
        Ok(v) => v.parse().expect("BENCH_SESSIONS is a number"),
        Err(_) => 100_000,
    };
    assert!(sessions <= 60_000 * 200, "BENCH_SESSIONS too large");
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or("nftables,fast_path".into());

    println!(
        "| backend | sessions | install /s | upkeep cycle (refresh + counters) | restart: prepare + reconcile | remove /s | RSS before → with them | conntrack entries |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for backend in backends.split(',') {
        let fast_path = match backend.trim() {
            "nftables" => false,
            "fast_path" => true,
            other => panic!("unknown backend {other:?} (nftables, fast_path)"),
        };
        let lab = lab::Lab::new();
        let ns = lab.add_netns("proxy");
        let peer = lab.add_netns("peer");
        lab.veth(&ns, "eth-client", &peer, "eth0");
        lab.veth(&ns, "eth-server", &peer, "eth1");
        ns.add_addr("eth-client", "192.0.2.1/24");
        ns.add_addr("eth-server", "198.51.100.1/24");
        ns.enable_forwarding(false);
        ns.sysctl("net.netfilter.nf_conntrack_acct", "1");
        let entries: Vec<SessionEntry> = (0..sessions).map(entry).collect();

        let rss_before = rss_kib();
        let mut fwd = open(&ns, fast_path, sessions);
        let started = Instant::now();
        for e in &entries {
            fwd.install(e).expect("install");
        }
        let install = started.elapsed();
        let rss_with = rss_kib();
        let conntrack = ns.exec(&["conntrack", "-C"]).trim().to_string();
        eprintln!("{backend}: installed {sessions} in {install:?}");

        let started = Instant::now();
        let mut counted = 0;
        for e in &entries {
            fwd.refresh(e).expect("refresh");
            if fwd.counters(e).expect("counters").is_some() {
                counted += 1;
            }
        }
        let upkeep = started.elapsed();
        eprintln!("{backend}: upkeep cycle {upkeep:?} ({counted} with counters)");
        if fast_path {
            assert_eq!(counted, sessions, "sessions missing from the fast path");
        }

        // The daemon killed: nothing removed; the next life opens, prepares, reconciles.
        drop(fwd);
        let started = Instant::now();
        let mut fwd = open(&ns, fast_path, sessions);
        let report = fwd.reconcile(&[]).expect("reconcile");
        let restart = started.elapsed();
        assert_eq!(report.removed.len(), sessions, "reconcile removed too few");
        eprintln!("{backend}: restart reconciled {sessions} in {restart:?}");

        for e in &entries {
            fwd.install(e).expect("install");
        }
        let started = Instant::now();
        for e in &entries {
            fwd.remove(e).expect("remove");
        }
        let remove = started.elapsed();
        assert!(fwd.list().expect("list").is_empty());
        fwd.purge().expect("purge");
        println!(
            "| {backend} | {sessions} | {:.0} ({:.1} s) | {:.2} s ({:.1} µs a session) | {:.2} s | {:.0} ({:.1} s) | {} → {} KiB ({:.2} KiB a session) | {conntrack} |",
            per_second(sessions, install),
            install.as_secs_f64(),
            upkeep.as_secs_f64(),
            upkeep.as_secs_f64() * 1e6 / sessions as f64,
            restart.as_secs_f64(),
            per_second(sessions, remove),
            remove.as_secs_f64(),
            rss_before,
            rss_with,
            rss_with.saturating_sub(rss_before) as f64 / sessions as f64,
        );
    }
}
