//! The reverse proxy end to end in the namespace lab: `ascp` in the client namespace, the
//! `fasp-proxy run` daemon in the proxy namespace, real OpenSSH `sshd` running `ascp --server`
//! on the internal server; the UDP data forwarded by the kernel, read back with `nft`.

mod lab;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use lab::{NsProcess, Sshd, Topology};

const ASCP: &str = env!("CARGO_BIN_EXE_ascp");
const FASP_PROXY: &str = env!("CARGO_BIN_EXE_fasp-proxy");

struct Lab {
    topo: Topology,
    servers: Vec<Sshd>,
    dir: tempfile::TempDir,
    daemon: Option<NsProcess>,
}

impl Lab {
    /// `n` internal servers, each running sshd whose transfer command is the ascp under test.
    fn new(n: usize) -> Lab {
        let topo = Topology::new(n);
        let force = format!("ForceCommand {ASCP} --server");
        let servers = (0..n)
            .map(|i| {
                Sshd::start_configured(
                    &topo.servers[i],
                    SocketAddr::new(lab::server_v4(i).into(), 22),
                    &[],
                    &force,
                )
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        Lab {
            topo,
            servers,
            dir,
            daemon: None,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the proxy configuration with `rules`, and the proxy user's authorized keys.
    fn configure(&self, rules: &str, extra: &str) -> PathBuf {
        let etc = self.path("etc");
        let out = std::process::Command::new(FASP_PROXY)
            .args(["create-config", "--dir", etc.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::copy(
            self.servers[0].client_key.with_extension("pub"),
            etc.join("root.keys"),
        )
        .unwrap();
        let conf = etc.join("aspera.conf");
        std::fs::write(
            &conf,
            format!(
                "<CONF><server><rproxy>\n<enabled>true</enabled>\n<log_level>1</log_level>\n\
                 <log_directory>{log}</log_directory>\n<ssh_bind_address>0.0.0.0</ssh_bind_address>\n\
                 <ssh_host_key>{key}</ssh_host_key>\n<authorized_keys_file>{etc}/%u.keys</authorized_keys_file>\n\
                 {extra}\n<rules>\n{rules}\n</rules>\n</rproxy></server></CONF>\n",
                log = self.path("log").display(),
                key = etc.join("ssh_host_ed25519_key").display(),
                etc = etc.display(),
            ),
        )
        .unwrap();
        // The client trusts the proxy's host key.
        let host_pub = std::fs::read_to_string(etc.join("ssh_host_ed25519_key.pub")).unwrap();
        std::fs::write(
            self.path("proxy_known_hosts"),
            format!("[{}]:33001 {host_pub}", lab::PROXY_CLIENT_V4),
        )
        .unwrap();
        conf
    }

    fn start(&mut self, conf: &Path) {
        let daemon =
            self.topo
                .proxy
                .spawn(&[FASP_PROXY, "--config", conf.to_str().unwrap(), "run"]);
        let up = lab::wait_until(Duration::from_secs(10), || {
            self.log().contains("listening on")
        });
        assert!(
            up,
            "the daemon did not start:\n{}\n{}",
            daemon.log(),
            self.log()
        );
        self.daemon = Some(daemon);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("log").join("fasp-proxy.log")).unwrap_or_default()
    }

    fn ascp_args(&self) -> Vec<String> {
        vec![
            ASCP.into(),
            "-P".into(),
            "33001".into(),
            "-i".into(),
            self.servers[0].client_key.display().to_string(),
            "--known-hosts".into(),
            self.path("proxy_known_hosts").display().to_string(),
        ]
    }

    fn ascp(&self, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec!["timeout".into(), "120".into()];
        args.extend(self.ascp_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.topo.client.try_exec(&refs)
    }

    fn nft_sessions(&self) -> String {
        self.topo
            .proxy
            .try_exec(&["nft", "list", "map", "ip", "fasp_proxy", "sessions"])
            .stdout
            .iter()
            .map(|&b| b as char)
            .collect()
    }
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn ok(out: &Output) -> String {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ascp failed ({}):\n{all}", out.status);
    all
}

#[test]
fn upload_and_download_through_the_proxy_with_the_kernel_forwarding_the_data() {
    let mut lab = Lab::new(1);
    let key = lab.servers[0].client_key.display().to_string();
    let conf = lab.configure(
        &format!(
            "<rule><host>{}:22</host><keyfile>{key}</keyfile></rule>",
            lab::server_v4(0)
        ),
        "",
    );
    lab.start(&conf);

    let src = lab.path("payload.bin");
    std::fs::write(&src, content(20_000_000, 5)).unwrap();
    let dst = lab.path("server_in");
    std::fs::create_dir(&dst).unwrap();
    let remote = format!("root@{}:{}", lab::PROXY_CLIENT_V4, dst.display());

    // 20 MB at 40 Mbit/s: about 4 s, long enough to see the kernel entry while it runs.
    let mut args = lab.ascp_args();
    args.extend(["-q", "-l", "40m", src.to_str().unwrap(), remote.as_str()].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let running = lab.topo.client.spawn(&refs);
    let seen = lab::wait_until(Duration::from_secs(15), || {
        lab.nft_sessions().contains("192.0.2.2 . ")
    });
    assert!(
        seen,
        "no kernel entry during the transfer:\n{}\n{}",
        lab.nft_sessions(),
        lab.log()
    );
    let map = lab.nft_sessions();
    assert!(map.contains(": 198.51.100.2 . 33001"), "{map}");
    let done = lab::wait_until(Duration::from_secs(60), || dst.join("payload.bin").exists());
    assert!(
        done,
        "the upload did not finish:\n{}\n{}",
        running.log(),
        lab.log()
    );
    assert_eq!(
        std::fs::read(&src).unwrap(),
        std::fs::read(dst.join("payload.bin")).unwrap()
    );
    // After the session: no entry is left.
    let gone = lab::wait_until(Duration::from_secs(10), || {
        !lab.nft_sessions().contains("192.0.2.2")
    });
    assert!(
        gone,
        "an entry outlived its session:\n{}",
        lab.nft_sessions()
    );

    // Download back through the proxy.
    let back = lab.path("back.bin");
    ok(&lab.ascp(&[
        "-l",
        "500m",
        &format!(
            "root@{}:{}",
            lab::PROXY_CLIENT_V4,
            dst.join("payload.bin").display()
        ),
        back.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&back).unwrap());

    // The log lines operators know, each with the session id.
    let log = lab.log();
    for line in [
        "Received connection request from 192.0.2.2",
        "Established SSH connection with server 198.51.100.2:22",
        "Setup UDP forwarding between 192.0.2.2:",
        "Connection closed (EOF)",
    ] {
        assert!(log.contains(line), "log lacks {line:?}:\n{log}");
    }

    // SIGTERM: the daemon ends cleanly and leaves nothing.
    let daemon = lab.daemon.take().unwrap();
    let pid = daemon.pid().to_string();
    lab.topo.proxy.exec(&["kill", "-TERM", &pid]);
    let stopped = lab::wait_until(Duration::from_secs(15), || lab.log().contains("stopped"));
    assert!(stopped, "the daemon did not stop:\n{}", lab.log());
    assert!(!lab.nft_sessions().contains("192.0.2.2"));
}

#[test]
fn the_daemon_refuses_to_start_on_a_bad_configuration() {
    let lab = Lab::new(1);
    let conf = lab.configure(
        "<rule><host>198.51.100.2:99999</host><keyfile>/k</keyfile></rule>",
        "",
    );
    let out = lab.topo.proxy.try_exec(&[
        "timeout",
        "20",
        FASP_PROXY,
        "--config",
        conf.to_str().unwrap(),
        "run",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("out of range") && err.contains("refusing to start"),
        "{err}"
    );
    let tables = lab.topo.proxy.exec(&["nft", "list", "tables"]);
    assert!(
        !tables.contains("fasp_proxy"),
        "a refused start changed the kernel: {tables}"
    );
}
