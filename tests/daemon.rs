//! The whole daemon in-process, without root and without sleeping: `daemon::serve` on a
//! loopback listener with the in-memory data plane, internal servers played by the crate's own
//! SSH front end with a scripted transfer handler, clients by the crate's SSH client, and
//! tokio's paused clock (`time::advance`) for the idle timeout, the faulty-host hold time and
//! shutdown.
//!
//! What each test shows is how the daemon acts on the kernel (the calls the in-memory
//! forwarder records) and what the client is told (its frames, exit status and stderr).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fasp_proxy::config::CommandShape;
use fasp_proxy::daemon::{self, DaemonError, Setup};
use fasp_proxy::dataplane::memory::{Call, MemoryForwarder, MemoryHandle};
use fasp_proxy::policy::penalties::{Penalties, PenaltySettings};
use fasp_proxy::protocol::{
    Direction, ErrorCode, ErrorFrame, Frame, Overwrite, ResumeLevel, SessionAccept, SessionInit,
};
use fasp_proxy::ssh::client::{self as ssh_client, ClientConfig, ExecOutcome, HostKeyPolicy};
use fasp_proxy::ssh::server::{
    self as frontend, CommandKind, ExecHandler, ExecRequest, FrontendConfig, LoginLimits,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::advance;
use uuid::Uuid;

/// The UDP port the scripted internal server answers with.
const SERVER_UDP_PORT: u16 = 33001;
/// Upload destinations that script the internal server.
const HOLD_ANSWER: &str = "hold-answer";
const REFUSE: &str = "refuse";

// --- the internal server ------------------------------------------------------------------

/// What IBM's ascp, client-licensed, says as a server at the end of every session.
const CLIENT_LICENSE: &str = "Server has only a client license";

/// Plays `ascp --server` on an internal server: answers the request (or holds it, or refuses
/// it, as its destination says), then echoes the control channel until the client's EOF.
/// Plays IBM's `ascp -S. -V1` too: echoes every byte until the client's EOF, then ends with
/// IBM's client-licence refusal.
struct Transfer {
    execs: Arc<AtomicUsize>,
}

impl ExecHandler for Transfer {
    fn exec(&self, request: ExecRequest) {
        self.execs.fetch_add(1, Ordering::SeqCst);
        if request.kind == CommandKind::Opaque {
            tokio::spawn(async move {
                let ExecRequest { mut io, finish, .. } = request;
                let mut buf = [0u8; 1024];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                finish.finish(1, &format!("Session Stop (Error: {CLIENT_LICENSE})\n"));
            });
            return;
        }
        tokio::spawn(async move {
            let ExecRequest { mut io, finish, .. } = request;
            let Ok(Some(Frame::SessionInit(init))) = read_frame(&mut io).await else {
                finish.finish(2, "no session request\n");
                return;
            };
            match init.destination.as_str() {
                HOLD_ANSWER => {
                    // Never answers; ends when the request's sender goes (as ascp does).
                    let mut rest = Vec::new();
                    let _ = io.read_to_end(&mut rest).await;
                    finish.finish(1, "ascp: the client went away\n");
                    return;
                }
                REFUSE => {
                    let refusal = Frame::Error(ErrorFrame {
                        code: ErrorCode::NotFound,
                        message: "no such directory".into(),
                    });
                    let _ = io.write_all(&encode(&refusal)).await;
                    finish.finish(1, "ascp: no such directory\n");
                    return;
                }
                _ => {}
            }
            let accept = Frame::SessionAccept(SessionAccept {
                version: 1,
                server_udp_port: SERVER_UDP_PORT,
                token: 7,
                key: [0; 32],
                datagram_size: 1400,
            });
            let _ = io.write_all(&encode(&accept)).await;
            let mut buf = [0u8; 1024];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            finish.finish(0, "");
        });
    }

    fn admit(&self) -> bool {
        true
    }
}

/// One scripted internal server on a loopback port.
struct Backend {
    addr: SocketAddr,
    execs: Arc<AtomicUsize>,
    _stop: watch::Sender<bool>,
}

impl Backend {
    async fn start(files: &Files, listener: TcpListener) -> Backend {
        let addr = listener.local_addr().unwrap();
        let execs = Arc::new(AtomicUsize::new(0));
        let config = FrontendConfig {
            listen: addr,
            host_key: files.backend_host_key.clone(),
            rsa_host_key: None,
            ssh_rsa_legacy: false,
            authorized_keys: files.backend_authorized.display().to_string(),
            password_pam_service: None,
            allowed_clients: Vec::new(),
            allowed_commands: vec!["ascp --server".into()],
            opaque_commands: CommandShape::ibm(),
            auth_rejection_delay: Duration::from_millis(10),
            limits: LoginLimits::default(),
            penalties: Penalties::shared(PenaltySettings::off()),
        };
        let handler = Arc::new(Transfer {
            execs: Arc::clone(&execs),
        });
        let server = frontend::with_listener(config, listener, handler).unwrap();
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(server.serve(stop_rx));
        Backend {
            addr,
            execs,
            _stop: stop,
        }
    }

    fn sessions(&self) -> usize {
        self.execs.load(Ordering::SeqCst)
    }
}

// --- keys and configuration ---------------------------------------------------------------

/// Keys and key lists, made once per test with OpenSSH's ssh-keygen.
struct Files {
    dir: tempfile::TempDir,
    proxy_host_key: PathBuf,
    backend_host_key: PathBuf,
    /// The client's key, listed in the proxy's authorized keys.
    client_key: PathBuf,
    /// The key the proxy logs in to internal servers with (the rules' keyfile).
    backend_key: PathBuf,
    proxy_authorized: PathBuf,
    backend_authorized: PathBuf,
}

fn keygen(path: &Path) {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        for name in ["proxy_host", "backend_host", "client", "backend"] {
            keygen(&p(name));
        }
        let public = |name: &str| std::fs::read_to_string(p(&format!("{name}.pub"))).unwrap();
        std::fs::write(p("proxy_authorized"), public("client")).unwrap();
        std::fs::write(p("backend_authorized"), public("backend")).unwrap();
        Files {
            proxy_host_key: p("proxy_host"),
            backend_host_key: p("backend_host"),
            client_key: p("client"),
            backend_key: p("backend"),
            proxy_authorized: p("proxy_authorized"),
            backend_authorized: p("backend_authorized"),
            dir,
        }
    }
}

