//! `ascp` end to end in the namespace lab, with real OpenSSH `sshd` in the server namespace
//! running `ascp --server`: uploads, downloads, trees, sparse files, concurrency, loss, resume,
//! and every refusal a user can run into.

mod lab;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use lab::{content, failed, ok, Sshd, Topology};

const ASCP: &str = env!("CARGO_BIN_EXE_ascp");

struct Setup {
    topo: Topology,
    sshd: Sshd,
    work: tempfile::TempDir,
}

fn setup() -> Setup {
    let topo = Topology::new(1);
    let sshd = Sshd::start(topo.server(), SocketAddr::new(lab::server_v4(0).into(), 22));
    let work = tempfile::tempdir().unwrap();
    Setup { topo, sshd, work }
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// Runs ascp in the client namespace towards the lab's sshd (at most 180 s).
    fn ascp(&self, extra: &[&str]) -> Output {
        let key = self.sshd.client_key.display().to_string();
        let known = self.sshd.known_hosts.display().to_string();
        self.ascp_with("22", &key, &known, Some(ASCP), extra)
    }

    /// Like [`Setup::ascp`] with another SSH port, key, known_hosts file and server-side
    /// command (`None`: no `--remote-ascp`).
    fn ascp_with(
        &self,
        port: &str,
        key: &str,
        known: &str,
        remote_ascp: Option<&str>,
        extra: &[&str],
    ) -> Output {
        let mut args = vec![
            "timeout",
            "180",
            ASCP,
            "-P",
            port,
            "-i",
            key,
            "--known-hosts",
            known,
        ];
        if let Some(remote) = remote_ascp {
            args.extend(["--remote-ascp", remote]);
        }
        args.extend_from_slice(extra);
        self.topo.client.try_exec(&args)
    }

    fn remote(&self, path: &Path) -> String {
        format!("root@{}:{}", lab::server_v4(0), path.display())
    }
}

fn same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(
        x == y,
        "{} and {} differ ({} vs {} bytes)",
        a.display(),
        b.display(),
        x.len(),
        y.len()
    );
}

#[test]
fn upload_and_download_a_file() {
    let s = setup();
    let src = s.path("upload.bin");
    std::fs::write(&src, content(3_000_000, 1)).unwrap();
    let dst_dir = s.path("server_in");
    std::fs::create_dir(&dst_dir).unwrap();
    ok(&s.ascp(&["-l", "500m", src.to_str().unwrap(), &s.remote(&dst_dir)]));
    same_file(&src, &dst_dir.join("upload.bin"));

    let back = s.path("downloaded.bin");
    ok(&s.ascp(&[
        "-l",
        "500m",
        &s.remote(&dst_dir.join("upload.bin")),
        back.to_str().unwrap(),
    ]));
    same_file(&src, &back);
}

#[test]
fn directory_tree_with_empty_file_and_no_encryption() {
    let s = setup();
    let tree = s.path("tree");
    std::fs::create_dir_all(tree.join("a/b/c")).unwrap();
    std::fs::create_dir_all(tree.join("empty_dir")).unwrap();
    std::fs::write(tree.join("top.txt"), b"top").unwrap();
    std::fs::write(tree.join("a/one.bin"), content(200_000, 2)).unwrap();
    std::fs::write(tree.join("a/b/c/deep.bin"), content(1_000_000, 3)).unwrap();
    std::fs::write(tree.join("a/b/empty"), b"").unwrap();
    let dst = s.path("dst");
    std::fs::create_dir(&dst).unwrap();
    // A directory without -r is refused.
    let err = failed(&s.ascp(&[tree.to_str().unwrap(), &s.remote(&dst)]));
    assert!(err.contains("-r"), "{err}");
    ok(&s.ascp(&["-r", "-T", tree.to_str().unwrap(), &s.remote(&dst)]));
    for f in ["top.txt", "a/one.bin", "a/b/c/deep.bin", "a/b/empty"] {
        same_file(&tree.join(f), &dst.join("tree").join(f));
    }
    assert!(dst.join("tree/empty_dir").is_dir());
}

#[test]
fn multi_gib_sparse_file() {
    let s = setup();
    let src = s.path("sparse.img");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(2 << 30).unwrap();
    // A little real data in the middle and at the end.
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"middle", 1 << 30).unwrap();
    f.write_all_at(b"end", (2 << 30) - 3).unwrap();
    drop(f);
    let dst = s.path("sparse.out");
    ok(&s.ascp(&[
        "-q",
        "-T",
        "-l",
        "10g",
        &s.remote(&src),
        dst.to_str().unwrap(),
    ]));
    let meta = std::fs::metadata(&dst).unwrap();
    assert_eq!(meta.len(), 2 << 30);
    let out = std::fs::File::open(&dst).unwrap();
    let mut buf = [0u8; 6];
    out.read_exact_at(&mut buf, 1 << 30).unwrap();
    assert_eq!(&buf, b"middle");
    out.read_exact_at(&mut buf[..3], (2 << 30) - 3).unwrap();
    assert_eq!(&buf[..3], b"end");
}

