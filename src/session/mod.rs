//! One task per proxied session: where SSH, the protocol handshake, the policy and the data plane
//! meet. The SSH front end hands over an accepted `exec`; the task reads the client's
//! `SessionInit`, picks the rule and an internal server, logs in there, forwards the handshake,
//! installs the kernel entry **before** forwarding the server's `SessionAccept` (rewritten to the
//! client-facing UDP port), then relays the control channel until the end, and removes the entry.
//!
//! A session ends in one place ([`Session::run`]): its steps run until they finish or the
//! registry's close handle asks it to end (shutdown, idle timeout); either way, what it holds
//! (the internal server's connection, the kernel entry, its registry place) is released there,
//! every step of it, whatever step the session was at.

pub mod error;
pub mod registry;
pub mod relay;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use log::{info, warn};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use self::error::SessionError;
use self::registry::{CloseReason, CloseSignal, OpaqueJoin, Refusal, Registry, SessionInfo};
use crate::config::{Config, Rule};
use crate::dataplane::{DataplaneError, Forwarder, SessionEntry, SessionKey};
use crate::metrics::{EndReason, Metrics, RefusalReason};
use crate::policy::{self, Balancer, Request};
use crate::protocol::reader::{FrameReader, RawFrame};
use crate::protocol::{ErrorCode, ErrorFrame, Frame, SessionAccept, SessionInit};
use crate::ssh::client::{self as ssh_client, ClientConfig, HostKeyPolicy};
use crate::ssh::server::{CommandKind, ExecFinish, ExecHandler, ExecRequest};

/// The command the proxy accepts from clients and runs on internal servers.
pub const TRANSFER_COMMAND: &str = "ascp --server";
/// Time limit for the client's first frame and the internal server's answer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit for connecting and logging in to an internal server.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a session's end waits for the internal server's exit status before closing.
pub const BACKEND_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Lifetime of a kernel entry; the daemon refreshes live entries every 5 s (well within it).
pub const ENTRY_LIFETIME: Duration = Duration::from_secs(60);
/// How many ports above the preferred one may be used to keep DNAT keys unique.
pub const PORT_SPAN: u16 = 1000;
/// Longest an opaque session waits for another one's shared entry to be installed or removed.
pub const OPAQUE_WAIT: Duration = Duration::from_secs(10);

/// What every session task shares.
pub struct Shared {
    /// The configuration new sessions use ([`Shared::config`]); a reload replaces it
    /// ([`Shared::replace_config`]), sessions already running keep the one they started with.
    config: std::sync::RwLock<Arc<Config>>,
    /// Live sessions, each with its close handle.
    pub registry: Registry,
    /// Internal server selection, faulty marks and source addresses.
    pub balancer: Mutex<Balancer>,
    /// The kernel data plane (blocking calls: used from blocking threads).
    pub forwarder: crate::dataplane::SharedForwarder,
    /// Host keys of the internal servers (`fasp-proxy trust-host` records them; unknown keys
    /// are refused unless `<accept_new_host_keys>`, changed ones always).
    pub backend_known_hosts: PathBuf,
    /// Every session task, so the daemon can wait until all have ended.
    tasks: TaskTracker,
    /// What sessions record for the metrics (their starts, ends and refusals; the data plane's
    /// latency, through the forwarder).
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// Everything a session needs; `forwarder`'s installs and removals are timed into
    /// `metrics`.
    pub fn new(
        config: Arc<Config>,
        forwarder: Box<dyn Forwarder>,
        backend_known_hosts: PathBuf,
        metrics: Arc<Metrics>,
    ) -> Shared {
        let forwarder = crate::dataplane::timed::Timed::new(forwarder, Arc::clone(&metrics));
        let hold = config.server.rproxy.faulty_host_hold_time;
        Shared {
            config: std::sync::RwLock::new(config),
            registry: Registry::new(),
            balancer: Mutex::new(Balancer::new(hold)),
            forwarder: Arc::new(Mutex::new(Box::new(forwarder))),
            backend_known_hosts,
            tasks: TaskTracker::new(),
            metrics,
        }
    }