/// Settings a test changes.
struct Options {
    hosts: Vec<SocketAddr>,
    /// An internal server for requests to host `stuck.example` (a rule of its own).
    stuck: Option<SocketAddr>,
    max_sessions: u32,
    idle_timeout: u64,
    hold_time: u64,
}

fn config(files: &Files, o: &Options) -> fasp_proxy::config::Config {
    let hosts: String = o
        .hosts
        .iter()
        .map(|h| format!("<host>{h}</host>"))
        .collect();
    let stuck_rule = o.stuck.map_or_else(String::new, |h| {
        format!(
            r#"<rule host_domain="stuck.example"><host>{h}</host><squash_user>root</squash_user><keyfile>{}</keyfile></rule>"#,
            files.backend_key.display()
        )
    });
    // Active health checks are off: `advance` moves the paused clock past their timeouts
    // before a loopback handshake can finish, so they would fail and mark every server.
    let text = format!(
        r#"<CONF><server><rproxy>
  <enabled>true</enabled>
  <ssh_bind_address>127.0.0.1</ssh_bind_address>
  <ssh_host_key>{host_key}</ssh_host_key>
  <authorized_keys_file>{authorized}</authorized_keys_file>
  <max_sessions>{max}</max_sessions>
  <session_idle_timeout>{idle}</session_idle_timeout>
  <faulty_host_hold_time>{hold}</faulty_host_hold_time>
  <health_check_interval>0</health_check_interval>
  <rules>{stuck_rule}<rule><hosts>{hosts}</hosts><squash_user>root</squash_user><keyfile>{keyfile}</keyfile></rule></rules>
</rproxy></server></CONF>"#,
        host_key = files.proxy_host_key.display(),
        authorized = files.proxy_authorized.display(),
        max = o.max_sessions,
        idle = o.idle_timeout,
        hold = o.hold_time,
        keyfile = files.backend_key.display(),
    );
    fasp_proxy::config::parse_str(&text, &files.dir.path().join("aspera.conf"))
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

// --- the daemon ---------------------------------------------------------------------------

/// A daemon serving in this test's runtime.
struct Daemon {
    addr: SocketAddr,
    kernel: MemoryHandle,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), DaemonError>>,
}

