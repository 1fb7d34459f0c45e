//! The forward proxy end to end in the namespace lab: an inside client (192.0.2.2) reaches an
//! outside server (198.51.100.2, real OpenSSH `sshd`) through `fasp-proxy run`, whose API it
//! asks for a forwarding; the kernel forwards the SSH (TCP) and the FASP data (UDP) with the
//! proxy's address as the source, read back with `nft`, `iptables` and sshd's own log.
//!
//! Covered: fasp-proxy's `ascp --proxy dnat://` upload and download (nftables and iptables),
//! IBM ascp 3.9's `--proxy=dnat://` and `dnats://` to IBM's own server side, a wrong password
//! ("request rejected by proxy", nothing installed), kill -9 of a client (the forwarding expires)
//! and of the daemon (the restart leaves nothing).

mod api_client;
mod lab;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use lab::daemon::Daemon;
use lab::{text, Sshd, Topology};

const ASCP: &str = env!("CARGO_BIN_EXE_ascp");
const FASP_PROXY: &str = env!("CARGO_BIN_EXE_fasp-proxy");
const PROXY_USER: &str = "alice";
/// No character a URL would need escaped: IBM's client does not decode `%XX`.
const PROXY_PASS: &str = "alice-proxy-pass";

struct ForwardLab {
    topo: Topology,
    server: Sshd,
    dir: tempfile::TempDir,
    daemon: Daemon,
}

