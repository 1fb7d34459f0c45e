//! The control socket and the daemon's logging with a real `fasp-proxy run` in the namespace
//! lab: `ascp` in the client namespace, the daemon (reverse proxy and forward proxy in one) in
//! the proxy namespace, real OpenSSH `sshd` running `ascp --server` on the one server; the
//! kernel's entries and flows read back with `nft` and `conntrack`.
//!
//! Covered: root and a member of `<admin_group>` (a supplementary group of a test account) may
//! list and close, `nobody` may not (and nothing happens); `sessions close ID` ends a running
//! transfer and a running forwarding at once, with no entry and no forwarded flow left, the
//! client told "closed by the administrator" and the log naming who; unknown IDs; silent,
//! endless and 1 MB requests holding up no one else; `FASP_PROXY_LOG_LEVEL` over `<log_level>`
//! and its refusal; the journal's native protocol (a socket the test binds where journald's
//! would be, in a private mount namespace): `SESSION_ID`, `SYSLOG_IDENTIFIER`, `PRIORITY`.
//!
//! The test account `fpctladmin` is created if missing and left harmless (shell nologin,
//! password `*`); the group `fpctladm` is removed when the test ends, also on panic.

mod lab;

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use lab::accounts::{copy_binaries, dir_0755, passwd_tool, Account};
use lab::daemon::{Daemon, ASCP_SERVER, SSH_PORT};
use lab::{describe, text, NsProcess, Sshd, Topology};

const ASCP: &str = env!("CARGO_BIN_EXE_ascp");
const FASP_PROXY: &str = env!("CARGO_BIN_EXE_fasp-proxy");
/// The `<admin_group>` of these tests, and its one member.
const ADMIN_GROUP: &str = "fpctladm";
const ADMIN_USER: &str = "fpctladmin";
/// The client's UDP port of the reverse-proxy transfer.
const CLIENT_UDP_PORT: u16 = 40131;

/// The daemon with both proxies in front of one server.
struct ControlLab {
    topo: Topology,
    server: Sshd,
    dir: tempfile::TempDir,
    /// fasp-proxy, where every account can run it.
    bin: tempfile::TempDir,
    daemon: Daemon,
}

