//! The SSH front end (`fasp_proxy::ssh::server`) driven by the real OpenSSH client on loopback:
//! public-key auth, the exec allow-list, refusals (shell, pty, port forwarding, disallowed
//! commands, unknown users, wrong keys, clients outside the allow-list, the session cap), the
//! order of stdout / stderr / exit status, shutdown, and the front end under attack: per-source
//! caps, penalties, the deadline of each login step.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fasp_proxy::policy::penalties::{Penalties, PenaltySettings};
use fasp_proxy::ssh::server::{
    serve, ExecHandler, ExecRequest, FrontendConfig, FrontendError, LoginLimits,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The command that echoes stdin uppercased.
const UPPER: &str = "ascp --server";
/// The command that answers on stdout and stderr, then exits with status 3.
const NOISY: &str = "ascp --noisy";

/// Test handler: `UPPER` streams stdin back uppercased and exits 0; `NOISY` writes "out" on
/// stdout, "warning: noisy" on stderr and exits 3.
struct Upper {
    admit: bool,
}

impl ExecHandler for Upper {
    fn exec(&self, request: ExecRequest) {
        tokio::spawn(async move {
            let ExecRequest {
                mut io,
                finish,
                command,
                user,
                ..
            } = request;
            assert_eq!(user, "root");
            if command == NOISY {
                let _ = io.write_all(b"out\n").await;
                finish.finish(3, "warning: noisy\n");
                return;
            }
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        buf[..n].make_ascii_uppercase();
                        if io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            // No shutdown of `io`: finish must still deliver every byte written before it.
            finish.finish(0, "");
        });
    }

    fn admit(&self) -> bool {
        self.admit
    }
}

/// A running front end on 127.0.0.1 with its files.
struct Server {
    dir: tempfile::TempDir,
    port: u16,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), FrontendError>>,
}

impl Server {
    fn key(&self) -> PathBuf {
        self.dir.path().join("id")
    }

    fn wrong_key(&self) -> PathBuf {
        self.dir.path().join("wrong")
    }

    /// Runs `ssh [args] root@127.0.0.1 [command]`-style invocations: `args` are placed after
    /// the common options, so they include the destination and the command.
    async fn ssh_with(&self, key: &Path, args: &[&str], stdin: &[u8]) -> Output {
        let known = self.dir.path().join("known_hosts");
        let port = self.port.to_string();
        let mut cmd = tokio::process::Command::new("timeout");
        cmd.arg("30")
            .arg("ssh")
            .args(["-p", &port, "-i"])
            .arg(key)
            .arg("-F")
            .arg("/dev/null")
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "LogLevel=ERROR",
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("run ssh");
        let mut input = child.stdin.take().expect("ssh stdin");
        let data = stdin.to_vec();
        let feeder = tokio::spawn(async move {
            let _ = input.write_all(&data).await;
            drop(input);
        });
        let out = child.wait_with_output().await.expect("wait for ssh");
        let _ = feeder.await;
        out
    }

    async fn ssh(&self, args: &[&str], stdin: &[u8]) -> Output {
        self.ssh_with(&self.key(), args, stdin).await
    }

    async fn stop(self) {
        let _ = self.shutdown.send(true);
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task");
        result.expect("serve ends with Ok");
    }
}

fn run(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port()
}

