//! One task per proxied session: where SSH, the protocol handshake, the policy and the data plane
//! meet. The SSH front end hands over an accepted `exec`; the task reads the client's
//! `SessionInit`, picks the rule and an internal server, logs in there, forwards the handshake,
//! installs the kernel entry **before** forwarding the server's `SessionAccept` (rewritten to the
//! client-facing UDP port), then copies bytes both ways until the end, and removes the entry.

pub mod registry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use self::registry::{Registry, SessionInfo};
use crate::config::{Config, Rule};
use crate::dataplane::{Forwarder, SessionEntry};
use crate::policy::{self, Balancer, HealthEvent, Request};
use crate::protocol::{
    frame, ErrorCode, ErrorFrame, Frame, ProtocolError, SessionAccept, SessionInit,
};
use crate::ssh::client::{self as ssh_client, ClientConfig, HostKeyPolicy, SshError};
use crate::ssh::server::{ExecHandler, ExecRequest};

/// The command the proxy accepts from clients and runs on internal servers.
pub const TRANSFER_COMMAND: &str = "ascp --server";
/// Time limit for the client's first frame and the internal server's answer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit for connecting and logging in to an internal server.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Lifetime of a kernel entry; the daemon refreshes live entries every 5 s (well within it).
pub const ENTRY_LIFETIME: Duration = Duration::from_secs(60);
/// How many ports above the preferred one may be used to keep DNAT keys unique.
pub const PORT_SPAN: u16 = 1000;

/// What every session task shares.
pub struct Shared {
    /// The configuration the daemon runs with.
    pub config: Arc<Config>,
    /// Live sessions.
    pub registry: Registry,
    /// Internal server selection and faulty marks.
    pub balancer: Mutex<Balancer>,
    /// The kernel data plane (blocking calls: used from blocking threads).
    pub forwarder: Arc<Mutex<Box<dyn Forwarder>>>,
    /// Host keys of the internal servers (trusted on first use, a changed key refused).
    pub backend_known_hosts: PathBuf,
    /// Round-robin position over `bind_source_address`es.
    snat_cursor: AtomicUsize,
    /// Ends every session when the daemon shuts down.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Shared {
    /// Everything a session needs.
    pub fn new(
        config: Arc<Config>,
        forwarder: Box<dyn Forwarder>,
        backend_known_hosts: PathBuf,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Shared {
        let hold = config.server.rproxy.faulty_host_hold_time;
        Shared {
            config,
            registry: Registry::new(),
            balancer: Mutex::new(Balancer::new(hold)),
            forwarder: Arc::new(Mutex::new(forwarder)),
            backend_known_hosts,
            snat_cursor: AtomicUsize::new(0),
            shutdown,
        }
    }

    /// Runs a blocking data plane call on a blocking thread.
    pub async fn dataplane<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Forwarder) -> T + Send + 'static,
    ) -> Option<T> {
        let fwd = Arc::clone(&self.forwarder);
        tokio::task::spawn_blocking(move || {
            let mut guard = fwd.lock().unwrap_or_else(|p| p.into_inner());
            f(guard.as_mut())
        })
        .await
        .ok()
    }
}

/// Hands accepted commands to session tasks.
pub struct Sessions(pub Arc<Shared>);

impl ExecHandler for Sessions {
    fn exec(&self, request: ExecRequest) {
        let shared = Arc::clone(&self.0);
        // The session counts from here, synchronously: `admit` alone is checked on each
        // connection's own task, so two clients could both pass it before either was added.
        let id = Uuid::new_v4();
        let peer = SocketAddr::new(policy::canonical(request.peer.ip()), request.peer.port());
        let info = SessionInfo {
            id,
            user: request.user.clone(),
            client: peer,
            rule: String::new(),
            backend: None,
            entry: None,
            started: SystemTime::now(),
            last_activity: Instant::now(),
            forwarded: None,
            cancel: Arc::new(tokio::sync::Notify::new()),
        };
        let max = shared.config.server.rproxy.max_sessions as usize;
        if !shared.registry.add_within(info, max) {
            info!(
                "{peer}: {}: session refused: too many sessions",
                request.user
            );
            request
                .finish
                .finish(1, "fasp-proxy: too many sessions, try again later\n");
            return;
        }
        tokio::spawn(async move { run(shared, id, request).await });
    }