impl ForwardLab {
    /// One outside server whose sshd runs `force_command` for every login.
    fn new(force_command: &str) -> ForwardLab {
        let topo = Topology::new(1);
        let server =
            lab::daemon::internal_server(&topo, 0, &format!("ForceCommand {force_command}\n"));
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::new(&topo.proxy, dir.path());
        ForwardLab {
            topo,
            server,
            dir,
            daemon,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The configuration: the forward proxy on the inside address, HTTP 9091 and HTTPS 9092,
    /// ports 5000-5010, only the outside servers' prefix allowed, and a node-API user.
    fn configure(&self, forwarding: &str, proxy_extra: &str) -> PathBuf {
        let etc = self.daemon.etc();
        self.daemon
            .create_config(&["--api-name", &lab::PROXY_CLIENT_V4.to_string()]);
        let conf = self.daemon.write_conf(&format!(
            "<CONF><server>\n<rproxy><log_level>1</log_level><log_directory>{log}</log_directory></rproxy>\n\
             <proxy><enabled>true</enabled><authentication>true</authentication>\n\
             <bind_ip_address>{inside}</bind_ip_address>\n\
             <port_range_low>5000</port_range_low><port_range_high>5010</port_range_high>\n\
             <allowed_destinations><cidr>198.51.100.0/24</cidr></allowed_destinations>\n\
             {proxy_extra}</proxy>\n\
             <enable_http>true</enable_http><enable_https>true</enable_https>\n\
             <https_certificate>{etc}/api_cert.pem</https_certificate>\n\
             <https_private_key>{etc}/api_key.pem</https_private_key>\n\
             <forwarding_type>{forwarding}</forwarding_type>\n</server></CONF>\n",
            log = self.daemon.log_dir().display(),
            inside = lab::PROXY_CLIENT_V4,
            etc = etc.display(),
        ));
        lab::daemon::add_node_user(&conf, PROXY_USER, PROXY_PASS);
        conf
    }

    fn start(&mut self, conf: &Path) {
        let from = self
            .daemon
            .start_until(conf, &[], Duration::from_secs(10), |log| {
                log.contains("Started on port(s) 9091,9092s")
            });
        assert!(
            self.daemon
                .log_since(from)
                .contains("proxy service ready (port range 5000-5010)"),
            "{}",
            self.daemon.log()
        );
    }

    /// Our ascp through the forward proxy to the outside server (bounded), with `extra`.
    fn ascp_args(&self, url: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "timeout",
            "60",
            ASCP,
            "--proxy",
            url,
            "-P",
            "22",
            "-i",
            self.server.client_key.to_str().unwrap(),
            "--known-hosts",
            self.server.known_hosts.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn exec(&self, args: &[String]) -> Output {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.topo.client.try_exec(&refs)
    }

    /// Every trace of a forwarding in the proxy's kernel tables (nft maps and iptables rules
    /// naming the client).
    fn kernel_traces(&self) -> String {
        let nft = text(
            &self
                .topo
                .proxy
                .try_exec(&["nft", "list", "table", "ip", "fasp_proxy"])
                .stdout,
        );
        let mut traces: Vec<String> = nft
            .lines()
            .filter(|l| l.contains("192.0.2.2"))
            .map(str::to_string)
            .collect();
        traces.extend(
            self.topo
                .iptables_nat()
                .lines()
                .filter(|l| l.contains("192.0.2.2"))
                .map(str::to_string),
        );
        traces.join("\n")
    }

    /// What the outside sshd logged about where connections came from.
    fn server_sources(&self) -> String {
        self.server
            .process
            .log()
            .lines()
            .filter(|l| l.contains("Connection from") || l.contains("Accepted publickey"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn url(scheme: &str, port: u16, password: &str) -> String {
    format!(
        "{scheme}://{PROXY_USER}:{password}@{}:{port}",
        lab::PROXY_CLIENT_V4
    )
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn our_ascp_through_the_forward_proxy(forwarding: &str) {
    let mut lab = ForwardLab::new(&format!("{ASCP} --server"));
    let conf = lab.configure(forwarding, "");
    lab.start(&conf);
    let src = lab.path("up.bin");
    std::fs::write(&src, content(8_000_000, 3)).unwrap();
    let dst = lab.path("outside");
    std::fs::create_dir(&dst).unwrap();
    let remote = format!("root@{}:{}", lab::server_v4(0), dst.display());

    // Upload, observed while it runs (the rate keeps it going for a few seconds).
    let from = lab.daemon.log().len();
    let mut args = lab.ascp_args(
        &url("dnat", 9091, PROXY_PASS),
        &["-l", "20m", src.to_str().unwrap(), &remote],
    );
    args.drain(..2); // spawned, not bounded by `timeout`: waited for below.
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut client = lab.topo.client.spawn(&refs);
    let shown = lab::wait_until(Duration::from_secs(20), || {
        let t = lab.kernel_traces();
        t.contains("5000")
    });
    let during = lab.kernel_traces();
    assert!(
        shown,
        "no entry during the transfer:\n{during}\n{}",
        lab.daemon.log()
    );
    let table = text(&lab.topo.proxy.try_exec(&[FASP_PROXY, "sessions"]).stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("1 "))
        .unwrap_or_else(|| panic!("no forwarding row:\n{table}"));
    for field in [
        "alice",
        "192.0.2.2",
        "198.51.100.2:22",
        "198.51.100.2:33001",
        "5000",
    ] {
        assert!(row.contains(field), "{field} missing: {table}");
    }
    assert!(table.contains("1 live forwarding\n"), "{table}");
    let status = client.wait_exit(Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(0),
        "{}\n{}",
        client.log(),
        lab.daemon.log()
    );
    assert_eq!(
        std::fs::read(dst.join("up.bin")).unwrap(),
        std::fs::read(&src).unwrap()
    );
    if forwarding == "nftables" {
        // `192.0.2.2 . 5000 timeout … comment "…" : 198.51.100.2 . 22`
        let element = |to: &str| {
            during
                .lines()
                .any(|l| l.contains("192.0.2.2 . 5000 ") && l.ends_with(&format!(": {to} }}")))
        };
        assert!(
            element("198.51.100.2 . 22"),
            "the TCP twin to the server's SSH:\n{during}"
        );
        assert!(
            element("198.51.100.2 . 33001"),
            "the UDP entry to the server's FASP port:\n{during}"
        );
    } else {
        assert!(
            during.contains("tcp dpt:5000") && during.contains("udp dpt:5000"),
            "{during}"
        );
    }
    let log = lab.daemon.log_since(from);
    assert!(
        log.contains("forwarding 1 opened: user alice, client 192.0.2.2 -> server 198.51.100.2 (tcp 22, udp 33001) via proxy 192.0.2.1 port 5000"),
        "{log}"
    );
    assert!(log.contains("forwarding 1 closed by the client"), "{log}");
    let gone = lab::wait_until(Duration::from_secs(5), || lab.kernel_traces().is_empty());
    assert!(gone, "left after close:\n{}", lab.kernel_traces());

    // Download over HTTPS (dnats://, the certificate from create-config).
    let back = lab.path("back");
    std::fs::create_dir(&back).unwrap();
    let out = lab.exec(&lab.ascp_args(
        &url("dnats", 9092, PROXY_PASS),
        &[
            &format!(
                "root@{}:{}",
                lab::server_v4(0),
                dst.join("up.bin").display()
            ),
            back.to_str().unwrap(),
        ],
    ));
    assert!(
        out.status.success(),
        "{}\n{}",
        describe(&out),
        lab.daemon.log()
    );
    assert_eq!(
        std::fs::read(back.join("up.bin")).unwrap(),
        std::fs::read(&src).unwrap()
    );
    assert!(lab.kernel_traces().is_empty(), "{}", lab.kernel_traces());

    // The outside server saw only the proxy's outside address.
    let sources = lab.server_sources();
    assert!(sources.contains("198.51.100.1"), "{sources}");
    assert!(!sources.contains("192.0.2.2"), "{sources}");

    // A wrong password: refused by the proxy, nothing installed, no SSH attempted.
    let out = lab.exec(&lab.ascp_args(
        &url("dnat", 9091, "wrong"),
        &[src.to_str().unwrap(), &remote],
    ));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("request rejected by proxy"),
        "{}",
        describe(&out)
    );
    assert!(lab.kernel_traces().is_empty());
    lab.daemon.stop();
    assert!(lab.kernel_traces().is_empty());
}

#[test]
fn our_ascp_uploads_and_downloads_through_the_forward_proxy_with_nftables() {
    our_ascp_through_the_forward_proxy("nftables");
}

#[test]
fn our_ascp_uploads_and_downloads_through_the_forward_proxy_with_iptables() {
    our_ascp_through_the_forward_proxy("iptables");
}

#[test]
fn a_killed_client_s_forwarding_expires_and_a_killed_daemon_leaves_nothing_after_restart() {
    let mut lab = ForwardLab::new(&format!("{ASCP} --server"));
    let conf = lab.configure(
        "nftables",
        "<keepalive_interval>3</keepalive_interval><cleanup_interval>1</cleanup_interval>",
    );
    lab.start(&conf);
    let src = lab.path("big.bin");
    std::fs::write(&src, content(30_000_000, 5)).unwrap();
    let remote = format!("root@{}:/tmp/", lab::server_v4(0));
    let mut args = lab.ascp_args(
        &url("dnat", 9091, PROXY_PASS),
        &["-l", "10m", src.to_str().unwrap(), &remote],
    );
    args.drain(..2);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let client = lab.topo.client.spawn(&refs);
    assert!(lab::wait_until(Duration::from_secs(20), || lab
        .daemon
        .log()
        .contains("forwarding 1 opened")));
    // kill -9: no close, no keepalive any more.
    let pid = client.pid().to_string();
    lab.topo.client.exec(&["kill", "-KILL", &pid]);
    let expired = lab::wait_until(Duration::from_secs(15), || {
        lab.daemon
            .log()
            .contains("forwarding 1 expired (no keepalive for 3 s)")
    });
    assert!(expired, "{}", lab.daemon.log());
    assert!(
        lab::wait_until(Duration::from_secs(5), || lab.kernel_traces().is_empty()),
        "{}",
        lab.kernel_traces()
    );

    // kill -9 of the daemon with a live forwarding: the restart removes what it left.
    let mut args = lab.ascp_args(
        &url("dnat", 9091, PROXY_PASS),
        &["-l", "10m", src.to_str().unwrap(), &remote],
    );
    args.drain(..2);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let client = lab.topo.client.spawn(&refs);
    assert!(lab::wait_until(Duration::from_secs(20), || lab
        .daemon
        .log()
        .contains("forwarding 2 opened")));
    let daemon = lab.daemon.take();
    let pid = daemon.pid().to_string();
    lab.topo.proxy.exec(&["kill", "-KILL", &pid]);
    let cpid = client.pid().to_string();
    lab.topo.client.exec(&["kill", "-KILL", &cpid]);
    assert!(
        !lab.kernel_traces().is_empty(),
        "a dead daemon leaves its entries"
    );
    lab.start(&conf);
    assert!(
        lab.daemon.log().contains("removed") && lab.kernel_traces().is_empty(),
        "{}\n{}",
        lab.kernel_traces(),
        lab.daemon.log()
    );
    lab.daemon.stop();
}

/// The resident memory of a process, in KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// `count` opens with wrong passwords from the client's address, `concurrency` at a time;
/// the statuses seen, by code (0: no answer).
async fn wrong_password_flood(
    api: std::net::SocketAddr,
    count: usize,
    concurrency: usize,
) -> std::collections::BTreeMap<u16, usize> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = std::sync::Arc::clone(&next);
            tokio::spawn(async move {
                let mut seen = std::collections::BTreeMap::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let request = api_client::ibm_request(
                        "/proxy/open",
                        &format!("{PROXY_USER}:guess-{i}"),
                        OPEN_BODY,
                    );
                    let reply = tokio::time::timeout(
                        Duration::from_secs(30),
                        api_client::send_from(None, api, &request),
                    )
                    .await
                    .ok()
                    .flatten();
                    *seen.entry(reply.map_or(0, |r| r.status)).or_insert(0) += 1;
                }
                seen
            })
        })
        .collect();
    let mut all = std::collections::BTreeMap::new();
    for w in workers {
        for (status, n) in w.await.unwrap() {
            *all.entry(status).or_insert(0) += n;
        }
    }
    all
}

/// IBM ascp's open body for the outside server.
const OPEN_BODY: &str =
    r#"{"host_spec" : "IPv4", "host" : "198.51.100.2", "tcp_port" : 22, "udp_port" : 33001}"#;

#[test]
fn ten_thousand_wrong_passwords_get_401_or_429_in_bounded_memory_and_install_nothing() {
    let mut lab = ForwardLab::new(&format!("{ASCP} --server"));
    let conf = lab.configure("nftables", "");
    // Penalties of 1 s doubling to at most 4 s keep the test short.
    let conf_text = std::fs::read_to_string(&conf).unwrap().replace(
        "</server></CONF>",
        "<per_source><penalty_auth_failure>1</penalty_auth_failure><penalty_max>4</penalty_max>\
         </per_source></server></CONF>",
    );
    std::fs::write(&conf, conf_text).unwrap();
    lab.start(&conf);
    let pid = lab.daemon.process().pid();
    let api = std::net::SocketAddr::new(lab::PROXY_CLIENT_V4.into(), 9091);
    // A second client address, for the partner next to the attacker.
    lab.topo.client.add_addr(lab::CLIENT_IF, "192.0.2.3/24");
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    // 1,000 wrong passwords, then 9,000 more: the memory after the first thousand (argon2's
    // working memory included) does not grow with the next nine.
    let rss_start = rss_kib(pid);
    let first = lab
        .topo
        .client
        .run_in(|| runtime().block_on(wrong_password_flood(api, 1_000, 8)));
    let rss_first = rss_kib(pid);
    let rest = lab
        .topo
        .client
        .run_in(|| runtime().block_on(wrong_password_flood(api, 9_000, 8)));
    let rss_rest = rss_kib(pid);
    eprintln!(
        "wrong passwords: first 1,000 {first:?}, next 9,000 {rest:?} (status: count); daemon \
         VmRSS {rss_start} KiB at start, {rss_first} KiB after 1,000, {rss_rest} KiB after 10,000"
    );
    let statuses: Vec<u16> = first.keys().chain(rest.keys()).copied().collect();
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{first:?} {rest:?}"
    );
    let verified = first.get(&401).unwrap_or(&0) + rest.get(&401).unwrap_or(&0);
    assert!(
        verified < 100,
        "the penalty lets only a few guesses through: {first:?} {rest:?}"
    );
    // Measured: +0.1 MiB. Anything kept per request would be far more (9,000 requests), and so
    // would an argon2id working set (19 MiB) left resident after a verification.
    assert!(
        rss_rest < rss_first + 8 * 1024,
        "memory grew from {rss_start} KiB (start) and {rss_first} KiB (1,000 wrong passwords) to \
         {rss_rest} KiB over 9,000 more"
    );
    assert!(lab.daemon.process_mut().try_wait().is_none());
    assert!(lab.kernel_traces().is_empty(), "{}", lab.kernel_traces());
    // One log line per failed verification and one per penalty, not one per request.
    let log = lab.daemon.log();
    let failed = log.matches("failed login from 192.0.2.2").count();
    let refused = log.matches("calls from 192.0.2.2 refused (429)").count();
    assert_eq!(failed, verified, "{log}");
    assert!((1..=verified).contains(&refused), "{log}");

    // The partner next door is not affected, and the attacker's address gets in again with the
    // right password once its penalty is over.
    let good = api_client::ibm_request(
        "/proxy/open",
        &format!("{PROXY_USER}:{PROXY_PASS}"),
        OPEN_BODY,
    );
    let partner = Some("192.0.2.3".parse().unwrap());
    let reply = lab.topo.client.run_in(|| {
        runtime()
            .block_on(api_client::send_from(partner, api, &good))
            .unwrap()
    });
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = lab.topo.client.run_in(|| {
        runtime().block_on(async {
            for _ in 0..10 {
                let reply = api_client::send_from(None, api, &good).await.unwrap();
                if reply.status != 429 {
                    return reply;
                }
                let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
                tokio::time::sleep(Duration::from_secs(wait.min(20))).await;
            }
            panic!("still refused after ten waits");
        })
    });
    assert_eq!(reply.status, 200, "{}", reply.body);
    lab.daemon.stop();
    let nft = text(
        &lab.topo
            .proxy
            .try_exec(&["nft", "list", "table", "ip", "fasp_proxy"])
            .stdout,
    );
    assert!(!nft.contains("192.0.2."), "{nft}");
}

fn ibm_ascp_dir() -> PathBuf {
    let dir = std::env::var_os("FASP_PROXY_IBM_ASCP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "FASP_PROXY_IBM_ASCP_DIR is not set: run the tests with ./scripts/test.sh, which \
                 fetches IBM's ascp (PyPI cos-aspera 0.1.163682) and sets it"
            )
        });
    assert!(dir.join("ascp").is_file(), "{}", dir.display());
    dir
}