/// Starts a front end; `tweak` adjusts the config before it starts.
async fn start(admit: bool, tweak: impl FnOnce(&mut FrontendConfig)) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let created =
        fasp_proxy::config::create::create(&dir.path().join("etc"), &[]).expect("host key");
    for name in ["id", "wrong"] {
        let path = dir.path().join(name);
        run(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                name,
                "-f",
                path.to_str().expect("utf-8 path"),
            ],
        );
    }
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("keys dir");
    let id_pub = std::fs::read_to_string(dir.path().join("id.pub")).expect("id.pub");
    std::fs::write(
        keys.join("root.keys"),
        format!("# the test key\n\nnot a key line\n{id_pub}"),
    )
    .expect("authorized keys");

    let port = free_port();
    let host_pub = std::fs::read_to_string(&created.host_key_pub).expect("host key .pub");
    std::fs::write(
        dir.path().join("known_hosts"),
        format!("[127.0.0.1]:{port} {host_pub}"),
    )
    .expect("known_hosts");

    let mut config = FrontendConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        host_key: created.host_key.clone(),
        rsa_host_key: Some(created.rsa_host_key.clone()),
        ssh_rsa_legacy: false,
        authorized_keys: format!("{}/%u.keys", keys.display()),
        password_pam_service: None,
        allowed_clients: Vec::new(),
        allowed_commands: vec![UPPER.to_string(), NOISY.to_string()],
        opaque_commands: Vec::new(),
        auth_rejection_delay: Duration::from_millis(100),
        limits: LoginLimits::default(),
        penalties: Penalties::shared(PenaltySettings::off()),
    };
    tweak(&mut config);
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(serve(config, Arc::new(Upper { admit }), rx));
    // Wait until it listens.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Server {
        dir,
        port,
        shutdown,
        task,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allowed_command_runs_and_echoes() {
    let server = start(true, |_| {}).await;
    let out = server.ssh(&["root@127.0.0.1", UPPER], b"hello").await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(text(&out.stdout), "HELLO", "{}", describe(&out));

    // A bigger stream both ways at once: nothing lost, nothing reordered, no stall.
    let big: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz\n"[(i % 27) as usize])
        .collect();
    let out = server.ssh(&["root@127.0.0.1", UPPER], &big).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(out.stdout.len(), big.len());
    assert!(out.stdout == big.to_ascii_uppercase(), "stdout differs");

    // A pty request is refused; the command still runs.
    let out = server
        .ssh(&["-tt", "root@127.0.0.1", UPPER], b"pty\n")
        .await;
    assert!(
        text(&out.stderr).contains("PTY allocation request failed"),
        "{}",
        describe(&out)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stdout_stderr_and_exit_status_arrive() {
    let server = start(true, |_| {}).await;
    let out = server.ssh(&["root@127.0.0.1", NOISY], b"").await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(text(&out.stdout), "out\n", "{}", describe(&out));
    assert_eq!(text(&out.stderr), "warning: noisy\n", "{}", describe(&out));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_key_and_unknown_user_are_refused() {
    let server = start(true, |_| {}).await;
    let out = server
        .ssh_with(&server.wrong_key(), &["root@127.0.0.1", UPPER], b"")
        .await;
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        describe(&out)
    );

    let out = server
        .ssh(&["no-such-user-fpx@127.0.0.1", UPPER], b"")
        .await;
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        describe(&out)
    );

    // Password and keyboard-interactive are not even offered.
    let out = server
        .ssh(
            &[
                "-o",
                "PreferredAuthentications=password,keyboard-interactive",
                "root@127.0.0.1",
                UPPER,
            ],
            b"",
        )
        .await;
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        describe(&out)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shell_subsystem_and_other_commands_are_refused() {
    let server = start(true, |_| {}).await;
    let out = server.ssh(&["-T", "root@127.0.0.1"], b"").await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("fasp-proxy: interactive shells are not available"),
        "{}",
        describe(&out)
    );
    assert!(out.stdout.is_empty(), "{}", describe(&out));

    let out = server.ssh(&["-s", "root@127.0.0.1", "sftp"], b"").await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("fasp-proxy: subsystem sftp is not available"),
        "{}",
        describe(&out)
    );

    let out = server
        .ssh(&["root@127.0.0.1", "cat /etc/shadow"], b"")
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains(
            "fasp-proxy: command not allowed: cat /etc/shadow; only 'ascp --server', \
             'ascp --noisy' may run"
        ),
        "{}",
        describe(&out)
    );
    assert!(out.stdout.is_empty(), "{}", describe(&out));

    // Almost the allowed command is not the allowed command.
    let out = server
        .ssh(&["root@127.0.0.1", "ascp --server; id"], b"")
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(text(&out.stderr).contains("command not allowed"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn port_forwarding_is_refused() {
    let server = start(true, |_| {}).await;
    let local = free_port().to_string();
    let forward = format!("{local}:198.51.100.1:22");
    // `ssh -L` opens its listener locally; the proxy refuses the channel when a connection is
    // forwarded through it (so ExitOnForwardFailure does not end ssh here).
    // Drive a forwarded connection while ssh -L runs.
    let known = server.dir.path().join("known_hosts");
    let port = server.port.to_string();
    let mut child = tokio::process::Command::new("ssh")
        .args(["-p", &port, "-i"])
        .arg(server.key())
        .args(["-F", "/dev/null", "-o"])
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=5",
            "-N",
            "-L",
            &forward,
            "root@127.0.0.1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ssh -L");
    let mut connected = None;
    for _ in 0..100 {
        if let Ok(s) =
            tokio::net::TcpStream::connect(("127.0.0.1", local.parse::<u16>().unwrap())).await
        {
            connected = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stream = connected.expect("ssh -L listens locally");
    let mut buf = [0u8; 64];
    // The proxy refuses the channel: ssh closes the forwarded connection without data.
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("forwarded connection closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let _ = child.start_kill();
    let out = child.wait_with_output().await.expect("ssh -L ends");
    assert!(
        text(&out.stderr).contains("administratively prohibited"),
        "{}",
        describe(&out)
    );

    // -R: the global request is refused and ExitOnForwardFailure makes ssh fail.
    let remote = format!("{}:127.0.0.1:9", free_port());
    let out = server
        .ssh(
            &[
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-R",
                &remote,
                "root@127.0.0.1",
            ],
            b"",
        )
        .await;
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("remote port forwarding failed"),
        "{}",
        describe(&out)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_outside_allow_list_is_closed_before_ssh() {
    let server = start(true, |c| {
        c.allowed_clients = vec!["192.0.2.0/24".parse().expect("cidr")];
    })
    .await;
    let out = server.ssh(&["root@127.0.0.1", UPPER], b"hello").await;
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Connection closed") || stderr.contains("Connection reset"),
        "{}",
        describe(&out)
    );
    // Not even the SSH banner was sent.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("tcp connect");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("closed");
    assert!(read.is_err() || buf.is_empty(), "got {:?}", text(&buf));
    server.stop().await;

    // A v4 client inside the list gets in.
    let server = start(true, |c| {
        c.allowed_clients = vec!["127.0.0.0/8".parse().expect("cidr")];
    })
    .await;
    let out = server.ssh(&["root@127.0.0.1", UPPER], b"ok").await;
    assert_eq!(text(&out.stdout), "OK", "{}", describe(&out));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_cap_refuses_with_a_message() {
    let server = start(false, |_| {}).await;
    let out = server.ssh(&["root@127.0.0.1", UPPER], b"hello").await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("fasp-proxy: too many sessions, try again later"),
        "{}",
        describe(&out)
    );
    assert!(out.stdout.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_cap_and_auth_timeout() {
    let server = start(true, |c| {
        c.limits.max_startups = fasp_proxy::config::MaxStartups {
            start: 1,
            rate: 100,
            full: 1,
        };
        c.limits.banner_timeout = Duration::from_secs(2);
    })
    .await;
    // Wait for the readiness probe of `start` to be forgotten.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One connection sits in the auth phase (it reads the banner and says nothing).
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("tcp connect");
    let mut banner = [0u8; 8];
    idle.read_exact(&mut banner).await.expect("banner");
    assert_eq!(&banner, b"SSH-2.0-");
    // A second one is closed on accept.
    let out = server.ssh(&["root@127.0.0.1", UPPER], b"x").await;
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    // The idle one is dropped at the auth deadline.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "idle connection still open after the auth timeout"
    );
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Now there is room again.
    let out = server.ssh(&["root@127.0.0.1", UPPER], b"x").await;
    assert_eq!(text(&out.stdout), "X", "{}", describe(&out));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_stops_accepting() {
    let server = start(true, |_| {}).await;
    let out = server.ssh(&["root@127.0.0.1", UPPER], b"before").await;
    assert_eq!(text(&out.stdout), "BEFORE", "{}", describe(&out));
    let port = server.port;
    let dir_known = server.dir.path().join("known_hosts");
    let key = server.key();
    let _ = server.shutdown.send(true);
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("serve returns after shutdown")
        .expect("serve task")
        .expect("serve ends with Ok");
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "still accepting after shutdown");
    let out = tokio::process::Command::new("timeout")
        .args(["30", "ssh", "-p", &port.to_string(), "-i"])
        .arg(&key)
        .args(["-F", "/dev/null", "-o"])
        .arg(format!("UserKnownHostsFile={}", dir_known.display()))
        .args(["-o", "BatchMode=yes", "root@127.0.0.1", UPPER])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("ssh");
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("Connection refused"),
        "{}",
        describe(&out)
    );
}

#[tokio::test]
async fn bad_host_key_is_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_tx, rx) = watch::channel(false);
    let config = FrontendConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], free_port())),
        host_key: dir.path().join("missing_key"),
        rsa_host_key: None,
        ssh_rsa_legacy: false,
        authorized_keys: "%h/.ssh/authorized_keys".into(),
        password_pam_service: None,
        allowed_clients: Vec::new(),
        allowed_commands: vec![UPPER.into()],
        opaque_commands: Vec::new(),
        auth_rejection_delay: Duration::from_millis(100),
        limits: LoginLimits::default(),
        penalties: Penalties::shared(PenaltySettings::off()),
    };
    let err = serve(config, Arc::new(Upper { admit: true }), rx)
        .await
        .expect_err("no host key");
    assert!(matches!(err, FrontendError::HostKey { .. }), "{err}");
    assert!(err.to_string().contains("missing_key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sha1_ssh_rsa_is_accepted_only_with_the_legacy_setting() {
    for legacy in [false, true] {
        let server = start(true, |c| c.ssh_rsa_legacy = legacy).await;
        let dir = server.dir.path();
        let rsa = dir.join("id_rsa");
        run(
            "sh",
            &[
                "-c",
                &format!(
                    "rm -f {k} {k}.pub && ssh-keygen -q -t rsa -b 3072 -m PEM -N '' -C rsa -f {k}",
                    k = rsa.display()
                ),
            ],
        );
        let mut keys = std::fs::read_to_string(dir.join("keys/root.keys")).unwrap();
        keys.push_str(&std::fs::read_to_string(rsa.with_extension("pub")).unwrap());
        std::fs::write(dir.join("keys/root.keys"), keys).unwrap();
        let host_rsa = std::fs::read_to_string(dir.join("etc/ssh_host_rsa_key.pub")).unwrap();
        let mut known = std::fs::read_to_string(dir.join("known_hosts")).unwrap();
        known.push_str(&format!("[127.0.0.1]:{} {host_rsa}", server.port));
        std::fs::write(dir.join("known_hosts"), known).unwrap();

        // The RSA keys with SHA-2 work either way.
        let out = server
            .ssh_with(
                &rsa,
                &[
                    "-o",
                    "HostKeyAlgorithms=rsa-sha2-512",
                    "root@127.0.0.1",
                    UPPER,
                ],
                b"x",
            )
            .await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        // SHA-1 only, as IBM ascp 3.x: the host key ...
        let out = server
            .ssh_with(
                &rsa,
                &[
                    "-o",
                    "HostKeyAlgorithms=ssh-rsa",
                    "-o",
                    "PubkeyAcceptedAlgorithms=rsa-sha2-512",
                    "root@127.0.0.1",
                    UPPER,
                ],
                b"x",
            )
            .await;
        assert_eq!(
            out.status.success(),
            legacy,
            "host key, legacy {legacy}: {}",
            describe(&out)
        );
        // ... and the user key's signature.
        let out = server
            .ssh_with(
                &rsa,
                &[
                    "-o",
                    "HostKeyAlgorithms=rsa-sha2-512",
                    "-o",
                    "PubkeyAcceptedAlgorithms=ssh-rsa",
                    "root@127.0.0.1",
                    UPPER,
                ],
                b"x",
            )
            .await;
        assert_eq!(
            out.status.success(),
            legacy,
            "user key, legacy {legacy}: {}",
            describe(&out)
        );
        server.stop().await;
    }
}

/// A TCP connection from `source` to the front end that reads the server's version line and
/// then says nothing; `None` when the front end closed it before sending one.
async fn idle_connection(source: &str, port: u16) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("address"))
        .expect("bind");
    let mut s = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("tcp connect");
    let mut banner = [0u8; 8];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut banner)).await {
        Ok(Ok(_)) if &banner == b"SSH-2.0-" => Some(s),
        _ => None,
    }
}

