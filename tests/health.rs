//! Internal servers' host keys and health checks, end to end in the namespace lab: a real
//! `fasp-proxy run` in the proxy namespace, real OpenSSH sshd on the internal servers, our
//! `ascp` in the client namespace, `fasp-proxy trust-host` run as an administrator would.
//!
//! Covered: an unknown internal host key refused by default (the client and the log say how
//! to fix it), not marking the server faulty; `trust-host` fetching every key kind the server
//! has (the same keys as `ssh-keyscan`, the fingerprints `ssh-keygen -lf` prints), asking
//! only on a terminal, `--yes`, and the session going through after it; trust on first use
//! with `<accept_new_host_keys>` and its `check-config` warning; a changed host key refused,
//! the server marked faulty and both fingerprints logged, `trust-host` refusing the new key
//! until `--replace`; a server whose sshd is stopped marked faulty by the health checks before
//! any client arrives, sessions routed to the healthy one, and the mark cleared once its sshd
//! is back.

mod lab;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use lab::daemon::{Daemon, SSH_PORT};
use lab::{describe, text, Sshd, Topology};

const FASP_PROXY: &str = env!("CARGO_BIN_EXE_fasp-proxy");

/// The lab: `n` internal servers (sshd running our `ascp --server`, each accepting server 0's
/// client key), the proxy's configuration directory, the daemon under test.
struct HealthLab {
    topo: Topology,
    servers: Vec<Sshd>,
    dir: tempfile::TempDir,
    daemon: Daemon,
}

impl HealthLab {
    fn new(n: usize) -> HealthLab {
        HealthLab::with_sshd_extra(n, "")
    }