    /// The configuration in force now (what a new session uses).
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts `new` in force for new sessions (a reload); returns the configuration it replaces.
    /// The balancer keeps the faulty marks of servers still in some rule and takes the new
    /// hold time.
    pub fn replace_config(&self, new: Arc<Config>) -> Arc<Config> {
        let hosts = new.server.rproxy.servers();
        self.balancer()
            .reconfigure(new.server.rproxy.faulty_host_hold_time, &hosts);
        let mut config = self.config.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *config, new)
    }

    /// Runs a blocking data plane call on a blocking thread; `None` if that thread failed.
    pub async fn dataplane<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Forwarder) -> T + Send + 'static,
    ) -> Option<T> {
        crate::dataplane::on_blocking_thread(&self.forwarder, f).await
    }

    /// Asks every session to end for `reason` and admits no new one; returns how many were live.
    pub fn close_all(&self, reason: CloseReason) -> usize {
        self.tasks.close();
        self.registry.close_all(reason)
    }

    /// Resolves once every session task has ended (after [`Shared::close_all`]).
    pub async fn all_ended(&self) {
        self.tasks.wait().await;
    }

    fn balancer(&self) -> std::sync::MutexGuard<'_, Balancer> {
        self.balancer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Hands accepted commands to session tasks.
pub struct Sessions(pub Arc<Shared>);

impl ExecHandler for Sessions {
    fn exec(&self, request: ExecRequest) {
        let shared = &self.0;
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
            opaque: request.kind == CommandKind::Opaque,
        };
        let max = shared.config().server.rproxy.max_sessions as usize;
        let close = match shared.registry.add_within(info, max) {
            Ok(close) => close,
            Err(refusal) => {
                let (why, counted) = match refusal {
                    Refusal::TooMany => (
                        "too many sessions, try again later".to_string(),
                        RefusalReason::TooManySessions,
                    ),
                    Refusal::Closed(reason) => (reason.to_string(), RefusalReason::ShuttingDown),
                };
                shared.metrics.refused(counted);
                info!("{peer}: {}: session refused: {why}", request.user);
                request.finish.finish(1, &format!("fasp-proxy: {why}\n"));
                return;
            }
        };
        shared.metrics.session_started();
        let session = Session {
            shared: Arc::clone(shared),
            id,
            user: request.user,
            peer,
            local: request.local,
            command: request.command,
            kind: request.kind,
        };
        shared
            .tasks
            .spawn(session.run(request.io, request.finish, close));
    }

    fn admit(&self) -> bool {
        self.0.registry.len() < self.0.config().server.rproxy.max_sessions as usize
    }

    fn refused(&self, reason: RefusalReason) {
        self.0.metrics.refused(reason);
    }
}

/// One proxied session: who it is for and where it came in. Lives in its own task.
pub struct Session {
    shared: Arc<Shared>,
    /// The session UUID (its registry key, and the tag of its kernel entry and log lines).
    id: Uuid,
    /// The proxy user.
    user: String,
    /// The client's SSH address (IPv4-mapped addresses as IPv4).
    peer: SocketAddr,
    /// The proxy address the client's connection arrived on.
    local: SocketAddr,
    /// The command the client runs (run as it is on the internal server).
    command: String,
    /// Ours (parsed) or IBM's (opaque).
    kind: CommandKind,
}

/// What a session holds that must be released however it ends. Owned by [`Session::run`],
/// outside the steps, so that a close request can never drop it unreleased.
#[derive(Default)]
struct Held {
    /// The internal server's SSH connection, once logged in.
    backend: Option<Backend>,
    /// The kernel entry, from just before its install is asked for.
    entry: Option<SessionEntry>,
    /// An opaque session's place in the group sharing its key's entry.
    opaque: Option<SessionKey>,
}