/// Whether the front end closes `s` within `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut rest))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_source_cannot_take_every_login_slot() {
    let server = start(true, |c| {
        c.limits.per_source = 2;
        c.penalties = Penalties::shared(PenaltySettings {
            source_cap: Duration::from_secs(2),
            ..PenaltySettings::off()
        });
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Two idle connections from 127.0.0.1 take its share; the third is closed at accept, before
    // any SSH byte, and the source is penalised.
    let first = idle_connection("127.0.0.1", server.port).await;
    let second = idle_connection("127.0.0.1", server.port).await;
    assert!(first.is_some() && second.is_some());
    assert!(idle_connection("127.0.0.1", server.port).await.is_none());
    // Another source logs in meanwhile.
    let out = server
        .ssh(&["-b", "127.0.0.2", "root@127.0.0.1", UPPER], b"x")
        .await;
    assert_eq!(text(&out.stdout), "X", "{}", describe(&out));
    // The penalised source is refused even with its idle connections gone...
    drop((first, second));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = server.ssh(&["root@127.0.0.1", UPPER], b"x").await;
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    // ...until its penalty is over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = server.ssh(&["root@127.0.0.1", UPPER], b"x").await;
    assert_eq!(text(&out.stdout), "X", "{}", describe(&out));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_login_penalises_its_source_and_no_other() {
    let server = start(true, |c| {
        c.penalties = Penalties::shared(PenaltySettings {
            auth_failure: Duration::from_secs(2),
            ..PenaltySettings::off()
        });
    })
    .await;
    let out = server
        .ssh_with(&server.wrong_key(), &["root@127.0.0.1", UPPER], b"")
        .await;
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        describe(&out)
    );
    // The right key from the same source is refused at accept for the penalty...
    let out = server.ssh(&["root@127.0.0.1", UPPER], b"x").await;
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(
        !text(&out.stderr).contains("Permission denied"),
        "refused before any SSH: {}",
        describe(&out)
    );
    // ...while another source is not affected,
    let out = server
        .ssh(&["-b", "127.0.0.2", "root@127.0.0.1", UPPER], b"x")
        .await;
    assert_eq!(text(&out.stdout), "X", "{}", describe(&out));
    // and after the penalty the first source logs in.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let out = server.ssh(&["root@127.0.0.1", UPPER], b"x").await;
    assert_eq!(text(&out.stdout), "X", "{}", describe(&out));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_login_step_has_its_deadline() {
    let server = start(true, |c| {
        c.limits.banner_timeout = Duration::from_secs(1);
        c.limits.kex_timeout = Duration::from_secs(2);
        c.limits.session_open_timeout = Duration::from_secs(1);
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No version line: closed at the banner deadline.
    let mut silent = idle_connection("127.0.0.1", server.port).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(4)).await);
    // A version line, then nothing: closed at the key exchange deadline.
    let mut stalled = idle_connection("127.0.0.1", server.port).await.unwrap();
    stalled.write_all(b"SSH-2.0-stall\r\n").await.unwrap();
    assert!(closed_within(&mut stalled, Duration::from_secs(5)).await);
    // Logged in but no command (ssh -N): closed at the session deadline.
    let started = std::time::Instant::now();
    let out = server.ssh(&["-N", "root@127.0.0.1"], b"").await;
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "ssh -N was not closed"
    );
    // A real client is unaffected.
    let out = server.ssh(&["root@127.0.0.1", UPPER], b"x").await;
    assert_eq!(text(&out.stdout), "X", "{}", describe(&out));
    server.stop().await;
}
