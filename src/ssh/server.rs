//! The proxy's SSH front end (russh server): checks the client address against the allow-list
//! before any crypto, authenticates users by public key against their authorized keys, refuses
//! everything but `exec` of an allowed command, and hands each accepted command to the session
//! layer as a local byte stream. Knows nothing of the transfer protocol or of nftables.
//!
//! What a client may do, and what it gets otherwise:
//! - authentication: `publickey` (no keyboard-interactive, host-based or certificates); the
//!   user must exist locally, and the key must be listed in the file that
//!   [`FrontendConfig::authorized_keys`] names for that user (see [`authorized_key_matches`] for
//!   which `authorized_keys` options are accepted); `password` too, checked by PAM, only when
//!   [`FrontendConfig::password_pam_service`] is set;
//! - channels: `session` only; `direct-tcpip` (`ssh -L`), `x11`, agent and streamlocal channels
//!   are refused, and so are `tcpip-forward` global requests (`ssh -R`);
//! - channel requests: `exec` of a command line that is exactly one of
//!   [`FrontendConfig::allowed_commands`]; `pty-req`, `x11-req`, `env`, agent forwarding,
//!   `window-change` get a failure reply; `shell`, `subsystem` and a refused `exec` get a
//!   one-line message on stderr and exit status 1 (the request itself is answered with success,
//!   because OpenSSH's client drops the message and exits 255 on a failure reply there).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use log::{debug, info, warn};
use russh::keys::{Algorithm, HashAlg, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, Disconnect, SshId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

pub use super::access::CommandKind;
use super::access::{Access, PasswordRefusal};
pub use super::authorized_keys::{
    authorized_key_matches, expand_pattern, AUTHORIZED_KEYS_MAX, HARMLESS_OPTIONS,
};
use super::bridge::{self, Outbound};
use crate::config::{CommandShape, MaxStartups};
use crate::metrics::RefusalReason;
use crate::policy::penalties::{self, OffenceKind, SharedPenalties};
use crate::policy::sources::{SourceCounts, SourceGuard};

/// How the front end is set up (from `<rproxy>`).
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// Where to listen (`ssh_bind_address`:`ssh_port`).
    pub listen: SocketAddr,
    /// The host private key (`ssh_host_key`), OpenSSH format, unencrypted (as written by
    /// `fasp-proxy create-config`).
    pub host_key: PathBuf,
    /// A second host key (`ssh_host_rsa_key`), for clients that know only RSA host keys.
    pub rsa_host_key: Option<PathBuf>,
    /// `ssh_rsa_legacy`: ssh-rsa (SHA-1) signatures offered for the RSA host key and accepted
    /// from user keys. Off: SHA-2 only (`rsa-sha2-512`/`-256`).
    pub ssh_rsa_legacy: bool,
    /// Authorized keys path pattern (`authorized_keys_file`): `%u` user, `%h` home, `%%`.
    /// A relative result is taken relative to the user's home, as OpenSSH does.
    pub authorized_keys: String,
    /// `Some(PAM service)`: password logins are offered too, and checked by PAM with that
    /// service; `None`: public keys only (the method is not even offered).
    pub password_pam_service: Option<String>,
    /// Clients allowed to connect; empty = everyone. Checked on TCP accept, before SSH.
    pub allowed_clients: Vec<IpNet>,
    /// The exact command lines `exec` may run (e.g. `ascp --server`).
    pub allowed_commands: Vec<String>,
    /// Command shapes `exec` may run as opaque sessions (IBM's clients).
    pub opaque_commands: Vec<CommandShape>,
    /// Delay before answering a failed authentication.
    pub auth_rejection_delay: Duration,
    /// Caps and deadlines of connections that have not logged in yet.
    pub limits: LoginLimits,
    /// The daemon's penalty table: sources in it are refused at accept; offences are added.
    pub penalties: SharedPenalties,
}

/// Caps and deadlines of connections that have not logged in yet (`<rproxy>` and
/// `<server><per_source>`).
#[derive(Debug, Clone)]
pub struct LoginLimits {
    /// `<max_startups>`: random early drop over all sources.
    pub max_startups: MaxStartups,
    /// `<per_source><max_startups>`: per source; 0 = no limit.
    pub per_source: u32,
    /// `<per_source><ipv6_prefix>`: IPv6 sources count per prefix.
    pub ipv6_prefix: u8,
    /// `<banner_timeout>`, from TCP accept.
    pub banner_timeout: Duration,
    /// `<kex_timeout>`, from TCP accept.
    pub kex_timeout: Duration,
    /// `<login_grace_time>`, from TCP accept.
    pub login_grace_time: Duration,
    /// `<session_open_timeout>`, from login.
    pub session_open_timeout: Duration,
}

