//! Loopback goodput of the data engine against `iperf3 -u` at the same UDP payload size, both
//! measured in the same run: a 256 MiB file, client → server, with and without encryption, both
//! sides in this process (UDP over 127.0.0.1, control over a Unix socket pair).
//!
//! For every datagram size (default 1400 and 8192 bytes of file data per datagram) it prints:
//! iperf3's received UDP rate with `-l` = the engine's whole UDP payload (header + data + tag),
//! then for clear and AES-256-GCM the engine's goodput (median of `TRANSFER_BENCH_RUNS` runs),
//! the ratio engine/iperf3 and CPU seconds per GiB of the sending and receiving threads
//! (getrusage RUSAGE_THREAD; the receiver's writing thread is not in "receiver", only in the
//! "whole process" figure, RUSAGE_SELF, which also counts both sides' kernel work done in
//! their own context), and the share of the file sent twice. Then criterion times the transfers (skipped with
//! `TRANSFER_BENCH_REPORT_ONLY=1`).
//!
//! `cargo bench --bench transfer`; environment: `TRANSFER_BENCH_DATAGRAMS` (comma-separated
//! payload sizes, default `1400,8192`), `TRANSFER_BENCH_MIB` (file size, default 256),
//! `TRANSFER_BENCH_RUNS` (default 3), `TRANSFER_BENCH_RATE` (the sender's `-l` in bits/s,
//! default 0: no limit; to see the CPU cost per GiB at a paced rate), `TRANSFER_BENCH_IPERF_SECS` (default 2) and
//! `TRANSFER_BENCH_IPERF_RUNS` (default 3; the best run counts; 0 skips iperf3) and
//! `TRANSFER_BENCH_DIR` (where the source and received files go; default the system temp
//! directory. iperf3 touches no file system: with large files on a disk, writeback throttling
//! rather than the engine sets the pace, so `/dev/shm` compares the engine alone).

use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fasp_proxy::protocol::datagram::{HEADER_LEN, TAG_LEN};
use fasp_proxy::protocol::{Overwrite, ResumeLevel};
use fasp_proxy::transfer::{self, Control, Options, Role};

fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User + system CPU of the whole process (sender, receiver and the receiver's writing thread).
fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn datagram_sizes() -> Vec<usize> {
    let list = std::env::var("TRANSFER_BENCH_DATAGRAMS").unwrap_or_else(|_| "1400,8192".into());
    list.split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn opts(role: Role, key: Option<[u8; 32]>, datagram_size: usize) -> Options {
    Options {
        role,
        token: 77,
        key,
        target_rate: env_usize("TRANSFER_BENCH_RATE", 0) as u64,
        min_rate: 0,
        datagram_size,
        resume: ResumeLevel::None,
        overwrite: Overwrite::Always,
        recursive: false,
        root: transfer::Root::unconfined(),
    }
}

/// One transfer's figures.
#[derive(Clone, Copy)]
struct Run {
    elapsed: Duration,
    send_cpu: Duration,
    recv_cpu: Duration,
    /// The whole process (both sides and the receiver's writing thread).
    total_cpu: Duration,
    /// File bytes the sender sent again.
    resent: u64,
}

/// One transfer.
fn run(src: &Path, dst: &Path, key: Option<[u8; 32]>, ds: usize) -> Run {
    let server_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_addr = server_sock.local_addr().unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let dst = dst.to_path_buf();
    let server = thread::spawn(move || {
        let peer = transfer::udp_accept(&server_sock, 77, Duration::from_secs(5)).unwrap();
        let cpu0 = thread_cpu();
        let ctl = Control {
            reader: Box::new(b.try_clone().unwrap()),
            writer: Box::new(b),
        };
        let r = transfer::receive(
            ctl,
            server_sock,
            peer,
            &dst,
            &opts(Role::Server, key, ds),
            &mut |_| {},
        )
        .unwrap();
        assert!(r.all_intact());
        thread_cpu() - cpu0
    });
    transfer::udp_connect(&client_sock, server_addr, 77, Duration::from_secs(5)).unwrap();
    let start = Instant::now();
    let total0 = process_cpu();
    let cpu0 = thread_cpu();
    let ctl = Control {
        reader: Box::new(a.try_clone().unwrap()),
        writer: Box::new(a),
    };
    let sources: Vec<PathBuf> = vec![src.to_path_buf()];
    let r = transfer::send(
        ctl,
        client_sock,
        server_addr,
        &sources,
        &opts(Role::Client, key, ds),
        &mut |_| {},
    )
    .unwrap();
    assert!(r.all_intact());
    let resent = r.link.retransmitted_bytes;
    let send_cpu = thread_cpu() - cpu0;
    let recv_cpu = server.join().unwrap();
    Run {
        elapsed: start.elapsed(),
        total_cpu: process_cpu() - total0,
        send_cpu,
        recv_cpu,
        resent,
    }
}

/// The number after `"key":` in `json` following `after`, if any.
fn json_number(json: &str, after: &str, key: &str) -> Option<f64> {
    let rest = &json[json.find(after)?..];
    let rest = &rest[rest.find(&format!("\"{key}\""))? + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-' || c == '+'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The best of `runs` [`iperf3_once`] runs: iperf3's unpaced rate varies a lot from run to run
/// (when its receiver falls behind, most datagrams are lost), so the best is its loss-free rate.
fn iperf3_udp(payload: usize, secs: usize, runs: usize) -> Option<f64> {
    (0..runs)
        .filter_map(|_| iperf3_once(payload, secs))
        .max_by(f64::total_cmp)
}

/// `iperf3 -u -b 0 -l payload` over loopback for `secs`: the rate the receiver got, bits/s
/// (`None` when iperf3 is not installed or fails).
fn iperf3_once(payload: usize, secs: usize) -> Option<f64> {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
        probe.local_addr().ok()?.port()
    };
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    thread::sleep(Duration::from_millis(300));
    let out = Command::new("iperf3")
        .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-u", "-b", "0"])
        .args(["-l", &payload.to_string(), "-t", &secs.to_string(), "-J"])
        .output();
    // Only the child we started, by its own handle.
    let _ = server.kill();
    let _ = server.wait();
    let json = String::from_utf8_lossy(&out.ok()?.stdout).into_owned();
    // `end.sum_received` is what the receiving side got (older iperf3: `end.sum`, the
    // sending rate, with the receiver's loss count).
    if let Some(bps) = json_number(&json, "\"sum_received\"", "bits_per_second") {
        return Some(bps);
    }
    let bps = json_number(&json, "\"end\"", "bits_per_second")?;
    let lost = json_number(&json, "\"end\"", "lost_percent").unwrap_or(0.0);
    Some(bps * (1.0 - lost / 100.0))
}

fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by_key(|r| r.elapsed);
    runs[runs.len() / 2]
}

fn bench(c: &mut Criterion) {
    // `cargo test --all-targets` runs benchmarks once as a smoke test (no `--bench` argument):
    // then a small file, one run, no iperf3, unless the environment asks otherwise.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let mib = env_usize("TRANSFER_BENCH_MIB", if smoke { 8 } else { 256 });
    let runs = env_usize("TRANSFER_BENCH_RUNS", if smoke { 1 } else { 3 }).max(1);
    let iperf_secs = env_usize("TRANSFER_BENCH_IPERF_SECS", 2).max(1);
    let iperf_runs = env_usize("TRANSFER_BENCH_IPERF_RUNS", if smoke { 0 } else { 3 });
    let report_only = std::env::var_os("TRANSFER_BENCH_REPORT_ONLY").is_some();
    let size = mib * 1024 * 1024;
    let dir = match std::env::var_os("TRANSFER_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    eprintln!("files in {}", dir.path().display());
    let src = dir.path().join("src.bin");
    let mut content = vec![0u8; size];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in content.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&src, &content).unwrap();
    drop(content);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let gib = size as f64 / (1u64 << 30) as f64;

    let mut group = c.benchmark_group("loopback");
    group.throughput(Throughput::Bytes(size as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for ds in datagram_sizes() {
        // iperf3 sends `-l` bytes of UDP payload; ours are header + data (+ tag).
        let iperf_clear = iperf3_udp(ds + HEADER_LEN, iperf_secs, iperf_runs);
        let iperf_sealed = iperf3_udp(ds + HEADER_LEN + TAG_LEN, iperf_secs, iperf_runs);
        for (name, key, iperf) in [
            ("clear", None, iperf_clear),
            ("aes256gcm", Some([9u8; 32]), iperf_sealed),
        ] {
            let r = median((0..runs).map(|_| run(&src, &out, key, ds)).collect());
            let goodput = size as f64 * 8.0 / r.elapsed.as_secs_f64();
            let versus = match iperf {
                Some(i) => format!("iperf3 -u {:.0} Mbit/s, ratio {:.2}", i / 1e6, goodput / i),
                None => "iperf3 not available or not run".into(),
            };
            eprintln!(
                "{ds} B {name}: {mib} MiB in {:.3} s = {:.0} Mbit/s goodput ({versus}); \
                 CPU per GiB: sender {:.2} s, receiver {:.2} s, whole process {:.2} s; \
                 resent {:.1} %",
                r.elapsed.as_secs_f64(),
                goodput / 1e6,
                r.send_cpu.as_secs_f64() / gib,
                r.recv_cpu.as_secs_f64() / gib,
                r.total_cpu.as_secs_f64() / gib,
                r.resent as f64 * 100.0 / size as f64
            );
            if !report_only {
                group.bench_function(format!("{name}/{ds}"), |b| {
                    b.iter(|| run(&src, &out, key, ds))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