    /// Like [`HealthLab::new`], with `extra` appended to every sshd_config.
    fn with_sshd_extra(n: usize, extra: &str) -> HealthLab {
        let topo = Topology::new(n);
        let sshd_extra = format!("{}{extra}", lab::daemon::ASCP_SERVER);
        let servers: Vec<Sshd> = (0..n)
            .map(|i| lab::daemon::internal_server(&topo, i, &sshd_extra))
            .collect();
        lab::daemon::trust_first_client_key(&servers);
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::new(&topo.proxy, dir.path());
        HealthLab {
            topo,
            servers,
            dir,
            daemon,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The daemon's known_hosts: beside its configuration.
    fn known_hosts(&self) -> PathBuf {
        self.daemon.etc().join("known_hosts")
    }

    /// Writes the configuration: one default rule over every server (`<hosts>`), `extra` in
    /// `<rproxy>`, no penalties; the proxy user's keys and the client's known_hosts. The
    /// daemon's known_hosts is left as it is.
    fn configure(&self, extra: &str) -> PathBuf {
        self.daemon.create_config(&[]);
        self.daemon
            .authorize("root", &self.servers[0].client_key.with_extension("pub"));
        let hosts: String = (0..self.servers.len())
            .map(|i| format!("<host>{}:22</host>", lab::server_v4(i)))
            .collect();
        let conf = self.daemon.write_conf(&format!(
            "<CONF><server><rproxy>\n{basics}{extra}\n\
             <rules><rule><hosts>{hosts}</hosts><keyfile>{key}</keyfile></rule></rules>\n\
             </rproxy>\n\
             <per_source><penalty_auth_failure>0</penalty_auth_failure>\
             <penalty_no_auth>0</penalty_no_auth></per_source>\n</server></CONF>\n",
            basics = self.daemon.rproxy_basics(1),
            key = self.servers[0].client_key.display(),
        ));
        self.daemon.write_client_known_hosts(
            &self.path("proxy_known_hosts"),
            &[lab::PROXY_CLIENT_V4.to_string()],
            SSH_PORT,
        );
        conf
    }

    /// Uploads a small file through the proxy with our ascp (bounded); its output.
    fn upload(&self, name: &str) -> Output {
        let src = self.path(name);
        std::fs::write(&src, vec![7u8; 50_000]).unwrap();
        let dst = self.path(&format!("{name}.in"));
        std::fs::create_dir_all(&dst).unwrap();
        let remote = format!("root@{}:{}", lab::PROXY_CLIENT_V4, dst.display());
        let mut args: Vec<String> = vec!["timeout".into(), "60".into()];
        args.extend(lab::daemon::ascp_login(
            &self.servers[0].client_key,
            &self.path("proxy_known_hosts"),
        ));
        args.extend(["-q", "-l", "100m"].map(String::from));
        args.push(src.display().to_string());
        args.push(remote);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.topo.client.try_exec(&refs)
    }

    /// Uploads and checks that the file arrived.
    fn upload_ok(&self, name: &str) {
        let out = self.upload(name);
        assert!(
            out.status.success(),
            "upload {name}: {}\n--- proxy ---\n{}",
            describe(&out),
            self.daemon.log()
        );
        let arrived = self.path(&format!("{name}.in")).join(name);
        assert_eq!(std::fs::read(&arrived).unwrap().len(), 50_000);
    }

    /// `fasp-proxy --config CONF trust-host ARGS…` in the proxy namespace, stdin not a terminal.
    fn trust_host(&self, conf: &Path, args: &[&str]) -> Output {
        let mut argv = vec![FASP_PROXY, "--config", conf.to_str().unwrap(), "trust-host"];
        argv.extend(args);
        self.topo.proxy.try_exec(&argv)
    }

    /// How many times server `i`'s sshd accepted a login.
    fn logins(&self, i: usize) -> usize {
        self.servers[i].logins()
    }
}

impl Drop for HealthLab {
    fn drop(&mut self) {
        // SIGTERM to the daemon (so it removes its kernel entries) and wait until it stopped.
        if !std::thread::panicking() {
            self.daemon.stop_if_running();
        }
        // Otherwise (or if it did not stop) the lab kills it by PID.
    }
}

fn run_ok(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    text(&out.stdout)
}

/// The SHA-256 fingerprint of the public key file `pub_path`, as `ssh-keygen -lf` prints it.
fn fingerprint(pub_path: &Path) -> String {
    let out = run_ok(&["ssh-keygen", "-lf", pub_path.to_str().unwrap()]);
    out.split_whitespace().nth(1).unwrap().to_string()
}

/// The keys of a known_hosts-format text (`NAME TYPE BASE64 …` lines), as `TYPE BASE64`,
/// sorted.
fn keys_of(known_hosts: &str) -> Vec<String> {
    let mut keys: Vec<String> = known_hosts
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    keys.sort();
    keys
}

#[test]
fn an_unknown_host_key_is_refused_until_trust_host_records_every_key_the_server_has() {
    // The server has three host keys (Ed25519 from the lab, ECDSA and RSA made here).
    let keys = tempfile::tempdir().unwrap();
    let mut extra = String::new();
    for (kind, bits) in [("ecdsa", "256"), ("rsa", "3072")] {
        let path = keys.path().join(format!("ssh_host_{kind}_key"));
        run_ok(&[
            "ssh-keygen",
            "-q",
            "-t",
            kind,
            "-b",
            bits,
            "-N",
            "",
            "-f",
            path.to_str().unwrap(),
        ]);
        extra.push_str(&format!("HostKey {}\n", path.display()));
    }
    let mut lab = HealthLab::with_sshd_extra(1, &extra);
    let server = format!("{}:22", lab::server_v4(0));
    // Health checks off: this test is about sessions.
    let conf = lab.configure("<health_check_interval>0</health_check_interval>");
    assert!(
        !lab.known_hosts().exists(),
        "create-config writes no known_hosts"
    );
    lab.daemon.start(&conf);

    // 1. Refused by default: the client and the log name the server and the fix.
    let out = lab.upload("first.bin");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{}", describe(&out));
    let fix = format!("fasp-proxy trust-host {server}");
    assert!(
        err.contains(&server) && err.contains("is not in") && err.contains(&fix),
        "{err}"
    );
    let log = lab.daemon.log();
    assert!(log.contains(&fix), "{log}");
    assert!(
        !log.contains("marked faulty"),
        "an unknown key is not the server's fault:\n{log}"
    );
    assert_eq!(lab.logins(0), 0);
    assert!(!lab.known_hosts().exists(), "strict: nothing recorded");

    // 2. trust-host without a terminal and without --yes records nothing.
    let out = lab.trust_host(&conf, &[&server]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(text(&out.stderr).contains("--yes"), "{}", describe(&out));
    assert!(!lab.known_hosts().exists());

    // 3. --yes: every key the server has, the same ones ssh-keyscan fetches, each printed as
    // ssh-keygen -lf prints it.
    let out = lab.trust_host(&conf, &["--yes", &lab::server_v4(0).to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    let said = text(&out.stdout);
    let recorded = std::fs::read_to_string(lab.known_hosts()).unwrap();
    let scanned = lab
        .topo
        .proxy
        .exec(&["ssh-keyscan", "-T", "10", &lab::server_v4(0).to_string()]);
    assert_eq!(keys_of(&recorded), keys_of(&scanned), "{said}");
    assert_eq!(keys_of(&recorded).len(), 3, "{recorded}");
    let mode = std::fs::metadata(lab.known_hosts())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);
    let listed = run_ok(&["ssh-keygen", "-lf", lab.known_hosts().to_str().unwrap()]);
    for line in listed.lines() {
        assert!(said.contains(line.trim()), "{line:?} not in:\n{said}");
    }
    assert!(
        recorded
            .lines()
            .all(|l| l.starts_with(&format!("{} ", lab::server_v4(0)))),
        "{recorded}"
    );
    // The lab's own record of its Ed25519 key is among them.
    assert!(keys_of(&recorded).contains(&keys_of(&lab.servers[0].known_hosts_line())[0]));
    // Again: nothing to do.
    let out = lab.trust_host(&conf, &["--yes", &server]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stdout).contains("nothing to do"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        std::fs::read_to_string(lab.known_hosts()).unwrap(),
        recorded
    );

    // 4. The session goes through now, with the running daemon.
    lab.upload_ok("second.bin");
    assert_eq!(lab.logins(0), 1);

    // 5. Trust on first use, when the setting says so: a check-config warning; the key of a
    // server not yet known is recorded by the session.
    std::fs::remove_file(lab.known_hosts()).unwrap();
    let tofu = lab.configure(
        "<health_check_interval>0</health_check_interval>\
         <accept_new_host_keys>true</accept_new_host_keys>",
    );
    let out = std::process::Command::new(FASP_PROXY)
        .args(["check-config", tofu.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("trusted on first use")
            && text(&out.stderr).contains("fasp-proxy trust-host"),
        "{}",
        describe(&out)
    );
    lab.daemon.stop();
    lab.daemon.start(&tofu);
    lab.upload_ok("third.bin");
    let learned = std::fs::read_to_string(lab.known_hosts()).unwrap();
    assert_eq!(keys_of(&learned).len(), 1, "{learned}");
    assert!(keys_of(&recorded).contains(&keys_of(&learned)[0]));
}

#[test]
fn a_changed_host_key_is_refused_marks_the_server_faulty_and_logs_both_fingerprints() {
    let mut lab = HealthLab::new(2);
    let conf = lab.configure(
        "<health_check_interval>0</health_check_interval>\
         <faulty_host_hold_time>3</faulty_host_hold_time>",
    );
    let servers: Vec<&Sshd> = lab.servers.iter().collect();
    lab::seed_known_hosts(&lab.known_hosts(), &servers);
    lab.daemon.start(&conf);
    let host_key = lab.servers[0].dir.path().join("ssh_host_ed25519_key.pub");
    let old = fingerprint(&host_key);

    // Server 0 restarts with another host key (reinstalled, or someone else at its address).
    lab.servers[0].change_host_key(&lab.topo.servers[0]);
    let new = fingerprint(&host_key);
    assert_ne!(old, new);
    // Round robin starts at server 0: refused there, marked, the session goes to server 1.
    let from = lab.daemon.log().len();
    lab.upload_ok("one.bin");
    let log = lab.daemon.log_since(from);
    let server0 = format!("{}:22", lab::server_v4(0));
    let changed = log
        .lines()
        .find(|l| l.contains("HOST KEY CHANGED"))
        .unwrap_or_else(|| panic!("no changed-key line:\n{log}"));
    assert!(
        changed.contains(&server0) && changed.contains(&old) && changed.contains(&new),
        "both fingerprints: {changed}"
    );
    assert!(
        log.contains(&format!("internal server {server0} marked faulty")),
        "{log}"
    );
    assert_eq!((lab.logins(0), lab.logins(1)), (0, 1));
    // While marked, sessions skip it without trying.
    let from = lab.daemon.log().len();
    lab.upload_ok("two.bin");
    assert!(
        !lab.daemon.log_since(from).contains("HOST KEY CHANGED"),
        "{}",
        lab.daemon.log_since(from)
    );
    assert_eq!(lab.logins(1), 2);

    // trust-host shows the difference and records nothing without --replace.
    let out = lab.trust_host(&conf, &["--yes", &server0]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stdout).contains(&old) && text(&out.stdout).contains(&new),
        "{}",
        describe(&out)
    );
    assert!(
        text(&out.stderr).contains("--replace"),
        "{}",
        describe(&out)
    );
    // With --replace the new key takes the old one's place, server 1's line is kept.
    let out = lab.trust_host(&conf, &["--yes", "--replace", &server0]);
    assert!(out.status.success(), "{}", describe(&out));
    let known = std::fs::read_to_string(lab.known_hosts()).unwrap();
    assert!(
        known.contains(&lab.servers[1].known_hosts_line()),
        "{known}"
    );
    assert!(
        keys_of(&known).contains(&keys_of(&lab.servers[0].known_hosts_line())[0]),
        "{known}"
    );
    assert_eq!(keys_of(&known).len(), 2, "{known}");
    // Once the hold time is over, server 0 takes sessions again.
    std::thread::sleep(Duration::from_millis(3500));
    lab.upload_ok("three.bin");
    lab.upload_ok("four.bin");
    assert_eq!(lab.logins(0), 1, "{}", lab.daemon.log());
}

#[test]
fn a_stopped_server_is_marked_by_its_health_checks_before_any_client_and_cleared_when_back() {
    let mut lab = HealthLab::new(2);
    let conf = lab.configure(
        "<health_check_interval>1</health_check_interval>\
         <health_check_timeout>2</health_check_timeout>\
         <health_check_failures>2</health_check_failures>\
         <health_check_successes>2</health_check_successes>",
    );
    let servers: Vec<&Sshd> = lab.servers.iter().collect();
    lab::seed_known_hosts(&lab.known_hosts(), &servers);
    lab.servers[1].stop();
    let server1 = format!("{}:22", lab::server_v4(1));
    lab.daemon.start(&conf);

    // Marked by the checks alone: no client has come.
    let marked = format!("internal server {server1} failed its health check 2 times (");
    let seen = lab::wait_until(Duration::from_secs(15), || {
        lab.daemon.log().contains(&marked)
    });
    assert!(seen, "{}", lab.daemon.log());
    let log = lab.daemon.log();
    assert!(!log.contains("Received connection request"), "{log}");
    let line = log.lines().find(|l| l.contains(&marked)).unwrap();
    assert!(line.ends_with("marked faulty"), "{line}");
    assert!(
        !log.contains(&format!("{}:22 failed", lab::server_v4(0))),
        "{log}"
    );

    // Sessions go to the healthy server only, without trying the marked one.
    let from = lab.daemon.log().len();
    for n in 0..3 {
        lab.upload_ok(&format!("while_down_{n}.bin"));
    }
    assert_eq!(lab.logins(0), 3);
    assert!(
        !lab.daemon
            .log_since(from)
            .contains(&format!("internal server {server1}: ")),
        "{}",
        lab.daemon.log_since(from)
    );
    // Logged on change only: still failing, never logged again.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lab.daemon.log().matches("failed its health check").count(),
        1,
        "{}",
        lab.daemon.log()
    );

    // Back: two passes in a row clear the mark, and round robin reaches it again.
    let topo_server = &lab.topo.servers[1];
    lab.servers[1].restart(topo_server);
    let cleared = format!(
        "internal server {server1} passed its health check 2 times: no longer marked faulty"
    );
    let seen = lab::wait_until(Duration::from_secs(15), || {
        lab.daemon.log().contains(&cleared)
    });
    assert!(seen, "{}", lab.daemon.log());
    lab.upload_ok("back_0.bin");
    lab.upload_ok("back_1.bin");
    assert_eq!(lab.logins(1), 1, "{}", lab.daemon.log());
    assert_eq!(
        lab.daemon.log().matches("no longer marked faulty").count(),
        1,
        "{}",
        lab.daemon.log()
    );
}