impl LoginLimits {
    /// The limits a configuration sets.
    pub fn from_config(config: &crate::config::Config) -> LoginLimits {
        let r = &config.server.rproxy;
        LoginLimits {
            max_startups: r.max_startups,
            per_source: config.server.per_source.max_startups,
            ipv6_prefix: config.server.per_source.ipv6_prefix,
            banner_timeout: r.banner_timeout,
            kex_timeout: r.kex_timeout,
            login_grace_time: r.login_grace_time,
            session_open_timeout: r.session_open_timeout,
        }
    }
}

impl Default for LoginLimits {
    /// The schema's defaults.
    fn default() -> Self {
        LoginLimits {
            max_startups: MaxStartups {
                start: 100,
                rate: 30,
                full: 300,
            },
            per_source: 32,
            ipv6_prefix: 64,
            banner_timeout: Duration::from_secs(5),
            kex_timeout: Duration::from_secs(10),
            login_grace_time: Duration::from_secs(30),
            session_open_timeout: Duration::from_secs(30),
        }
    }
}

/// An accepted `exec` of an allowed command, for the session layer.
pub struct ExecRequest {
    /// The authenticated user.
    pub user: String,
    /// The client's address (IPv4-mapped IPv6 addresses given as IPv4).
    pub peer: SocketAddr,
    /// The proxy address the client connected to (for rule matching; IPv4-mapped IPv6
    /// addresses given as IPv4).
    pub local: SocketAddr,
    /// The command line.
    pub command: String,
    /// How the command is run: parsed (ours) or opaque (IBM's).
    pub kind: CommandKind,
    /// The command's stdin (read) and stdout (write). Reading gives EOF when the client sends
    /// EOF (or goes away). Shutting down the write half ends stdout: the client is sent EOF
    /// when the channel is finished (after any stderr, as sshd does), because SSH allows no
    /// stderr after EOF.
    pub io: tokio::net::UnixStream,
    /// Ends the channel: sends stderr text (if any), EOF, the exit status and close.
    pub finish: ExecFinish,
}

/// What [`ExecFinish::finish`] hands to the front end that made the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// The command's exit status.
    pub exit_status: u32,
    /// Text for the client's stderr (may be empty).
    pub stderr: String,
}

/// Ends an exec channel; dropping it without calling [`ExecFinish::finish`] ends it with
/// exit status 1.
pub struct ExecFinish {
    tx: oneshot::Sender<Finish>,
}

impl ExecFinish {
    /// A finish handle for a front end other than this SSH server (the OpenSSH hand-off):
    /// the receiver gets the [`Finish`], or an error if the handle was dropped unused (which
    /// means exit status 1).
    pub fn channel() -> (ExecFinish, oneshot::Receiver<Finish>) {
        let (tx, rx) = oneshot::channel();
        (ExecFinish { tx }, rx)
    }

    /// Ends the channel: every stdout byte already written to [`ExecRequest::io`] is delivered
    /// first, then `stderr` (if not empty), EOF, `exit_status` and close. Does nothing if the
    /// client has already gone.
    pub fn finish(self, exit_status: u32, stderr: &str) {
        let _ = self.tx.send(Finish {
            exit_status,
            stderr: stderr.to_string(),
        });
    }
}

/// What the front end hands accepted commands to.
pub trait ExecHandler: Send + Sync + 'static {
    /// Called for each accepted `exec` (on the runtime; must not block).
    fn exec(&self, request: ExecRequest);

    /// Whether another session may start now (`max_sessions`); `false` refuses the exec with a
    /// clear message.
    fn admit(&self) -> bool;

    /// Told of each connection, login or command the front end refused, for the metrics.
    fn refused(&self, _reason: RefusalReason) {}
}

/// Why the front end could not start.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// The host key could not be loaded.
    #[error("SSH host key {path}: {why}")]
    HostKey {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {why}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        why: String,
    },
}

/// Most session channels open at once on one connection (OpenSSH's `MaxSessions` default).
const MAX_CHANNELS: usize = 10;

/// Most authentication attempts on one connection (OpenSSH's `MaxAuthTries` default).
const MAX_AUTH_ATTEMPTS: usize = 6;

/// Message for `ssh user@proxy` without a command.
const SHELL_REFUSED: &str = "fasp-proxy: interactive shells are not available here; \
                             this server only runs file transfers";