/// IBM's client through the forward proxy to an outside OpenSSH that runs IBM's ascp as the
/// server (client-licensed: it ends the session with "Server has only a client license" once
/// SSH is through): the open, the SSH through the forwarding, the close.
fn ibm_ascp_through_the_forward_proxy(scheme: &str, port: u16) {
    let ibm = ibm_ascp_dir();
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("ibm-server.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$SSH_ORIGINAL_COMMAND\" in\n\
             'ascp -S. -V1') LD_LIBRARY_PATH={ibm} exec {ibm}/ascp -S. -V1 ;;\n\
             *) echo \"not an IBM command: $SSH_ORIGINAL_COMMAND\" >&2; exit 1 ;;\nesac\n",
            ibm = ibm.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // IBM's client speaks ssh-rsa (SHA-1) only: an RSA host key and client key.
    let rsa = work.path().join("id_rsa");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "3072", "-m", "PEM", "-N", "", "-f"])
        .arg(&rsa)
        .status()
        .unwrap();
    assert!(st.success());
    let host_rsa = work.path().join("host_rsa");
    std::fs::copy(&rsa, &host_rsa).unwrap();
    std::fs::set_permissions(
        &host_rsa,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut lab = ForwardLab::new(&format!(
        "{}\nHostKey {}\nHostKeyAlgorithms +ssh-rsa\nPubkeyAcceptedAlgorithms +ssh-rsa",
        script.display(),
        host_rsa.display()
    ));
    std::fs::copy(
        rsa.with_extension("pub"),
        lab.server.dir.path().join("authorized_keys"),
    )
    .unwrap();
    let conf = lab.configure("nftables", "<session_timeout>1</session_timeout>");
    lab.start(&conf);
    let src = lab.path("ibm.bin");
    std::fs::write(&src, content(100_000, 9)).unwrap();
    let ibm_args = |proxy: &str| -> Vec<String> {
        vec![
            "env".into(),
            format!("LD_LIBRARY_PATH={}", ibm.display()),
            "timeout".into(),
            "60".into(),
            ibm.join("ascp").display().to_string(),
            format!("--proxy={proxy}"),
            "-P".into(),
            "22".into(),
            "-i".into(),
            rsa.display().to_string(),
            src.display().to_string(),
            format!("root@{}:/tmp/", lab::server_v4(0)),
        ]
    };
    let from = lab.daemon.log().len();
    let out = lab.exec(&ibm_args(&url(scheme, port, PROXY_PASS)));
    let log = lab.daemon.log_since(from);
    assert!(
        text(&out.stdout).contains("Server has only a client license")
            || text(&out.stderr).contains("Server has only a client license"),
        "IBM's server must answer through the forwarding:\n{}\n{log}",
        describe(&out)
    );
    assert!(log.contains("forwarding 1 opened: user alice, client 192.0.2.2 -> server 198.51.100.2 (tcp 22, udp 33001)"), "{log}");
    assert!(log.contains("forwarding 1 closed by the client"), "{log}");
    assert!(lab.kernel_traces().is_empty(), "{}", lab.kernel_traces());
    let sources = lab.server_sources();
    assert!(
        sources.contains("198.51.100.1") && !sources.contains("192.0.2.2"),
        "{sources}"
    );

    // A wrong password: IBM's client says so and nothing is installed.
    let out = lab.exec(&ibm_args(&url(scheme, port, "wrong")));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        all.contains("request rejected by proxy"),
        "{}",
        describe(&out)
    );
    assert!(lab.kernel_traces().is_empty());
    lab.daemon.stop();
}