/// A logged-in internal server and the transfer command running there.
struct Backend {
    client: ssh_client::Client,
    /// The remote command's stdin/stdout, kept open until the command's exit status is in
    /// (closing it first would cut the channel's last messages short).
    io: Option<(OwnedReadHalf, OwnedWriteHalf)>,
    /// How the remote command ended; `None` until it was started.
    outcome: Option<tokio::task::JoinHandle<ssh_client::ExecOutcome>>,
}

/// How the steps ended when they ran to the end.
type Finished = Result<(), SessionError>;

impl Session {
    /// Runs the session to its end and releases everything it held: the one place a session
    /// ends, whether its steps finished, failed, or `close` asked it to end at any step.
    async fn run(self, io: tokio::net::UnixStream, finish: ExecFinish, mut close: CloseSignal) {
        let id = self.id;
        info!(
            "[{id}] Received connection request from {} (user {})",
            self.peer.ip(),
            self.user
        );
        let (mut client_read, mut client_write) = io.into_split();
        let mut held = Held::default();
        let end: Finished = {
            let step_close = close.clone();
            let steps = async {
                match self.kind {
                    CommandKind::Parsed => {
                        self.steps(&mut client_read, &mut client_write, &mut held, step_close)
                            .await
                    }
                    CommandKind::Opaque => {
                        self.opaque_steps(
                            &mut client_read,
                            &mut client_write,
                            &mut held,
                            step_close,
                        )
                        .await
                    }
                }
            };
            tokio::select! {
                biased;
                reason = close.requested() => Err(SessionError::Closed(reason)),
                end = steps => end,
            }
        };
        if let Err(e) = &end {
            if let Some(code) = e.code() {
                send_error(&mut client_write, code, &e.to_string()).await;
            }
        }
        let (outcome, forwarded) = self.release(held).await;
        self.shared
            .metrics
            .session_ended(id, end_reason(&end), forwarded);
        let _ = client_write.shutdown().await;
        match end {
            Ok(()) => {
                info!("[{id}] Connection closed (EOF)");
                let (status, stderr) = outcome.map_or((None, String::new()), |o| {
                    (
                        o.exit_status,
                        String::from_utf8_lossy(&o.stderr).into_owned(),
                    )
                });
                finish.finish(status.unwrap_or(0), &stderr);
            }
            Err(e) => {
                let mut message = e.to_string();
                if let (SessionError::ServerRefused(_), Some(o)) = (&e, &outcome) {
                    if !o.stderr.is_empty() {
                        message =
                            format!("{message} ({})", String::from_utf8_lossy(&o.stderr).trim());
                    }
                }
                warn!("[{id}] Connection closed: {message}");
                finish.finish(1, &format!("fasp-proxy: {message}\n"));
            }
        }
        self.trim_if_last();
    }

