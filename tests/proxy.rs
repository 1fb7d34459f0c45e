//! The reverse proxy end to end in the namespace lab: `ascp` (and real OpenSSH `ssh`) in the
//! client namespace, the `fasp-proxy run` daemon in the proxy namespace, real OpenSSH `sshd`
//! running `ascp --server` on the internal servers; the UDP data forwarded by the kernel, read
//! back with `nft`, `iptables` and `conntrack`.
//!
//! Covered: upload and download with the kernel entry visible during the transfer (nftables and
//! iptables) and gone after; routing by `host_ip` prefix, `host_domain` and the default rule;
//! round robin with a dead server marked once, skipped, and used again after the hold time;
//! kill -9 mid-transfer and the restart's reconcile; refusals (unknown user, wrong key, shell,
//! port forwarding, other commands, allow-list, no rule, session cap); OpenSSH `ssh` running
//! the transfer command; squash and individual accounts owning what they upload.
//!
//! The last one needs two local accounts; the test creates them if they are missing:
//! `faspsquash` and `faspuser` (`useradd --system --no-create-home --shell /bin/sh
//! --password '*'`: no usable password, but not locked, so sshd without PAM takes their keys).
//! A host_domain name is resolved by giving the one client command a private mount namespace
//! with its own /etc/hosts (`unshare -m` + `mount --bind`); the machine's file is not changed.

mod lab;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use fasp_proxy::protocol::{
    Direction, ErrorCode, Frame, Overwrite, ResumeLevel, SessionInit, VERSION,
};
use lab::daemon::{Daemon, NO_PENALTIES, SSH_PORT};
use lab::{describe, ok, ssh_keygen, text, NsProcess, Sshd, Topology};

const ASCP: &str = env!("CARGO_BIN_EXE_ascp");
const FASP_PROXY: &str = env!("CARGO_BIN_EXE_fasp-proxy");

/// Extra proxy addresses on the client link, so the client can dial different proxy addresses.
const PROXY_ALT_A: &str = "192.0.2.10";
const PROXY_ALT_B: &str = "192.0.2.20";
/// A name the client resolves (through a private /etc/hosts) to [`PROXY_ALT_B`].
const PROXY_NAME: &str = "files.example.com";

/// The proxy tests' setup, built on the one namespace lab ([`lab::Topology`]): the lab's
/// hosts, the internal servers' sshd, a work directory and the daemon under test.
struct ProxyLab {
    topo: Topology,
    servers: Vec<Sshd>,
    dir: tempfile::TempDir,
    daemon: Daemon,
}

impl ProxyLab {
    /// `n` internal servers, each running sshd whose transfer command is the ascp under test.
    fn new(n: usize) -> ProxyLab {
        ProxyLab::with_sshd_config(n, "")
    }

    /// Like [`ProxyLab::new`], with `extra` appended to each sshd_config (after the `ForceCommand`).
    fn with_sshd_config(n: usize, extra: &str) -> ProxyLab {
        ProxyLab::with_force_command(n, &format!("{ASCP} --server\n{extra}"))
    }

