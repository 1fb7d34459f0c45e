//! The data engine end to end, both sides in one process: UDP over loopback (optionally through
//! a lossy relay), the control channel over a Unix socket pair.

use std::fs;
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use fasp_proxy::protocol::{ErrorCode, Overwrite, ResumeLevel};
use fasp_proxy::transfer::{
    self, Control, Options, Outcome, Progress, Report, Role, TransferError,
};

const TOKEN: u64 = 0x5eed_cafe_f00d_0001;
const KEY: [u8; 32] = [42; 32];

fn opts(role: Role) -> Options {
    Options {
        role,
        token: TOKEN,
        key: Some(KEY),
        target_rate: 2_000_000_000,
        min_rate: 10_000_000,
        datagram_size: 1400,
        resume: ResumeLevel::None,
        overwrite: Overwrite::Always,
        recursive: false,
        root: transfer::Root::unconfined(),
    }
}

/// Deterministic pseudo-random bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A UDP relay between client and server that drops `loss_pct` % of datagrams each way and
/// can inject garbage. Stops when dropped.
struct Relay {
    client_side: SocketAddr,
    server_side: SocketAddr,
    stop: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Relay {
    fn new(server: SocketAddr, loss_pct: u64, garbage: bool) -> Relay {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap(); // faces the client
        let b = UdpSocket::bind("127.0.0.1:0").unwrap(); // faces the server
        b.connect(server).unwrap();
        a.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        b.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let client_addr = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
        let mut threads = Vec::new();
        let (client_side, server_side) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        for dir in 0..2 {
            let (a, b) = (a.try_clone().unwrap(), b.try_clone().unwrap());
            let (stop, cut, client_addr) = (stop.clone(), cut.clone(), client_addr.clone());
            threads.push(thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut rng = 0x1234_5678_9abc_def1u64 + dir;
                let mut n_fwd = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let got = if dir == 0 {
                        a.recv_from(&mut buf).map(|(n, from)| {
                            *client_addr.lock().unwrap() = Some(from);
                            n
                        })
                    } else {
                        b.recv(&mut buf)
                    };
                    let Ok(n) = got else { continue };
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if cut.load(Ordering::Relaxed) || rng % 100 < loss_pct {
                        continue;
                    }
                    n_fwd += 1;
                    let inject = garbage && n_fwd % 50 == 0;
                    let send = |bytes: &[u8]| {
                        if dir == 0 {
                            let _ = b.send(bytes);
                        } else if let Some(c) = *client_addr.lock().unwrap() {
                            let _ = a.send_to(bytes, c);
                        }
                    };
                    if inject {
                        // Random garbage, and a well-formed datagram with another token.
                        send(&data(200, rng));
                        let mut wrong = buf[..n].to_vec();
                        wrong[0] ^= 0xff;
                        send(&wrong);
                        // Right token, corrupted payload: fails authentication.
                        let mut bad = buf[..n].to_vec();
                        if bad.len() > 40 {
                            bad[40] ^= 1;
                            send(&bad);
                        }
                    }
                    send(&buf[..n]);
                }
            }));
        }
        Relay {
            client_side,
            server_side,
            stop,
            cut,
            threads,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Setup {
    loss: u64,
    garbage: bool,
    send: Options,
    recv: Options,
    /// Close the control channel once the sender has sent this many bytes of the first file.
    abort_after: Option<u64>,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            loss: 0,
            garbage: false,
            send: opts(Role::Client),
            recv: opts(Role::Server),
            abort_after: None,
        }
    }
}