    /// Releases what the session held, every step: the internal server's exit status (waited
    /// for a bounded time) and connection, the kernel entry (its counters read a last time
    /// first), the registry place (last, so its DNAT key is not handed out while the kernel
    /// still holds it). Returns the exit status and the session's last kernel counters.
    async fn release(&self, held: Held) -> (Option<ssh_client::ExecOutcome>, Option<(u64, u64)>) {
        let id = self.id;
        let mut outcome = None;
        if let Some(backend) = held.backend {
            if let Some(handle) = backend.outcome {
                outcome = tokio::time::timeout(BACKEND_CLOSE_TIMEOUT, handle)
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            backend.client.close().await;
            drop(backend.io);
        }
        // The registry forgets the entry first, so no refresh puts it back once removed.
        self.shared.registry.clear_entry(id);
        if let Some(entry) = held.entry {
            let removed = self
                .shared
                .dataplane(move |f| (f.counters(&entry), f.remove(&entry)))
                .await;
            if let Some((Ok(Some((packets, bytes))), _)) = removed {
                self.shared.registry.set_counters(id, packets, bytes);
            }
            if let Some((_, Err(e))) = removed {
                warn!("[{id}] removing the UDP forwarding: {e}");
            }
        }
        if let Some(key) = held.opaque {
            // The last opaque session of its key removes the shared entry.
            if let Some(entry) = self.shared.registry.leave_opaque(id, key) {
                info!(
                    "[{id}] Removing UDP forwarding for {} (any source port): its last session ended",
                    entry.client
                );
                let removed = self.shared.dataplane(move |f| f.remove(&entry)).await;
                if let Some(Err(e)) = removed {
                    warn!("[{id}] removing the UDP forwarding: {e}");
                }
                self.shared.registry.opaque_drained(key);
            }
        }
        let forwarded = self.shared.registry.remove(id).and_then(|s| s.forwarded);
        (outcome, forwarded)
    }

    /// After the client was told how the session ended: if it was the last one, gives the
    /// memory of the burst back now, not at the next upkeep tick, on a blocking thread
    /// (`malloc_trim` of a large heap takes milliseconds; the client must not wait for it).
    fn trim_if_last(&self) {
        if self.shared.registry.is_empty() {
            drop(tokio::task::spawn_blocking(crate::heap::trim));
        }
    }

    /// The session's steps, from the client's request to the end of the transfer.
    async fn steps(
        &self,
        client_read: &mut OwnedReadHalf,
        client_write: &mut OwnedWriteHalf,
        held: &mut Held,
        close: CloseSignal,
    ) -> Finished {
        let (id, peer) = (self.id, self.peer);
        // 1. The client's SessionInit (bytes the client sent after it go to the server first).
        let mut client_frames = FrameReader::new(&mut *client_read);
        let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, client_frames.read_frame()).await;
        let (init_bytes, init) = match read {
            Err(_) => {
                return Err(SessionError::Aborted(format!(
                    "no session request within {}s",
                    HANDSHAKE_TIMEOUT.as_secs()
                )))
            }
            Ok(Err(e)) => {
                return Err(SessionError::Aborted(format!(
                    "bad session request from {peer}: {e}"
                )))
            }
            Ok(Ok(None)) => {
                return Err(SessionError::Aborted(
                    "the client closed the channel before its session request".into(),
                ))
            }
            Ok(Ok(Some(RawFrame {
                bytes,
                frame: Frame::SessionInit(init),
            }))) => (bytes, init),
            Ok(Ok(Some(_))) => {
                return Err(SessionError::Aborted(
                    "the first frame was not a session request".into(),
                ))
            }
        };
        let (_, client_leftover) = client_frames.into_parts();
        // 2. The rule, the account and key on the internal server.
        let config = self.shared.config();
        let request = Request {
            local_addr: self.local.ip(),
            requested_host: Some(init.requested_host.as_str()).filter(|h| !h.is_empty()),
            requested_port: init.requested_port,
        };
        let Some(rule) = policy::select_rule(&config.server.rproxy.rules, &request) else {
            self.shared.metrics.refused(RefusalReason::NoRule);
            return Err(SessionError::Refused(format!(
                "no rule matches this connection (to {}, host {:?}): refused",
                policy::canonical(self.local.ip()),
                init.requested_host
            )));
        };
        self.shared.registry.set_rule(id, rule.label());
        let backend_user = policy::backend_user(rule, &self.user).to_string();
        let keyfile = policy::keyfile(rule, &self.user).map_err(|e| {
            self.shared.metrics.refused(RefusalReason::UserName);
            SessionError::Refused(format!("{}: {e}", rule.label()))
        })?;
        // 3. An internal server: round robin, skipping and marking faulty ones.
        let (addr, client) = self
            .connect_backend(
                rule,
                &backend_user,
                keyfile,
                None,
                config.server.rproxy.accept_new_host_keys,
            )
            .await?;
        info!("[{id}] Established SSH connection with server {addr}");
        let (mut backend_read, mut backend_write) =
            start_command(held, client, addr, TRANSFER_COMMAND).await?;
        // 4. Forward the request unchanged; read the answer (bytes the server sent after it go
        // to the client right after the rewritten answer).
        backend_write
            .write_all(&init_bytes)
            .await
            .map_err(|e| SessionError::Aborted(format!("writing to {addr}: {e}")))?;
        let mut server_frames = FrameReader::new(&mut backend_read);
        let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, server_frames.read_frame()).await;
        let accept = match read {
            Err(_) => {
                return Err(SessionError::Aborted(format!(
                    "{addr} did not answer the session request"
                )))
            }
            Ok(Err(e)) => {
                return Err(SessionError::Aborted(format!(
                    "bad answer from {addr}: {e}"
                )))
            }
            Ok(Ok(None)) => {
                return Err(SessionError::Aborted(format!(
                    "{addr} closed the channel without answering"
                )))
            }
            Ok(Ok(Some(RawFrame {
                frame: Frame::SessionAccept(a),
                ..
            }))) => a,
            Ok(Ok(Some(RawFrame {
                bytes,
                frame: Frame::Error(e),
            }))) => {
                // The server refused (e.g. no such file): pass its words on, then end.
                let _ = client_write.write_all(&bytes).await;
                return Err(SessionError::ServerRefused(format!(
                    "{addr} refused: {}",
                    e.message
                )));
            }
            Ok(Ok(Some(_))) => {
                return Err(SessionError::Aborted(format!(
                    "{addr} answered with an unexpected frame"
                )))
            }
        };
        let (_, server_leftover) = server_frames.into_parts();
        // 5. The kernel entry, before the client learns the port.
        let entry = self
            .install(rule, &init, &accept, addr, held, close)
            .await?;
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
        Frame::SessionAccept(rewritten)
            .encode(&mut out)
            .map_err(|e| SessionError::Aborted(format!("re-encoding the answer: {e}")))?;
        client_write
            .write_all(&out)
            .await
            .map_err(|e| SessionError::Aborted(format!("writing to the client: {e}")))?;
        // 6. The control channel both ways until the server's side ends.
        let pending = relay::Pending {
            to_server: client_leftover,
            to_client: server_leftover,
        };
        self.relay_to_end(
            client_read,
            client_write,
            (backend_read, backend_write),
            pending,
            held,
        )
        .await
    }

    /// Relays the control channel both ways until the server's side ends (activity noted for
    /// the idle timeout); the server's stdin/stdout then go to `held`, open until its exit
    /// status is in.
    async fn relay_to_end(
        &self,
        client_read: &mut OwnedReadHalf,
        client_write: &mut OwnedWriteHalf,
        (mut backend_read, mut backend_write): (OwnedReadHalf, OwnedWriteHalf),
        pending: relay::Pending,
        held: &mut Held,
    ) -> Finished {
        let (id, registry) = (self.id, &self.shared.registry);
        let relayed = relay::relay(
            client_read,
            client_write,
            &mut backend_read,
            &mut backend_write,
            pending,
            || registry.touch(id),
        )
        .await;
        if let Some(backend) = held.backend.as_mut() {
            backend.io = Some((backend_read, backend_write));
        }
        relayed.map_err(SessionError::Aborted)
    }

    /// Logs in to one of the rule's internal servers, in the balancer's order; a server that
    /// fails is reported to the balancer, which marks it faulty if the failure was its own.
    /// Host keys are checked strictly against known_hosts unless `accept_new_host_keys`
    /// (`<accept_new_host_keys>` of the session's configuration) records unknown ones.
    async fn connect_backend(
        &self,
        rule: &Rule,
        user: &str,
        keyfile: PathBuf,
        only: Option<SocketAddr>,
        accept_new_host_keys: bool,
    ) -> Result<(SocketAddr, ssh_client::Client), SessionError> {
        let candidates = match only {
            Some(host) => vec![host],
            None => self.shared.balancer().pick(rule, Instant::now()),
        };
        if candidates.is_empty() {
            return Err(SessionError::Setup(format!(
                "every internal server of {} is marked faulty; try again later",
                rule.label()
            )));
        }
        let mut errors = Vec::new();
        for host in candidates {
            let cfg = ClientConfig {
                host: host.ip().to_string(),
                port: host.port(),
                user: user.to_string(),
                identities: vec![keyfile.clone()],
                password: None,
                known_hosts: self.shared.backend_known_hosts.clone(),
                policy: if accept_new_host_keys {
                    HostKeyPolicy::AcceptNew
                } else {
                    HostKeyPolicy::Strict
                },
                timeout: BACKEND_TIMEOUT,
                connect_to: None,
            };
            match ssh_client::connect(&cfg).await {
                Ok(client) => return Ok((host, client)),
                Err(e) => {
                    let why = backend_failure(host, &e);
                    warn!("[{}] internal server {host}: {why}", self.id);
                    // After the line that says why: a changed host key marks the server.
                    self.shared.balancer().record_failure(
                        host,
                        e.is_server_fault(),
                        Instant::now(),
                    );
                    errors.push(format!("{host}: {why}"));
                    if e.fails_on_every_server() {
                        break;
                    }
                }
            }
        }
        Err(SessionError::Setup(format!(
            "no internal server of {} could be reached ({})",
            rule.label(),
            errors.join("; ")
        )))
    }

    /// Reserves a client-facing port and installs the session's kernel entry. The entry is in
    /// `held` from just before the install is asked for, so it is removed however the session
    /// ends; the install itself is refused under the data plane's lock once the session was
    /// asked to end, so no entry lands after the daemon's final reconcile.
    async fn install(
        &self,
        rule: &Rule,
        init: &SessionInit,
        accept: &SessionAccept,
        backend: SocketAddr,
        held: &mut Held,
        close: CloseSignal,
    ) -> Result<SessionEntry, SessionError> {
        let client = self.peer.ip();
        let client_port = rule.src_port_filtering.then_some(init.client_udp_port);
        let preferred = if rule.proxy_port == 0 {
            accept.server_udp_port
        } else {
            rule.proxy_port
        };
        let proxy_port = self
            .shared
            .registry
            .reserve_port(
                self.id,
                client,
                client_port,
                preferred,
                PORT_SPAN,
                !rule.udp_port_reuse,
            )
            .ok_or_else(|| {
                SessionError::Setup(format!(
                    "no free client-facing UDP port from {preferred} for {client}"
                ))
            })?;
        let entry = SessionEntry {
            id: self.id,
            client,
            client_port,
            proxy_addr: policy::canonical(self.local.ip()),
            proxy_port,
            backend: SocketAddr::new(backend.ip(), accept.server_udp_port),
            tcp_backend: None,
            snat: self.shared.balancer().source_address(rule),
            lifetime: ENTRY_LIFETIME,
        };
        held.entry = Some(entry.clone());
        match self.install_entry(&entry, close).await {
            Ok(()) => {
                self.shared
                    .registry
                    .set_entry(self.id, entry.clone(), backend);
                Ok(entry)
            }
            Err(e) => {
                // Nothing of it is installed (the backends' promise): nothing to remove.
                held.entry = None;
                Err(e)
            }
        }
    }

    /// Installs `entry` in the kernel, unless the session was asked to end (checked under
    /// the data plane's lock, so no entry lands after the daemon's final reconcile). On an
    /// error nothing of it is installed.
    async fn install_entry(
        &self,
        entry: &SessionEntry,
        close: CloseSignal,
    ) -> Result<(), SessionError> {
        let to_install = entry.clone();
        let install =
            move |f: &mut dyn Forwarder| -> Result<Result<(), DataplaneError>, CloseReason> {
                match close.reason() {
                    Some(reason) => Err(reason),
                    None => Ok(f.install(&to_install)),
                }
            };
        let failed =
            |why: String| SessionError::Setup(format!("installing the UDP forwarding: {why}"));
        match self.shared.dataplane(install).await {
            Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(failed(e.to_string())),
            Some(Err(reason)) => Err(SessionError::Closed(reason)),
            None => Err(failed("the data plane thread failed".into())),
        }
    }

    /// An opaque session (IBM's `ascp -S. -V1` and kin): the rule by the proxy address alone,
    /// the group of opaque sessions sharing this client's entry (the first one picks the
    /// internal server and installs the entry, the others go to the same server), the same
    /// command on the internal server, then every byte relayed both ways unread.
    async fn opaque_steps(
        &self,
        client_read: &mut OwnedReadHalf,
        client_write: &mut OwnedWriteHalf,
        held: &mut Held,
        close: CloseSignal,
    ) -> Finished {
        let id = self.id;
        let config = self.shared.config();
        let request = Request {
            local_addr: self.local.ip(),
            requested_host: None,
            requested_port: 0,
        };
        let Some(rule) = policy::select_rule(&config.server.rproxy.rules, &request) else {
            self.shared.metrics.refused(RefusalReason::NoRule);
            return Err(SessionError::Refused(format!(
                "no rule matches this connection (to {}; IBM clients are matched by address): refused",
                policy::canonical(self.local.ip()),
            )));
        };
        let label = rule.label();
        self.shared.registry.set_rule(id, label.clone());
        let backend_user = policy::backend_user(rule, &self.user).to_string();
        let keyfile = policy::keyfile(rule, &self.user).map_err(|e| {
            self.shared.metrics.refused(RefusalReason::UserName);
            SessionError::Refused(format!("{label}: {e}"))
        })?;
        // 1. Our place in the group of this client's opaque sessions.
        let key = SessionKey {
            client: self.peer.ip(),
            client_port: None,
            proxy_port: rule.backend_udp_port,
        };
        let waited_since = Instant::now();
        let joined = loop {
            match self.shared.registry.join_opaque(id, key, &label) {
                OpaqueJoin::First => break None,
                OpaqueJoin::Member(entry, backend) => break Some((entry, backend)),
                OpaqueJoin::Conflict(why) => {
                    self.shared.metrics.refused(RefusalReason::PortConflict);
                    return Err(SessionError::Refused(why));
                }
                OpaqueJoin::Wait(mut changes) => {
                    let left = OPAQUE_WAIT.saturating_sub(waited_since.elapsed());
                    if tokio::time::timeout(left, changes.changed()).await.is_err() {
                        return Err(SessionError::Setup(format!(
                            "another session's UDP forwarding for {key} did not settle within {}s",
                            OPAQUE_WAIT.as_secs()
                        )));
                    }
                }
            }
        };
        held.opaque = Some(key);
        if let Some((_, backend)) = &joined {
            info!(
                "[{id}] Joining the live UDP forwarding of {} (any source port): same internal server {backend}",
                key.client
            );
        }
        // 2. The internal server (the group's, if it has one) and the same command there.
        let only = joined.as_ref().map(|(_, backend)| *backend);
        let (addr, client) = self
            .connect_backend(
                rule,
                &backend_user,
                keyfile,
                only,
                config.server.rproxy.accept_new_host_keys,
            )
            .await?;
        info!("[{id}] Established SSH connection with server {addr}");
        let (backend_read, backend_write) =
            start_command(held, client, addr, &self.command).await?;
        // 3. The shared kernel entry: installed by the group's first session, before a byte
        // crosses (the client learns the port from the server, inside the stream).
        let entry = match joined {
            Some((entry, _)) => entry,
            None => {
                let entry = SessionEntry {
                    id,
                    client: key.client,
                    client_port: None,
                    proxy_addr: policy::canonical(self.local.ip()),
                    proxy_port: key.proxy_port,
                    backend: SocketAddr::new(addr.ip(), rule.backend_udp_port),
                    tcp_backend: None,
                    snat: self.shared.balancer().source_address(rule),
                    lifetime: ENTRY_LIFETIME,
                };
                self.install_entry(&entry, close).await?;
                self.shared
                    .registry
                    .opaque_installed(key, entry.clone(), addr);
                entry
            }
        };
        self.shared.registry.set_entry(id, entry.clone(), addr);
        info!(
            "[{id}] Setup UDP forwarding between {}:{} (any source port) and {}",
            entry.client, entry.proxy_port, entry.backend
        );
        // 4. Every byte both ways, unread, until the server's side ends.
        self.relay_to_end(
            client_read,
            client_write,
            (backend_read, backend_write),
            relay::Pending::default(),
            held,
        )
        .await
    }
}

