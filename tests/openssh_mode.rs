//! The OpenSSH deployment mode end to end, in the namespace lab: on the proxy host OpenSSH's
//! `sshd` authenticates a proxy user whose login shell is `aspshell`; aspshell hands its
//! stdin/stdout/stderr to the running `fasp-proxy run` daemon (`<frontend>openssh`) over the
//! hand-off socket; the daemon runs the same session as for its own front end: rule, backend
//! login, kernel entry, logs.
//!
//! Covered: a transfer through it with the entry visible while it runs and gone after; the user
//! cannot run anything else on the proxy (so cannot reach the kernel); the hand-off socket
//! refuses a caller whose login shell is not aspshell, root, and an aspshell user's process
//! that was not started by sshd.
//!
//! The test account `fphouser` is created if missing (a system account); its shell is set to
//! the aspshell under test for the test's duration and back to /usr/sbin/nologin (password `*`)
//! afterwards, also on panic. aspshell reads `/etc/fasp-proxy/aspera.conf`: the proxy's sshd and
//! its sessions get a private mount namespace in which the test's configuration directory is
//! bind-mounted there (`/etc/fasp-proxy` is created, empty, if the machine has none).

mod lab;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use lab::accounts::{copy_binaries, Account};
use lab::daemon::{Daemon, ASCP_SERVER};
use lab::{describe, text, Sshd, Topology};

const ASCP: &str = env!("CARGO_BIN_EXE_ascp");
const ASPSHELL: &str = env!("CARGO_BIN_EXE_aspshell");
/// The proxy users (local accounts on the proxy host, shell aspshell), one per test: the tests
/// run in parallel and each sets and resets its account's shell.
const USER: &str = "fphouser";
/// The second test's proxy user.
const USER2: &str = "fphouser2";
/// The measurement's proxy user.
const USER3: &str = "fphouser3";
/// Where the daemon's own front end listens with `<frontend>both`.
const BUILTIN_PORT: u16 = 33002;

struct OpensshLab {
    topo: Topology,
    server: Sshd,
    proxy_sshd: Sshd,
    dir: tempfile::TempDir,
    daemon: Daemon,
    account: Account,
    socket: PathBuf,
}

impl OpensshLab {
    fn new(user: &'static str) -> OpensshLab {
        OpensshLab::with_frontend(user, "openssh")
    }