impl Daemon {
    async fn start(files: &Files, options: &Options) -> Daemon {
        Daemon::start_with(files, options, MemoryForwarder::new()).await
    }

    async fn start_with(files: &Files, options: &Options, forwarder: MemoryForwarder) -> Daemon {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let kernel = forwarder.handle();
        // The internal servers' host key, recorded in advance (host keys are checked strictly).
        let host_pub =
            std::fs::read_to_string(files.backend_host_key.with_extension("pub")).unwrap();
        let known: String = options
            .hosts
            .iter()
            .chain(&options.stuck)
            .map(|h| format!("[{}]:{} {host_pub}", h.ip(), h.port()))
            .collect();
        std::fs::write(files.dir.path().join("backend_known_hosts"), known).unwrap();
        let setup = Setup {
            config: Arc::new(config(files, options)),
            forwarder: Box::new(forwarder),
            ssh_listener: Some(listener),
            api: None,
            control_listener: None,
            metrics_listener: None,
            handoff_listener: None,
            backend_known_hosts: files.dir.path().join("backend_known_hosts"),
            penalties: Penalties::shared(PenaltySettings::off()),
            reload: None,
        };
        let (shutdown, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(daemon::serve(setup, async {
            let _ = rx.await;
        }));
        Daemon {
            addr,
            kernel,
            shutdown: Some(shutdown),
            task,
        }
    }

    /// Sends the shutdown (SIGTERM's equivalent) and waits for `serve` to return.
    async fn stop(&mut self) -> Result<(), DaemonError> {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        (&mut self.task).await.unwrap()
    }

    fn installs(&self) -> usize {
        self.kernel
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Install(_)))
            .count()
    }

    /// Every install was followed by the removal of the same session.
    fn assert_every_install_removed(&self) {
        let calls = self.kernel.calls();
        for call in &calls {
            if let Call::Install(id) = call {
                assert!(
                    calls.contains(&Call::Remove(*id)),
                    "installed {id} never removed: {calls:?}"
                );
            }
        }
        assert!(self.kernel.installed().is_empty(), "{calls:?}");
    }
}

// --- the client ---------------------------------------------------------------------------

/// A client session through the proxy: an SSH exec of `ascp --server`.
struct Client {
    stream: tokio::net::UnixStream,
    outcome: JoinHandle<ExecOutcome>,
    _ssh: ssh_client::Client,
}

impl Client {
    async fn connect(files: &Files, daemon: &Daemon) -> Client {
        Client::exec(files, daemon, "ascp --server").await
    }

    /// An SSH exec of `command` through the proxy.
    async fn exec(files: &Files, daemon: &Daemon, command: &str) -> Client {
        let config = ClientConfig {
            host: daemon.addr.ip().to_string(),
            port: daemon.addr.port(),
            user: "root".into(),
            identities: vec![files.client_key.clone()],
            password: None,
            known_hosts: files.dir.path().join("client_known_hosts"),
            policy: HostKeyPolicy::AcceptNew,
            timeout: Duration::from_secs(5),
            connect_to: None,
        };
        let ssh = ssh_client::connect(&config).await.unwrap();
        let exec = ssh.exec(command).await.unwrap();
        exec.stream.set_nonblocking(true).unwrap();
        Client {
            stream: tokio::net::UnixStream::from_std(exec.stream).unwrap(),
            outcome: exec.outcome,
            _ssh: ssh,
        }
    }

    async fn request(&mut self, destination: &str) {
        self.request_to("", destination).await;
    }

    async fn request_to(&mut self, host: &str, destination: &str) {
        let init = Frame::SessionInit(SessionInit {
            min_version: 1,
            max_version: 1,
            session_id: Uuid::new_v4(),
            requested_host: host.into(),
            requested_port: 33001,
            client_udp_port: 40000,
            server_udp_port: 0,
            direction: Direction::Upload,
            recursive: false,
            encrypt: true,
            resume: ResumeLevel::None,
            overwrite: Overwrite::Diff,
            target_rate: 100_000_000,
            min_rate: 0,
            datagram_size: 1400,
            sources: Vec::new(),
            destination: destination.into(),
        });
        self.stream.write_all(&encode(&init)).await.unwrap();
    }