/// Client uploads `sources` to the server's `dest`.
fn upload(
    s: &Setup,
    sources: &[PathBuf],
    dest: &Path,
) -> (Result<Report, TransferError>, Result<Report, TransferError>) {
    let server_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_addr = server_sock.local_addr().unwrap();
    let relay = (s.loss > 0 || s.garbage).then(|| Relay::new(server_addr, s.loss, s.garbage));
    let connect_to = relay.as_ref().map_or(server_addr, |r| r.client_side);
    let (a, b) = UnixStream::pair().unwrap();
    let killer = a.try_clone().unwrap();
    let client_ctl = Control {
        reader: Box::new(a.try_clone().unwrap()),
        writer: Box::new(a),
    };
    let server_ctl = Control {
        reader: Box::new(b.try_clone().unwrap()),
        writer: Box::new(b),
    };
    let recv_opts = s.recv.clone();
    let dest = dest.to_path_buf();
    let server = thread::spawn(move || {
        let peer = transfer::udp_accept(&server_sock, TOKEN, Duration::from_secs(5))?;
        transfer::receive(
            server_ctl,
            server_sock,
            peer,
            &dest,
            &recv_opts,
            &mut |_| {},
        )
    });
    transfer::udp_connect(&client_sock, connect_to, TOKEN, Duration::from_secs(5)).unwrap();
    if let Some(r) = &relay {
        assert_ne!(r.server_side, server_addr);
    }
    let abort_after = s.abort_after;
    let sent = AtomicU64::new(0);
    let mut on_progress = |p: &Progress| {
        sent.store(p.bytes_done, Ordering::Relaxed);
        if abort_after.is_some_and(|n| p.bytes_done >= n && !p.finished) {
            let _ = killer.shutdown(Shutdown::Both);
        }
    };
    let client = transfer::send(
        client_ctl,
        client_sock,
        connect_to,
        sources,
        &s.send,
        &mut on_progress,
    );
    let server = server.join().unwrap();
    if let Some(r) = &relay {
        r.cut.store(true, Ordering::Relaxed);
    }
    drop(relay);
    (client, server)
}

fn assert_intact(client: &Result<Report, TransferError>, server: &Result<Report, TransferError>) {
    let c = client.as_ref().expect("sender failed");
    let s = server.as_ref().expect("receiver failed");
    assert!(c.all_intact(), "sender: {c:#?}");
    assert!(s.all_intact(), "receiver: {s:#?}");
}

fn file_with(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, content).unwrap();
    p
}

#[test]
fn single_file_encrypted_and_clear() {
    for key in [Some(KEY), None] {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let content = data(5 * 1024 * 1024 + 123, 1);
        let f = file_with(src.path(), "one.bin", &content);
        let mut s = Setup::new();
        s.send.key = key;
        s.recv.key = key;
        let (c, r) = upload(&s, &[f], dst.path());
        assert_intact(&c, &r);
        assert_eq!(fs::read(dst.path().join("one.bin")).unwrap(), content);
        assert!(!dst.path().join("one.bin.partial").exists());
        let c = c.unwrap();
        assert_eq!(c.files.len(), 1);
        assert!(c.bytes_transferred >= content.len() as u64);
    }
}

#[test]
fn two_percent_loss_completes_intact() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let content = data(8 * 1024 * 1024, 2);
    let f = file_with(src.path(), "lossy.bin", &content);
    let mut s = Setup::new();
    s.loss = 2;
    s.send.target_rate = 400_000_000;
    let (c, r) = upload(&s, &[f], dst.path());
    assert_intact(&c, &r);
    assert_eq!(fs::read(dst.path().join("lossy.bin")).unwrap(), content);
    let c = c.unwrap();
    assert!(c.link.retransmitted_bytes > 0, "{:?}", c.link);
}

/// Random loss of a few per cent is not congestion: the sender keeps its `-l` pace (it neither
/// slows down nor, catching up, goes faster than asked) and simply re-sends the holes.
#[test]
fn random_loss_keeps_the_pace() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let content = data(8 * 1024 * 1024, 3);
    let f = file_with(src.path(), "paced.bin", &content);
    let mut s = Setup::new();
    s.loss = 2;
    s.send.target_rate = 100_000_000;
    let start = std::time::Instant::now();
    let (c, r) = upload(&s, &[f], dst.path());
    let elapsed = start.elapsed().as_secs_f64();
    assert_intact(&c, &r);
    assert_eq!(fs::read(dst.path().join("paced.bin")).unwrap(), content);
    // Wire bytes per file byte: 1400 B of data + 32 B header + 16 B tag + 28 B IP/UDP.
    let ideal = content.len() as f64 * 8.0 * (1476.0 / 1400.0) / 100e6;
    assert!(
        elapsed >= 0.9 * ideal,
        "{elapsed:.3} s: faster than -l ({ideal:.3} s)"
    );
    // Generous: the machine running the tests may be busy.
    assert!(
        elapsed <= 4.0 * ideal,
        "{elapsed:.3} s: slowed down ({ideal:.3} s)"
    );
}

#[test]
fn wrong_key_fails_cleanly() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let f = file_with(src.path(), "k.bin", &data(1024 * 1024, 3));
    let mut s = Setup::new();
    s.recv.key = Some([1; 32]);
    let (c, r) = upload(&s, &[f], dst.path());
    assert!(c.is_err() && r.is_err(), "{c:?} {r:?}");
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("authentication"), "{msg}");
    assert!(!dst.path().join("k.bin").exists());
}