    fn admit(&self) -> bool {
        self.0.registry.len() < self.0.config.server.rproxy.max_sessions as usize
    }
}

/// Why a session ended, as logged.
enum End {
    /// Both sides finished: `Connection closed (EOF)`.
    Eof(Option<u32>, String),
    /// Refused or failed before or during the transfer.
    Error(String),
}

/// Runs session `id` (already in the registry) to its end.
async fn run(shared: Arc<Shared>, id: Uuid, req: ExecRequest) {
    let peer = SocketAddr::new(policy::canonical(req.peer.ip()), req.peer.port());
    info!(
        "[{id}] Received connection request from {} (user {})",
        peer.ip(),
        req.user
    );
    let ExecRequest {
        io,
        finish,
        local,
        user,
        ..
    } = req;
    let (mut client_read, mut client_write) = io.into_split();
    // Shutdown ends a session at any step (one still waiting for its SessionInit, or for an
    // internal server, too), not only once it is bridging.
    let mut stopping = shared.shutdown.clone();
    let outcome = tokio::select! {
        end = session(
            &shared,
            id,
            &user,
            peer,
            local,
            &mut client_read,
            &mut client_write,
        ) => end,
        _ = stopping.wait_for(|down| *down) => End::Error("the proxy is shutting down".into()),
    };
    // Teardown: every step runs.
    let entry = shared.registry.remove(id).and_then(|s| s.entry);
    if let Some(entry) = entry {
        let removed = shared.dataplane(move |f| f.remove(&entry)).await;
        if let Some(Err(e)) = removed {
            warn!("[{id}] removing the UDP forwarding: {e}");
        }
    }
    let _ = client_write.shutdown().await;
    match outcome {
        End::Eof(status, stderr) => {
            info!("[{id}] Connection closed (EOF)");
            finish.finish(status.unwrap_or(0), &stderr);
        }
        End::Error(message) => {
            warn!("[{id}] Connection closed: {message}");
            finish.finish(1, &format!("fasp-proxy: {message}\n"));
        }
    }
}