#[test]
fn ibm_ascp_goes_through_the_forward_proxy_over_http() {
    ibm_ascp_through_the_forward_proxy("dnat", 9091);
}

#[test]
fn ibm_ascp_goes_through_the_forward_proxy_over_https() {
    ibm_ascp_through_the_forward_proxy("dnats", 9092);
}

/// The certificate the HTTPS API serves now, as PEM, fetched from the client namespace.
fn served_certificate(lab: &ForwardLab) -> String {
    let out = lab.topo.client.try_exec(&[
        "python3",
        "-c",
        &format!(
            "import ssl; print(ssl.get_server_certificate(('{}', 9092)), end='')",
            lab::PROXY_CLIENT_V4
        ),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    text(&out.stdout)
}

/// The base64 body of a PEM certificate, for comparing two encodings of it.
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

#[test]
fn reload_serves_a_new_https_certificate_on_the_same_port_and_a_bad_one_changes_nothing() {
    let mut lab = ForwardLab::new(&format!("{ASCP} --server"));
    let conf = lab.configure("nftables", "");
    lab.start(&conf);
    let etc = lab.daemon.etc();
    let first = std::fs::read_to_string(etc.join("api_cert.pem")).unwrap();
    assert_eq!(pem_body(&served_certificate(&lab)), pem_body(&first));

    // A new certificate in another directory, the configuration pointed at it.
    let new_dir = lab.path("newcert");
    let out = std::process::Command::new(FASP_PROXY)
        .args(["create-certificate", "--dir", new_dir.to_str().unwrap()])
        .args(["--api-name", &lab::PROXY_CLIENT_V4.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let written = std::fs::read_to_string(&conf).unwrap();
    let moved = written.replace(
        &format!("{}/api_", etc.display()),
        &format!("{}/api_", new_dir.display()),
    );
    std::fs::write(&conf, &moved).unwrap();
    let reload = |lab: &ForwardLab| {
        lab.topo
            .proxy
            .try_exec(&[FASP_PROXY, "--config", conf.to_str().unwrap(), "reload"])
    };
    let out = reload(&lab);
    assert!(
        out.status.success(),
        "{}\n{}",
        describe(&out),
        lab.daemon.log()
    );
    let second = std::fs::read_to_string(new_dir.join("api_cert.pem")).unwrap();
    assert_ne!(pem_body(&first), pem_body(&second));
    assert_eq!(pem_body(&served_certificate(&lab)), pem_body(&second));

    // A key file that is not a key: the reload fails and the certificate in force stays.
    std::fs::write(new_dir.join("broken_key.pem"), "not a key\n").unwrap();
    std::fs::write(&conf, moved.replace("api_key.pem", "broken_key.pem")).unwrap();
    let out = reload(&lab);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_eq!(pem_body(&served_certificate(&lab)), pem_body(&second));
    lab.daemon.stop();
}