#[test]
fn encryption_mismatch_fails_cleanly() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let f = file_with(src.path(), "k.bin", &data(1024 * 1024, 3));
    let mut s = Setup::new();
    s.recv.key = None;
    let (c, r) = upload(&s, &[f], dst.path());
    assert!(c.is_err() || r.is_err(), "{c:?} {r:?}");
    assert!(!dst.path().join("k.bin").exists());
}

#[test]
fn tree_empty_and_sparse_files() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let root = src.path().join("tree");
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::create_dir_all(root.join("empty_dir")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("a/small"), b"hello").unwrap();
    fs::write(root.join("a/b/mid"), data(300_000, 4)).unwrap();
    {
        let f = fs::File::create(root.join("sparse")).unwrap();
        f.set_len(48 * 1024 * 1024).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"middle", 20 * 1024 * 1024).unwrap();
        f.write_all_at(b"end", 48 * 1024 * 1024 - 3).unwrap();
    }
    std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("a/small"), fs::Permissions::from_mode(0o640)).unwrap();

    let mut s = Setup::new();
    // Without -r: refused, naming the directory.
    let (c, _r) = upload(&s, std::slice::from_ref(&root), dst.path());
    let err = c.unwrap_err();
    assert!(matches!(err, TransferError::SourceIsDirectory(_)), "{err}");
    assert!(err.to_string().contains("tree"));

    s.send.recursive = true;
    s.recv.recursive = true;
    let (c, r) = upload(&s, std::slice::from_ref(&root), dst.path());
    assert_intact(&c, &r);
    let out = dst.path().join("tree");
    assert_eq!(fs::read(out.join("empty")).unwrap(), b"");
    assert_eq!(fs::read(out.join("a/small")).unwrap(), b"hello");
    assert_eq!(fs::read(out.join("a/b/mid")).unwrap(), data(300_000, 4));
    assert!(out.join("empty_dir").is_dir());
    assert_eq!(
        fs::read(out.join("sparse")).unwrap(),
        fs::read(root.join("sparse")).unwrap()
    );
    assert!(!out.join("link").exists());
    let mode = fs::metadata(out.join("a/small"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(out.join("a/b/mid")).unwrap().mtime(),
        fs::metadata(root.join("a/b/mid")).unwrap().mtime()
    );
    // The receiver kept the zeros sparse.
    let blocks = fs::metadata(out.join("sparse")).unwrap().blocks();
    assert!(blocks * 512 < 8 * 1024 * 1024, "{blocks} blocks");
    let c = c.unwrap();
    assert!(c
        .files
        .iter()
        .any(|f| f.path == "tree/link" && matches!(f.outcome, Outcome::Skipped(_))));
}

#[test]
fn missing_source_is_named() {
    let dst = tempfile::tempdir().unwrap();
    let s = Setup::new();
    let missing = dst.path().join("nope.bin");
    let (c, r) = upload(&s, &[missing], dst.path());
    let err = c.unwrap_err();
    assert!(err.to_string().contains("nope.bin"), "{err}");
    let r = r.unwrap_err();
    assert!(
        matches!(&r, TransferError::Peer(e) if e.code == ErrorCode::NotFound),
        "{r}"
    );
}

#[test]
fn resume_sends_only_the_missing_part() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let size = 16 * 1024 * 1024;
    let content = data(size, 5);
    let f = file_with(src.path(), "big.bin", &content);
    let mut s = Setup::new();
    s.send.target_rate = 100_000_000; // slow enough to interrupt halfway
    s.abort_after = Some(size as u64 / 2);
    let (c, r) = upload(&s, std::slice::from_ref(&f), dst.path());
    assert!(c.is_err() && r.is_err(), "{c:?} {r:?}");
    assert!(!dst.path().join("big.bin").exists());
    let partial = dst.path().join("big.bin.partial");
    assert!(partial.exists());

    let mut s = Setup::new();
    s.send.resume = ResumeLevel::SparseChecksum;
    s.recv.resume = ResumeLevel::SparseChecksum;
    let (c, r) = upload(&s, &[f], dst.path());
    assert_intact(&c, &r);
    assert_eq!(fs::read(dst.path().join("big.bin")).unwrap(), content);
    let sent = c.unwrap().bytes_transferred;
    assert!(
        sent < size as u64 * 3 / 4,
        "resume sent {sent} of {size} bytes"
    );
    assert!(sent > 0);
    assert!(!partial.exists());
}