async fn session(
    shared: &Shared,
    id: Uuid,
    user: &str,
    peer: SocketAddr,
    local: SocketAddr,
    client_read: &mut tokio::net::unix::OwnedReadHalf,
    client_write: &mut tokio::net::unix::OwnedWriteHalf,
) -> End {
    // 1. The client's SessionInit.
    let (init_bytes, init) =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(client_read)).await {
            Err(_) => {
                return End::Error(format!(
                    "no session request within {}s",
                    HANDSHAKE_TIMEOUT.as_secs()
                ))
            }
            Ok(Err(e)) => return End::Error(format!("bad session request from {peer}: {e}")),
            Ok(Ok((bytes, Frame::SessionInit(init)))) => (bytes, init),
            Ok(Ok(_)) => return End::Error("the first frame was not a session request".into()),
        };
    // 2. The rule.
    let config = Arc::clone(&shared.config);
    let request = Request {
        local_addr: local.ip(),
        requested_host: Some(init.requested_host.as_str()).filter(|h| !h.is_empty()),
        requested_port: init.requested_port,
    };
    let Some(rule) = policy::select_rule(&config.server.rproxy.rules, &request) else {
        let message = format!(
            "no rule matches this connection (to {}, host {:?}): refused",
            policy::canonical(local.ip()),
            init.requested_host
        );
        refuse(client_write, ErrorCode::Refused, &message).await;
        return End::Error(message);
    };
    shared.registry.set_rule(id, rule.label());
    let backend_user = policy::backend_user(rule, user).to_string();
    let keyfile = match policy::keyfile(rule, user) {
        Ok(k) => k,
        Err(e) => {
            let message = format!("{}: {e}", rule.label());
            refuse(client_write, ErrorCode::Refused, &message).await;
            return End::Error(message);
        }
    };
    // 3. An internal server: round robin, skipping and marking faulty ones.
    let (backend, client) = match connect_backend(shared, id, rule, &backend_user, keyfile).await {
        Ok(pair) => pair,
        Err(message) => {
            refuse(client_write, ErrorCode::Other, &message).await;
            return End::Error(message);
        }
    };
    info!("[{id}] Established SSH connection with server {backend}");
    let exec = match client.exec(TRANSFER_COMMAND).await {
        Ok(e) => e,
        Err(e) => {
            let message = format!("starting the transfer on {backend}: {e}");
            refuse(client_write, ErrorCode::Other, &message).await;
            return End::Error(message);
        }
    };
    let backend_stream = match exec
        .stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(exec.stream))
    {
        Ok(s) => s,
        Err(e) => return End::Error(format!("local socket: {e}")),
    };
    let (mut backend_read, mut backend_write) = backend_stream.into_split();
    // 4. Forward the request unchanged; read the answer.
    if let Err(e) = backend_write.write_all(&init_bytes).await {
        return End::Error(format!("writing to {backend}: {e}"));
    }
    let accept = match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut backend_read)).await
    {
        Err(_) => return End::Error(format!("{backend} did not answer the session request")),
        Ok(Err(e)) => return End::Error(format!("bad answer from {backend}: {e}")),
        Ok(Ok((_, Frame::SessionAccept(a)))) => a,
        Ok(Ok((bytes, Frame::Error(e)))) => {
            // The server refused (e.g. no such file): pass its words on, then end.
            let _ = client_write.write_all(&bytes).await;
            let outcome = tokio::time::timeout(Duration::from_secs(5), exec.outcome).await;
            client.close().await;
            return End::Error(format!("{backend} refused: {}", e.message))
                .or_status(outcome.ok().and_then(Result::ok));
        }
        Ok(Ok(_)) => return End::Error(format!("{backend} answered with an unexpected frame")),
    };
    // 5. The kernel entry, before the client learns the port.
    let entry = match install(shared, id, rule, &init, &accept, peer, local, backend).await {
        Ok(e) => e,
        Err(message) => {
            refuse(client_write, ErrorCode::Other, &message).await;
            client.close().await;
            return End::Error(message);
        }
    };
    info!(
        "[{id}] Setup UDP forwarding between {}:{} and {}",
        entry.client,
        entry
            .client_port
            .map_or_else(|| "*".to_string(), |p| p.to_string()),
        entry.backend
    );
    let rewritten = SessionAccept {
        server_udp_port: entry.proxy_port,
        ..accept
    };
    let mut out = Vec::new();
    if let Err(e) = Frame::SessionAccept(rewritten).encode(&mut out) {
        return End::Error(format!("re-encoding the answer: {e}"));
    }
    if let Err(e) = client_write.write_all(&out).await {
        return End::Error(format!("writing to the client: {e}"));
    }
    // 6. Bytes both ways until both directions end (or shutdown / idle timeout).
    let mut shutdown = shared.shutdown.clone();
    let cancel = shared.registry.cancel_handle(id);
    let cancelled = async {
        match &cancel {
            Some(c) => c.notified().await,
            None => std::future::pending().await,
        }
    };
    let copied = tokio::select! {
        r = bridge(shared, id, client_read, client_write, &mut backend_read, &mut backend_write) => r,
        _ = shutdown.wait_for(|down| *down) => Err("the proxy is shutting down".to_string()),
        () = cancelled => Err("idle timeout: no control or data traffic".to_string()),
    };
    let outcome = tokio::time::timeout(Duration::from_secs(5), exec.outcome).await;
    client.close().await;
    match copied {
        Ok(()) => {
            let (status, stderr) = match outcome {
                Ok(Ok(o)) => (
                    o.exit_status,
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                ),
                _ => (None, String::new()),
            };
            End::Eof(status, stderr)
        }
        Err(e) => End::Error(e),
    }
}

