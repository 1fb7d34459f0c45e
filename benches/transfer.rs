//! Loopback goodput of the data engine: a 256 MiB file, client → server, with and without
//! encryption, both sides in this process (UDP over 127.0.0.1, control over a Unix socket pair).
//! Besides criterion's timing it prints goodput and CPU seconds per GiB of each side
//! (getrusage RUSAGE_THREAD of the sending and receiving threads).
//!
//! `cargo bench --bench transfer` (env `TRANSFER_BENCH_DATAGRAM` sets the payload size,
//! default 1400; `TRANSFER_BENCH_MIB` the file size, default 256).

use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fasp_proxy::protocol::{Overwrite, ResumeLevel};
use fasp_proxy::transfer::{self, Control, Options, Role};

fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn opts(role: Role, key: Option<[u8; 32]>) -> Options {
    Options {
        role,
        token: 77,
        key,
        target_rate: 0,
        min_rate: 0,
        datagram_size: env_usize("TRANSFER_BENCH_DATAGRAM", 1400),
        resume: ResumeLevel::None,
        overwrite: Overwrite::Always,
        recursive: false,
    }
}

/// One transfer; returns (elapsed, sender CPU, receiver CPU).
fn run(src: &Path, dst: &Path, key: Option<[u8; 32]>) -> (Duration, Duration, Duration) {
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
            &opts(Role::Server, key),
            &mut |_| {},
        )
        .unwrap();
        assert!(r.all_intact());
        thread_cpu() - cpu0
    });
    transfer::udp_connect(&client_sock, server_addr, 77, Duration::from_secs(5)).unwrap();
    let start = Instant::now();
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
        &opts(Role::Client, key),
        &mut |_| {},
    )
    .unwrap();
    assert!(r.all_intact());
    let send_cpu = thread_cpu() - cpu0;
    let recv_cpu = server.join().unwrap();
    (start.elapsed(), send_cpu, recv_cpu)
}

fn bench(c: &mut Criterion) {
    let mib = env_usize("TRANSFER_BENCH_MIB", 256);
    let size = mib * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
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

    let mut group = c.benchmark_group("loopback");
    group.throughput(Throughput::Bytes(size as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for (name, key) in [("clear", None), ("aes256gcm", Some([9u8; 32]))] {
        // One reported run first: goodput and CPU per GiB of each side.
        let (t, s, r) = run(&src, &out, key);
        let gib = size as f64 / (1u64 << 30) as f64;
        eprintln!(
            "{name}: {mib} MiB in {:.2} s = {:.0} Mbit/s goodput; CPU per GiB: sender {:.2} s, receiver {:.2} s",
            t.as_secs_f64(),
            size as f64 * 8.0 / t.as_secs_f64() / 1e6,
            s.as_secs_f64() / gib,
            r.as_secs_f64() / gib
        );
        group.bench_function(name, |b| b.iter(|| run(&src, &out, key)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