/// How a session's steps ended, as the metrics count it.
fn end_reason(end: &Finished) -> EndReason {
    match end {
        Ok(()) => EndReason::Completed,
        Err(SessionError::Refused(_)) => EndReason::Refused,
        Err(SessionError::Setup(_) | SessionError::ServerRefused(_) | SessionError::Aborted(_)) => {
            EndReason::Failed
        }
        Err(SessionError::Closed(CloseReason::IdleTimeout)) => EndReason::IdleTimeout,
        Err(SessionError::Closed(CloseReason::Shutdown)) => EndReason::Shutdown,
        Err(SessionError::Closed(CloseReason::Administrator)) => EndReason::ClosedByAdministrator,
    }
}

/// Starts `command` on the logged-in internal server `client` (at `addr`), kept in `held` so
/// it is released however the session ends; returns the command's stdout and stdin.
async fn start_command(
    held: &mut Held,
    client: ssh_client::Client,
    addr: SocketAddr,
    command: &str,
) -> Result<(OwnedReadHalf, OwnedWriteHalf), SessionError> {
    let backend = held.backend.insert(Backend {
        client,
        io: None,
        outcome: None,
    });
    let exec = backend
        .client
        .exec(command)
        .await
        .map_err(|e| SessionError::Setup(format!("starting {command:?} on {addr}: {e}")))?;
    backend.outcome = Some(exec.outcome);
    let stream = exec
        .stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(exec.stream))
        .map_err(|e| SessionError::Aborted(format!("local socket: {e}")))?;
    Ok(stream.into_split())
}