#[test]
fn overwrite_never_and_diff() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let content = data(3 * 1024 * 1024, 6);
    let f = file_with(src.path(), "o.bin", &content);
    let old = data(3 * 1024 * 1024, 7);
    fs::write(dst.path().join("o.bin"), &old).unwrap();

    let mut s = Setup::new();
    s.recv.overwrite = Overwrite::Never;
    let (c, r) = upload(&s, std::slice::from_ref(&f), dst.path());
    assert_intact(&c, &r);
    assert_eq!(fs::read(dst.path().join("o.bin")).unwrap(), old);
    assert!(matches!(c.unwrap().files[0].outcome, Outcome::Skipped(_)));

    // diff: same size, different content → replaced.
    s.recv.overwrite = Overwrite::Diff;
    let (c, r) = upload(&s, std::slice::from_ref(&f), dst.path());
    assert_intact(&c, &r);
    assert_eq!(fs::read(dst.path().join("o.bin")).unwrap(), content);
    // diff again: identical → nothing crosses.
    let (c, r) = upload(&s, std::slice::from_ref(&f), dst.path());
    assert_intact(&c, &r);
    assert_eq!(c.unwrap().bytes_transferred, 0);
    assert_eq!(fs::read(dst.path().join("o.bin")).unwrap(), content);
}

#[test]
fn patching_an_existing_file_never_writes_through_a_planted_partial_symlink() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let size = 3 * 1024 * 1024;
    let content = data(size, 9);
    let f = file_with(src.path(), "p.bin", &content);
    // The destination differs in its last chunk only: -k 2 patches a copy of it.
    let mut old = content.clone();
    old[size - 10] ^= 0xff;
    fs::write(dst.path().join("p.bin"), &old).unwrap();
    // An older time, or -k 2 skips the file on size and time.
    fs::File::options()
        .write(true)
        .open(dst.path().join("p.bin"))
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .unwrap();
    let victim = src.path().join("victim");
    fs::write(&victim, b"must stay").unwrap();
    std::os::unix::fs::symlink(&victim, dst.path().join("p.bin.partial")).unwrap();
    let mut s = Setup::new();
    s.send.resume = ResumeLevel::SparseChecksum;
    s.recv.resume = ResumeLevel::SparseChecksum;
    let (c, r) = upload(&s, &[f], dst.path());
    assert_intact(&c, &r);
    assert_eq!(fs::read(dst.path().join("p.bin")).unwrap(), content);
    assert!(c.unwrap().bytes_transferred > 0, "nothing was patched");
    assert_eq!(fs::read(&victim).unwrap(), b"must stay");
}

#[test]
fn hostile_datagrams_are_ignored() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let content = data(4 * 1024 * 1024, 8);
    let f = file_with(src.path(), "h.bin", &content);
    let mut s = Setup::new();
    s.garbage = true;
    s.loss = 1;
    let (c, r) = upload(&s, &[f], dst.path());
    assert_intact(&c, &r);
    assert_eq!(fs::read(dst.path().join("h.bin")).unwrap(), content);
    let r = r.unwrap();
    assert!(
        r.link.dropped_malformed + r.link.dropped_token > 0,
        "{:?}",
        r.link
    );
    assert!(r.link.dropped_auth > 0, "{:?}", r.link);
}

#[test]
fn destination_rename_and_unwritable() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let f = file_with(src.path(), "x.bin", &data(10_000, 9));
    let s = Setup::new();
    let target = dst.path().join("renamed.bin");
    let (c, r) = upload(&s, std::slice::from_ref(&f), &target);
    assert_intact(&c, &r);
    assert_eq!(fs::read(&target).unwrap(), data(10_000, 9));

    // A destination under a regular file cannot be created: a per-file failure, reported.
    let blocker = dst.path().join("file");
    fs::write(&blocker, b"").unwrap();
    let (c, r) = upload(&s, &[f], &blocker.join("sub/x.bin"));
    let c = c.unwrap();
    let r = r.unwrap();
    assert!(!c.all_intact() && !r.all_intact());
    let bad = c.failures().next().unwrap();
    match &bad.outcome {
        // The cause, not just the path (which contains "file" too).
        Outcome::Failed { message, .. } => {
            assert!(
                message.to_lowercase().contains("not a directory"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
}