impl End {
    fn or_status(self, outcome: Option<ssh_client::ExecOutcome>) -> End {
        match (self, outcome) {
            (End::Error(m), Some(o)) if !o.stderr.is_empty() => End::Error(format!(
                "{m} ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            (end, _) => end,
        }
    }
}

async fn refuse(client: &mut tokio::net::unix::OwnedWriteHalf, code: ErrorCode, message: &str) {
    let mut out = Vec::new();
    let frame = Frame::Error(ErrorFrame {
        code,
        message: format!("fasp-proxy: {message}"),
    });
    if frame.encode(&mut out).is_ok() {
        let _ = client.write_all(&out).await;
    }
}

/// Reads one whole frame (length prefix checked against the limit before its body is read).
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> Result<(Vec<u8>, Frame), String> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).await.map_err(|e| e.to_string())?;
    let total = match frame::frame_len(prefix) {
        Ok(total) => total,
        Err(ProtocolError::Text(_)) => {
            // Show the line the text starts: what is there within a second, bounded.
            let mut rest = vec![0u8; frame::TEXT_SHOWN];
            let got = tokio::time::timeout(Duration::from_secs(1), r.read(&mut rest))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            rest.truncate(got);
            let text = frame::stray_text(&prefix, &rest);
            return Err(ProtocolError::Text(text).to_string());
        }
        Err(e) => return Err(e.to_string()),
    };
    let mut bytes = vec![0u8; total];
    bytes[..4].copy_from_slice(&prefix);
    r.read_exact(&mut bytes[4..])
        .await
        .map_err(|e| e.to_string())?;
    let frame = Frame::decode(&bytes).map_err(|e| e.to_string())?;
    Ok((bytes, frame))
}

async fn connect_backend(
    shared: &Shared,
    id: Uuid,
    rule: &Rule,
    user: &str,
    keyfile: PathBuf,
) -> Result<(SocketAddr, ssh_client::Client), String> {
    let candidates = {
        let mut bal = shared.balancer.lock().unwrap_or_else(|p| p.into_inner());
        for event in bal.expire(Instant::now()) {
            log_health(event);
        }
        bal.candidates(rule, Instant::now())
    };
    if candidates.is_empty() {
        return Err(format!(
            "every internal server of {} is marked faulty; try again later",
            rule.label()
        ));
    }
    let mut errors = Vec::new();
    for host in candidates {
        let cfg = ClientConfig {
            host: host.ip().to_string(),
            port: host.port(),
            user: user.to_string(),
            identities: vec![keyfile.clone()],
            password: None,
            known_hosts: shared.backend_known_hosts.clone(),
            policy: HostKeyPolicy::AcceptNew,
            timeout: BACKEND_TIMEOUT,
        };
        match ssh_client::connect(&cfg).await {
            Ok(client) => return Ok((host, client)),
            Err(e) => {
                // The server itself failed (no answer, refused, SSH broke): mark it. A key the
                // server refuses for this user says nothing about the server.
                if matches!(
                    e,
                    SshError::Connect { .. } | SshError::Session { .. } | SshError::HostKey(_)
                ) {
                    let event = shared
                        .balancer
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .mark_faulty(host, Instant::now());
                    if let Some(event) = event {
                        log_health(event);
                    }
                }
                warn!("[{id}] internal server {host}: {e}");
                errors.push(format!("{host}: {e}"));
                if matches!(e, SshError::Auth { .. } | SshError::Key(_)) {
                    break;
                }
            }
        }
    }
    Err(format!(
        "no internal server of {} could be reached ({})",
        rule.label(),
        errors.join("; ")
    ))
}