/// What the proxy says about an internal server `host` it could not log in to or check (a
/// session, a health check); for a host key, what the administrator can do: an unknown key
/// is recorded with `fasp-proxy trust-host` (after checking it), a changed one is shown with
/// both fingerprints.
pub fn backend_failure(host: SocketAddr, e: &ssh_client::SshError) -> String {
    match e {
        ssh_client::SshError::UnknownHostKey {
            offered,
            known_hosts,
            ..
        } => format!(
            "its host key ({offered}) is not in {}: refused; if it is the server's key, record \
             it with `fasp-proxy trust-host {host}`",
            known_hosts.display()
        ),
        ssh_client::SshError::ChangedHostKey {
            offered,
            recorded,
            known_hosts,
            line,
            ..
        } => format!(
            "HOST KEY CHANGED: {} line {line} records {recorded}, the server offered {offered}: \
             refused (someone may be answering in its place; if its key was replaced on \
             purpose: `fasp-proxy trust-host --replace {host}`)",
            known_hosts.display()
        ),
        other => other.to_string(),
    }
}

/// Sends the client an `Error` frame (best effort: it may be gone).
async fn send_error(client: &mut OwnedWriteHalf, code: ErrorCode, message: &str) {
    let mut out = Vec::new();
    let frame = Frame::Error(ErrorFrame {
        code,
        message: format!("fasp-proxy: {message}"),
    });
    if frame.encode(&mut out).is_ok() {
        let _ = client.write_all(&out).await;
    }
}