    /// Asks for an upload and expects the proxy's accept (with the client-facing port).
    async fn start_transfer(files: &Files, daemon: &Daemon) -> Client {
        let mut client = Client::connect(files, daemon).await;
        client.request("/upload").await;
        match read_frame(&mut client.stream).await {
            // The client-facing port: the server's, or the next free one for this client.
            Ok(Some(Frame::SessionAccept(a))) => assert!(
                (SERVER_UDP_PORT..SERVER_UDP_PORT + 1000).contains(&a.server_udp_port),
                "{a:?}"
            ),
            other => panic!("expected the accept, got {other:?}"),
        }
        client
    }

    /// An IBM-style session (`command`) through the proxy, with one byte echoed by the server
    /// already: the proxy has bridged it and installed (or joined) its entry.
    async fn opaque(files: &Files, daemon: &Daemon, command: &str) -> Client {
        let mut client = Client::exec(files, daemon, command).await;
        client.stream.write_all(b"x").await.unwrap();
        client.stream.read_exact(&mut [0u8; 1]).await.unwrap();
        client
    }

    /// Sends EOF and waits for the end of the session.
    async fn finish(mut self) -> (Option<u32>, String) {
        self.stream.shutdown().await.unwrap();
        self.ended().await
    }

    /// The exit status and stderr the proxy ended the session with.
    async fn ended(self) -> (Option<u32>, String) {
        let o = self.outcome.await.unwrap();
        (
            o.exit_status,
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    frame.encode(&mut out).unwrap();
    out
}

/// Reads one frame exactly (prefix, then body; no read-ahead, since the tests go on reading the
/// same stream raw); `Ok(None)` at end of stream.
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut prefix = [0u8; 4];
    if r.read_exact(&mut prefix).await.is_err() {
        return Ok(None);
    }
    let total = fasp_proxy::protocol::frame::frame_len(prefix)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut bytes = vec![0u8; total];
    bytes[..4].copy_from_slice(&prefix);
    r.read_exact(&mut bytes[4..]).await?;
    Frame::decode(&bytes)
        .map(Some)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Keeps the paused clock still while it lives: time moves only by `advance`.
///
/// Auto-advance (the paused clock jumping to the next timer whenever the runtime is idle)
/// would fire the daemon's timeouts while a loopback packet is still in the kernel's
/// softirq queue; a running `spawn_blocking` task inhibits it (tokio documents this under
/// "Preventing auto-advance"), so each test holds one for its whole length.
struct StillClock(Option<std::sync::mpsc::Sender<()>>);

impl StillClock {
    fn hold() -> StillClock {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            let _ = rx.recv();
        });
        StillClock(Some(tx))
    }
}

impl Drop for StillClock {
    fn drop(&mut self) {
        self.0.take();
    }
}

/// Lets every task run until all wait (the paused clock does not move).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn options(hosts: Vec<SocketAddr>) -> Options {
    Options {
        hosts,
        stuck: None,
        max_sessions: 10,
        idle_timeout: 0,
        hold_time: 120,
    }
}

async fn backend(files: &Files) -> Backend {
    Backend::start(files, TcpListener::bind("127.0.0.1:0").await.unwrap()).await
}