fn log_health(event: HealthEvent) {
    match event {
        HealthEvent::MarkedFaulty { host, .. } => warn!("internal server {host} marked faulty"),
        HealthEvent::Cleared { host } => info!("internal server {host} no longer marked faulty"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn install(
    shared: &Shared,
    id: Uuid,
    rule: &Rule,
    init: &SessionInit,
    accept: &SessionAccept,
    peer: SocketAddr,
    local: SocketAddr,
    backend: SocketAddr,
) -> Result<SessionEntry, String> {
    let client_port = rule.src_port_filtering.then_some(init.client_udp_port);
    let preferred = if rule.proxy_port == 0 {
        accept.server_udp_port
    } else {
        rule.proxy_port
    };
    let proxy_port = shared
        .registry
        .reserve_port(
            id,
            peer.ip(),
            client_port,
            preferred,
            PORT_SPAN,
            !rule.udp_port_reuse,
        )
        .ok_or_else(|| {
            format!(
                "no free client-facing UDP port from {preferred} for {}",
                peer.ip()
            )
        })?;
    let snat = (!rule.bind_source_addresses.is_empty()).then(|| {
        let i = shared.snat_cursor.fetch_add(1, Ordering::Relaxed);
        rule.bind_source_addresses[i % rule.bind_source_addresses.len()]
    });
    let entry = SessionEntry {
        id,
        client: peer.ip(),
        client_port,
        proxy_addr: policy::canonical(local.ip()),
        proxy_port,
        backend: SocketAddr::new(backend.ip(), accept.server_udp_port),
        snat,
        lifetime: ENTRY_LIFETIME,
    };
    let to_install = entry.clone();
    // Checked under the data plane's lock: an install that gets the lock after the daemon's
    // final reconcile (which runs once shutdown is set) must not add an entry nobody removes.
    let stopping = shared.shutdown.clone();
    let install = move |f: &mut dyn Forwarder| {
        if *stopping.borrow() {
            return Err(crate::dataplane::DataplaneError::Setup(
                "the proxy is shutting down".into(),
            ));
        }
        f.install(&to_install)
    };
    match shared.dataplane(install).await {
        Some(Ok(())) => {
            shared.registry.set_entry(id, entry.clone(), backend);
            Ok(entry)
        }
        Some(Err(e)) => Err(format!("installing the UDP forwarding: {e}")),
        None => Err("installing the UDP forwarding: the data plane thread failed".into()),
    }
}

/// Copies both ways; a side's EOF is passed on as EOF; returns when both ended.
async fn bridge(
    shared: &Shared,
    id: Uuid,
    client_read: &mut tokio::net::unix::OwnedReadHalf,
    client_write: &mut tokio::net::unix::OwnedWriteHalf,
    backend_read: &mut tokio::net::unix::OwnedReadHalf,
    backend_write: &mut tokio::net::unix::OwnedWriteHalf,
) -> Result<(), String> {
    // One loop per direction, run together: a write that waits (the peer's window is full)
    // never stops the other direction from being read, so the two ends cannot block each
    // other through us.
    let upstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = backend_write.shutdown().await;
                    return Ok(());
                }
                Ok(n) => {
                    shared.registry.touch(id);
                    backend_write
                        .write_all(&buf[..n])
                        .await
                        .map_err(|e| format!("writing to the internal server: {e}"))?;
                }
            }
        }
    };
    let downstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match backend_read.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = client_write.shutdown().await;
                    return Ok(());
                }
                Ok(n) => {
                    shared.registry.touch(id);
                    client_write
                        .write_all(&buf[..n])
                        .await
                        .map_err(|e| format!("writing to the client: {e}"))?;
                }
            }
        }
    };
    tokio::pin!(upstream, downstream);
    // The session ends when the server side ends: nothing the client still sends can matter,
    // and the client gets the exit status at once instead of waiting to close its side first.
    // The client's EOF alone only ends the upstream direction.
    tokio::select! {
        r = &mut downstream => r,
        r = &mut upstream => match r {
            Ok(()) => downstream.await,
            Err(e) => Err(e),
        },
    }
}