/// What every connection shares.
struct Shared {
    russh: Arc<russh::server::Config>,
    /// Who may connect, log in and run what.
    access: Access,
    limits: LoginLimits,
    penalties: SharedPenalties,
    handler: Arc<dyn ExecHandler>,
}

/// [`bind`] then [`Frontend::serve`].
pub async fn serve(
    config: FrontendConfig,
    handler: Arc<dyn ExecHandler>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), FrontendError> {
    bind(config, handler).await?.serve(shutdown).await
}

/// A front end whose host key is loaded and whose port is bound: it accepts connections (the
/// kernel queues them) from here on, before [`Frontend::serve`] runs.
pub struct Frontend {
    config: FrontendConfig,
    listener: TcpListener,
    /// The settings new connections take ([`FrontendUpdater`] replaces them).
    current: Arc<watch::Sender<Arc<Shared>>>,
    handler: Arc<dyn ExecHandler>,
}

/// Loads the host key and binds the port: every error that would stop the front end at start.
pub async fn bind(
    config: FrontendConfig,
    handler: Arc<dyn ExecHandler>,
) -> Result<Frontend, FrontendError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| FrontendError::Listen {
            addr: config.listen,
            why: e.to_string(),
        })?;
    with_listener(config, listener, handler)
}

/// Loads the host key and serves on `listener`, already bound (by the caller, or a test on
/// port 0); `config.listen` then only names the address in log lines.
pub fn with_listener(
    config: FrontendConfig,
    listener: TcpListener,
    handler: Arc<dyn ExecHandler>,
) -> Result<Frontend, FrontendError> {
    let shared = build_shared(&config, Arc::clone(&handler))?;
    let (current, _) = watch::channel(Arc::new(shared));
    Ok(Frontend {
        config,
        listener,
        current: Arc::new(current),
        handler,
    })
}

