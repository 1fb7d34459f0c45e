//! The daemon under test, `fasp-proxy run`, in a lab's proxy namespace, and the internal servers
//! in front of which it runs: shared by the tests that start the daemon (`tests/proxy.rs`,
//! `metrics.rs`, `health.rs`, `control.rs`, `forward_proxy.rs`, `openssh_mode.rs`).
//!
//! A [`Daemon`] keeps its configuration directory (`etc/`, made by `fasp-proxy create-config`)
//! and its log directory (`log/`) in the test's work directory; it starts the daemon and waits
//! for its readiness line in the log, stops it with SIGTERM, and reads its log (all of it, or
//! what came since an offset). The configuration's text is each test's own: this module writes
//! only the pieces the tests share.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{describe, server_v4, text, wait_until, Netns, NsProcess, Sshd, Topology};

/// The daemon binary under test.
pub const FASP_PROXY: &str = env!("CARGO_BIN_EXE_fasp-proxy");
/// Our `ascp`, the client and (as `ascp --server`) the internal servers' transfer command.
pub const ASCP: &str = env!("CARGO_BIN_EXE_ascp");
/// sshd_config lines that make every login to an internal server run `ascp --server`.
pub const ASCP_SERVER: &str = concat!("ForceCommand ", env!("CARGO_BIN_EXE_ascp"), " --server\n");
/// The port of the daemon's own SSH front end (`<ssh_port>`'s default).
pub const SSH_PORT: u16 = 33001;
/// `<per_source>` with every penalty off: for tests that log in from one address again and
/// again, also after the refusals they provoke.
pub const NO_PENALTIES: &str = "<per_source><penalty_auth_failure>0</penalty_auth_failure>\
                                <penalty_no_auth>0</penalty_no_auth><penalty_grace_exceeded>0\
                                </penalty_grace_exceeded><penalty_max_startups>0\
                                </penalty_max_startups></per_source>";
/// The name of the daemon's log file in its log directory.
const LOG_FILE: &str = "fasp-proxy.log";

/// Starts a real sshd on internal server `i` of `topo` (its address, port 22) with `sshd_extra`
/// appended to its sshd_config (e.g. [`ASCP_SERVER`]).
pub fn internal_server(topo: &Topology, i: usize, sshd_extra: &str) -> Sshd {
    Sshd::start_configured(
        &topo.servers[i],
        SocketAddr::new(server_v4(i).into(), 22),
        &[],
        sshd_extra,
    )
}

/// Makes every server accept the first one's client key for root (a `<hosts>` rule has one
/// keyfile for all its servers).
pub fn trust_first_client_key(servers: &[Sshd]) {
    let Some((first, others)) = servers.split_first() else {
        return;
    };
    let public = first.client_key.with_extension("pub");
    for s in others {
        let to = s.dir.path().join("authorized_keys");
        std::fs::copy(&public, &to).unwrap_or_else(|e| {
            panic!("lab: copying {} to {}: {e}", public.display(), to.display())
        });
    }
}

/// Our ascp's command line up to its options, logging in to the daemon's own front end
/// ([`SSH_PORT`]) with `key` and trusting the hosts in `known_hosts`.
pub fn ascp_login(key: &Path, known_hosts: &Path) -> Vec<String> {
    vec![
        ASCP.into(),
        "-P".into(),
        SSH_PORT.to_string(),
        "-i".into(),
        key.display().to_string(),
        "--known-hosts".into(),
        known_hosts.display().to_string(),
    ]
}

/// OpenSSH `ssh`'s command line up to the destination, logging in to the daemon's own front end
/// ([`SSH_PORT`]) with `key` only, never asking, and checking the daemon's host key strictly
/// against `known_hosts`; the machine's ssh configuration is ignored.
pub fn ssh_login(key: &Path, known_hosts: &Path) -> Vec<String> {
    vec![
        "ssh".into(),
        "-F".into(),
        "/dev/null".into(),
        "-p".into(),
        SSH_PORT.to_string(),
        "-i".into(),
        key.display().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
    ]
}