    /// Like [`OpensshLab::new`], with `<frontend>` set to `frontend`; with `both`, the daemon's
    /// own SSH front end listens on [`BUILTIN_PORT`] and takes the same client key for `user`.
    fn with_frontend(user: &'static str, frontend: &str) -> OpensshLab {
        let topo = Topology::new(1);
        let server = lab::daemon::internal_server(&topo, 0, ASCP_SERVER);
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::new(&topo.proxy, dir.path());
        // The build tree may not be reachable for the proxy user.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("bin");
        copy_binaries(&bin, &[ASPSHELL, ASCP]);
        let account = Account::with_temp_home(user, &bin.join("aspshell"));
        let etc = daemon.etc();
        daemon.create_config(&[]);
        lab::seed_known_hosts(&etc.join("known_hosts"), &[&server]);
        std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir(&run_dir).unwrap();
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = run_dir.join("handoff.sock");
        let conf = daemon.write_conf(&format!(
            "<CONF><server><rproxy>\n<enabled>true</enabled>\n<log_level>1</log_level>\n\
             <log_directory>{log}</log_directory>\n<frontend>{frontend}</frontend>\n\
             <ssh_port>{BUILTIN_PORT}</ssh_port>\n\
             <authorized_keys_file>{etc}/%u.keys</authorized_keys_file>\n\
             <handoff_socket>{socket}</handoff_socket>\n\
             <ssh_host_key>{etc}/ssh_host_ed25519_key</ssh_host_key>\n\
             <rules><rule><host>{server}:22</host><squash_user>root</squash_user>\
             <keyfile>{key}</keyfile></rule></rules>\n</rproxy>{no_penalties}</server></CONF>\n",
            log = daemon.log_dir().display(),
            socket = socket.display(),
            etc = etc.display(),
            server = lab::server_v4(0),
            key = server.client_key.display(),
            no_penalties = "<per_source><penalty_auth_failure>0</penalty_auth_failure>\
                <penalty_no_auth>0</penalty_no_auth></per_source>",
        ));
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
        // sshd and its sessions (aspshell) see the test's configuration at the fixed path.
        let proxy_sshd = Sshd::start_with_conf(
            &topo.proxy,
            SocketAddr::new(lab::PROXY_CLIENT_V4.into(), 33001),
            &etc,
            "",
        );
        // The built-in front end (with `both`) takes the client key the proxy's sshd takes.
        daemon.authorize(user, &proxy_sshd.client_key.with_extension("pub"));
        daemon.write_client_known_hosts(
            &dir.path().join("builtin_known_hosts"),
            &[lab::PROXY_CLIENT_V4.to_string()],
            BUILTIN_PORT,
        );
        let mut lab = OpensshLab {
            topo,
            server,
            proxy_sshd,
            dir,
            daemon,
            account,
            socket,
        };
        lab.start_daemon(&conf);
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_daemon(&mut self, conf: &Path) {
        self.daemon
            .start_until(conf, &[], Duration::from_secs(10), |log| {
                log.contains("accepting sessions from OpenSSH")
            });
    }

    /// `ascp` in the client namespace, logging in to the proxy's sshd as the proxy user.
    fn ascp_args(&self) -> Vec<String> {
        let mut args = vec![ASCP.to_string()];
        args.extend(self.proxy_sshd.ascp_options());
        args
    }

    fn ssh(&self, command: &str) -> Output {
        let login = self.proxy_sshd.ssh_options();
        let destination = format!("{}@{}", self.account.name, lab::PROXY_CLIENT_V4);
        let mut args = vec!["ssh"];
        args.extend(login.iter().map(String::as_str));
        args.extend([destination.as_str(), command]);
        self.topo.client.try_exec(&args)
    }
}

impl Drop for OpensshLab {
    fn drop(&mut self) {
        self.daemon.kill();
        let _ = (&self.server, &self.socket);
    }
}

#[test]
fn a_transfer_through_sshd_and_aspshell_is_proxied_by_the_daemon() {
    let lab = OpensshLab::new(USER);
    let src = lab.path("payload.bin");
    let data: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let dst = lab.path("server_in");
    std::fs::create_dir(&dst).unwrap();
    let remote = format!("{USER}@{}:{}", lab::PROXY_CLIENT_V4, dst.display());

    // 20 MB at 40 Mbit/s: about 4 s, long enough to see the kernel entry while it runs.
    let mut args = lab.ascp_args();
    args.extend(["-q", "-l", "40m"].map(String::from));
    args.push(src.display().to_string());
    args.push(remote);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut running = lab.topo.client.spawn(&refs);
    let seen = lab::wait_until(Duration::from_secs(20), || {
        lab.topo.nft_sessions().contains("192.0.2.2 . ")
    });
    assert!(
        seen,
        "no kernel entry during the transfer:\n{}\n{}\n{}",
        lab.topo.nft_sessions(),
        running.log(),
        lab.daemon.log()
    );
    assert!(lab.topo.nft_sessions().contains(": 198.51.100.2 . 33001"));
    let status = running.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "the upload failed ({status}):\n{}\n{}\n{}",
        running.log(),
        lab.daemon.log(),
        lab.proxy_sshd.process.log()
    );
    assert_eq!(std::fs::read(dst.join("payload.bin")).unwrap(), data);
    let gone = lab::wait_until(Duration::from_secs(10), || {
        !lab.topo.nft_sessions().contains("192.0.2.2")
    });
    assert!(
        gone,
        "an entry outlived its session:\n{}",
        lab.topo.nft_sessions()
    );

    // The daemon found the client's address itself, and logged the session as its own.
    let log = lab.daemon.log();
    for line in [
        format!("hand-off: {USER} from 192.0.2.2:"),
        format!("Received connection request from 192.0.2.2 (user {USER})"),
        "Established SSH connection with server 198.51.100.2:22".into(),
        "Setup UDP forwarding between 192.0.2.2:".into(),
        "Connection closed (EOF)".into(),
    ] {
        assert!(log.contains(&line), "log lacks {line:?}:\n{log}");
    }
}