// --- the tests ----------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_transfer_installs_one_entry_and_removes_it_when_it_ends() {
    let _clock = StillClock::hold();
    let files = Files::new();
    let server = backend(&files).await;
    let mut d = Daemon::start(&files, &options(vec![server.addr])).await;
    // Bytes the client sends right behind its request (read ahead with it by the proxy's
    // frame reader) reach the server after the request, before anything else.
    let mut client = Client::connect(&files, &d).await;
    client.request("/upload").await;
    client.stream.write_all(b"ping").await.unwrap();
    match read_frame(&mut client.stream).await {
        Ok(Some(Frame::SessionAccept(a))) => assert_eq!(a.server_udp_port, SERVER_UDP_PORT),
        other => panic!("expected the accept, got {other:?}"),
    }
    let installed = d.kernel.installed();
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0].backend.port(), SERVER_UDP_PORT);
    // The control channel crosses both ways; the client's EOF ends the transfer.
    let mut echo = [0u8; 4];
    client.stream.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    client.stream.shutdown().await.unwrap();
    assert_eq!(client.ended().await, (Some(0), String::new()));
    settle().await;
    d.assert_every_install_removed();
    assert_eq!(server.sessions(), 1);
    d.stop().await.unwrap();
    assert_eq!(d.kernel.calls().last(), Some(&Call::Reconcile(vec![])));
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_ends_a_session_and_removes_its_entry() {
    let _clock = StillClock::hold();
    let files = Files::new();
    let server = backend(&files).await;
    let mut o = options(vec![server.addr]);
    o.idle_timeout = 60;
    let mut d = Daemon::start(&files, &o).await;
    let mut busy = Client::start_transfer(&files, &d).await;
    let idle = Client::start_transfer(&files, &d).await;
    assert_eq!(d.kernel.installed().len(), 2);
    // 55 s in, the busy session talks; the other stays silent.
    advance(Duration::from_secs(55)).await;
    busy.stream.write_all(b"still here").await.unwrap();
    let mut echo = [0u8; 10];
    busy.stream.read_exact(&mut echo).await.unwrap();
    advance(Duration::from_secs(11)).await;
    let (status, stderr) = idle.ended().await;
    assert_eq!(status, Some(1));
    assert!(stderr.contains("idle timeout"), "{stderr}");
    settle().await;
    let left = d.kernel.installed();
    assert_eq!(
        left.len(),
        1,
        "only the idle session's entry goes: {left:?}"
    );
    // The busy one too, once it has been silent for the limit.
    advance(Duration::from_secs(60)).await;
    let (status, stderr) = busy.ended().await;
    assert_eq!(status, Some(1));
    assert!(stderr.contains("idle timeout"), "{stderr}");
    settle().await;
    d.assert_every_install_removed();
    d.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_session_cap_refuses_the_next_session_and_frees_its_place_at_the_end() {
    let _clock = StillClock::hold();
    let files = Files::new();
    let server = backend(&files).await;
    let mut o = options(vec![server.addr]);
    o.max_sessions = 1;
    let mut d = Daemon::start(&files, &o).await;
    let mut first = Client::start_transfer(&files, &d).await;
    let second = Client::connect(&files, &d).await;
    let (status, stderr) = second.ended().await;
    assert_eq!(status, Some(1));
    assert!(stderr.contains("too many sessions"), "{stderr}");
    assert_eq!(d.installs(), 1);
    first.stream.shutdown().await.unwrap();
    assert_eq!(first.ended().await.0, Some(0));
    settle().await;
    // The place is free again.
    let mut third = Client::start_transfer(&files, &d).await;
    third.stream.shutdown().await.unwrap();
    assert_eq!(third.ended().await.0, Some(0));
    settle().await;
    assert_eq!(server.sessions(), 2);
    d.assert_every_install_removed();
    d.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_sessions_at_every_step_and_leaves_no_entry() {
    let _clock = StillClock::hold();
    let files = Files::new();
    let server = backend(&files).await;
    // A server that takes the TCP connection and never says a word of SSH.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut o = options(vec![server.addr]);
    o.stuck = Some(silent.local_addr().unwrap());
    let mut d = Daemon::start(&files, &o).await;
    // One session waits for the client's request, one for an internal server's SSH, one for
    // the internal server's answer, one is transferring.
    let waiting_for_request = Client::connect(&files, &d).await;
    let mut waiting_for_ssh = Client::connect(&files, &d).await;
    waiting_for_ssh.request_to("stuck.example", "/upload").await;
    let mut waiting_for_server = Client::connect(&files, &d).await;
    waiting_for_server.request(HOLD_ANSWER).await;
    let transferring = Client::start_transfer(&files, &d).await;
    // The proxy is connected to the silent server (kept open: it never answers nor closes).
    let (_held_open, _) = silent.accept().await.unwrap();
    settle().await;
    assert_eq!(server.sessions(), 2);
    assert_eq!(d.kernel.installed().len(), 1);
    let stopping = tokio::spawn(async move {
        let result = d.stop().await;
        (d, result)
    });
    for client in [
        waiting_for_request,
        waiting_for_ssh,
        waiting_for_server,
        transferring,
    ] {
        let (status, stderr) = client.ended().await;
        assert_eq!(status, Some(1));
        assert!(stderr.contains("the proxy is shutting down"), "{stderr}");
    }
    let (d, result) = stopping.await.unwrap();
    result.unwrap();
    d.assert_every_install_removed();
    assert_eq!(d.kernel.calls().last(), Some(&Call::Reconcile(vec![])));
}

#[tokio::test(start_paused = true)]
async fn a_failed_install_leaves_nothing_and_the_client_gets_the_error() {
    let _clock = StillClock::hold();
    let files = Files::new();
    let server = backend(&files).await;
    let forwarder = MemoryForwarder::new();
    forwarder
        .handle()
        .fail_installs(Some("the kernel said no".into()));
    let mut d = Daemon::start_with(&files, &options(vec![server.addr]), forwarder).await;
    let mut client = Client::connect(&files, &d).await;
    client.request("/upload").await;
    match read_frame(&mut client.stream).await {
        Ok(Some(Frame::Error(e))) => {
            assert_eq!(e.code, ErrorCode::Other);
            assert!(
                e.message.contains("installing the UDP forwarding: ")
                    && e.message.contains("the kernel said no"),
                "{}",
                e.message
            );
        }
        other => panic!("expected the proxy's error, got {other:?}"),
    }
    let (status, stderr) = client.ended().await;
    assert_eq!(status, Some(1));
    assert!(stderr.contains("the kernel said no"), "{stderr}");
    settle().await;
    assert!(d.kernel.installed().is_empty());
    assert!(
        !d.kernel
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Remove(_))),
        "nothing installed, nothing to remove: {:?}",
        d.kernel.calls()
    );
    // The port it had reserved is free: the next session gets the same one.
    d.kernel.fail_installs(None);
    let mut next = Client::start_transfer(&files, &d).await;
    assert_eq!(d.kernel.installed()[0].proxy_port, SERVER_UDP_PORT);
    next.stream.shutdown().await.unwrap();
    assert_eq!(next.ended().await.0, Some(0));
    d.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_servers_refusal_reaches_the_client_unchanged_and_nothing_is_installed() {
    let _clock = StillClock::hold();
    let files = Files::new();
    let server = backend(&files).await;
    let mut d = Daemon::start(&files, &options(vec![server.addr])).await;
    let mut client = Client::connect(&files, &d).await;
    client.request(REFUSE).await;
    match read_frame(&mut client.stream).await {
        Ok(Some(Frame::Error(e))) => {
            assert_eq!(e.code, ErrorCode::NotFound);
            assert_eq!(e.message, "no such directory");
        }
        other => panic!("expected the server's refusal, got {other:?}"),
    }
    let (status, stderr) = client.ended().await;
    assert_eq!(status, Some(1));
    assert!(stderr.contains("refused: no such directory"), "{stderr}");
    assert!(
        stderr.contains("ascp: no such directory"),
        "the server's stderr: {stderr}"
    );
    assert_eq!(d.installs(), 0);
    d.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_faulty_server_is_skipped_and_comes_back_after_the_hold_time() {
    let _clock = StillClock::hold();
    let files = Files::new();
    // `down` has a port but nothing listens there yet: connections are refused.
    let down_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_addr = down_listener.local_addr().unwrap();
    drop(down_listener);
    let up = backend(&files).await;
    let mut o = options(vec![down_addr, up.addr]);
    o.hold_time = 60;
    let mut d = Daemon::start(&files, &o).await;
    let transfer = |n: usize| {
        let (files, d) = (&files, &d);
        async move {
            for _ in 0..n {
                let mut c = Client::start_transfer(files, d).await;
                c.stream.shutdown().await.unwrap();
                assert_eq!(c.ended().await.0, Some(0));
            }
        }
    };
    // Round robin over [down, up]: the first session tries `down` first, marks it faulty
    // and goes to `up`.
    transfer(1).await;
    assert_eq!(up.sessions(), 1);
    // `down` comes up, but stays skipped while it is marked: the third session's turn
    // starts at `down` too.
    let down = Backend::start(&files, TcpListener::bind(down_addr).await.unwrap()).await;
    transfer(2).await;
    assert_eq!((down.sessions(), up.sessions()), (0, 3));
    // After the hold time, round robin includes it again.
    advance(Duration::from_secs(61)).await;
    transfer(2).await;
    assert_eq!((down.sessions(), up.sessions()), (1, 4));
    settle().await;
    d.assert_every_install_removed();
    d.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_daemon_returns_when_shutdown_resolves_with_no_sessions() {
    let _clock = StillClock::hold();
    let files = Files::new();
    let mut d = Daemon::start(&files, &options(vec!["127.0.0.1:9".parse().unwrap()])).await;
    d.stop().await.unwrap();
    assert_eq!(d.kernel.calls(), vec![Call::Reconcile(vec![])]);
}

#[tokio::test(start_paused = true)]
async fn an_ibm_session_is_bridged_unread_over_an_any_port_entry_removed_at_its_end() {
    let _clock = StillClock::hold();
    let files = Files::new();
    let server = backend(&files).await;
    let mut d = Daemon::start(&files, &options(vec![server.addr])).await;
    let mut client = Client::exec(&files, &d, "ascp -S. -V1").await;
    // Not a frame of ours: the proxy must not read it, only pass it on.
    let opaque = b"\x00\x00\x00\x00FASP? proprietary bytes\n";
    client.stream.write_all(opaque).await.unwrap();
    let mut echo = vec![0u8; opaque.len()];
    client.stream.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo[..], &opaque[..]);
    let installed = d.kernel.installed();
    assert_eq!(installed.len(), 1);
    let entry = &installed[0];
    assert_eq!(entry.client_port, None, "any source port: {entry:?}");
    assert_eq!(entry.proxy_port, 33001);
    assert_eq!(entry.backend, SocketAddr::new(server.addr.ip(), 33001));
    let (status, stderr) = client.finish().await;
    assert_eq!(status, Some(1), "the server's own exit status");
    assert!(
        stderr.contains(CLIENT_LICENSE),
        "the server's words: {stderr}"
    );
    settle().await;
    d.assert_every_install_removed();
    d.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn ibm_sessions_of_one_client_share_one_entry_and_one_server_until_the_last_ends() {
    let _clock = StillClock::hold();
    let files = Files::new();
    let (a, b) = (backend(&files).await, backend(&files).await);
    let mut d = Daemon::start(&files, &options(vec![a.addr, b.addr])).await;
    let first = Client::opaque(&files, &d, "ascp -S. -V1").await;
    // Round robin would take the other server; the shared key keeps the second on the first's.
    let second = Client::opaque(&files, &d, "ascp4 -S.").await;
    assert_eq!((a.sessions(), b.sessions()), (2, 0));
    assert_eq!(d.installs(), 1, "{:?}", d.kernel.calls());
    // The first leaving keeps the entry for the second; the last one removes it.
    first.finish().await;
    settle().await;
    assert_eq!(d.kernel.installed().len(), 1);
    second.finish().await;
    settle().await;
    d.assert_every_install_removed();
    // With none live, the next one is balanced again (to the other server).
    let third = Client::opaque(&files, &d, "ascp -S. -V1").await;
    assert_eq!((a.sessions(), b.sessions()), (2, 1));
    third.finish().await;
    settle().await;
    d.assert_every_install_removed();
    d.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_ibm_sessions_and_removes_their_shared_entry() {
    let _clock = StillClock::hold();
    let files = Files::new();
    let server = backend(&files).await;
    let mut d = Daemon::start(&files, &options(vec![server.addr])).await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(Client::opaque(&files, &d, "ascp -S. -V1").await);
    }
    assert_eq!(d.installs(), 1);
    d.stop().await.unwrap();
    for c in clients {
        let (status, stderr) = c.ended().await;
        assert_eq!(status, Some(1));
        assert!(stderr.contains("shutting down"), "{stderr}");
    }
    d.assert_every_install_removed();
}