/// Adds the forward proxy's node-API user `user` with `password` (`fasp-proxy node-user add`,
/// the password on stdin) to the configuration `conf`.
pub fn add_node_user(conf: &Path, user: &str, password: &str) {
    let conf_arg = conf.display().to_string();
    let mut child = Command::new(FASP_PROXY)
        .args(["--config", &conf_arg, "node-user", "add", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("lab: cannot run {FASP_PROXY} node-user add: {e}"));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(format!("{password}\n").as_bytes())
        .unwrap_or_else(|e| panic!("lab: writing node-user add's password: {e}"));
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("lab: waiting for node-user add: {e}"));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `fasp-proxy run` in a lab namespace, with its configuration and log directories below a
/// work directory. Not started until [`Daemon::start`]; a daemon still running when the value
/// is dropped is killed by PID (and the lab kills it too when the lab goes first).
pub struct Daemon {
    netns: Netns,
    dir: PathBuf,
    process: Option<NsProcess>,
}

impl Daemon {
    /// A daemon to run in `netns`, with `etc/` and `log/` below `dir`.
    pub fn new(netns: &Netns, dir: &Path) -> Daemon {
        Daemon {
            netns: netns.clone(),
            dir: dir.to_path_buf(),
            process: None,
        }
    }

    /// The configuration directory: `etc/` below the work directory.
    pub fn etc(&self) -> PathBuf {
        self.dir.join("etc")
    }

    /// The log directory (`<log_directory>`): `log/` below the work directory.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// Runs `fasp-proxy create-config --dir ETC` with `args` after it, unless the directory
    /// already has the daemon's host key from an earlier call.
    pub fn create_config(&self, args: &[&str]) {
        let etc = self.etc();
        if etc.join("ssh_host_ed25519_key").exists() {
            return;
        }
        let etc_arg = etc.display().to_string();
        let out = Command::new(FASP_PROXY)
            .args(["create-config", "--dir", &etc_arg])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("lab: cannot run {FASP_PROXY} create-config: {e}"));
        assert!(
            out.status.success(),
            "create-config --dir {etc_arg}: {}",
            describe(&out)
        );
    }

    /// Lets `user` log in to the daemon with the key whose public half is `public_key`
    /// (`ETC/<user>.keys`, as `<authorized_keys_file>ETC/%u.keys` names it).
    pub fn authorize(&self, user: &str, public_key: &Path) {
        let to = self.etc().join(format!("{user}.keys"));
        std::fs::copy(public_key, &to).unwrap_or_else(|e| {
            panic!(
                "lab: copying {} to {}: {e}",
                public_key.display(),
                to.display()
            )
        });
    }

    /// The `<rproxy>` settings every reverse-proxy test has, one a line: enabled, `log_level`,
    /// the log directory, listening on every IPv4 address, the host key from
    /// [`Daemon::create_config`] and the keys of [`Daemon::authorize`].
    pub fn rproxy_basics(&self, log_level: u8) -> String {
        let etc = self.etc();
        format!(
            "<enabled>true</enabled>\n<log_level>{log_level}</log_level>\n\
             <log_directory>{log}</log_directory>\n<ssh_bind_address>0.0.0.0</ssh_bind_address>\n\
             <ssh_host_key>{etc}/ssh_host_ed25519_key</ssh_host_key>\n\
             <authorized_keys_file>{etc}/%u.keys</authorized_keys_file>\n",
            log = self.log_dir().display(),
            etc = etc.display(),
        )
    }

    /// Writes `text` as `ETC/aspera.conf`; its path.
    pub fn write_conf(&self, text: &str) -> PathBuf {
        let conf = self.etc().join("aspera.conf");
        std::fs::write(&conf, text)
            .unwrap_or_else(|e| panic!("lab: writing {}: {e}", conf.display()));
        conf
    }

    /// Writes `path` as a client's known_hosts file that trusts the daemon's host key under
    /// each of `names` on `port` (`[NAME]:PORT KEY` lines).
    pub fn write_client_known_hosts(&self, path: &Path, names: &[String], port: u16) {
        let public = self.etc().join("ssh_host_ed25519_key.pub");
        let host_pub = std::fs::read_to_string(&public)
            .unwrap_or_else(|e| panic!("lab: reading {}: {e}", public.display()));
        let known: String = names
            .iter()
            .map(|name| format!("[{name}]:{port} {host_pub}"))
            .collect();
        std::fs::write(path, known)
            .unwrap_or_else(|e| panic!("lab: writing {}: {e}", path.display()));
    }

    /// Starts the daemon with `conf` and waits up to 10 s for "listening on" in its log.
    pub fn start(&mut self, conf: &Path) {
        self.start_wrapped(conf, &[]);
    }

    /// Like [`Daemon::start`], with `prefix` before its command line (e.g. an `unshare` or
    /// `env` wrapper).
    pub fn start_wrapped(&mut self, conf: &Path, prefix: &[&str]) {
        self.start_until(conf, prefix, Duration::from_secs(10), |log| {
            log.contains("listening on")
        });
    }

    /// Starts `prefix… fasp-proxy --config CONF run` in the namespace and waits up to
    /// `timeout` until `ready` holds for what the log gained since; panics with the daemon's
    /// output and log if it does not. Returns the log's length before the start (for
    /// [`Daemon::log_since`]).
    pub fn start_until(
        &mut self,
        conf: &Path,
        prefix: &[&str],
        timeout: Duration,
        ready: impl Fn(&str) -> bool,
    ) -> usize {
        let from = self.log().len();
        let conf_arg = conf.display().to_string();
        let mut args: Vec<&str> = prefix.to_vec();
        args.extend([FASP_PROXY, "--config", &conf_arg, "run"]);
        let process = self.netns.spawn(&args);
        let up = wait_until(timeout, || ready(&self.log_since(from)));
        assert!(
            up,
            "the daemon did not start:\n{}\n{}",
            process.log(),
            self.log()
        );
        self.process = Some(process);
        from
    }

    /// SIGTERM to the running daemon (so it closes its sessions and removes its kernel
    /// entries); waits up to 20 s until it has stopped. Panics if none runs.
    pub fn stop(&mut self) {
        let mut process = self.take();
        let pid = process.pid().to_string();
        self.netns.exec(&["kill", "-TERM", &pid]);
        let stopped = wait_until(Duration::from_secs(20), || process.try_wait().is_some());
        assert!(stopped, "the daemon did not stop:\n{}", self.log());
    }

    /// [`Daemon::stop`] if the daemon was started and not stopped or taken since.
    pub fn stop_if_running(&mut self) {
        if self.process.is_some() {
            self.stop();
        }
    }

    /// Kills the daemon, if it runs, by PID (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    /// The running daemon's process, handed over (for tests that kill or signal it
    /// themselves). Panics if none runs.
    pub fn take(&mut self) -> NsProcess {
        self.process.take().expect("a running daemon")
    }

    /// The running daemon's process. Panics if none runs.
    pub fn process(&self) -> &NsProcess {
        self.process.as_ref().expect("a running daemon")
    }

    /// The running daemon's process, mutable (e.g. for `try_wait`). Panics if none runs.
    pub fn process_mut(&mut self) -> &mut NsProcess {
        self.process.as_mut().expect("a running daemon")
    }

    /// The daemon's log file, all of it (empty before it first logged).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_dir().join(LOG_FILE)).unwrap_or_default()
    }

    /// The log from byte `from` on (see `self.log().len()`).
    pub fn log_since(&self, from: usize) -> String {
        self.log().get(from..).unwrap_or_default().to_string()
    }
}