impl ControlLab {
    fn new() -> ControlLab {
        let topo = Topology::new(1);
        let server = lab::daemon::internal_server(&topo, 0, ASCP_SERVER);
        let bin = dir_0755();
        copy_binaries(bin.path(), &[FASP_PROXY]);
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::new(&topo.proxy, dir.path());
        ControlLab {
            topo,
            server,
            dir,
            bin,
            daemon,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The configuration: the reverse proxy on 33001 with one default rule to the server, the
    /// forward proxy's HTTP API on 9091 (no authentication) with ports 5000-5010, the
    /// server's host key trusted, `<admin_group>` and `<log_level>` as given.
    fn configure(&self, admin_group: &str, log_level: u8) -> PathBuf {
        self.daemon.create_config(&[]);
        self.daemon
            .authorize("root", &self.server.client_key.with_extension("pub"));
        lab::seed_known_hosts(&self.daemon.etc().join("known_hosts"), &[&self.server]);
        let conf = self.daemon.write_conf(&format!(
            "<CONF><server>\n<admin_group>{admin_group}</admin_group>\n\
             <rproxy>{basics}\
             <rules><rule><host>{server}:22</host><keyfile>{key}</keyfile></rule></rules>\n\
             </rproxy>\n\
             <proxy><enabled>true</enabled><authentication>false</authentication>\n\
             <bind_ip_address>{inside}</bind_ip_address>\n\
             <port_range_low>5000</port_range_low><port_range_high>5010</port_range_high>\n\
             <allowed_destinations><cidr>198.51.100.0/24</cidr></allowed_destinations></proxy>\n\
             <enable_http>true</enable_http><enable_https>false</enable_https>\n\
             </server></CONF>\n",
            basics = self.daemon.rproxy_basics(log_level),
            server = lab::server_v4(0),
            key = self.server.client_key.display(),
            inside = lab::PROXY_CLIENT_V4,
        ));
        self.daemon.write_client_known_hosts(
            &self.path("proxy_known_hosts"),
            &[lab::PROXY_CLIENT_V4.to_string()],
            SSH_PORT,
        );
        conf
    }

    /// Starts the daemon (`prefix` before its command line) and waits until both proxies
    /// serve.
    fn start(&mut self, conf: &Path, prefix: &[&str]) {
        self.daemon
            .start_until(conf, prefix, Duration::from_secs(15), |log| {
                log.contains("listening on") && log.contains("Started on port(s) 9091")
            });
    }

    /// `fasp-proxy ARGS` in the proxy namespace as root.
    fn control(&self, args: &[&str]) -> Output {
        let mut all = vec![FASP_PROXY];
        all.extend(args);
        self.topo.proxy.try_exec(&all)
    }

    /// `fasp-proxy ARGS` in the proxy namespace as `user` (uid and primary group `gid`, its
    /// supplementary groups from the account database).
    fn control_as(&self, user: &str, gid: u32, args: &[&str]) -> Output {
        let gid = gid.to_string();
        let program = self.bin.path().join("fasp-proxy");
        let mut all = vec![
            "setpriv",
            "--reuid",
            user,
            "--regid",
            &gid,
            "--init-groups",
            program.to_str().unwrap(),
        ];
        all.extend(args);
        self.topo.proxy.try_exec(&all)
    }

    /// Our ascp uploading `len` bytes at 10 Mbit/s through the reverse proxy, in the
    /// background.
    fn spawn_upload(&self, len: usize) -> (NsProcess, PathBuf) {
        let src = self.path("rproxy.bin");
        std::fs::write(&src, vec![7u8; len]).unwrap();
        let dst = self.path("rproxy_in");
        std::fs::create_dir_all(&dst).unwrap();
        let remote = format!("root@{}:{}", lab::PROXY_CLIENT_V4, dst.display());
        let mut args =
            lab::daemon::ascp_login(&self.server.client_key, &self.path("proxy_known_hosts"));
        args.extend(["-q", "-l", "10m", "--client-udp-port"].map(String::from));
        args.push(CLIENT_UDP_PORT.to_string());
        args.push(src.display().to_string());
        args.push(remote);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let client = self.topo.client.spawn(&refs);
        (client, dst)
    }

    /// Our ascp uploading `len` bytes at 10 Mbit/s to the server through the forward proxy,
    /// in the background.
    fn spawn_forwarded_upload(&self, len: usize) -> (NsProcess, PathBuf) {
        let src = self.path("forward.bin");
        std::fs::write(&src, vec![9u8; len]).unwrap();
        let dst = self.path("forward_in");
        std::fs::create_dir_all(&dst).unwrap();
        let remote = format!("root@{}:{}", lab::server_v4(0), dst.display());
        let url = format!("dnat://{}:9091", lab::PROXY_CLIENT_V4);
        let client = self.topo.client.spawn(&[
            ASCP,
            "--proxy",
            &url,
            "-P",
            "22",
            "-i",
            self.server.client_key.to_str().unwrap(),
            "--known-hosts",
            self.server.known_hosts.to_str().unwrap(),
            "-q",
            "-l",
            "10m",
            src.to_str().unwrap(),
            &remote,
        ]);
        (client, dst)
    }

    /// Conntrack flows of `proto` from the client to proxy port `port` (original direction)
    /// that the kernel forwards to the server (their replies come from it).
    fn forwarded_flows(&self, proto: &str, selector: &str, port: u16) -> String {
        let port = port.to_string();
        let server = lab::server_v4(0).to_string();
        text(
            &self
                .topo
                .proxy
                .try_exec(&[
                    "conntrack",
                    "-L",
                    "-p",
                    proto,
                    selector,
                    &port,
                    "--reply-src",
                    &server,
                ])
                .stdout,
        )
    }

    /// Every line of the proxy's nftables table naming the client.
    fn kernel_traces(&self) -> String {
        let nft = text(
            &self
                .topo
                .proxy
                .try_exec(&["nft", "list", "table", "ip", "fasp_proxy"])
                .stdout,
        );
        nft.lines()
            .filter(|l| l.contains(&lab::CLIENT_V4.to_string()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The `<admin_group>` group with [`ADMIN_USER`] as a supplementary member while it lives;
/// removed (the membership with it) when dropped, also on panic.
struct AdminGroup {
    member: Account,
}

impl AdminGroup {
    fn create() -> AdminGroup {
        if nix::unistd::Group::from_name(ADMIN_GROUP)
            .unwrap()
            .is_none()
        {
            let out = passwd_tool("groupadd", &["--system", ADMIN_GROUP]);
            assert!(out.status.success(), "groupadd: {}", describe(&out));
        }
        let member = Account::create(
            ADMIN_USER,
            Path::new("/nonexistent"),
            Path::new("/usr/sbin/nologin"),
        );
        let out = passwd_tool(
            "usermod",
            &["--append", "--groups", ADMIN_GROUP, ADMIN_USER],
        );
        assert!(out.status.success(), "usermod -aG: {}", describe(&out));
        let group = nix::unistd::Group::from_name(ADMIN_GROUP).unwrap().unwrap();
        assert_ne!(member.gid, group.gid.as_raw(), "a supplementary group");
        AdminGroup { member }
    }
}

impl Drop for AdminGroup {
    fn drop(&mut self) {
        let out = passwd_tool("groupdel", &[ADMIN_GROUP]);
        if !out.status.success() {
            eprintln!("WARNING: groupdel {ADMIN_GROUP}: {}", text(&out.stderr));
        }
    }
}

/// The UUID of the last session whose log line contains `needle`.
fn session_id(log: &str, needle: &str) -> String {
    let line = log
        .lines()
        .rfind(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no log line with {needle:?}:\n{log}"));
    let start = line.find("LOG [").expect("a session line") + 5;
    let id = &line[start..start + 36];
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "not a session id: {line}"
    );
    id.to_string()
}

fn assert_fails_with(out: &Output, needle: &str) {
    assert!(
        out.status.code() == Some(1) && text(&out.stderr).contains(needle),
        "expected exit 1 saying {needle:?}: {}",
        describe(out)
    );
}

#[test]
fn an_admin_group_member_closes_a_running_transfer_and_an_outsider_can_do_nothing() {
    let group = AdminGroup::create();
    let mut lab = ControlLab::new();
    let conf = lab.configure(ADMIN_GROUP, 1);
    lab.start(&conf, &[]);
    // 20 MB at 10 Mbit/s: 16 s, closed long before it ends.
    let (mut client, dst) = lab.spawn_upload(20_000_000);
    let flowing = lab::wait_until(Duration::from_secs(20), || {
        !lab.forwarded_flows("udp", "--orig-port-src", CLIENT_UDP_PORT)
            .is_empty()
    });
    assert!(
        flowing,
        "no forwarded flow:\n{}\n{}",
        client.log(),
        lab.daemon.log()
    );
    let id = session_id(&lab.daemon.log(), "Setup UDP forwarding");

    // nobody: refused for every request, and nothing happens.
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let denied = format!(
        "permission denied: uid {} (nobody) is not root or in group {ADMIN_GROUP}",
        nobody.uid
    );
    for args in [
        vec!["sessions"],
        vec!["sessions", "close", id.as_str()],
        vec!["reload"],
    ] {
        let out = lab.control_as("nobody", nobody.gid.as_raw(), &args);
        assert_fails_with(&out, &denied);
        assert!(text(&out.stdout).is_empty(), "{}", describe(&out));
    }
    let table = text(&lab.control(&["sessions"]).stdout);
    assert!(
        table.contains(&id) && lab.kernel_traces().contains(&CLIENT_UDP_PORT.to_string()),
        "the refused close changed something:\n{table}\n{}",
        lab.kernel_traces()
    );
    assert!(
        lab.daemon.log().contains("control socket: close"),
        "{}",
        lab.daemon.log()
    );

    // The group's member lists and closes.
    let member = &group.member;
    let listed = lab.control_as(ADMIN_USER, member.gid, &["sessions"]);
    assert!(
        listed.status.success() && text(&listed.stdout).contains(&id),
        "{}",
        describe(&listed)
    );
    let asked = Instant::now();
    let closed = lab.control_as(ADMIN_USER, member.gid, &["sessions", "close", &id]);
    let took = asked.elapsed();
    assert!(
        closed.status.success() && text(&closed.stdout).contains(&format!("session {id} closed")),
        "{}",
        describe(&closed)
    );
    // Answered once the session had ended: nothing left to wait for.
    assert!(
        lab.kernel_traces().is_empty(),
        "an entry is left:\n{}",
        lab.kernel_traces()
    );
    let flows = lab.forwarded_flows("udp", "--orig-port-src", CLIENT_UDP_PORT);
    assert!(flows.is_empty(), "a forwarded flow is left:\n{flows}");
    eprintln!("sessions close answered after {took:?}");
    assert!(took < Duration::from_secs(3), "the close took {took:?}");
    let log = lab.daemon.log();
    assert!(
        log.contains(&format!(
            "[{id}] closed by the administrator (uid {} {ADMIN_USER})",
            member.uid
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "[{id}] Connection closed: closed by the administrator"
        )),
        "{log}"
    );
    let status = client.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the closed transfer succeeded");
    assert!(
        client.log().contains("closed by the administrator"),
        "the client was not told why:\n{}",
        client.log()
    );
    assert!(
        !dst.join("rproxy.bin").exists(),
        "a cut file was claimed complete"
    );
    let after = text(&lab.control(&["sessions"]).stdout);
    assert!(after.contains("0 live sessions"), "{after}");
}

#[test]
fn root_closes_a_forwarding_at_once_and_its_client_is_told() {
    let mut lab = ControlLab::new();
    let conf = lab.configure(ADMIN_GROUP, 1);
    lab.start(&conf, &[]);
    let (mut client, dst) = lab.spawn_forwarded_upload(20_000_000);
    let flowing = lab::wait_until(Duration::from_secs(20), || {
        !lab.forwarded_flows("udp", "--orig-port-dst", 5000)
            .is_empty()
            && !lab
                .forwarded_flows("tcp", "--orig-port-dst", 5000)
                .is_empty()
    });
    assert!(
        flowing,
        "no forwarded flows:\n{}\n{}",
        client.log(),
        lab.daemon.log()
    );
    let table = text(&lab.control(&["sessions"]).stdout);
    assert!(table.contains("1 live forwarding"), "{table}");

    let closed = lab.control(&["sessions", "close", "1"]);
    assert!(
        closed.status.success() && text(&closed.stdout).contains("forwarding 1 closed"),
        "{}",
        describe(&closed)
    );
    assert!(
        lab.kernel_traces().is_empty(),
        "entries are left:\n{}",
        lab.kernel_traces()
    );
    for proto in ["udp", "tcp"] {
        let flows = lab.forwarded_flows(proto, "--orig-port-dst", 5000);
        assert!(
            flows.is_empty(),
            "a forwarded {proto} flow is left:\n{flows}"
        );
    }
    let log = lab.daemon.log();
    assert!(
        log.contains("forwarding 1 closed by the administrator (uid 0 root): user"),
        "{log}"
    );
    let status = client.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "the cut transfer succeeded");
    assert!(
        client
            .log()
            .contains("forwarding 1 was closed by the administrator"),
        "the client was not told why:\n{}",
        client.log()
    );
    assert!(!dst.join("forward.bin").exists());
    let after = text(&lab.control(&["sessions"]).stdout);
    assert!(after.contains("0 live forwardings"), "{after}");
}

/// Connects to the daemon's control socket from inside `ns`.
fn connect_control(ns: &lab::Netns) -> std::os::unix::net::UnixStream {
    ns.run_in(|| {
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(b"fasp-proxy-control").unwrap();
        std::os::unix::net::UnixStream::connect_addr(&addr).unwrap()
    })
}

#[test]
fn unknown_ids_are_errors_and_hostile_clients_hold_up_no_one() {
    let mut lab = ControlLab::new();
    // No admin group: root only.
    let conf = lab.configure("", 1);
    lab.start(&conf, &[]);
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_fails_with(
        &lab.control(&["sessions", "close", &unknown]),
        &format!("error: no live session {unknown}"),
    );
    assert_fails_with(
        &lab.control(&["sessions", "close", "42"]),
        "error: no live forwarding 42",
    );
    assert_fails_with(
        &lab.control(&["sessions", "close", "not-an-id"]),
        "neither a session UUID nor a forwarding number",
    );
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_fails_with(
        &lab.control_as("nobody", nobody.gid.as_raw(), &["sessions"]),
        "is not root (no <admin_group> is configured)",
    );

    // Silent, endless (no newline) and huge (1 MB line) clients, all connected at once.
    let mut silent = connect_control(&lab.topo.proxy);
    let mut endless = connect_control(&lab.topo.proxy);
    endless.write_all(b"list").unwrap();
    let huge = {
        let mut stream = connect_control(&lab.topo.proxy);
        std::thread::spawn(move || {
            let _ = stream.write_all(&vec![b'x'; 1 << 20]);
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            answer
        })
    };
    let asked = Instant::now();
    let listed = lab.control(&["sessions"]);
    let took = asked.elapsed();
    assert!(
        listed.status.success() && text(&listed.stdout).contains("0 live sessions"),
        "{}",
        describe(&listed)
    );
    eprintln!("listed after {took:?} beside three hostile clients");
    assert!(took < Duration::from_secs(2), "listing took {took:?}");
    assert_eq!(
        huge.join().unwrap(),
        "error: request longer than 512 bytes\n"
    );
    for (what, stream) in [("silent", &mut silent), ("endless", &mut endless)] {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(answer, "error: no request line within 5 s\n", "{what}");
    }
}

/// `fasp-proxy run` in the proxy namespace with `env` set, bounded; its output.
fn run_with_env(lab: &ControlLab, conf: &Path, env: &str) -> Output {
    lab.topo.proxy.try_exec(&[
        "env",
        env,
        "timeout",
        "10",
        FASP_PROXY,
        "--config",
        conf.to_str().unwrap(),
        "run",
    ])
}

#[test]
fn fasp_proxy_log_level_overrides_log_level_and_a_bad_value_stops_the_start() {
    let mut lab = ControlLab::new();
    let conf = lab.configure("", 0);
    for bad in ["4", "debug"] {
        let out = run_with_env(&lab, &conf, &format!("FASP_PROXY_LOG_LEVEL={bad}"));
        assert_fails_with(&out, &format!("FASP_PROXY_LOG_LEVEL=\"{bad}\""));
        assert!(
            text(&out.stderr).contains("is not a log level"),
            "{}",
            describe(&out)
        );
    }
    assert!(
        lab.daemon.log().is_empty(),
        "a refused start logged:\n{}",
        lab.daemon.log()
    );
    // <log_level>0 alone logs no debug detail; FASP_PROXY_LOG_LEVEL=1 adds it.
    lab.start(&conf, &["env", "FASP_PROXY_LOG_LEVEL=1"]);
    let log = lab.daemon.log();
    assert!(
        log.contains("log level 1 from FASP_PROXY_LOG_LEVEL (over <log_level> 0)"),
        "{log}"
    );
    let (mut client, _) = lab.spawn_upload(200_000);
    assert!(
        client.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        client.log()
    );
    // A debug line, which <log_level>0 alone does not log.
    let log = lab.daemon.log();
    assert!(
        log.contains(&format!("LOG TCP connection from {}:", lab::CLIENT_V4)),
        "{log}"
    );
}

/// One entry of the journal's native protocol: `KEY=value` lines, or `KEY`, a little-endian
/// u64 length, the value and a newline.
fn journal_fields(datagram: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'=') else {
            break;
        };
        let key = String::from_utf8_lossy(&rest[..end]).into_owned();
        if rest[end] == b'=' {
            let after = &rest[end + 1..];
            let stop = after
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(after.len());
            fields.push((key, String::from_utf8_lossy(&after[..stop]).into_owned()));
            rest = after.get(stop + 1..).unwrap_or_default();
        } else {
            let after = &rest[end + 1..];
            let len = u64::from_le_bytes(after[..8].try_into().unwrap()) as usize;
            let value = &after[8..8 + len];
            fields.push((key, String::from_utf8_lossy(value).into_owned()));
            rest = after.get(8 + len + 1..).unwrap_or_default();
        }
    }
    fields
}

#[test]
fn under_systemd_the_journal_gets_every_session_line_with_its_session_id() {
    let lab = ControlLab::new();
    // No <log_directory>: the journal, since stderr is the journal's stream.
    let conf = lab.configure("", 1);
    let text_conf = std::fs::read_to_string(&conf).unwrap();
    let without_dir: String = text_conf
        .lines()
        .map(|l| {
            let start = l.find("<log_directory>");
            let end = l.find("</log_directory>");
            match (start, end) {
                (Some(s), Some(e)) => format!("{}{}", &l[..s], &l[e + 16..]),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&conf, without_dir).unwrap();
    // Where journald's socket would be, in the daemon's private mount namespace: a directory
    // of this test with a datagram socket bound in it.
    let journal_dir = lab.path("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let journal = std::os::unix::net::UnixDatagram::bind(journal_dir.join("socket")).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let wrapper = "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && \
                   mount --bind \"$0\" /run/systemd/journal && \
                   JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$@\"";
    let dir_arg = journal_dir.display().to_string();
    let mut daemon = lab.topo.proxy.spawn(&[
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        wrapper,
        &dir_arg,
        FASP_PROXY,
        "--config",
        conf.to_str().unwrap(),
        "run",
    ]);
    let mut entries: Vec<Vec<(String, String)>> = Vec::new();
    let receive = |entries: &mut Vec<Vec<(String, String)>>| {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = journal.recv(&mut buf) {
            entries.push(journal_fields(&buf[..n]));
        }
    };
    let message = |e: &Vec<(String, String)>| {
        e.iter()
            .find(|(k, _)| k == "MESSAGE")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let up = lab::wait_until(Duration::from_secs(15), || {
        receive(&mut entries);
        entries.iter().any(|e| message(e).contains("listening on"))
    });
    assert!(
        up,
        "no start-up line in the journal:\n{}\n{entries:?}",
        daemon.log()
    );
    assert!(lab.daemon.log().is_empty(), "logged to a file");
    let (mut client, _) = lab.spawn_upload(200_000);
    assert!(
        client.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        client.log()
    );
    let ended = lab::wait_until(Duration::from_secs(10), || {
        receive(&mut entries);
        entries
            .iter()
            .any(|e| message(e).contains("Connection closed (EOF)"))
    });
    assert!(ended, "{entries:?}");
    let pid = daemon.pid().to_string();
    lab.topo.proxy.exec(&["kill", "-TERM", &pid]);
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
    receive(&mut entries);

    let field = |e: &Vec<(String, String)>, k: &str| {
        e.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone())
    };
    let started = entries
        .iter()
        .find(|e| message(e).contains("listening on"))
        .unwrap();
    assert_eq!(
        field(started, "SYSLOG_IDENTIFIER").as_deref(),
        Some("fasp-proxy")
    );
    assert_eq!(
        field(started, "PRIORITY").as_deref(),
        Some("5"),
        "info is notice"
    );
    assert_eq!(field(started, "SESSION_ID"), None);
    assert!(message(started).starts_with("LOG "), "{started:?}");
    let id = {
        let m = message(
            entries
                .iter()
                .find(|e| message(e).contains("Setup UDP forwarding"))
                .unwrap(),
        );
        m[5..41].to_string()
    };
    let session: Vec<&Vec<(String, String)>> = entries
        .iter()
        .filter(|e| message(e).contains(&format!("[{id}]")))
        .collect();
    assert!(session.len() >= 3, "{session:?}");
    for e in &session {
        assert_eq!(
            field(e, "SESSION_ID").as_deref(),
            Some(id.as_str()),
            "{e:?}"
        );
        assert_eq!(
            field(e, "SYSLOG_PID").as_deref(),
            Some(pid.as_str()),
            "{e:?}"
        );
    }
    let tagged: Vec<_> = entries
        .iter()
        .filter(|e| field(e, "SESSION_ID").is_some())
        .collect();
    assert_eq!(tagged.len(), session.len(), "only session lines carry it");
}