/// What every connection of a front end shares, from its settings: loads the host keys.
fn build_shared(
    config: &FrontendConfig,
    handler: Arc<dyn ExecHandler>,
) -> Result<Shared, FrontendError> {
    let mut keys = Vec::new();
    for path in std::iter::once(&config.host_key).chain(config.rsa_host_key.as_ref()) {
        let key = russh::keys::load_secret_key(path, None).map_err(|e| FrontendError::HostKey {
            path: path.clone(),
            why: e.to_string(),
        })?;
        keys.push(key);
    }
    let access = Access::new(
        config.authorized_keys.clone(),
        config.password_pam_service.clone(),
        config.allowed_clients.clone(),
        config.allowed_commands.clone(),
    )
    .with_opaque_commands(config.opaque_commands.clone())
    .with_ssh_rsa_legacy(config.ssh_rsa_legacy);
    let russh_config = russh::server::Config {
        server_id: SshId::Standard(
            concat!("SSH-2.0-fasp-proxy_", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods: access.methods(),
        auth_rejection_time: config.auth_rejection_delay,
        // OpenSSH opens with a "none" probe to learn the methods: nothing to hide there.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys,
        preferred: russh::Preferred {
            key: Cow::Owned(key_algorithms(config.ssh_rsa_legacy)),
            ..russh::Preferred::default()
        },
        max_auth_attempts: MAX_AUTH_ATTEMPTS,
        // The control channel of a long transfer may stay silent for hours: no inactivity
        // limit, but keepalives find clients that are gone.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    };
    Ok(Shared {
        russh: Arc::new(russh_config),
        access,
        limits: config.limits.clone(),
        penalties: Arc::clone(&config.penalties),
        handler,
    })
}

/// Changes the settings of a serving front end (a reload): connections accepted from then on
/// use the new host keys, allow-list, login methods, commands and limits; connections already
/// accepted keep theirs. The listening address is not changed here (bind a new front end).
#[derive(Clone)]
pub struct FrontendUpdater {
    current: Arc<watch::Sender<Arc<Shared>>>,
    handler: Arc<dyn ExecHandler>,
}

impl FrontendUpdater {
    /// Loads `config`'s host keys and puts it in force; on an error nothing changes.
    pub fn update(&self, config: &FrontendConfig) -> Result<(), FrontendError> {
        let shared = build_shared(config, Arc::clone(&self.handler))?;
        self.current.send_replace(Arc::new(shared));
        Ok(())
    }
}

impl Frontend {
    /// Serves until `shutdown` turns true (or its sender is dropped); returns once the
    /// listener is closed (running channels are the session layer's to end; connections still
    /// authenticating run until they finish or time out).
    pub async fn serve(self, shutdown: watch::Receiver<bool>) -> Result<(), FrontendError> {
        let Frontend {
            config,
            listener,
            current,
            ..
        } = self;
        accept_loop(config, listener, current.subscribe(), shutdown).await
    }

    /// The handle that changes this front end's settings while it serves.
    pub fn updater(&self) -> FrontendUpdater {
        FrontendUpdater {
            current: Arc::clone(&self.current),
            handler: Arc::clone(&self.handler),
        }
    }
}

async fn accept_loop(
    config: FrontendConfig,
    listener: TcpListener,
    current: watch::Receiver<Arc<Shared>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), FrontendError> {
    let startups = SourceCounts::new();
    let mut early_drops = EarlyDrops::default();
    info!(
        "SSH front end listening on {}",
        listener.local_addr().unwrap_or(config.listen)
    );

    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        let accepted = tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                warn!("SSH front end: accept on {} failed: {e}", config.listen);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = canonical(peer);
        let shared = Arc::clone(&current.borrow());
        match admit(&shared, &startups, &mut early_drops, peer.ip()) {
            Ok(guard) => {
                let local = match socket.local_addr() {
                    Ok(a) => canonical(a),
                    Err(e) => {
                        debug!("connection from {peer}: no local address: {e}");
                        continue;
                    }
                };
                debug!("TCP connection from {peer} to {local}");
                tokio::spawn(connection(socket, peer, local, shared, guard));
            }
            Err(refusal) => {
                match refusal {
                    Some(Refusal::Source(why)) => info!("Refused connection from {peer}: {why}"),
                    Some(Refusal::EarlyDrop(line)) => info!("{line}"),
                    None => {}
                }
                drop(socket);
            }
        }
    }
    info!("SSH front end on {} stopped accepting", config.listen);
    Ok(())
}

/// Why [`admit`] refused a connection, as it is logged.
enum Refusal {
    /// Because of its source (allow-list, penalty, per-source cap): logged with the source.
    Source(String),
    /// Random early drop, which may hit anyone: a count, logged without blaming this source.
    EarlyDrop(String),
}

/// Whether a new connection from `source` may start, checked before any byte of SSH: the
/// client allow-list, the source's penalty, the per-source cap (tripping it is an offence), then
/// random early drop over all sources (`<max_startups>`). `Err` holds what to log, if anything:
/// a penalised source is logged once per penalty and early drops once per period.
fn admit(
    shared: &Shared,
    startups: &Arc<SourceCounts>,
    early_drops: &mut EarlyDrops,
    source: IpAddr,
) -> Result<SourceGuard, Option<Refusal>> {
    if !shared.access.client_allowed(source) {
        shared.handler.refused(RefusalReason::AllowedClients);
        return Err(Some(Refusal::Source("not in allowed clients".into())));
    }
    let now = Instant::now();
    if let Some(refused) = penalties::lock(&shared.penalties).check(source, now) {
        shared.handler.refused(RefusalReason::Penalty);
        return Err(refused.first.then(|| {
            Refusal::Source(format!(
                "penalised for {} s more after {} offences; its further connections are refused \
                 without a log line until then",
                whole_seconds(refused.remaining),
                refused.offences
            ))
        }));
    }
    let limits = &shared.limits;
    let key = penalties::source_key(source, limits.ipv6_prefix);
    let (total, from_source) = startups.counts(key);
    if limits.per_source > 0 && from_source >= limits.per_source {
        shared.handler.refused(RefusalReason::SourceCap);
        let offence =
            penalties::lock(&shared.penalties).offence(source, OffenceKind::SourceCap, now);
        return Err(Some(Refusal::Source(format!(
            "{from_source} connections from this source are already logging in (<per_source>\
             <max_startups> {}){}",
            limits.per_source,
            offence.map_or(String::new(), |o| format!(
                "; penalised for {} s (offence {})",
                whole_seconds(o.penalty),
                o.count
            ))
        ))));
    }
    let chance = limits.max_startups.drop_percent(total);
    if chance >= 100 || (chance > 0 && fastrand::u32(0..100) < chance) {
        shared.handler.refused(RefusalReason::MaxStartups);
        return Err(early_drops
            .dropped(now, total, limits.max_startups)
            .map(Refusal::EarlyDrop));
    }
    Ok(startups.take(key))
}

/// Seconds, rounded up.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// How often random early drops are logged (the first one at once, then a count per period).
const EARLY_DROP_LOG_PERIOD: Duration = Duration::from_secs(10);

/// Random early drops since the last log line.
#[derive(Debug, Default)]
struct EarlyDrops {
    since_logged: u64,
    logged_at: Option<Instant>,
}

impl EarlyDrops {
    /// Counts a drop; the line to log, at most one per [`EARLY_DROP_LOG_PERIOD`].
    fn dropped(&mut self, now: Instant, total: u32, max: MaxStartups) -> Option<String> {
        self.since_logged += 1;
        if self
            .logged_at
            .is_some_and(|at| now.saturating_duration_since(at) < EARLY_DROP_LOG_PERIOD)
        {
            return None;
        }
        let n = std::mem::take(&mut self.since_logged);
        self.logged_at = Some(now);
        Some(format!(
            "Random early drop: {total} connections are logging in (<max_startups> {max}: {}% \
             of new ones dropped); {n} new connections dropped since the last such line",
            max.drop_percent(total)
        ))
    }
}

/// `addr` with an IPv4-mapped IPv6 address given as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// How far a connection has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Versions exchanged; key exchange under way.
    Connected,
    /// Key exchange done: the client asked to log in.
    KeysExchanged,
    /// Logged in.
    LoggedIn,
    /// A command was accepted.
    Running,
}

/// Runs one SSH connection: each login step within its deadline (`<banner_timeout>`,
/// `<kex_timeout>`, `<login_grace_time>` from accept, `<session_open_timeout>` from login),
/// then until the client leaves. A connection that ends before logging in is an offence of its
/// source (failed login, no login attempt, or too slow).
async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shared: Arc<Shared>,
    guard: SourceGuard,
) {
    let accepted = Instant::now();
    let limits = shared.limits.clone();
    let (stage_tx, mut stage) = watch::channel(Stage::Connected);
    let attempted = Arc::new(AtomicBool::new(false));
    let handler = Connection {
        shared: Arc::clone(&shared),
        peer,
        local,
        user: None,
        stage: stage_tx,
        attempted: Arc::clone(&attempted),
        channels: HashMap::new(),
    };
    let offend = |kind: OffenceKind| {
        match kind {
            OffenceKind::AuthFailure => shared.handler.refused(RefusalReason::AuthFailure),
            OffenceKind::GraceExceeded => shared.handler.refused(RefusalReason::LoginTimeout),
            _ => {}
        }
        penalties::lock(&shared.penalties).offend(peer.ip(), kind, Instant::now());
    };
    // A second handle on the socket, to cut a connection russh's task still holds: its
    // disconnect waits for a key exchange that a stalling client never finishes.
    let cutter = socket.as_fd().try_clone_to_owned().ok();
    let cut = || {
        if let Some(fd) = &cutter {
            let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
    };
    let starting = russh::server::run_stream(Arc::clone(&shared.russh), socket, handler);
    let running = match tokio::time::timeout_at(accepted + limits.banner_timeout, starting).await {
        Err(_) => {
            info!(
                "{peer}: no SSH version line within {} s; closed",
                limits.banner_timeout.as_secs()
            );
            offend(OffenceKind::GraceExceeded);
            return;
        }
        Ok(Err(e)) => {
            debug!("{peer}: SSH start failed: {e}");
            offend(OffenceKind::NoAuth);
            return;
        }
        Ok(Ok(r)) => r,
    };
    let handle = running.handle();
    tokio::pin!(running);
    let ended_early = |ended: Result<(), russh::Error>| {
        match ended {
            Ok(()) => debug!("{peer}: closed before logging in"),
            Err(russh::Error::NoCommonAlgo { kind, ours, theirs }) => {
                info!("{}", no_common_algorithm(peer, kind, &ours, &theirs));
            }
            Err(e) => debug!("{peer}: closed before logging in: {e}"),
        }
        offend(if attempted.load(Ordering::Acquire) {
            OffenceKind::AuthFailure
        } else {
            OffenceKind::NoAuth
        });
    };
    // Each step before logging in: key exchange, then login.
    for (wanted, deadline, what) in [
        (
            Stage::KeysExchanged,
            accepted + limits.kex_timeout,
            "key exchange not done within",
        ),
        (
            Stage::LoggedIn,
            accepted + limits.login_grace_time,
            "not logged in within",
        ),
    ] {
        let reached = tokio::select! {
            ended = &mut running => {
                ended_early(ended);
                return;
            }
            reached = tokio::time::timeout_at(deadline, stage.wait_for(|s| *s >= wanted)) => {
                reached.map(|r| r.is_ok())
            }
        };
        match reached {
            Ok(true) => {}
            // The handler is gone: the connection ended (e.g. the handshake failed); say why.
            Ok(false) => {
                let ended = tokio::time::timeout(Duration::from_secs(5), &mut running).await;
                ended_early(ended.unwrap_or(Ok(())));
                return;
            }
            Err(_) => {
                let secs = deadline.saturating_duration_since(accepted).as_secs();
                info!("{peer}: {what} {secs} s of connecting; closing");
                offend(OffenceKind::GraceExceeded);
                // Its slot is free from now, however long the closing takes.
                drop(guard);
                let keys_exchanged = *stage.borrow() >= Stage::KeysExchanged;
                close_stuck(&handle, running, cut, "login time exceeded", keys_exchanged).await;
                return;
            }
        }
    }
    drop(guard);
    // Logged in: a command must follow.
    let started = tokio::select! {
        ended = &mut running => {
            log_end(peer, ended);
            return;
        }
        started = tokio::time::timeout(
            limits.session_open_timeout,
            stage.wait_for(|s| *s >= Stage::Running),
        ) => started.map(|r| r.is_ok()),
    };
    if started.is_err() {
        info!(
            "{peer}: logged in but started no command within {} s; closing",
            limits.session_open_timeout.as_secs()
        );
        close_stuck(&handle, running, cut, "no command started", true).await;
        return;
    }
    log_end(peer, running.await);
}

fn log_end(peer: SocketAddr, ended: Result<(), russh::Error>) {
    match ended {
        Ok(()) => debug!("{peer}: SSH connection closed"),
        Err(e) => debug!("{peer}: SSH connection ended: {e}"),
    }
}

/// Ends a connection russh's task still runs. After the key exchange it asks russh to
/// disconnect (saying `why`) and waits a little; before it (a client stalling in the key
/// exchange never lets the message out), or if that did not end it, `cut` shuts the socket down.
async fn close_stuck(
    handle: &russh::server::Handle,
    mut running: std::pin::Pin<&mut russh::server::RunningSession<Connection>>,
    cut: impl FnOnce(),
    why: &str,
    keys_exchanged: bool,
) {
    if keys_exchanged {
        let disconnect = handle.disconnect(Disconnect::ByApplication, why.into(), "en".into());
        let _ = tokio::time::timeout(Duration::from_millis(500), disconnect).await;
        if tokio::time::timeout(Duration::from_millis(500), &mut running)
            .await
            .is_ok()
        {
            return;
        }
    }
    cut();
    let _ = tokio::time::timeout(Duration::from_secs(5), running).await;
}

/// One connection's russh handler.
struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    local: SocketAddr,
    /// The authenticated user.
    user: Option<String>,
    /// How far the connection has come.
    stage: watch::Sender<Stage>,
    /// Whether the client has tried a login method other than "none".
    attempted: Arc<AtomicBool>,
    /// Session channels opened and not yet given a command.
    channels: HashMap<ChannelId, Channel<Msg>>,
}