    /// `n` internal servers whose sshd runs `command` for every login (`ForceCommand`; the
    /// client's command is in `$SSH_ORIGINAL_COMMAND`).
    fn with_force_command(n: usize, command: &str) -> ProxyLab {
        let topo = Topology::new(n);
        let sshd_extra = format!("ForceCommand {command}\n");
        let servers = (0..n)
            .map(|i| lab::daemon::internal_server(&topo, i, &sshd_extra))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::new(&topo.proxy, dir.path());
        ProxyLab {
            topo,
            servers,
            dir,
            daemon,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Adds [`PROXY_ALT_A`] and [`PROXY_ALT_B`] to the proxy's client-facing interface.
    fn add_proxy_addresses(&self) {
        for a in [PROXY_ALT_A, PROXY_ALT_B] {
            self.topo
                .proxy
                .add_addr(lab::PROXY_CLIENT_IF, &format!("{a}/24"));
        }
    }

    /// Makes every server accept server 0's client key for root (a `<hosts>` rule has one
    /// keyfile for all its servers).
    fn trust_key_everywhere(&self) {
        lab::daemon::trust_first_client_key(&self.servers);
    }

    /// Kills server `i`'s sshd (by PID): the server stops answering SSH.
    fn kill_sshd(&mut self, i: usize) {
        let pid = self.servers[i].process.pid().to_string();
        self.topo.servers[i].exec(&["kill", "-KILL", &pid]);
        let process = &mut self.servers[i].process;
        let gone = lab::wait_until(Duration::from_secs(10), || process.try_wait().is_some());
        assert!(gone, "sshd of server {i} did not die");
    }

    /// Starts server `i`'s sshd again, with the same keys and configuration.
    fn restart_sshd(&mut self, i: usize) {
        self.servers[i].restart(&self.topo.servers[i]);
    }

    /// Writes the proxy configuration with `rules` (`extra` goes into `<rproxy>`), and the proxy
    /// user's authorized keys.
    fn configure(&self, rules: &str, extra: &str) -> PathBuf {
        self.configure_full(rules, extra, "")
    }

    /// Like [`ProxyLab::configure`], with `server_extra` put into `<server>` (e.g.
    /// `<forwarding_type>`). May be called again to rewrite the configuration. Without a
    /// `<per_source>` in `server_extra`, sources are not penalised (these tests log in from one
    /// address again and again, also after refusals they provoke); the tests of penalties set
    /// their own.
    fn configure_full(&self, rules: &str, extra: &str, server_extra: &str) -> PathBuf {
        let server_extra = if server_extra.contains("<per_source>") {
            server_extra.to_string()
        } else {
            format!("{server_extra}{NO_PENALTIES}")
        };
        self.daemon.create_config(&[]);
        self.daemon
            .authorize("root", &self.servers[0].client_key.with_extension("pub"));
        let conf = self.daemon.write_conf(&format!(
            "<CONF><server><rproxy>\n{basics}{extra}\n<rules>\n{rules}\n</rules>\n</rproxy>\n\
             {server_extra}\n</server></CONF>\n",
            basics = self.daemon.rproxy_basics(1),
        ));
        // The proxy knows every internal server's host key (checked strictly).
        let servers: Vec<&Sshd> = self.servers.iter().collect();
        lab::seed_known_hosts(&self.daemon.etc().join("known_hosts"), &servers);
        // The client trusts the proxy's host key under every name it dials.
        let names = [
            lab::PROXY_CLIENT_V4.to_string(),
            PROXY_ALT_A.into(),
            PROXY_ALT_B.into(),
            PROXY_NAME.into(),
        ];
        self.daemon
            .write_client_known_hosts(&self.path("proxy_known_hosts"), &names, SSH_PORT);
        conf
    }

    /// The ascp command line up to the options, logging in to the proxy with `key`.
    fn ascp_args_with_key(&self, key: &Path) -> Vec<String> {
        lab::daemon::ascp_login(key, &self.path("proxy_known_hosts"))
    }

    fn ascp_args(&self) -> Vec<String> {
        self.ascp_args_with_key(&self.servers[0].client_key)
    }

    /// A source file `name` of `len` bytes (pattern `seed`), an empty destination directory
    /// `dst_dir`, and the remote spec of that directory through the proxy's IPv4 address.
    fn upload_files(
        &self,
        name: &str,
        len: usize,
        seed: u8,
        dst_dir: &str,
    ) -> (PathBuf, PathBuf, String) {
        let src = self.path(name);
        std::fs::write(&src, content(len, seed)).unwrap();
        let dst = self.path(dst_dir);
        std::fs::create_dir(&dst).unwrap();
        let remote = format!("root@{}:{}", lab::PROXY_CLIENT_V4, dst.display());
        (src, dst, remote)
    }

    /// Starts ascp towards the proxy in the background (for transfers observed while they run).
    fn spawn_ascp(&self, extra: &[&str]) -> NsProcess {
        let mut args = self.ascp_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.topo.client.spawn(&refs)
    }

    fn ascp(&self, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec!["timeout".into(), "60".into()];
        args.extend(self.ascp_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        self.client_exec(&args)
    }

    /// ascp with the client's /etc/hosts replaced (in a private mount namespace of that one
    /// command) by one mapping [`PROXY_NAME`] to [`PROXY_ALT_B`].
    fn ascp_resolving_name(&self, extra: &[&str]) -> Output {
        let hosts = self.path("client_hosts");
        std::fs::write(
            &hosts,
            format!("127.0.0.1 localhost\n{PROXY_ALT_B} {PROXY_NAME}\n"),
        )
        .unwrap();
        let mut args: Vec<String> = [
            "unshare",
            "-m",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
            hosts.to_str().unwrap(),
            "timeout",
            "60",
        ]
        .map(String::from)
        .to_vec();
        args.extend(self.ascp_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        self.client_exec(&args)
    }

    fn client_exec(&self, args: &[String]) -> Output {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.topo.client.try_exec(&refs)
    }

    /// OpenSSH `ssh` to the proxy (port 33001) with server 0's client key.
    fn ssh_args(&self, destination: &str, extra: &[&str]) -> Vec<String> {
        let mut args =
            lab::daemon::ssh_login(&self.servers[0].client_key, &self.path("proxy_known_hosts"));
        args.extend(["-o", "ConnectTimeout=10"].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(destination.into());
        args
    }

    /// Runs `ssh [extra] destination [command]` (bounded) in the client namespace.
    fn ssh(&self, extra: &[&str], command: Option<&str>) -> Output {
        let mut args: Vec<String> = vec!["timeout".into(), "30".into()];
        args.extend(self.ssh_args(&format!("root@{}", lab::PROXY_CLIENT_V4), extra));
        args.extend(command.map(String::from));
        self.client_exec(&args)
    }

    fn nft_sessions(&self) -> String {
        self.topo.nft_sessions()
    }

    fn iptables_nat(&self) -> String {
        self.topo.iptables_nat()
    }

    /// UDP flows in the proxy's conntrack table whose original source port is `port`.
    fn conntrack_from_port(&self, port: u16) -> String {
        let port = port.to_string();
        text(
            &self
                .topo
                .proxy
                .try_exec(&["conntrack", "-L", "-p", "udp", "--orig-port-src", &port])
                .stdout,
        )
    }

    /// Panics if the proxy holds a kernel entry for the client (nft map).
    fn assert_no_entry(&self, what: &str) {
        let map = self.nft_sessions();
        assert!(
            !map.contains(&lab::CLIENT_V4.to_string()),
            "{what}: a kernel entry exists:\n{map}"
        );
    }

    /// How many times server `i`'s sshd accepted a login.
    fn logins(&self, i: usize) -> usize {
        self.servers[i].logins()
    }
}

/// The UUID of the last session whose log line contains `needle`.
fn session_id(log: &str, needle: &str) -> String {
    let line = log
        .lines()
        .rfind(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no log line with {needle:?}:\n{log}"));
    // `... fasp-proxy[PID]: LOG [UUID] message`
    let at = line.find("]: ").expect("a log line") + 3;
    let start = at + line[at..].find('[').expect("a session id") + 1;
    let end = start + line[start..].find(']').expect("a session id");
    let id = &line[start..end];
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "not a session id: {line}"
    );
    id.to_string()
}

/// Asserts the command failed and its stderr says `needle`.
fn refused(out: &Output, needle: &str) -> String {
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains(needle),
        "expected a failure saying {needle:?}, got {}",
        describe(out)
    );
    err
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn upload_and_download_through_the_proxy_with_the_kernel_forwarding_the_data() {
    let mut lab = ProxyLab::new(1);
    let key = lab.servers[0].client_key.display().to_string();
    let conf = lab.configure(
        &format!(
            "<rule><host>{}:22</host><keyfile>{key}</keyfile></rule>",
            lab::server_v4(0)
        ),
        "",
    );
    lab.daemon.start(&conf);

    let (src, dst, remote) = lab.upload_files("payload.bin", 20_000_000, 5, "server_in");

    // 20 MB at 40 Mbit/s: about 4 s, long enough to see the kernel entry while it runs.
    let mut running = lab.spawn_ascp(&["-q", "-l", "40m", src.to_str().unwrap(), remote.as_str()]);
    let seen = lab::wait_until(Duration::from_secs(15), || {
        lab.nft_sessions().contains("192.0.2.2 . ")
    });
    assert!(
        seen,
        "no kernel entry during the transfer:\n{}\n{}",
        lab.nft_sessions(),
        lab.daemon.log()
    );
    let map = lab.nft_sessions();
    assert!(map.contains(": 198.51.100.2 . 33001"), "{map}");
    // The element carries the session's UUID, the one its log lines show.
    let id = session_id(&lab.daemon.log(), "Setup UDP forwarding");
    assert!(map.contains(&id), "no element for session {id}:\n{map}");
    let status = running.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "the upload failed ({status}):\n{}\n{}",
        running.log(),
        lab.daemon.log()
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
    let log = lab.daemon.log();
    for line in [
        "Received connection request from 192.0.2.2",
        "Established SSH connection with server 198.51.100.2:22",
        "Setup UDP forwarding between 192.0.2.2:",
        "Connection closed (EOF)",
    ] {
        assert!(log.contains(line), "log lacks {line:?}:\n{log}");
    }

    // SIGTERM: the daemon ends cleanly and leaves nothing.
    lab.daemon.stop();
    assert!(
        lab.daemon.log().contains("LOG stopped\n"),
        "{}",
        lab.daemon.log()
    );
    assert!(!lab.nft_sessions().contains("192.0.2.2"));
}

#[test]
fn the_daemon_refuses_to_start_on_a_bad_configuration() {
    let lab = ProxyLab::new(1);
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

/// A default rule to server 0 with its key.
fn default_rule(lab: &ProxyLab) -> String {
    format!(
        "<rule><host>{}:22</host><keyfile>{}</keyfile></rule>",
        lab::server_v4(0),
        lab.servers[0].client_key.display()
    )
}

/// Uploads `src` as `user@host:dst` (fast, small files) and checks it arrived.
fn upload(lab: &ProxyLab, src: &Path, user_host: &str, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    let remote = format!("{user_host}:{}", dst.display());
    ok(&lab.ascp(&["-q", "-l", "200m", src.to_str().unwrap(), &remote]));
    let name = src.file_name().unwrap();
    assert_eq!(
        std::fs::read(src).unwrap(),
        std::fs::read(dst.join(name)).unwrap()
    );
}

#[test]
fn address_prefix_name_and_default_rules_each_route_to_their_own_server() {
    let mut lab = ProxyLab::new(3);
    lab.add_proxy_addresses();
    let key = |i: usize| lab.servers[i].client_key.display().to_string();
    let rules = format!(
        "<rule host_ip=\"192.0.2.8/29\"><host>{}:22</host><keyfile>{}</keyfile></rule>\n\
         <rule host_domain=\"{PROXY_NAME}\"><host>{}:22</host><keyfile>{}</keyfile></rule>\n\
         <rule><host>{}:22</host><keyfile>{}</keyfile></rule>",
        lab::server_v4(0),
        key(0),
        lab::server_v4(1),
        key(1),
        lab::server_v4(2),
        key(2)
    );
    let conf = lab.configure(&rules, "");
    lab.daemon.start(&conf);
    let src = lab.path("small.bin");
    std::fs::write(&src, content(100_000, 1)).unwrap();

    // (host typed by the client, resolved through the private hosts file, expected server)
    let proxy = lab::PROXY_CLIENT_V4.to_string();
    let cases = [
        (PROXY_ALT_A, false, 0),    // inside 192.0.2.8/29: the host_ip rule
        (PROXY_NAME, true, 1),      // the name: the host_domain rule
        (proxy.as_str(), false, 2), // neither: the default rule
        (PROXY_ALT_B, false, 2),    // the address the name resolves to, typed: still the default
    ];
    for (n, (host, named, server)) in cases.into_iter().enumerate() {
        let dst = lab.path(&format!("in{n}"));
        std::fs::create_dir(&dst).unwrap();
        let before: Vec<usize> = (0..3).map(|i| lab.logins(i)).collect();
        let from = lab.daemon.log().len();
        let remote = format!("root@{host}:{}", dst.display());
        let args = ["-q", "-l", "200m", src.to_str().unwrap(), remote.as_str()];
        let out = if named {
            lab.ascp_resolving_name(&args)
        } else {
            lab.ascp(&args)
        };
        ok(&out);
        assert_eq!(
            std::fs::read(&src).unwrap(),
            std::fs::read(dst.join("small.bin")).unwrap()
        );
        let log = lab.daemon.log_since(from);
        let expected = format!(
            "Established SSH connection with server {}:22",
            lab::server_v4(server)
        );
        assert!(
            log.contains(&expected) && log.matches("Established SSH connection").count() == 1,
            "dialling {host}: expected {expected:?}:\n{log}"
        );
        let after: Vec<usize> = (0..3).map(|i| lab.logins(i)).collect();
        for i in 0..3 {
            assert_eq!(
                after[i] - before[i],
                usize::from(i == server),
                "dialling {host}: logins on server {i} ({before:?} -> {after:?})"
            );
        }
    }
}

#[test]
fn a_dead_server_is_marked_once_skipped_and_tried_again_after_the_hold_time() {
    let mut lab = ProxyLab::new(3);
    lab.trust_key_everywhere();
    let rule = format!(
        "<rule><hosts><host>{}:22</host><host>{}:22</host><host>{}:22</host></hosts>\
         <keyfile>{}</keyfile></rule>",
        lab::server_v4(0),
        lab::server_v4(1),
        lab::server_v4(2),
        lab.servers[0].client_key.display()
    );
    let dead = format!("internal server {}:22", lab::server_v4(1));
    lab.kill_sshd(1);
    let src = lab.path("small.bin");
    std::fs::write(&src, content(50_000, 2)).unwrap();
    let remote = format!("root@{}", lab::PROXY_CLIENT_V4);

    // Life 1, default hold time (120 s): round robin a, b→c, c, a, b→c. The marks here are
    // the passive ones real sessions make; active health checks are off (tests/health.rs).
    let no_checks = "<health_check_interval>0</health_check_interval>";
    let conf = lab.configure(&rule, no_checks);
    lab.daemon.start(&conf);
    for n in 0..5 {
        upload(&lab, &src, &remote, &lab.path(&format!("l1_{n}")));
    }
    let log = lab.daemon.log();
    assert_eq!(
        log.matches(&format!("{dead} marked faulty")).count(),
        1,
        "marked once:\n{log}"
    );
    // Session 5 started at the dead server too, but did not try it: one attempt in all.
    assert_eq!(
        log.matches(&format!("{dead}: ")).count(),
        1,
        "tried once, then skipped:\n{log}"
    );
    assert_eq!((lab.logins(0), lab.logins(2)), (2, 3), "{log}");
    assert!(!log.contains("no longer marked faulty"), "{log}");
    lab.daemon.stop();

    // Life 2, hold time 2 s: the mark clears and the server is used again once it is back.
    let conf = lab.configure(
        &rule,
        &format!("<faulty_host_hold_time>2</faulty_host_hold_time>{no_checks}"),
    );
    let from = lab.daemon.log().len();
    lab.daemon.start(&conf);
    upload(&lab, &src, &remote, &lab.path("l2_0")); // a
    upload(&lab, &src, &remote, &lab.path("l2_1")); // b fails, marked → c
    let log = lab.daemon.log_since(from);
    assert_eq!(
        log.matches(&format!("{dead} marked faulty")).count(),
        1,
        "{log}"
    );
    lab.restart_sshd(1);
    std::thread::sleep(Duration::from_millis(2500)); // the hold time passes
    upload(&lab, &src, &remote, &lab.path("l2_2")); // c; the mark is cleared first
    let log = lab.daemon.log_since(from);
    assert_eq!(
        log.matches(&format!("{dead} no longer marked faulty"))
            .count(),
        1,
        "{log}"
    );
    upload(&lab, &src, &remote, &lab.path("l2_3")); // a
    upload(&lab, &src, &remote, &lab.path("l2_4")); // b again
    let log = lab.daemon.log_since(from);
    assert!(
        log.contains(&format!(
            "Established SSH connection with server {}:22",
            lab::server_v4(1)
        )),
        "{log}"
    );
    assert_eq!(lab.logins(1), 1, "{}", lab.servers[1].process.log());
    assert_eq!(
        log.matches("marked faulty").count(),
        2,
        "marked + cleared only:\n{log}"
    );
}

#[test]
fn with_the_iptables_backend_the_entry_shows_in_iptables_during_the_transfer_and_goes_after() {
    let mut lab = ProxyLab::new(1);
    let conf = lab.configure_full(
        &default_rule(&lab),
        "",
        "<forwarding_type>iptables</forwarding_type>",
    );
    lab.daemon.start(&conf);
    let (src, dst, remote) = lab.upload_files("payload.bin", 10_000_000, 3, "server_in");
    // 10 MB at 20 Mbit/s: about 4 s.
    let mut running = lab.spawn_ascp(&["-q", "-l", "20m", src.to_str().unwrap(), remote.as_str()]);
    let seen = lab::wait_until(Duration::from_secs(15), || {
        lab.daemon.log().contains("Setup UDP forwarding")
    });
    assert!(seen, "no session:\n{}\n{}", running.log(), lab.daemon.log());
    let id = session_id(&lab.daemon.log(), "Setup UDP forwarding");
    let nat = lab.iptables_nat();
    let dnat: Vec<&str> = nat
        .lines()
        .filter(|l| l.starts_with("DNAT") && l.contains(&id))
        .collect();
    assert_eq!(dnat.len(), 1, "one DNAT line for {id}:\n{nat}");
    assert!(
        dnat[0].contains("192.0.2.2") && dnat[0].contains("to:198.51.100.2:33001"),
        "{}",
        dnat[0]
    );
    assert!(
        !lab.nft_sessions().contains("192.0.2.2"),
        "the nftables map is not used"
    );
    let status = running.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{}", running.log());
    assert_eq!(
        std::fs::read(&src).unwrap(),
        std::fs::read(dst.join("payload.bin")).unwrap()
    );
    let gone = lab::wait_until(Duration::from_secs(10), || {
        !lab.iptables_nat().contains(&id)
    });
    assert!(gone, "a rule outlived its session:\n{}", lab.iptables_nat());
    assert!(
        !lab.iptables_nat().contains("192.0.2.2"),
        "{}",
        lab.iptables_nat()
    );
}

#[test]
fn after_kill_9_mid_transfer_the_restarted_daemon_drops_what_the_previous_life_left() {
    let mut lab = ProxyLab::new(1);
    let conf = lab.configure(&default_rule(&lab), "");
    lab.daemon.start(&conf);
    let (src, _dst, remote) = lab.upload_files("payload.bin", 20_000_000, 4, "server_in");
    // 20 MB at 10 Mbit/s: 16 s, cut short.
    let client = lab.spawn_ascp(&[
        "-q",
        "-l",
        "10m",
        "--client-udp-port",
        "40123",
        src.to_str().unwrap(),
        remote.as_str(),
    ]);
    let flowing = lab::wait_until(Duration::from_secs(20), || {
        lab.nft_sessions().contains("192.0.2.2 . 40123")
            && lab.conntrack_from_port(40123).contains("src=192.0.2.2")
    });
    assert!(
        flowing,
        "no entry or flow:\n{}\n{}\n{}\n{}",
        lab.nft_sessions(),
        lab.conntrack_from_port(40123),
        client.log(),
        lab.daemon.log()
    );

    // kill -9: nothing is cleaned up by the daemon itself.
    let mut daemon = lab.daemon.take();
    let pid = daemon.pid().to_string();
    lab.topo.proxy.exec(&["kill", "-KILL", &pid]);
    daemon.wait_exit(Duration::from_secs(10));
    drop(client); // the client goes too, so nothing makes new flows
    assert!(
        lab.nft_sessions().contains("192.0.2.2 . 40123"),
        "the entry should outlive a killed daemon:\n{}",
        lab.nft_sessions()
    );

    // The restart reconciles: the previous life's entry and its flow are gone.
    let from = lab.daemon.log().len();
    lab.daemon.start(&conf);
    let log = lab.daemon.log_since(from);
    assert!(log.contains("left by a previous run"), "{log}");
    lab.assert_no_entry("after the restart");
    let flows = lab.conntrack_from_port(40123);
    assert!(
        !flows.contains("src=192.0.2.2"),
        "a flow of the previous life is left:\n{flows}"
    );
}

#[test]
fn refusals_say_why_and_leave_no_kernel_entry() {
    let mut lab = ProxyLab::new(1);
    lab.add_proxy_addresses();
    // Only 192.0.2.1 has a rule; one session at a time.
    let rule = format!(
        "<rule host_ip=\"{}\"><host>{}:22</host><keyfile>{}</keyfile></rule>",
        lab::PROXY_CLIENT_V4,
        lab::server_v4(0),
        lab.servers[0].client_key.display()
    );
    let conf = lab.configure(&rule, "<max_sessions>1</max_sessions>");
    lab.daemon.start(&conf);
    let src = lab.path("small.bin");
    std::fs::write(&src, content(10_000, 6)).unwrap();
    let dst = lab.path("in");
    std::fs::create_dir(&dst).unwrap();
    let to = |user_host: &str| format!("{user_host}:{}", dst.display());
    let proxy = lab::PROXY_CLIENT_V4.to_string();
    let small = src.to_str().unwrap();

    // Unknown user.
    let out = lab.ascp(&["-q", small, &to(&format!("nosuchuser@{proxy}"))]);
    refused(&out, "authentication failed");
    lab.assert_no_entry("unknown user");

    // Wrong key.
    let wrong = lab.path("wrong_key");
    ssh_keygen(&wrong);
    let mut args = vec!["timeout".to_string(), "60".into()];
    args.extend(lab.ascp_args_with_key(&wrong));
    args.extend(["-q", small, &to(&format!("root@{proxy}"))].map(String::from));
    refused(&lab.client_exec(&args), "authentication failed");
    lab.assert_no_entry("wrong key");

    // A shell, with real OpenSSH.
    let out = lab.ssh(&["-T"], None);
    refused(&out, "interactive shells are not available");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    lab.assert_no_entry("shell");

    // A command other than the transfer.
    let out = lab.ssh(&[], Some("id"));
    refused(&out, "command not allowed: id");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    lab.assert_no_entry("command");

    // Port forwarding: `ssh -W` and `ssh -L`.
    let target = format!("{}:22", lab::server_v4(0));
    let out = lab.ssh(&["-W", &target], None);
    refused(&out, "administratively prohibited");
    let mut args = lab.ssh_args(
        &format!("root@{proxy}"),
        &["-N", "-L", &format!("127.0.0.1:10022:{target}")],
    );
    args.insert(0, "timeout".into());
    args.insert(1, "30".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let forwarding = lab.topo.client.spawn(&refs);
    let local: SocketAddr = "127.0.0.1:10022".parse().unwrap();
    let mut conn = None;
    lab::wait_until(Duration::from_secs(10), || {
        conn = lab.topo.client.run_in(|| {
            std::net::TcpStream::connect_timeout(&local, Duration::from_millis(200)).ok()
        });
        conn.is_some()
    });
    let mut conn = conn.unwrap_or_else(|| panic!("ssh -L did not listen:\n{}", forwarding.log()));
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    let read = std::io::Read::read(&mut conn, &mut buf);
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the forwarded connection got data: {read:?}"
    );
    assert!(
        forwarding.wait_for_log("administratively prohibited", Duration::from_secs(10)),
        "{}",
        forwarding.log()
    );
    assert!(
        lab.daemon
            .log()
            .contains(&format!("port forwarding to {target} refused")),
        "{}",
        lab.daemon.log()
    );
    drop(forwarding);
    lab.assert_no_entry("port forwarding");

    // No rule for the address dialled.
    let out = lab.ascp(&["-q", small, &to(&format!("root@{PROXY_ALT_A}"))]);
    refused(&out, "no rule matches this connection");
    lab.assert_no_entry("no rule");
    assert!(
        lab.daemon.log().contains("no rule matches"),
        "{}",
        lab.daemon.log()
    );

    // Over the session cap: one long transfer runs, a second is refused.
    let big = lab.path("big.bin");
    std::fs::write(&big, content(20_000_000, 7)).unwrap();
    let remote = to(&format!("root@{proxy}"));
    let long = lab.spawn_ascp(&["-q", "-l", "10m", big.to_str().unwrap(), remote.as_str()]);
    let running = lab::wait_until(Duration::from_secs(20), || {
        lab.nft_sessions().contains("192.0.2.2 . ")
    });
    assert!(running, "the first transfer did not start:\n{}", long.log());
    let out = lab.ascp(&["-q", small, &remote]);
    refused(&out, "too many sessions");
    let map = lab.nft_sessions();
    assert_eq!(
        map.matches("192.0.2.2 . ").count(),
        1,
        "one entry only:\n{map}"
    );
    // The client goes away mid-transfer: its session ends and its entry goes.
    drop(long);
    let gone = lab::wait_until(Duration::from_secs(20), || {
        !lab.nft_sessions().contains("192.0.2.2")
    });
    assert!(
        gone,
        "the entry outlived its disconnected client:\n{}\n{}",
        lab.nft_sessions(),
        lab.daemon.log()
    );
}

#[test]
fn a_client_outside_the_allow_list_is_closed_before_ssh() {
    let mut lab = ProxyLab::new(1);
    let conf = lab.configure(
        &default_rule(&lab),
        "<allowed_clients><cidr>203.0.113.0/24</cidr></allowed_clients>",
    );
    lab.daemon.start(&conf);
    let src = lab.path("small.bin");
    std::fs::write(&src, content(10_000, 8)).unwrap();
    let remote = format!("root@{}:/tmp", lab::PROXY_CLIENT_V4);
    let out = lab.ascp(&["-q", src.to_str().unwrap(), &remote]);
    refused(&out, "cannot connect to 192.0.2.1:33001");
    let out = lab.ssh(&[], Some("ascp --server"));
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("closed") || text(&out.stderr).contains("reset"),
        "{}",
        describe(&out)
    );
    let log = lab.daemon.log();
    assert_eq!(
        log.matches("Refused connection from 192.0.2.2").count(),
        2,
        "{log}"
    );
    assert!(log.contains("not in allowed clients"), "{log}");
    assert!(!log.contains("accepted publickey"), "{log}");
    lab.assert_no_entry("allow-list");
}

/// Runs `args` in the client namespace with `input` on stdin.
fn client_exec_stdin(lab: &ProxyLab, args: &[String], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", lab.topo.client.name()])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    out
}

#[test]
fn openssh_ssh_logs_in_and_runs_the_transfer_command() {
    let mut lab = ProxyLab::new(1);
    let conf = lab.configure(&default_rule(&lab), "");
    lab.daemon.start(&conf);
    let mut args: Vec<String> = vec!["timeout".into(), "30".into()];
    args.extend(lab.ssh_args(&format!("root@{}", lab::PROXY_CLIENT_V4), &[]));
    args.push("ascp --server".into());

    // Not a protocol frame: the proxy ends the session with a message and status 1.
    let out = client_exec_stdin(&lab, &args, b"hello, this is not a frame\n");
    refused(&out, "bad session request");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    // A real session request, for a file the server does not have: it goes through the proxy
    // to `ascp --server` on the internal server, whose refusal comes back as a frame.
    let missing = "/nonexistent/fasp-proxy-test.bin";
    let init = SessionInit {
        min_version: VERSION,
        max_version: VERSION,
        session_id: uuid::Uuid::new_v4(),
        requested_host: lab::PROXY_CLIENT_V4.to_string(),
        requested_port: 33001,
        client_udp_port: 40000,
        server_udp_port: 0,
        direction: Direction::Download,
        recursive: false,
        encrypt: true,
        resume: ResumeLevel::None,
        overwrite: Overwrite::Diff,
        target_rate: 10_000_000,
        min_rate: 0,
        datagram_size: 1400,
        sources: vec![missing.into()],
        destination: String::new(),
    };
    let mut frame = Vec::new();
    Frame::SessionInit(init).encode(&mut frame).unwrap();
    let from = lab.daemon.log().len();
    let out = client_exec_stdin(&lab, &args, &frame);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    match Frame::decode(&out.stdout) {
        Ok(Frame::Error(e)) => {
            assert_eq!(e.code, ErrorCode::NotFound, "{e:?}");
            assert!(e.message.contains(missing), "{e:?}");
        }
        other => panic!(
            "expected the server's error frame, got {other:?}\n{}",
            describe(&out)
        ),
    }
    assert!(text(&out.stderr).contains("refused"), "{}", describe(&out));
    let log = lab.daemon.log_since(from);
    assert!(
        log.contains("Received connection request from 192.0.2.2 (user root)")
            && log.contains("Established SSH connection with server 198.51.100.2:22"),
        "{log}"
    );
    lab.assert_no_entry("refused download");
}

/// The uid of local account `name`, creating it (a system account with /bin/sh, no home, no
/// password but not locked, so sshd without PAM lets it log in with a key) if it is missing.
fn ensure_user(name: &str) -> u32 {
    let lookup = || {
        nix::unistd::User::from_name(name)
            .unwrap()
            .map(|u| u.uid.as_raw())
    };
    if let Some(uid) = lookup() {
        check_login_possible(name);
        return uid;
    }
    let out = std::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/bin/sh",
            "--password",
            "*",
            name,
        ])
        .output()
        .unwrap();
    lookup().unwrap_or_else(|| panic!("useradd {name}: {}", describe(&out)))
}

/// Panics with the fix if an existing account cannot run sshd's `ForceCommand`: a shell such
/// as nologin, or a locked password (`!`; sshd without PAM refuses keys for locked accounts).
fn check_login_possible(name: &str) {
    let user = nix::unistd::User::from_name(name).unwrap().unwrap();
    let shell = user.shell.display().to_string();
    assert!(
        !shell.ends_with("nologin") && !shell.ends_with("false"),
        "account {name} has shell {shell}; sshd runs ForceCommand through it: \
         usermod --shell /bin/sh {name}"
    );
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let locked = shadow.lines().any(|l| {
        let mut fields = l.split(':');
        fields.next() == Some(name) && fields.next().is_some_and(|p| p.starts_with('!'))
    });
    assert!(
        !locked,
        "account {name} is locked; sshd (UsePAM no) refuses its keys: usermod --password '*' {name}"
    );
}

#[test]
fn squash_and_individual_accounts_own_what_they_upload() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let squash_uid = ensure_user("faspsquash");
    let user_uid = ensure_user("faspuser");
    // Keys and the drop directory where those accounts can reach them.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sshd_extra = format!(
        "Match User faspsquash,faspuser\n    AuthorizedKeysFile {}/%u.keys\n",
        shared.path().display()
    );
    let mut lab = ProxyLab::with_sshd_config(1, &sshd_extra);
    lab.add_proxy_addresses();
    // The proxy's keys towards the internal server: one for the squash account, one per user.
    let squash_key = lab.path("squash_key");
    ssh_keygen(&squash_key);
    let user_keys = lab.path("user_keys");
    std::fs::create_dir(&user_keys).unwrap();
    ssh_keygen(&user_keys.join("faspuser"));
    for (account, key) in [
        ("faspsquash", squash_key.clone()),
        ("faspuser", user_keys.join("faspuser")),
    ] {
        let keys = shared.path().join(format!("{account}.keys"));
        std::fs::copy(key.with_extension("pub"), &keys).unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let drop_dir = shared.path().join("drop");
    std::fs::create_dir(&drop_dir).unwrap();
    std::fs::set_permissions(&drop_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let outgoing = shared.path().join("outgoing.bin");
    std::fs::write(&outgoing, content(200_000, 9)).unwrap();
    std::fs::set_permissions(&outgoing, std::fs::Permissions::from_mode(0o644)).unwrap();

    let rules = format!(
        "<rule host_ip=\"{PROXY_ALT_A}\"><host>{server}:22</host><squash_user>faspsquash</squash_user>\
         <keyfile>{squash}</keyfile></rule>\n\
         <rule host_ip=\"{PROXY_ALT_B}\"><host>{server}:22</host><keyfile>{users}/$(user)</keyfile></rule>",
        server = lab::server_v4(0),
        squash = squash_key.display(),
        users = user_keys.display(),
    );
    let conf = lab.configure(&rules, "");
    // The proxy user faspuser logs in to the proxy with the same client key as root.
    std::fs::copy(
        lab.servers[0].client_key.with_extension("pub"),
        lab.path("etc").join("faspuser.keys"),
    )
    .unwrap();
    lab.daemon.start(&conf);

    for (proxy_user, dial, owner, account, name) in [
        (
            "root",
            PROXY_ALT_A,
            squash_uid,
            "faspsquash",
            "squashed.bin",
        ),
        ("faspuser", PROXY_ALT_B, user_uid, "faspuser", "own.bin"),
    ] {
        let src = lab.path(name);
        std::fs::write(&src, content(100_000, owner as u8)).unwrap();
        let remote = format!("{proxy_user}@{dial}:{}", drop_dir.display());
        let out = lab.ascp(&["-q", "-l", "200m", src.to_str().unwrap(), &remote]);
        assert!(
            out.status.success(),
            "upload as {proxy_user} via {dial}: {}\n--- sshd ---\n{}\n--- proxy ---\n{}",
            describe(&out),
            lab.servers[0].process.log(),
            lab.daemon.log()
        );
        let arrived = drop_dir.join(name);
        assert_eq!(
            std::fs::read(&src).unwrap(),
            std::fs::read(&arrived).unwrap()
        );
        let uid = std::fs::metadata(&arrived).unwrap().uid();
        assert_eq!(uid, owner, "{name} should belong to {account}");
        assert!(
            lab.servers[0]
                .process
                .log()
                .contains(&format!("Accepted publickey for {account} ")),
            "{}",
            lab.servers[0].process.log()
        );
        // And a download through the same rule.
        let back = lab.path(&format!("back_{name}"));
        let source = format!("{proxy_user}@{dial}:{}", outgoing.display());
        ok(&lab.ascp(&["-q", "-l", "200m", &source, back.to_str().unwrap()]));
        assert_eq!(
            std::fs::read(&outgoing).unwrap(),
            std::fs::read(&back).unwrap()
        );
    }
}

#[test]
fn sessions_lists_the_live_session_and_sigterm_mid_transfer_removes_it_cleanly() {
    let mut lab = ProxyLab::new(1);
    let conf = lab.configure(&default_rule(&lab), "");
    lab.daemon.start(&conf);
    let (src, dst, remote) = lab.upload_files("payload.bin", 20_000_000, 6, "server_in");
    // 20 MB at 10 Mbit/s: 16 s; listed, then cut by the daemon's shutdown.
    let mut client = lab.spawn_ascp(&[
        "-q",
        "-l",
        "10m",
        "--client-udp-port",
        "40124",
        src.to_str().unwrap(),
        remote.as_str(),
    ]);
    let flowing = lab::wait_until(Duration::from_secs(20), || {
        lab.nft_sessions().contains("192.0.2.2 . 40124")
    });
    assert!(flowing, "no entry:\n{}\n{}", client.log(), lab.daemon.log());
    std::thread::sleep(Duration::from_millis(500));

    let table = lab.topo.proxy.exec(&[FASP_PROXY, "sessions"]);
    let id = session_id(&lab.daemon.log(), "Setup UDP forwarding");
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("session {id} not listed:\n{table}"));
    for field in [
        "root",
        "192.0.2.2:",
        "rule 1 (default rule)",
        "198.51.100.2:22",
        "40124->33001:33001",
    ] {
        assert!(row.contains(field), "{field:?} missing from {row:?}");
    }
    let counters: Vec<&str> = row.split_whitespace().rev().take(2).collect();
    assert!(
        counters
            .iter()
            .all(|c| c.parse::<u64>().is_ok_and(|n| n > 0)),
        "no kernel counters in {row:?}"
    );
    assert!(table.contains("1 live session"), "{table}");

    // SIGTERM mid-transfer: the session is closed, its entry removed, the daemon exits 0, and
    // the client ends with an error instead of hanging.
    let mut daemon = lab.daemon.take();
    let pid = daemon.pid().to_string();
    lab.topo.proxy.exec(&["kill", "-TERM", &pid]);
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert!(
        status.success(),
        "the daemon exited with {status}:\n{}",
        lab.daemon.log()
    );
    lab.assert_no_entry("after SIGTERM");
    assert!(
        lab.daemon.log().contains("the proxy is shutting down"),
        "{}",
        lab.daemon.log()
    );
    let client_status = client.wait_exit(Duration::from_secs(60));
    assert!(
        !client_status.success(),
        "the cut transfer reported success:\n{}",
        client.log()
    );
    assert!(
        !dst.join("payload.bin").exists(),
        "a cut file was claimed complete"
    );
}

#[test]
fn an_idle_session_is_ended_and_its_entry_removed() {
    let mut lab = ProxyLab::new(1);
    let conf = lab.configure(
        &default_rule(&lab),
        "<session_idle_timeout>2</session_idle_timeout>",
    );
    lab.daemon.start(&conf);
    let dst = lab.path("idle_in");
    std::fs::create_dir(&dst).unwrap();
    // A valid upload request, then silence: no UDP, no frames, stdin kept open.
    let init = SessionInit {
        min_version: VERSION,
        max_version: VERSION,
        session_id: uuid::Uuid::new_v4(),
        requested_host: lab::PROXY_CLIENT_V4.to_string(),
        requested_port: 33001,
        client_udp_port: 40125,
        server_udp_port: 0,
        direction: Direction::Upload,
        recursive: false,
        encrypt: true,
        resume: ResumeLevel::None,
        overwrite: Overwrite::Diff,
        target_rate: 10_000_000,
        min_rate: 0,
        datagram_size: 1400,
        sources: vec![],
        destination: dst.display().to_string(),
    };
    let mut frame = Vec::new();
    Frame::SessionInit(init).encode(&mut frame).unwrap();
    let frame_file = lab.path("init.frame");
    std::fs::write(&frame_file, &frame).unwrap();
    let ssh: Vec<String> = lab.ssh_args(&format!("root@{}", lab::PROXY_CLIENT_V4), &[]);
    let pipeline = format!(
        "(cat {}; sleep 60) | timeout 60 {} 'ascp --server'",
        frame_file.display(),
        ssh.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let client = lab.topo.client.spawn(&["sh", "-c", &pipeline]);
    let installed = lab::wait_until(Duration::from_secs(15), || {
        lab.nft_sessions().contains("192.0.2.2 . 40125")
    });
    assert!(
        installed,
        "no entry:\n{}\n{}",
        client.log(),
        lab.daemon.log()
    );
    // Idle for 2 s; the daemon checks every 5 s: ended well before the server's own 30 s limit.
    let ended = lab::wait_until(Duration::from_secs(15), || {
        lab.daemon.log().contains("idle timeout")
    });
    assert!(
        ended,
        "the idle session was not ended:\n{}",
        lab.daemon.log()
    );
    lab.assert_no_entry("after the idle timeout");
}

#[test]
fn ipv6_clients_and_servers_work_through_the_proxy() {
    let mut lab =
        ProxyLab::with_sshd_config(1, &format!("ListenAddress [{}]:22", lab::server_v6(0)));
    let rule = format!(
        "<rule><host>[{}]:22</host><keyfile>{}</keyfile></rule>",
        lab::server_v6(0),
        lab.servers[0].client_key.display()
    );
    let conf = lab.configure(&rule, "");
    // The proxy reaches the server at its IPv6 address: its host key is recorded under that name.
    let line = lab.servers[0].known_hosts_line();
    let key = line.split_once(' ').unwrap().1;
    std::fs::write(
        lab.path("etc").join("known_hosts"),
        format!("{} {key}", lab::server_v6(0)),
    )
    .unwrap();
    // Listen on every IPv6 and IPv4 address.
    let config_text = std::fs::read_to_string(&conf).unwrap().replace(
        "<ssh_bind_address>0.0.0.0</ssh_bind_address>",
        "<ssh_bind_address>::</ssh_bind_address>",
    );
    std::fs::write(&conf, config_text).unwrap();
    let host_pub =
        std::fs::read_to_string(lab.path("etc").join("ssh_host_ed25519_key.pub")).unwrap();
    let known = lab.path("proxy_known_hosts");
    let mut hosts = std::fs::read_to_string(&known).unwrap();
    hosts.push_str(&format!("[{}]:33001 {host_pub}", lab::PROXY_CLIENT_V6));
    std::fs::write(&known, hosts).unwrap();
    lab.daemon.start(&conf);

    let src = lab.path("v6.bin");
    std::fs::write(&src, content(12_000_000, 8)).unwrap();
    let dst = lab.path("v6_in");
    std::fs::create_dir(&dst).unwrap();
    let remote = format!("root@[{}]:{}", lab::PROXY_CLIENT_V6, dst.display());
    let mut client = lab.spawn_ascp(&["-q", "-l", "30m", src.to_str().unwrap(), remote.as_str()]);
    let ip6_map = || -> String {
        text(
            &lab.topo
                .proxy
                .try_exec(&["nft", "list", "map", "ip6", "fasp_proxy", "sessions"])
                .stdout,
        )
    };
    let seen = lab::wait_until(Duration::from_secs(20), || {
        ip6_map().contains("2001:db8:1::2 . ")
    });
    assert!(
        seen,
        "no ip6 entry during the transfer:\n{}\n{}\n{}",
        ip6_map(),
        client.log(),
        lab.daemon.log()
    );
    assert!(ip6_map().contains(": 2001:db8:2::2 . "), "{}", ip6_map());
    let status = client.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "ascp over IPv6 failed:\n{}\n{}",
        client.log(),
        lab.daemon.log()
    );
    assert_eq!(
        std::fs::read(&src).unwrap(),
        std::fs::read(dst.join("v6.bin")).unwrap()
    );
    let gone = lab::wait_until(Duration::from_secs(10), || {
        !ip6_map().contains("2001:db8:1::2")
    });
    assert!(gone, "an IPv6 entry outlived its session:\n{}", ip6_map());
    let log = lab.daemon.log();
    assert!(
        log.contains("Received connection request from 2001:db8:1::2"),
        "{log}"
    );
    assert!(
        log.contains("Setup UDP forwarding between 2001:db8:1::2:"),
        "{log}"
    );
}

/// `/etc/pam.d` as it is, plus the shipped `etc/pam.d/fasp-proxy`, in `dir`; and the wrapper
/// that shows it to one process as `/etc/pam.d` (a private mount namespace).
fn pam_dir_with_shipped_service(dir: &Path) -> Vec<String> {
    let copy = dir.join("pam.d");
    let out = std::process::Command::new("cp")
        .args(["-a", "/etc/pam.d"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success(), "cp /etc/pam.d: {}", describe(&out));
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/etc/pam.d/fasp-proxy"),
        copy.join("fasp-proxy"),
    )
    .unwrap();
    [
        "unshare",
        "-m",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/pam.d && exec \"$@\"",
        copy.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn password_logins_go_through_pam_when_enabled_and_are_refused_otherwise() {
    let account = lab::PasswordAccount::create("faspsecret");
    let mut lab = ProxyLab::new(1);
    // The proxy user logs in with a password; the backend leg is root with server 0's key.
    let rule = format!(
        "<rule><host>{}:22</host><squash_user>root</squash_user><keyfile>{}</keyfile></rule>",
        lab::server_v4(0),
        lab.servers[0].client_key.display()
    );
    let conf = lab.configure(
        &rule,
        "<password_authentication>true</password_authentication>",
    );
    let wrapper = pam_dir_with_shipped_service(lab.dir.path());
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    lab.daemon.start_wrapped(&conf, &wrapper);

    let src = lab.path("secret.bin");
    std::fs::write(&src, content(300_000, 11)).unwrap();
    let dst = lab.path("server_in");
    std::fs::create_dir(&dst).unwrap();
    let remote = format!(
        "{}@{}:{}",
        account.name,
        lab::PROXY_CLIENT_V4,
        dst.display()
    );
    // ascp with no key at all (an empty HOME), the password from ASPERA_SCP_PASS.
    let home = lab.path("empty_home");
    std::fs::create_dir(&home).unwrap();
    let ascp_with_password = |lab: &ProxyLab, password: &str| {
        let pass = format!("ASPERA_SCP_PASS={password}");
        let home = format!("HOME={}", home.display());
        let known = lab.path("proxy_known_hosts").display().to_string();
        lab.client_exec(
            &[
                "env",
                &home,
                &pass,
                "timeout",
                "60",
                ASCP,
                "-P",
                "33001",
                "--known-hosts",
                &known,
                "-q",
                "-l",
                "200m",
                src.to_str().unwrap(),
                &remote,
            ]
            .map(String::from),
        )
    };
    ok(&ascp_with_password(&lab, &account.password));
    assert_eq!(
        std::fs::read(&src).unwrap(),
        std::fs::read(dst.join("secret.bin")).unwrap()
    );
    assert!(
        lab.daemon
            .log()
            .contains("accepted password for faspsecret"),
        "{}",
        lab.daemon.log()
    );

    // A wrong password: refused, said so, nothing installed.
    let err = refused(
        &ascp_with_password(&lab, "not-the-password"),
        "authentication failed",
    );
    assert!(err.contains("ASPERA_SCP_PASS"), "{err}");
    assert!(
        lab.daemon
            .log()
            .contains("refused password for faspsecret: authentication: Authentication failure"),
        "{}",
        lab.daemon.log()
    );
    lab.assert_no_entry("wrong password");

    // OpenSSH's ssh logs in with the password (SSH_ASKPASS) and runs the allowed command; a
    // disallowed command's message proves the login worked. The first answer is a typo: the
    // proxy must go on offering `password` after a wrong one.
    let askpass = lab.path("askpass.sh");
    let asked = lab.path("askpass.asked");
    std::fs::write(
        &askpass,
        format!(
            "#!/bin/sh\nif [ -e '{asked}' ]; then echo '{pw}'; else : > '{asked}'; echo typo; fi\n",
            asked = asked.display(),
            pw = account.password
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let ssh_with_password = |lab: &ProxyLab| {
        let _ = std::fs::remove_file(&asked);
        let mut args: Vec<String> = [
            "env".into(),
            format!("SSH_ASKPASS={}", askpass.display()),
            "SSH_ASKPASS_REQUIRE=force".into(),
            "timeout".into(),
            "30".into(),
        ]
        .to_vec();
        // ssh takes the first value of an option: drop the helper's BatchMode=yes (which
        // turns password prompts off).
        let mut base = lab.ssh_args(
            &format!("{}@{}", account.name, lab::PROXY_CLIENT_V4),
            &[
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "PreferredAuthentications=password",
                "-o",
                "NumberOfPasswordPrompts=2",
            ],
        );
        if let Some(at) = base.iter().position(|a| a == "BatchMode=yes") {
            base.drain(at - 1..=at);
        }
        args.extend(base);
        args.push("id".into());
        lab.client_exec(&args)
    };
    let out = ssh_with_password(&lab);
    let err = text(&out.stderr);
    assert!(
        err.contains("command not allowed: id"),
        "ssh with a password did not get to the command:\n{}",
        describe(&out)
    );

    // Without squash_user the backend leg logs in as faspsecret itself, whose shell is
    // nologin: its text arrives where the protocol should, and the client is told so.
    lab.daemon.stop();
    let individual = rule.replace("<squash_user>root</squash_user>", "");
    let conf = lab.configure(
        &individual,
        "<password_authentication>true</password_authentication>",
    );
    lab.daemon.start_wrapped(&conf, &wrapper);
    let err = refused(
        &ascp_with_password(&lab, &account.password),
        "This account is currently not available.",
    );
    assert!(err.contains("ascp --server"), "{err}");
    lab.assert_no_entry("backend account without the transfer command");

    // Off (the default): the same right password is refused; only publickey is offered.
    lab.daemon.stop();
    let conf = lab.configure(&rule, "");
    lab.daemon.start_wrapped(&conf, &wrapper);
    refused(
        &ascp_with_password(&lab, &account.password),
        "authentication failed",
    );
    let out = ssh_with_password(&lab);
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        describe(&out)
    );
    lab.assert_no_entry("password logins off");
}

#[test]
fn a_second_daemon_in_the_same_namespace_refuses_to_start_and_changes_nothing() {
    let mut lab = ProxyLab::new(1);
    let conf = lab.configure(&default_rule(&lab), "");
    lab.daemon.start(&conf);
    // A transfer is running when the second one starts.
    let (big, dst, remote) = lab.upload_files("big.bin", 8_000_000, 2, "in");
    let mut running = lab.spawn_ascp(&["-q", "-l", "20m", big.to_str().unwrap(), &remote]);
    assert!(
        lab::wait_until(Duration::from_secs(20), || lab
            .nft_sessions()
            .contains("192.0.2.2 . ")),
        "no entry:\n{}",
        running.log()
    );
    // The ruleset without the element timers (which run down and are refreshed).
    let ruleset = |lab: &ProxyLab| -> String {
        lab.topo
            .proxy
            .exec(&["nft", "list", "ruleset"])
            .split_whitespace()
            .scan(false, |skip_next, word| {
                let out = if *skip_next { "" } else { word };
                *skip_next = word == "expires";
                Some(if word == "expires" { "" } else { out }.to_string())
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let before = ruleset(&lab);
    // Its control socket (the one-daemon lock) is taken: it must say so and exit before it
    // touches the kernel (its reconcile would remove the running session's entry).
    let out = lab.topo.proxy.try_exec(&[
        "timeout",
        "20",
        FASP_PROXY,
        "--config",
        conf.to_str().unwrap(),
        "run",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("another fasp-proxy running"),
        "{}",
        describe(&out)
    );
    // The first one's session is untouched and completes.
    assert_eq!(ruleset(&lab), before);
    let status = running.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}\n{}", running.log(), lab.daemon.log());
    assert_eq!(
        std::fs::read(&big).unwrap(),
        std::fs::read(dst.join("big.bin")).unwrap()
    );
    lab.daemon.stop();
}

#[test]
fn shutdown_ends_a_session_still_waiting_for_its_request() {
    let mut lab = ProxyLab::new(1);
    let conf = lab.configure(&default_rule(&lab), "");
    lab.daemon.start(&conf);
    // OpenSSH runs the transfer command but sends nothing on stdin (kept open by `sleep`):
    // the session waits for its SessionInit.
    let ssh = lab
        .ssh_args(&format!("root@{}", lab::PROXY_CLIENT_V4), &[])
        .into_iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let waiting =
        lab.topo
            .client
            .spawn(&["sh", "-c", &format!("sleep 60 | {ssh} 'ascp --server'")]);
    let listed = lab::wait_until(Duration::from_secs(20), || {
        text(&lab.topo.proxy.try_exec(&[FASP_PROXY, "sessions"]).stdout).contains("1 live session")
    });
    assert!(
        listed,
        "the waiting session is not listed:\n{}",
        lab.daemon.log()
    );
    lab.daemon.stop();
    assert!(
        lab.daemon
            .log()
            .contains("Connection closed: the proxy is shutting down"),
        "{}",
        lab.daemon.log()
    );
    drop(waiting);
}

// --- IBM clients: opaque sessions ---------------------------------------------------------

/// Where `scripts/test.sh` put IBM's ascp (PyPI's cos-aspera wheel), from
/// `FASP_PROXY_IBM_ASCP_DIR`. The interop tests need it: without it they fail, saying how to
/// get it.
fn ibm_ascp_dir() -> PathBuf {
    let dir = std::env::var_os("FASP_PROXY_IBM_ASCP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "FASP_PROXY_IBM_ASCP_DIR is not set: run the tests with ./scripts/test.sh, which \
             fetches IBM's ascp (PyPI cos-aspera 0.1.163682) and sets it"
            )
        });
    assert!(
        dir.join("ascp").is_file(),
        "FASP_PROXY_IBM_ASCP_DIR={} holds no ascp; rerun ./scripts/test.sh",
        dir.display()
    );
    dir
}

/// A server-side command script in `dir`: records each client command in `dir/commands`,
/// then (for `ascp -S. -V1` only) waits `hold` seconds and runs IBM's ascp as the server.
fn ibm_server_script(dir: &Path, hold: u32) -> PathBuf {
    let ibm = ibm_ascp_dir();
    let script = dir.join("ibm-server.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$SSH_ORIGINAL_COMMAND\" >> {dir}/commands\n\
             case \"$SSH_ORIGINAL_COMMAND\" in\n\
             'ascp -S. -V1') sleep {hold}; LD_LIBRARY_PATH={ibm} exec {ibm}/ascp -S. -V1 ;;\n\
             *) echo \"not an IBM command: $SSH_ORIGINAL_COMMAND\" >&2; exit 1 ;;\n\
             esac\n",
            dir = dir.display(),
            ibm = ibm.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

/// An RSA client key in PEM (what IBM's ascp reads), made in `dir`.
fn rsa_client_key(dir: &Path) -> PathBuf {
    let key = dir.join("id_rsa");
    let status = std::process::Command::new("ssh-keygen")
        .args([
            "-q", "-t", "rsa", "-b", "3072", "-m", "PEM", "-N", "", "-C", "ibm", "-f",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    key
}

/// The command line of IBM's ascp uploading `src` to `destination` (host:path) with `key` on SSH
/// port `port` (bounded), to run in the client namespace.
fn ibm_ascp_args(key: &Path, port: &str, src: &Path, destination: &str) -> Vec<String> {
    let ibm = ibm_ascp_dir();
    vec![
        "env".into(),
        format!("LD_LIBRARY_PATH={}", ibm.display()),
        "timeout".into(),
        "60".into(),
        ibm.join("ascp").display().to_string(),
        "-P".into(),
        port.into(),
        "-i".into(),
        key.display().to_string(),
        src.display().to_string(),
        destination.into(),
    ]
}

/// IBM's ascp run to its end (see [`ibm_ascp_args`]).
fn ibm_ascp(lab: &ProxyLab, key: &Path, port: &str, src: &Path, destination: &str) -> Output {
    lab.client_exec(&ibm_ascp_args(key, port, src, destination))
}

/// The proxy with IBM's legacy SSH on: its RSA host key and ssh-rsa (SHA-1) allowed, and the
/// client's RSA key accepted for root.
fn configure_for_ibm(lab: &ProxyLab, rsa_key: &Path, server_extra: &str) -> PathBuf {
    let etc = lab.path("etc");
    let conf = lab.configure_full(
        &default_rule(lab),
        &format!(
            "<ssh_rsa_legacy>true</ssh_rsa_legacy><ssh_host_rsa_key>{}</ssh_host_rsa_key>",
            etc.join("ssh_host_rsa_key").display()
        ),
        server_extra,
    );
    let mut keys = std::fs::read_to_string(etc.join("root.keys")).unwrap();
    keys.push_str(&std::fs::read_to_string(rsa_key.with_extension("pub")).unwrap());
    std::fs::write(etc.join("root.keys"), keys).unwrap();
    conf
}

fn ibm_client_through_the_proxy(forwarding: &str) {
    let work = tempfile::tempdir().unwrap();
    let script = ibm_server_script(work.path(), 3);
    // The server also speaks IBM's legacy SSH, for the direct run.
    let rsa = rsa_client_key(work.path());
    let host_rsa = work.path().join("host_rsa");
    std::fs::copy(&rsa, &host_rsa).unwrap();
    std::fs::set_permissions(
        &host_rsa,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut lab = ProxyLab::with_force_command(
        1,
        &format!(
            "{}\nHostKey {}\nHostKeyAlgorithms +ssh-rsa\nPubkeyAcceptedAlgorithms +ssh-rsa",
            script.display(),
            host_rsa.display()
        ),
    );
    let conf = configure_for_ibm(
        &lab,
        &rsa,
        &format!("<forwarding_type>{forwarding}</forwarding_type>"),
    );
    lab.daemon.start(&conf);
    let src = lab.path("ibm.bin");
    std::fs::write(&src, content(100_000, 9)).unwrap();
    let dst = format!("root@{}:/tmp/", lab::PROXY_CLIENT_V4);

    // Direct first (the client routed to the server), to compare.
    std::fs::write(
        lab.servers[0].dir.path().join("authorized_keys"),
        std::fs::read(rsa.with_extension("pub")).unwrap(),
    )
    .unwrap();
    let direct = ibm_ascp(
        &lab,
        &rsa,
        "22",
        &src,
        &format!("root@{}:/tmp/", lab::server_v4(0)),
    );
    assert!(
        text(&direct.stdout).contains("Server has only a client license"),
        "direct: {}",
        describe(&direct)
    );
    // The proxy logs in to the server with server 0's key again.
    lab.trust_key_everywhere();
    std::fs::copy(
        lab.servers[0].client_key.with_extension("pub"),
        lab.servers[0].dir.path().join("authorized_keys"),
    )
    .unwrap();

    // Through the proxy, observed while the server side holds the session.
    let from = lab.daemon.log().len();
    let args = ibm_ascp_args(&rsa, "33001", &src, &dst);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let client = lab.topo.client.spawn(&refs);
    let shown = lab::wait_until(Duration::from_secs(20), || match forwarding {
        "iptables" => lab.iptables_nat().contains("192.0.2.2"),
        _ => lab.topo.nft_sessions_any_port().contains("192.0.2.2"),
    });
    assert!(
        shown,
        "no entry while the IBM session lived:\n{}\n{}\n{}",
        lab.topo.nft_sessions_any_port(),
        lab.iptables_nat(),
        lab.daemon.log_since(from)
    );
    if forwarding == "nftables" {
        let map = lab.topo.nft_sessions_any_port();
        assert!(
            map.contains("192.0.2.2 . 33001"),
            "any source port, port 33001:\n{map}"
        );
    }
    let mut client = client;
    let status = client.wait_exit(Duration::from_secs(60));
    let out = client.log();
    assert!(
        out.contains("Server has only a client license"),
        "the IBM server's own words must reach the client:\n{out}\n{}",
        lab.daemon.log_since(from)
    );
    assert_eq!(
        status.code(),
        direct.status.code(),
        "same exit status as direct:\n{out}"
    );
    assert_ne!(status.code(), Some(0));
    let log = lab.daemon.log_since(from);
    assert!(log.contains("(any source port)"), "{log}");
    assert!(log.contains("Connection closed"), "{log}");
    let commands = std::fs::read_to_string(work.path().join("commands")).unwrap();
    assert_eq!(commands.lines().last(), Some("ascp -S. -V1"), "{commands}");
    let gone = lab::wait_until(Duration::from_secs(10), || {
        !lab.topo.nft_sessions_any_port().contains("192.0.2.2")
            && !lab.iptables_nat().contains("192.0.2.2")
    });
    assert!(
        gone,
        "the entry outlived the session:\n{}\n{}",
        lab.topo.nft_sessions_any_port(),
        lab.iptables_nat()
    );
    lab.daemon.stop();
}

#[test]
fn ibm_ascp_reaches_ibms_server_through_the_proxy_with_nftables() {
    ibm_client_through_the_proxy("nftables");
}

#[test]
fn ibm_ascp_reaches_ibms_server_through_the_proxy_with_iptables() {
    ibm_client_through_the_proxy("iptables");
}

#[test]
fn with_legacy_ssh_off_ibm_ascp_is_refused_at_the_handshake_and_the_log_says_why() {
    let work = tempfile::tempdir().unwrap();
    let script = ibm_server_script(work.path(), 0);
    let mut lab = ProxyLab::with_force_command(1, script.to_str().unwrap());
    let rsa = rsa_client_key(work.path());
    let conf = lab.configure(&default_rule(&lab), "");
    lab.daemon.start(&conf);
    let src = lab.path("ibm.bin");
    std::fs::write(&src, b"x").unwrap();
    let from = lab.daemon.log().len();
    let out = ibm_ascp(
        &lab,
        &rsa,
        "33001",
        &src,
        &format!("root@{}:/tmp/", lab::PROXY_CLIENT_V4),
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let logged = lab::wait_until(Duration::from_secs(5), || {
        lab.daemon.log_since(from).contains("SSH handshake failed")
    });
    let log = lab.daemon.log_since(from);
    assert!(logged && log.contains("ssh_rsa_legacy"), "{log}");
    assert!(
        !work.path().join("commands").exists(),
        "nothing reached the server"
    );
    assert!(!lab.topo.nft_sessions_any_port().contains("192.0.2.2"));
}

/// A server-side command script for the opaque UDP test: records which server ran it (its
/// address, from `$SSH_CONNECTION`) in `dir`, then echoes stdin until EOF, as a held-open session.
fn holding_script(dir: &Path) -> PathBuf {
    let script = dir.join("hold.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -- $SSH_CONNECTION\nme=$3\n\
             echo \"$SSH_ORIGINAL_COMMAND\" >> {dir}/ran-on-$me\nexec cat\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

#[test]
fn opaque_sessions_forward_any_source_port_to_one_server_and_stop_when_the_last_ends() {
    let work = tempfile::tempdir().unwrap();
    let script = holding_script(work.path());
    let mut lab = ProxyLab::with_force_command(2, script.to_str().unwrap());
    lab.trust_key_everywhere();
    let key = lab.servers[0].client_key.display().to_string();
    let conf = lab.configure(
        &format!(
            "<rule><hosts><host>{}:22</host><host>{}:22</host></hosts><squash_user>root</squash_user><keyfile>{key}</keyfile></rule>",
            lab::server_v4(0),
            lab::server_v4(1)
        ),
        "",
    );
    lab.daemon.start(&conf);
    // Two sessions from one client address, held open by their stdin.
    let ssh_line = |secs: u32| {
        let args = lab.ssh_args(&format!("root@{}", lab::PROXY_CLIENT_V4), &[]);
        format!("sleep {secs} | {} 'ascp -S. -V1'", args.join(" "))
    };
    let first = lab.topo.client.spawn(&["sh", "-c", &ssh_line(8)]);
    assert!(
        lab::wait_until(Duration::from_secs(15), || lab
            .topo
            .nft_sessions_any_port()
            .contains("192.0.2.2")),
        "no entry:\n{}\n{}",
        lab.daemon.log(),
        first.log()
    );
    let second = lab.topo.client.spawn(&["sh", "-c", &ssh_line(4)]);
    assert!(
        lab::wait_until(Duration::from_secs(15), || lab
            .daemon
            .log()
            .contains("Joining the live UDP forwarding")),
        "{}",
        lab.daemon.log()
    );
    let ran_anywhere = || {
        (0..2)
            .filter(|i| {
                work.path()
                    .join(format!("ran-on-{}", lab::server_v4(*i)))
                    .exists()
            })
            .count()
    };
    lab::wait_until(Duration::from_secs(5), || ran_anywhere() > 0);
    let ran: Vec<String> = (0..2)
        .filter(|i| {
            work.path()
                .join(format!("ran-on-{}", lab::server_v4(*i)))
                .exists()
        })
        .map(|i| lab::server_v4(i).to_string())
        .collect();
    assert_eq!(
        ran.len(),
        1,
        "both sessions on one server: {ran:?} {:?}\n{}",
        std::fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>(),
        lab.daemon.log()
    );
    let on = if ran[0] == lab::server_v4(0).to_string() {
        0
    } else {
        1
    };
    let sinks: Vec<_> = (0..2)
        .map(|i| {
            lab::udp_socket(
                &lab.topo.servers[i],
                SocketAddr::new(lab::server_v4(i).into(), 33001),
                Duration::from_millis(500),
            )
        })
        .collect();
    // Any source port of the client reaches that server's 33001, and only it.
    for port in [40001u16, 40002] {
        let sock = lab::udp_socket(
            &lab.topo.client,
            SocketAddr::new(lab::CLIENT_V4.into(), port),
            Duration::from_millis(500),
        );
        sock.send_to(
            b"opaque",
            SocketAddr::new(lab::PROXY_CLIENT_V4.into(), 33001),
        )
        .unwrap();
        let got = lab::try_recv(&sinks[on]);
        assert_eq!(
            got.map(|g| g.0),
            Some(b"opaque".to_vec()),
            "from port {port}"
        );
        assert!(lab::try_recv(&sinks[1 - on]).is_none());
    }
    // Both sessions end (their stdin closes); the entry and its flows go with the last.
    let (mut first, mut second) = (first, second);
    first.wait_exit(Duration::from_secs(20));
    second.wait_exit(Duration::from_secs(20));
    assert!(
        lab::wait_until(Duration::from_secs(10), || !lab
            .topo
            .nft_sessions_any_port()
            .contains("192.0.2.2")),
        "{}\n{}",
        lab.topo.nft_sessions_any_port(),
        lab.daemon.log()
    );
    let flows = lab.conntrack_from_port(40001);
    assert!(
        !flows.contains("198.51.100."),
        "a forwarded flow is left:\n{flows}"
    );
    let sock = lab::udp_socket(
        &lab.topo.client,
        SocketAddr::new(lab::CLIENT_V4.into(), 40001),
        Duration::from_millis(500),
    );
    sock.send_to(b"late", SocketAddr::new(lab::PROXY_CLIENT_V4.into(), 33001))
        .unwrap();
    assert!(
        lab::try_recv(&sinks[on]).is_none(),
        "forwarded after the sessions ended"
    );

    // kill -9 with an opaque session live, then a restart: nothing is left.
    let _held = lab.topo.client.spawn(&["sh", "-c", &ssh_line(30)]);
    assert!(
        lab::wait_until(Duration::from_secs(15), || lab
            .topo
            .nft_sessions_any_port()
            .contains("192.0.2.2")),
        "{}",
        lab.daemon.log()
    );
    let mut daemon = lab.daemon.take();
    let pid = daemon.pid().to_string();
    lab.topo.proxy.exec(&["kill", "-KILL", &pid]);
    daemon.wait_exit(Duration::from_secs(10));
    assert!(
        lab.topo.nft_sessions_any_port().contains("192.0.2.2"),
        "outlives a killed daemon"
    );
    lab.daemon.start(&conf);
    assert!(
        !lab.topo.nft_sessions_any_port().contains("192.0.2.2"),
        "after the restart:\n{}",
        lab.topo.nft_sessions_any_port()
    );
    lab.daemon.stop();
}

// ---------------------------------------------------------------------------------------------
// The front end under attack: per-source caps, random early drop, penalties, deadlines.
// ---------------------------------------------------------------------------------------------

/// The attacker, on the client's link.
const ATTACKER_V4: &str = "192.0.2.99";

/// Opens `count` TCP connections from `source` to the proxy's SSH port (in the namespace of
/// the calling thread); each reads the proxy's version line, if it comes, and with
/// `send_version` sends one of its own, then says nothing. Returns each connection with whether
/// it was admitted (got the proxy's version line).
fn open_connections(
    source: std::net::IpAddr,
    proxy: SocketAddr,
    count: usize,
    send_version: bool,
) -> Vec<(std::net::TcpStream, bool)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut out = Vec::new();
        for _ in 0..count {
            let socket = if source.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
            .unwrap();
            socket.bind(SocketAddr::new(source, 0)).unwrap();
            let Ok(mut s) = socket.connect(proxy).await else {
                continue;
            };
            let mut banner = [0u8; 8];
            let admitted = matches!(
                tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut banner)).await,
                Ok(Ok(_)) if &banner == b"SSH-2.0-"
            );
            if admitted && send_version {
                let _ = s.write_all(b"SSH-2.0-stall\r\n").await;
            }
            out.push((s.into_std().unwrap(), admitted));
        }
        out
    })
}

/// How long after `since` each connection was closed by the proxy (read until EOF or error,
/// for at most `limit`); `None` for one still open then.
fn closed_after(
    conns: Vec<std::net::TcpStream>,
    since: std::time::Instant,
    limit: Duration,
) -> Vec<Option<Duration>> {
    conns
        .into_iter()
        .map(|mut s| {
            s.set_nonblocking(false).unwrap();
            lab::tcp_closed_by(&mut s, since + limit).then(|| since.elapsed())
        })
        .collect()
}

/// The daemon's resident memory in KiB.
fn daemon_rss_kib(lab: &ProxyLab) -> u64 {
    let pid = lab.daemon.process().pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn one_address_holding_idle_and_stalled_connections_locks_no_one_else_out() {
    let mut lab = ProxyLab::new(1);
    let conf = lab.configure_full(
        &default_rule(&lab),
        "<banner_timeout>3</banner_timeout><kex_timeout>6</kex_timeout>",
        "<per_source><max_startups>32</max_startups></per_source>",
    );
    lab.daemon.start(&conf);
    lab.topo
        .client
        .add_addr(lab::CLIENT_IF, &format!("{ATTACKER_V4}/24"));
    let attacker: std::net::IpAddr = ATTACKER_V4.parse().unwrap();
    let proxy = SocketAddr::new(lab::PROXY_CLIENT_V4.into(), 33001);
    let opened = std::time::Instant::now();
    // The stalling ones first: they take the source's 32 slots; the idle ones then find it
    // full, and penalised.
    let (stalled, idle) = lab.topo.client.run_in(|| {
        (
            open_connections(attacker, proxy, 50, true),
            open_connections(attacker, proxy, 350, false),
        )
    });
    let admitted = idle.iter().chain(&stalled).filter(|(_, a)| *a).count();
    assert!(
        admitted <= 32,
        "{admitted} of the attacker's connections were admitted"
    );
    // Meanwhile, 20 uploads in a row from another address all succeed.
    let watcher = std::thread::spawn(move || {
        let idle = closed_after(
            idle.into_iter().map(|(s, _)| s).collect(),
            opened,
            Duration::from_secs(60),
        );
        let stalled = closed_after(
            stalled.into_iter().map(|(s, _)| s).collect(),
            opened,
            Duration::from_secs(60),
        );
        (idle, stalled)
    });
    let src = lab.path("small.bin");
    std::fs::write(&src, content(100_000, 3)).unwrap();
    for i in 0..20 {
        upload(
            &lab,
            &src,
            &format!("root@{}", lab::PROXY_CLIENT_V4),
            &lab.path(&format!("in-{i}")),
        );
    }
    let (idle, stalled) = watcher.join().unwrap();
    // Every attacker connection is closed: at accept, or at its login step's deadline (6 s
    // without a key exchange; plus scheduling slack).
    let latest = |v: &[Option<Duration>]| {
        v.iter()
            .map(|c| c.expect("an attacker connection was never closed"))
            .max()
            .unwrap_or_default()
    };
    let (idle_max, stalled_max) = (latest(&idle), latest(&stalled));
    eprintln!(
        "attacker: 400 connections, {admitted} admitted; the last idle one closed after {idle_max:?}, \
         the last stalled one after {stalled_max:?}; 20 of 20 uploads from 192.0.2.2 succeeded"
    );
    assert!(idle_max < Duration::from_secs(3 + 5), "{idle_max:?}");
    assert!(stalled_max < Duration::from_secs(6 + 5), "{stalled_max:?}");
    let log = lab.daemon.log();
    assert!(
        log.contains(&format!("source {ATTACKER_V4} penalised")),
        "{log}"
    );
    // One refusal line per penalty, not one per connection.
    let refusals = log
        .matches(&format!("Refused connection from {ATTACKER_V4}"))
        .count();
    assert!(refusals < 20, "{refusals} refusal lines:\n{log}");
    lab.daemon.stop();
}

#[test]
fn fifty_wrong_keys_from_one_address_get_it_refused_for_its_penalty_only() {
    let mut lab = ProxyLab::new(1);
    let conf = lab.configure_full(
        &default_rule(&lab),
        "",
        "<per_source><penalty_auth_failure>2</penalty_auth_failure><penalty_max>2</penalty_max>\
         </per_source>",
    );
    lab.daemon.start(&conf);
    lab.topo
        .client
        .add_addr(lab::CLIENT_IF, &format!("{ATTACKER_V4}/24"));
    let wrong = lab.path("wrong_key");
    ssh_keygen(&wrong);
    let from_attacker = |key: &Path| -> Output {
        let mut args: Vec<String> = vec!["timeout".into(), "30".into()];
        let mut ssh = lab.ssh_args(
            &format!("root@{}", lab::PROXY_CLIENT_V4),
            &["-b", ATTACKER_V4],
        );
        // The key: replace server 0's (the one after -i) with `key`.
        if let Some(i) = ssh.iter().position(|a| a == "-i") {
            ssh[i + 1] = key.display().to_string();
        }
        args.extend(ssh);
        args.push("ascp --server".into());
        client_exec_stdin(&lab, &args, b"")
    };
    let mut denied = 0;
    for _ in 0..50 {
        let out = from_attacker(&wrong);
        assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
        if text(&out.stderr).contains("Permission denied") {
            denied += 1;
        }
    }
    // Another address is not slowed down.
    let src = lab.path("ok.bin");
    std::fs::write(&src, content(10_000, 1)).unwrap();
    upload(
        &lab,
        &src,
        &format!("root@{}", lab::PROXY_CLIENT_V4),
        &lab.path("in"),
    );
    let log = lab.daemon.log();
    let penalties = log
        .matches(&format!("source {ATTACKER_V4} penalised"))
        .count();
    let refusals = log
        .matches(&format!("Refused connection from {ATTACKER_V4}"))
        .count();
    eprintln!(
        "50 wrong keys from {ATTACKER_V4}: {denied} reached the key check, {} refused at \
         accept; {penalties} penalty lines, {refusals} refusal lines",
        50 - denied
    );
    assert!(
        (1..50).contains(&denied),
        "{denied} of 50 reached the key check"
    );
    assert_eq!(penalties, denied, "one penalty per failed login:\n{log}");
    assert!(
        refusals <= penalties,
        "at most one refusal line per penalty:\n{log}"
    );
    // After its penalty, the attacker's address logs in with the right key.
    std::thread::sleep(Duration::from_millis(2500));
    let from = lab.daemon.log().len();
    let out = from_attacker(&lab.servers[0].client_key);
    let log = lab.daemon.log_since(from);
    assert!(
        log.contains("accepted publickey for root"),
        "{}\n{log}",
        describe(&out)
    );
    lab.daemon.stop();
}

/// Binds `2001:db8:1:1::/64` to the client's loopback (any address of it can be a source) and
/// routes it from the proxy: sources enough for a flood from many addresses.
fn add_many_client_addresses(lab: &ProxyLab) {
    // IPv6 binds only addresses on an interface unless non-local binds are allowed.
    lab.topo.client.sysctl("net.ipv6.ip_nonlocal_bind", "1");
    lab.topo.client.ip(&[
        "-6",
        "route",
        "add",
        "local",
        "2001:db8:1:1::/64",
        "dev",
        "lo",
    ]);
    lab.topo.proxy.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:1:1::/64",
        "via",
        &lab::CLIENT_V6.to_string(),
    ]);
}

/// Source number `i` of [`add_many_client_addresses`].
fn many_source(i: usize) -> std::net::IpAddr {
    std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 1, 0, 0, (i >> 16) as u16, i as u16).into()
}

/// The configuration of the flood tests: the front end on every address, IPv6 sources per
/// address.
fn flood_config(lab: &ProxyLab, rproxy: &str, per_source: &str) -> PathBuf {
    let conf = lab.configure_full(
        &default_rule(lab),
        rproxy,
        &format!("<per_source><ipv6_prefix>128</ipv6_prefix>{per_source}</per_source>"),
    );
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        "<ssh_bind_address>0.0.0.0</ssh_bind_address>",
        "<ssh_bind_address>::</ssh_bind_address>",
    );
    std::fs::write(&conf, text).unwrap();
    conf
}

#[test]
fn a_hundred_sources_times_ten_connections_meet_random_early_drop_as_configured() {
    let mut lab = ProxyLab::new(1);
    // From 50 connections not logged in, drop 30 %, rising to all at 300; no penalties here
    // (each probe below would otherwise count), and the flood kept open for the measurement.
    let conf = flood_config(
        &lab,
        "<max_startups>50:30:300</max_startups><banner_timeout>60</banner_timeout>\
         <kex_timeout>60</kex_timeout><login_grace_time>60</login_grace_time>",
        "<penalty_no_auth>0</penalty_no_auth><penalty_max_startups>0</penalty_max_startups>",
    );
    lab.daemon.start(&conf);
    add_many_client_addresses(&lab);
    let proxy = SocketAddr::new(lab::PROXY_CLIENT_V6.into(), 33001);
    let flood: Vec<(std::net::TcpStream, bool)> = lab.topo.client.run_in(|| {
        (0..100)
            .flat_map(|i| open_connections(many_source(i), proxy, 10, false))
            .collect()
    });
    let admitted = flood.iter().filter(|(_, a)| *a).count();
    // What the drop curve predicts for 1,000 connections opened one after the other.
    let percent = |n: f64| -> f64 {
        if n < 50.0 {
            0.0
        } else if n >= 300.0 {
            100.0
        } else {
            30.0 + 70.0 * (n - 50.0) / 250.0
        }
    };
    let mut expected: f64 = 0.0;
    for _ in 0..1000 {
        expected += 1.0 - percent(expected.floor()) / 100.0;
    }
    // Legitimate probes from 192.0.2.2 while the flood holds its slots.
    let legit_proxy = SocketAddr::new(lab::PROXY_CLIENT_V4.into(), 33001);
    let probes = lab
        .topo
        .client
        .run_in(|| open_connections(lab::CLIENT_V4.into(), legit_proxy, 100, false));
    let succeeded = probes.iter().filter(|(_, a)| *a).count();
    let predicted = 100.0 - percent(admitted as f64);
    eprintln!(
        "early drop 50:30:300, 100 sources x 10 connections: {admitted} admitted (the curve \
         predicts {expected:.0}); legitimate connections during the flood: {succeeded} of 100 \
         admitted (the curve predicts {predicted:.0}%)"
    );
    assert!(
        (admitted as f64 - expected).abs() < 30.0,
        "{admitted} admitted, {expected:.0} expected"
    );
    assert!(
        (succeeded as f64 - predicted).abs() < 25.0,
        "{succeeded}% of the legitimate connections admitted, {predicted:.0}% expected"
    );
    drop((flood, probes));
    lab.daemon.stop();
}

#[test]
fn thousands_of_offending_sources_keep_the_daemon_s_memory_bounded() {
    let mut lab = ProxyLab::new(1);
    let conf = flood_config(&lab, "", "<max_tracked_sources>1000</max_tracked_sources>");
    lab.daemon.start(&conf);
    add_many_client_addresses(&lab);
    let proxy = SocketAddr::new(lab::PROXY_CLIENT_V6.into(), 33001);
    let before = daemon_rss_kib(&lab);
    // 3,000 sources, each connecting and closing at once: an offence each (no login attempt).
    let sources = 3000;
    lab.topo.client.run_in(|| {
        for i in 0..sources {
            drop(open_connections(many_source(1000 + i), proxy, 1, false));
        }
    });
    assert!(lab::wait_until(Duration::from_secs(20), || {
        lab.daemon.log().matches("penalised for").count() >= sources
    }));
    let after = daemon_rss_kib(&lab);
    eprintln!(
        "{sources} offending sources (table capped at 1,000): daemon VmRSS {before} KiB before, \
         {after} KiB after"
    );
    assert!(
        after < before + 16 * 1024,
        "{before} KiB -> {after} KiB after {sources} offending sources"
    );
    // Still serving.
    let src = lab.path("ok.bin");
    std::fs::write(&src, content(10_000, 2)).unwrap();
    upload(
        &lab,
        &src,
        &format!("root@{}", lab::PROXY_CLIENT_V4),
        &lab.path("in"),
    );
    lab.daemon.stop();
}

/// `fasp-proxy reload` with the exit status and the output it printed.
fn reload(lab: &ProxyLab, conf: &Path) -> Output {
    lab.topo
        .proxy
        .try_exec(&[FASP_PROXY, "--config", conf.to_str().unwrap(), "reload"])
}

#[test]
fn reload_keeps_a_running_transfer_and_its_entry_and_new_sessions_follow_the_new_rule() {
    let mut lab = ProxyLab::new(2);
    lab.trust_key_everywhere();
    let key = lab.servers[0].client_key.display().to_string();
    let rule_to = |i: usize| {
        format!(
            "<rule><host>{}:22</host><keyfile>{key}</keyfile></rule>",
            lab::server_v4(i),
        )
    };
    let conf = lab.configure(&rule_to(0), "");
    lab.daemon.start(&conf);
    let (src, dst, remote) = lab.upload_files("payload.bin", 12_000_000, 9, "server_in");
    // 12 MB at 10 Mbit/s: about 10 s, running while the rule changes under it.
    let mut client = lab.spawn_ascp(&[
        "-q",
        "-l",
        "10m",
        "--client-udp-port",
        "40125",
        src.to_str().unwrap(),
        remote.as_str(),
    ]);
    let flowing = lab::wait_until(Duration::from_secs(20), || {
        lab.nft_sessions().contains("192.0.2.2 . 40125")
    });
    assert!(flowing, "no entry:\n{}\n{}", client.log(), lab.daemon.log());

    // The default rule now goes to server 1.
    let conf = lab.configure(&rule_to(1), "<max_sessions>50</max_sessions>");
    let from = lab.daemon.log().len();
    let out = reload(&lab, &conf);
    assert!(out.status.success(), "{}", lab::describe(&out));
    let said = text(&out.stdout);
    assert!(said.contains("rule 1 (default rule) changed"), "{said}");
    assert!(said.contains("<max_sessions> 1000 → 50"), "{said}");
    assert!(
        lab.daemon
            .log_since(from)
            .contains("configuration reloaded from"),
        "{}",
        lab.daemon.log_since(from)
    );
    // The running transfer keeps its entry until it ends, and completes.
    let mut checks = 0;
    while client.try_wait().is_none() {
        let map = lab.nft_sessions();
        if client.try_wait().is_some() {
            break;
        }
        assert!(
            map.contains("192.0.2.2 . 40125"),
            "the running session's entry vanished after the reload:\n{map}\n{}",
            lab.daemon.log()
        );
        checks += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        checks > 5,
        "the transfer ended before the entry was watched"
    );
    let status = client.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{}", client.log());
    assert_eq!(
        std::fs::read(&src).unwrap(),
        std::fs::read(dst.join("payload.bin")).unwrap()
    );
    assert_eq!((lab.logins(0), lab.logins(1)), (1, 0));

    // A new session follows the new rule.
    let small = lab.path("small.bin");
    std::fs::write(&small, content(50_000, 3)).unwrap();
    let to = format!("root@{}", lab::PROXY_CLIENT_V4);
    upload(&lab, &small, &to, &lab.path("after_reload"));
    assert_eq!(
        (lab.logins(0), lab.logins(1)),
        (1, 1),
        "{}",
        lab.daemon.log()
    );

    // A broken file changes nothing: the reload fails with every error, the daemon goes on
    // with the rule it had.
    let good = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        good.replace(
            "<max_sessions>50</max_sessions>",
            "<max_sessions>lots</max_sessions><bogus/>",
        ),
    )
    .unwrap();
    let from = lab.daemon.log().len();
    let out = reload(&lab, &conf);
    assert!(!out.status.success(), "{}", lab::describe(&out));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains("max_sessions"), "{said}");
    assert!(said.contains("bogus"), "{said}");
    let log = lab.daemon.log_since(from);
    assert!(
        log.contains("still running on the previous configuration"),
        "{log}"
    );
    upload(&lab, &small, &to, &lab.path("after_broken"));
    assert_eq!(
        (lab.logins(0), lab.logins(1)),
        (1, 2),
        "{}",
        lab.daemon.log()
    );

    // SIGHUP does the same as `fasp-proxy reload`: back to server 0.
    lab.configure(&rule_to(0), "");
    let from = lab.daemon.log().len();
    let pid = lab.daemon.process().pid().to_string();
    lab.topo.proxy.exec(&["kill", "-HUP", &pid]);
    let reloaded = lab::wait_until(Duration::from_secs(10), || {
        lab.daemon.log_since(from).contains("(asked by SIGHUP)")
    });
    assert!(reloaded, "{}", lab.daemon.log_since(from));
    upload(&lab, &small, &to, &lab.path("after_hup"));
    assert_eq!(
        (lab.logins(0), lab.logins(1)),
        (2, 2),
        "{}",
        lab.daemon.log()
    );
    lab.daemon.stop();
    lab.assert_no_entry("after the stop");
}

#[test]
fn reload_moves_the_ssh_front_end_to_a_new_port() {
    let mut lab = ProxyLab::new(1);
    let conf = lab.configure(&default_rule(&lab), "");
    lab.daemon.start(&conf);
    let conf = lab.configure(&default_rule(&lab), "<ssh_port>33002</ssh_port>");
    let out = reload(&lab, &conf);
    assert!(out.status.success(), "{}", lab::describe(&out));
    assert!(
        text(&out.stdout).contains("<ssh_bind_address>:<ssh_port> 0.0.0.0:33001 → 0.0.0.0:33002"),
        "{}",
        text(&out.stdout)
    );
    let listening = lab.topo.proxy.exec(&["ss", "-Htln"]);
    assert!(listening.contains(":33002"), "{listening}");
    assert!(!listening.contains(":33001 "), "{listening}");
    // A port already taken: the reload fails, the front end stays where it is.
    let busy = lab.topo.proxy.spawn(&[
        "python3",
        "-c",
        "import socket,time;s=socket.socket();s.bind(('0.0.0.0',33003));s.listen();time.sleep(60)",
    ]);
    lab::wait_until(Duration::from_secs(5), || {
        lab.topo.proxy.exec(&["ss", "-Htln"]).contains(":33003")
    });
    let conf = lab.configure(&default_rule(&lab), "<ssh_port>33003</ssh_port>");
    let out = reload(&lab, &conf);
    assert!(!out.status.success(), "{}", lab::describe(&out));
    assert!(
        format!("{}{}", text(&out.stdout), text(&out.stderr)).contains("33003"),
        "{}",
        lab::describe(&out)
    );
    drop(busy);
    let listening = lab.topo.proxy.exec(&["ss", "-Htln"]);
    assert!(listening.contains(":33002"), "{listening}");
    lab.daemon.stop();
}

/// The programs attached (TCX) at the ingress of `iface` in `ns`, by name.
fn fast_path_programs(ns: &lab::Netns, iface: &str) -> Vec<String> {
    ns.run_in(|| fasp_proxy::dataplane::fast_path::FastPath::tcx_ingress_programs(iface))
        .unwrap_or_else(|e| panic!("query {iface}: {e}"))
        .into_iter()
        .map(|(_, name)| name)
        .collect()
}

/// `<fast_path>true`: a transfer's data is forwarded by the BPF program (conntrack's counter of
/// the client's direction stays at 0 while `fasp-proxy sessions` counts), the file arrives
/// whole; after kill -9 mid-transfer the program is gone with the daemon, and the restart leaves
/// no entry and no flow.
#[test]
fn with_the_fast_path_the_program_forwards_the_data_and_kill_9_leaves_nothing() {
    let mut lab = ProxyLab::new(1);
    let conf = lab.configure_full(&default_rule(&lab), "", "<fast_path>true</fast_path>");
    lab.daemon.start(&conf);
    assert!(
        lab.daemon
            .log()
            .contains("BPF fast path attached at the ingress of "),
        "{}",
        lab.daemon.log()
    );
    assert_eq!(
        fast_path_programs(&lab.topo.proxy, lab::PROXY_CLIENT_IF),
        ["fasp_fast_path"]
    );
    let (src, dst, remote) = lab.upload_files("payload.bin", 20_000_000, 7, "server_in");
    // 20 MB at 20 Mbit/s: 8 s.
    let mut client = lab.spawn_ascp(&[
        "-q",
        "-l",
        "20m",
        "--client-udp-port",
        "40125",
        src.to_str().unwrap(),
        remote.as_str(),
    ]);
    let flowing = lab::wait_until(Duration::from_secs(20), || {
        lab.nft_sessions().contains("192.0.2.2 . 40125")
    });
    assert!(flowing, "no entry:\n{}\n{}", client.log(), lab.daemon.log());
    std::thread::sleep(Duration::from_millis(1000));
    let id = session_id(&lab.daemon.log(), "Setup UDP forwarding");
    let table = lab.topo.proxy.exec(&[FASP_PROXY, "sessions"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("session {id} not listed:\n{table}"));
    let packets: u64 = row
        .split_whitespace()
        .rev()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no counters in {row:?}"));
    assert!(packets > 100, "{row}");
    let flow = lab.conntrack_from_port(40125);
    assert!(
        flow.contains("dport=33001 packets=0 "),
        "the kernel path counted the client's packets:\n{flow}"
    );
    let status = client.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}\n{}", client.log(), lab.daemon.log());
    assert_eq!(
        std::fs::read(&src).unwrap(),
        std::fs::read(dst.join("payload.bin")).unwrap()
    );

    // kill -9 mid-transfer: the kernel detaches the program with the process.
    let client = lab.spawn_ascp(&[
        "-q",
        "-l",
        "10m",
        "--client-udp-port",
        "40126",
        src.to_str().unwrap(),
        remote.as_str(),
    ]);
    let flowing = lab::wait_until(Duration::from_secs(20), || {
        lab.nft_sessions().contains("192.0.2.2 . 40126")
    });
    assert!(flowing, "no entry:\n{}\n{}", client.log(), lab.daemon.log());
    let mut daemon = lab.daemon.take();
    let pid = daemon.pid().to_string();
    lab.topo.proxy.exec(&["kill", "-KILL", &pid]);
    daemon.wait_exit(Duration::from_secs(10));
    drop(client);
    let detached = lab::wait_until(Duration::from_secs(5), || {
        fast_path_programs(&lab.topo.proxy, lab::PROXY_CLIENT_IF).is_empty()
    });
    assert!(detached, "the program outlived the daemon");
    let from = lab.daemon.log().len();
    lab.daemon.start(&conf);
    assert!(lab
        .daemon
        .log_since(from)
        .contains("left by a previous run"));
    lab.assert_no_entry("after the restart");
    assert!(!lab.conntrack_from_port(40126).contains("src=192.0.2.2"));
    lab.daemon.stop();
    assert!(fast_path_programs(&lab.topo.proxy, lab::PROXY_CLIENT_IF).is_empty());
}