#[test]
fn the_proxy_user_cannot_run_anything_else_and_strangers_are_refused_by_the_socket() {
    let lab = OpensshLab::new(USER2);
    // Through sshd: aspshell refuses every other command; nothing reaches the kernel.
    for command in [
        "nft list ruleset",
        "id",
        "ascp --server; nft flush ruleset",
        "sh",
    ] {
        let out = lab.ssh(command);
        assert_eq!(out.status.code(), Some(1), "{command}: {}", describe(&out));
        assert!(
            text(&out.stderr).contains("Command not accepted"),
            "{command}: {}",
            describe(&out)
        );
    }
    assert!(
        lab.topo
            .proxy
            .try_exec(&["nft", "list", "table", "ip", "fasp_proxy"])
            .status
            .success(),
        "the proxy's table is gone"
    );

    // Straight to the socket, not through sshd: refused whoever asks.
    let request = "import socket,sys\n\
         s=socket.socket(socket.AF_UNIX)\n\
         s.connect(sys.argv[1])\n\
         cmd=b'ascp --server'\n\
         socket.send_fds(s,[b'FPHO1\\0'+len(cmd).to_bytes(4,'big')+cmd],[0,1,2])\n\
         print(int.from_bytes(s.recv(4),'big'))\n";
    let socket = lab.socket.display().to_string();
    for (who, expected) in [
        ("nobody", "login shell is /usr/sbin/nologin, not aspshell"),
        ("root", "login shell is"),
        (USER2, "not started by an OpenSSH sshd"),
    ] {
        let out = lab.topo.proxy.try_exec(&[
            "setpriv",
            "--reuid",
            who,
            "--regid",
            if who == "root" { "root" } else { "nogroup" },
            "--clear-groups",
            // Debian's python3 (scripts/test.sh installs it), reachable by every account.
            "/usr/bin/python3",
            "-c",
            request,
            &socket,
        ]);
        assert_eq!(text(&out.stdout).trim(), "1", "{who}: {}", describe(&out));
        assert!(
            text(&out.stderr).contains(expected),
            "{who}: expected {expected:?}: {}",
            describe(&out)
        );
    }
    let log = lab.daemon.log();
    assert_eq!(log.matches("hand-off refused").count(), 3, "{log}");
    assert!(!log.contains("Received connection request"), "{log}");
}

/// Not a test: the cost of the OpenSSH mode against the built-in front end, measured side by side
/// in one daemon (`<frontend>both`): the same 1 MB upload, alternately through the daemon's own
/// SSH front end and through OpenSSH's sshd + aspshell + the hand-off, timed from start to exit
/// of `ascp`. Prints min / median / max of each and the ratio of medians. Run as root:
/// `cargo test --release --test openssh_mode -- --ignored --nocapture measure`.
#[test]
#[ignore]
fn measure_session_set_up_openssh_mode_against_the_built_in_front_end() {
    let runs: usize = std::env::var("MEASURE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let lab = OpensshLab::with_frontend(USER3, "both");
    let src = lab.path("one_mb.bin");
    std::fs::write(&src, lab::content(1_000_000, 3)).unwrap();
    let dst = lab.path("in");
    std::fs::create_dir(&dst).unwrap();
    let remote = format!("{USER3}@{}:{}", lab::PROXY_CLIENT_V4, dst.display());
    let key = lab.proxy_sshd.client_key.display().to_string();
    let builtin_known = lab.path("builtin_known_hosts").display().to_string();
    let builtin: Vec<String> = [
        ASCP,
        "-P",
        &BUILTIN_PORT.to_string(),
        "-i",
        &key,
        "--known-hosts",
        &builtin_known,
    ]
    .map(String::from)
    .to_vec();
    let openssh = lab.ascp_args();
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for i in 0..runs * 2 {
        let which = i % 2;
        let mut args = if which == 0 {
            builtin.clone()
        } else {
            openssh.clone()
        };
        args.extend(["-q", "-l", "800m"].map(String::from));
        args.push(src.display().to_string());
        args.push(remote.clone());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let start = std::time::Instant::now();
        let out = lab.topo.client.try_exec(&refs);
        let took = start.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{}\n{}",
            describe(&out),
            lab.daemon.log()
        );
        times[which].push(took);
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (b_min, b_med, b_max) = stats(&mut times[0]);
    let (o_min, o_med, o_max) = stats(&mut times[1]);
    println!(
        "1 MB upload, start to exit of ascp, {runs} runs each, interleaved:\n\
         built-in front end: min {:.1} ms, median {:.1} ms, max {:.1} ms\n\
         OpenSSH mode:       min {:.1} ms, median {:.1} ms, max {:.1} ms\n\
         ratio of medians (OpenSSH / built-in): {:.2}",
        b_min * 1e3,
        b_med * 1e3,
        b_max * 1e3,
        o_min * 1e3,
        o_med * 1e3,
        o_max * 1e3,
        o_med / b_med
    );
}