/// Moves `stage` forward to `to` (never back); whether it moved.
fn advance(stage: &mut Stage, to: Stage) -> bool {
    let moved = *stage < to;
    if moved {
        *stage = to;
    }
    moved
}

impl Connection {
    /// A login request arrived: the key exchange is done; `attempt` if it was a real method
    /// (not the "none" probe).
    fn login_step(&self, attempt: bool) {
        if attempt {
            self.attempted.store(true, Ordering::Release);
        }
        self.stage
            .send_if_modified(|s| advance(s, Stage::KeysExchanged));
    }

    /// Whether `key` may log in as `user` ([`Access::check_key`]; why not goes to the debug log).
    async fn key_allowed(&self, user: &str, key: &PublicKey) -> bool {
        match self.shared.access.check_key(user, key).await {
            Ok(()) => true,
            Err(why) => {
                debug!("{}: key {} for {user}: {why}", self.peer, fingerprint(key));
                false
            }
        }
    }

    /// Ends a channel on which nothing will run: answers the pending `shell` / `subsystem` /
    /// `exec` request with success, then `message` on stderr, EOF, exit status 1 and close.
    ///
    /// Success, not failure: OpenSSH's client treats a failed `shell` or `exec` request as the
    /// end of the session (exit 255) and drops whatever stderr it had not yet written, so a
    /// failure reply would hide the message. This is what restricted shells do too.
    fn refuse(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
        message: &str,
    ) -> Result<(), russh::Error> {
        self.channels.remove(&channel);
        session.channel_success(channel)?;
        session.extended_data(channel, 1, format!("{message}\n").into_bytes())?;
        session.eof(channel)?;
        session.exit_status_request(channel, 1)?;
        session.close(channel)
    }