#[test]
fn twenty_concurrent_transfers_to_one_server() {
    let s = setup();
    let dst = s.path("in");
    std::fs::create_dir(&dst).unwrap();
    let sources: Vec<PathBuf> = (0..20)
        .map(|i| {
            let p = s.path(&format!("c{i}.bin"));
            std::fs::write(&p, content(500_000, 100 + i)).unwrap();
            p
        })
        .collect();
    let outputs: Vec<Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = sources
            .iter()
            .map(|src| {
                let s = &s;
                let remote = s.remote(&dst);
                scope.spawn(move || s.ascp(&["-q", "-l", "100m", src.to_str().unwrap(), &remote]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (src, out) in sources.iter().zip(&outputs) {
        ok(out);
        same_file(src, &dst.join(src.file_name().unwrap()));
    }
}

#[test]
fn two_percent_loss_still_arrives_intact() {
    let s = setup();
    // Random 2% loss of forwarded UDP in both directions, in the middle (proxy) namespace.
    s.topo.proxy.exec_with_stdin(
        &["nft", "-f", "-"],
        "table inet lossy {\n chain lossy_forward {\n  type filter hook forward priority 0; policy accept;\n  \
         meta l4proto udp numgen random mod 100 < 2 counter drop;\n }\n}\n",
    );
    let src = s.path("lossy.bin");
    std::fs::write(&src, content(8_000_000, 7)).unwrap();
    let dst = s.path("lossy.out");
    ok(&s.ascp(&["-l", "300m", &s.remote(&src), dst.to_str().unwrap()]));
    same_file(&src, &dst);
    let counters = s
        .topo
        .proxy
        .exec(&["nft", "list", "table", "inet", "lossy"]);
    assert!(
        !counters.contains("packets 0 "),
        "no datagram was dropped: {counters}"
    );
}

/// The per-file "OK (… transferred)" figure ascp prints, in bytes.
fn transferred(output: &str) -> f64 {
    let field = output
        .lines()
        .find_map(|l| l.split("OK (").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no per-file summary in:\n{output}"));
    let (number, unit) = field.split_at(
        field
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(field.len()),
    );
    let factor = match unit {
        "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        other => panic!("unit {other} in {output}"),
    };
    number.parse::<f64>().unwrap() * factor
}

#[test]
fn an_interrupted_transfer_resumes_and_only_the_missing_part_crosses() {
    let s = setup();
    let src = s.path("big.bin");
    let size = 40_000_000;
    std::fs::write(&src, content(size, 11)).unwrap();
    let dst = s.path("resume_in");
    std::fs::create_dir(&dst).unwrap();
    let key = s.sshd.client_key.display().to_string();
    let known = s.sshd.known_hosts.display().to_string();
    let remote = s.remote(&dst);
    // 40 MB at 40 Mbit/s takes about 8 s: stop it after 3.
    let running = s.topo.client.spawn(&[
        ASCP,
        "-P",
        "22",
        "-i",
        &key,
        "--known-hosts",
        &known,
        "--remote-ascp",
        ASCP,
        "-l",
        "40m",
        src.to_str().unwrap(),
        &remote,
    ]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    running.kill();
    let partial_grew = lab::wait_until(std::time::Duration::from_secs(10), || {
        std::fs::read_dir(&dst).unwrap().count() > 0
    });
    assert!(partial_grew, "nothing was written before the interruption");
    assert!(
        !dst.join("big.bin").exists(),
        "an interrupted file was claimed complete"
    );

    // What the interrupted run left: the .partial file's allocated bytes (all-zero blocks are
    // never written, and this content has none).
    use std::os::unix::fs::MetadataExt;
    let partial = std::fs::read_dir(&dst)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().contains("partial"))
        .expect("no .partial file after the interruption");
    let have = partial.metadata().unwrap().blocks() as f64 * 512.0;
    assert!(
        have > 0.0,
        "the interrupted run left nothing to resume from"
    );

    let out = ok(&s.ascp(&["-k", "2", "-l", "200m", src.to_str().unwrap(), &remote]));
    same_file(&src, &dst.join("big.bin"));
    let crossed = transferred(&out);
    let missing = size as f64 - have;
    // Chunks are 1 MiB: a partly received chunk is sent whole; allow that and some re-sends.
    assert!(
        crossed <= missing * 1.3 + 4.0 * 1048576.0,
        "resume sent {crossed} bytes; {have} of {size} were already there\n{out}"
    );
}

#[test]
fn a_full_destination_disk_fails_cleanly() {
    let topo = Topology::new(1);
    let work = tempfile::tempdir().unwrap();
    let tiny = work.path().join("tiny");
    std::fs::create_dir(&tiny).unwrap();
    // sshd (and the ascp it starts) see a 1 MiB tmpfs on `tiny`, in a mount namespace of their
    // own: the machine's mounts are not touched.
    let mount = format!(
        "mount -t tmpfs -o size=1m fasp-lab-tiny {} && exec \"$0\" \"$@\"",
        tiny.display()
    );
    let sshd = Sshd::start_with(
        topo.server(),
        SocketAddr::new(lab::server_v4(0).into(), 22),
        &[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &mount,
        ],
    );
    let s = Setup { topo, sshd, work };
    let src = s.path("too_big.bin");
    std::fs::write(&src, content(3_000_000, 12)).unwrap();
    let err = failed(&s.ascp(&[src.to_str().unwrap(), &s.remote(&s.path("tiny"))]));
    assert!(err.to_lowercase().contains("space"), "{err}");
    // The machine's own view of the directory is untouched, and nothing was claimed complete.
    assert!(!s.path("tiny").join("too_big.bin").exists());
}

#[test]
fn refusals_are_clear_and_leave_nothing_claimed_complete() {
    let s = setup();
    let src = s.path("f.bin");
    std::fs::write(&src, content(10_000, 9)).unwrap();
    let dst = s.path("out");
    std::fs::create_dir(&dst).unwrap();
    let remote = s.remote(&dst);

    // Missing local source.
    let err = failed(&s.ascp(&["/nonexistent/file", &remote]));
    assert!(err.contains("/nonexistent/file"), "{err}");
    // Missing remote source.
    let err = failed(&s.ascp(&[
        &s.remote(Path::new("/nonexistent/remote")),
        dst.to_str().unwrap(),
    ]));
    assert!(
        err.contains("/nonexistent/remote") && err.contains("no such file"),
        "{err}"
    );
    // Wrong key.
    let other_key = s.path("other_key");
    let st = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            other_key.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let known = s.sshd.known_hosts.display().to_string();
    let out = s.ascp_with(
        "22",
        other_key.to_str().unwrap(),
        &known,
        Some(ASCP),
        &[src.to_str().unwrap(), &remote],
    );
    let err = failed(&out);
    assert!(err.contains("authentication failed"), "{err}");
    // Unknown host key without --accept-new-host-key.
    let empty_known = s.path("empty_known_hosts");
    std::fs::write(&empty_known, b"").unwrap();
    let key = s.sshd.client_key.display().to_string();
    let out = s.ascp_with(
        "22",
        &key,
        empty_known.to_str().unwrap(),
        Some(ASCP),
        &[src.to_str().unwrap(), &remote],
    );
    let err = failed(&out);
    assert!(
        err.contains("not in") && err.contains("--accept-new-host-key"),
        "{err}"
    );
    // No server listening on that port.
    let out = s.ascp_with(
        "2222",
        &key,
        &known,
        None,
        &[src.to_str().unwrap(), &remote],
    );
    let err = failed(&out);
    assert!(err.contains("cannot connect"), "{err}");
    // Server side not installed.
    let out = s.ascp_with(
        "22",
        &key,
        &known,
        Some("/nonexistent/ascp"),
        &[src.to_str().unwrap(), &remote],
    );
    let err = failed(&out);
    assert!(err.contains("/nonexistent/ascp"), "{err}");
    // Unwritable destination.
    let err = failed(&s.ascp(&[
        src.to_str().unwrap(),
        &s.remote(Path::new("/proc/fasp-no-such-dir/f")),
    ]));
    // The cause, not just the echoed path.
    assert!(
        err.contains("/proc/fasp-no-such-dir")
            && (err.contains("No such file or directory") || err.contains("ermission denied")),
        "{err}"
    );
    // A fake server answering garbage.
    let fake = s.path("fake-server.sh");
    std::fs::write(
        &fake,
        "#!/bin/sh\nprintf '\\377\\377\\377\\377garbage'\nsleep 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = s.ascp_with(
        "22",
        &key,
        &known,
        Some(fake.to_str().unwrap()),
        &[src.to_str().unwrap(), &remote],
    );
    let err = failed(&out);
    assert!(
        err.contains("bad answer") || err.contains("exceeds"),
        "{err}"
    );
    // Nothing claimed complete in the destination.
    assert!(!dst.join("f.bin").exists());
}