    fn commands_list(&self) -> String {
        self.shared.access.commands_list()
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        self.login_step(false);
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        self.login_step(true);
        let access = &self.shared.access;
        match access.check_password(user, password, self.peer.ip()).await {
            Ok(()) => {
                info!("{}: accepted password for {user}", self.peer);
                self.user = Some(user.to_string());
                Ok(Auth::Accept)
            }
            Err(PasswordRefusal::NotEnabled) => {
                info!(
                    "{}: password authentication refused for {user}: not enabled",
                    self.peer
                );
                Ok(Auth::reject())
            }
            Err(e) => {
                warn!("{}: refused password for {user}: {e}", self.peer);
                // Auth::reject() would stop offering `password` on this connection: one typo
                // and the user must reconnect. Keep offering both (within the attempt limit).
                Ok(Auth::Reject {
                    proceed_with_methods: Some(access.methods()),
                    partial_success: false,
                })
            }
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.login_step(true);
        if !self.shared.access.signature_allowed(offer.algorithm) {
            info!(
                "{}: refused publickey for {user} ({}): ssh-rsa (SHA-1) signatures are off; \
                 <ssh_rsa_legacy>true</ssh_rsa_legacy> allows them (IBM ascp 3.x needs it)",
                self.peer,
                fingerprint(offer.public_key)
            );
            return Ok(Auth::reject());
        }
        if self.key_allowed(user, offer.public_key).await {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.login_step(true);
        // Checked again: a client may sign without probing first.
        if !self.shared.access.signature_allowed(key.algorithm) {
            info!(
                "{}: refused publickey for {user} ({}): ssh-rsa (SHA-1) signatures are off",
                self.peer,
                fingerprint(key.public_key)
            );
            return Ok(Auth::reject());
        }
        if self.key_allowed(user, key.public_key).await {
            info!(
                "{}: accepted publickey for {user} ({})",
                self.peer,
                fingerprint(key.public_key)
            );
            self.user = Some(user.to_string());
            Ok(Auth::Accept)
        } else {
            info!(
                "{}: refused publickey for {user} ({})",
                self.peer,
                fingerprint(key.public_key)
            );
            Ok(Auth::reject())
        }
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        _certificate: &russh::keys::Certificate,
    ) -> Result<Auth, Self::Error> {
        self.login_step(true);
        info!(
            "{}: certificate authentication refused for {user}",
            self.peer
        );
        Ok(Auth::reject())
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        _response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        self.login_step(true);
        Ok(Auth::reject())
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.stage.send_if_modified(|s| advance(s, Stage::LoggedIn));
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channels.len() >= MAX_CHANNELS {
            info!("{}: too many session channels; refused one", self.peer);
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        info!(
            "{}: port forwarding to {host_to_connect}:{port_to_connect} refused",
            self.peer
        );
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_forwarded_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        info!(
            "{}: remote port forwarding of {address}:{port} refused",
            self.peer
        );
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        _socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(false)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        info!("{}: shell refused", self.peer);
        self.shared
            .handler
            .refused(RefusalReason::CommandNotAllowed);
        let message = format!("{SHELL_REFUSED}; only {} may run", self.commands_list());
        self.refuse(channel, session, &message)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        info!("{}: subsystem {name:?} refused", self.peer);
        self.shared
            .handler
            .refused(RefusalReason::CommandNotAllowed);
        let message = format!(
            "fasp-proxy: subsystem {name} is not available; only {} may run",
            self.commands_list()
        );
        self.refuse(channel, session, &message)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        let (Some(user), true) = (self.user.clone(), self.channels.contains_key(&channel)) else {
            // A second command on a channel already in use.
            return session.channel_failure(channel);
        };
        let Some(kind) = self.shared.access.classify(&command) else {
            info!("{}: {user}: command not allowed: {command:?}", self.peer);
            self.shared
                .handler
                .refused(RefusalReason::CommandNotAllowed);
            let message = format!(
                "fasp-proxy: command not allowed: {}; only {} may run",
                printable(&command),
                self.commands_list()
            );
            return self.refuse(channel, session, &message);
        };
        if !self.shared.handler.admit() {
            info!("{}: {user}: session refused: too many sessions", self.peer);
            self.shared.handler.refused(RefusalReason::TooManySessions);
            return self.refuse(
                channel,
                session,
                "fasp-proxy: too many sessions, try again later",
            );
        }
        let (ours, theirs) = match tokio::net::UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => {
                warn!("{}: {user}: local socket pair: {e}", self.peer);
                return self.refuse(
                    channel,
                    session,
                    "fasp-proxy: internal error, try again later",
                );
            }
        };
        let Some(ssh_channel) = self.channels.remove(&channel) else {
            return session.channel_failure(channel);
        };
        session.channel_success(channel)?;
        self.stage.send_if_modified(|s| advance(s, Stage::Running));
        let (finish_tx, finish_rx) = oneshot::channel();
        tokio::spawn(run_exec(ssh_channel, ours, finish_rx));
        self.shared.handler.exec(ExecRequest {
            user,
            peer: self.peer,
            local: self.local,
            command,
            kind,
            io: theirs,
            finish: ExecFinish { tx: finish_tx },
        });
        Ok(())
    }
}

/// Bridges an accepted exec channel to the session layer's socket until it is finished or the
/// client goes away. Order towards the client: stdout data, stderr, EOF, exit status, close.
async fn run_exec(
    channel: Channel<Msg>,
    local: tokio::net::UnixStream,
    mut finish: oneshot::Receiver<Finish>,
) {
    let (rx, tx) = channel.split();
    let (mut local_read, local_write) = local.into_split();
    let inbound = bridge::inbound(rx, local_write, false, |_| {});
    let outbound = async move {
        let received = match bridge::outbound(&tx, &mut local_read, &mut finish).await {
            Outbound::ChannelGone => return,
            // stdout ended; EOF waits for the finish, as stderr may still come.
            Outbound::LocalEof => (&mut finish).await,
            Outbound::Stopped(received) => {
                // The session wrote its last stdout bytes before finishing: take what the
                // socket holds now, without waiting for more.
                let mut buf = vec![0u8; bridge::CHUNK];
                while let Some(n) = drain_now(&local_read, &mut buf) {
                    if tx.data_bytes(buf[..n].to_vec()).await.is_err() {
                        return;
                    }
                }
                received
            }
        };
        // Dropped without finishing: exit status 1.
        let Finish {
            exit_status,
            stderr,
        } = received.unwrap_or(Finish {
            exit_status: 1,
            stderr: String::new(),
        });
        if !stderr.is_empty() {
            let _ = tx.extended_data_bytes(1, stderr.into_bytes()).await;
        }
        let _ = tx.eof().await;
        let _ = tx.exit_status(exit_status).await;
        let _ = tx.close().await;
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}

/// Reads what is already buffered in `local` without waiting (the writer finished before).
fn drain_now(local: &tokio::net::unix::OwnedReadHalf, buf: &mut [u8]) -> Option<usize> {
    let fd = local.as_ref().as_raw_fd();
    match nix::sys::socket::recv(fd, buf, nix::sys::socket::MsgFlags::MSG_DONTWAIT) {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

/// The host key and user key signature algorithms the front end offers and accepts: russh's
/// defaults (Ed25519, ECDSA, RSA with SHA-2), and ssh-rsa (SHA-1) only with `legacy`.
fn key_algorithms(legacy: bool) -> Vec<Algorithm> {
    russh::Preferred::default()
        .key
        .iter()
        .filter(|a| legacy || **a != (Algorithm::Rsa { hash: None }))
        .cloned()
        .collect()
}

/// The log line for a handshake that found no common algorithm, with the fix when the client
/// knows only ssh-rsa (IBM ascp 3.x).
fn no_common_algorithm(
    peer: SocketAddr,
    kind: russh::AlgorithmKind,
    ours: &[String],
    theirs: &[String],
) -> String {
    let kind = match kind {
        russh::AlgorithmKind::Kex => "key exchange",
        russh::AlgorithmKind::Key => "host key",
        russh::AlgorithmKind::Cipher => "cipher",
        russh::AlgorithmKind::Compression => "compression",
        russh::AlgorithmKind::Mac => "MAC",
    };
    let mut line = format!(
        "{peer}: SSH handshake failed: no common {kind} algorithm (client offers {}; we offer {})",
        theirs.join(","),
        ours.join(",")
    );
    if theirs.iter().any(|a| a == "ssh-rsa") {
        line.push_str(
            "; the client knows only ssh-rsa (SHA-1), as IBM ascp 3.x does: \
             <ssh_rsa_legacy>true</ssh_rsa_legacy> with an <ssh_host_rsa_key> lets it in",
        );
    }
    line
}

/// `command` with control characters escaped and cut to a sensible length, for a one-line
/// message.
fn printable(command: &str) -> String {
    const MAX: usize = 200;
    let escaped = command.escape_debug().to_string();
    match escaped.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &escaped[..cut]),
        None => escaped,
    }
}

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_commands() {
        assert_eq!(printable("cat /etc/shadow"), "cat /etc/shadow");
        assert_eq!(printable("a\nb"), "a\\nb");
        let long = "x".repeat(1000);
        assert_eq!(printable(&long), format!("{}...", "x".repeat(200)));
    }
}
