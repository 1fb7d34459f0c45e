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
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use log::{debug, info, warn};
use russh::keys::{Algorithm, HashAlg, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, Disconnect, SshId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

pub use super::access::CommandKind;
use super::access::{Access, PasswordRefusal};
pub use super::authorized_keys::{
    authorized_key_matches, expand_pattern, AUTHORIZED_KEYS_MAX, HARMLESS_OPTIONS,
};
use super::bridge::{self, Outbound};
use crate::config::CommandShape;

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
    /// Most connections not yet authenticated at once; more are closed on accept (0 counts
    /// as 1).
    pub max_unauthenticated: usize,
    /// Delay before answering a failed authentication.
    pub auth_rejection_delay: Duration,
    /// A connection must authenticate within this time (counted from TCP accept).
    pub auth_timeout: Duration,
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

/// What [`ExecFinish::finish`] hands to the channel's bridge.
struct Finish {
    exit_status: u32,
    stderr: String,
}

/// Ends an exec channel; dropping it without calling [`ExecFinish::finish`] ends it with
/// exit status 1.
pub struct ExecFinish {
    tx: oneshot::Sender<Finish>,
}

impl ExecFinish {
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
    auth_timeout: Duration,
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
    shared: Arc<Shared>,
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
    let shared = Arc::new(Shared {
        russh: Arc::new(russh_config),
        access,
        auth_timeout: config.auth_timeout,
        handler,
    });
    Ok(Frontend {
        config,
        listener,
        shared,
    })
}

impl Frontend {
    /// Serves until `shutdown` turns true (or its sender is dropped); returns once the
    /// listener is closed (running channels are the session layer's to end; connections still
    /// authenticating run until they finish or time out).
    pub async fn serve(self, shutdown: watch::Receiver<bool>) -> Result<(), FrontendError> {
        let Frontend {
            config,
            listener,
            shared,
        } = self;
        accept_loop(config, listener, shared, shutdown).await
    }
}

async fn accept_loop(
    config: FrontendConfig,
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), FrontendError> {
    let unauthenticated = Arc::new(AtomicUsize::new(0));
    let max_unauthenticated = config.max_unauthenticated.max(1);
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
        if !shared.access.client_allowed(peer.ip()) {
            info!("Refused connection from {peer}: not in allowed clients");
            drop(socket);
            continue;
        }
        let guard = match UnauthGuard::take(&unauthenticated, max_unauthenticated) {
            Some(g) => g,
            None => {
                warn!(
                    "Refused connection from {peer}: {max_unauthenticated} connections are \
                     already authenticating"
                );
                drop(socket);
                continue;
            }
        };
        let local = match socket.local_addr() {
            Ok(a) => canonical(a),
            Err(e) => {
                debug!("connection from {peer}: no local address: {e}");
                continue;
            }
        };
        debug!("TCP connection from {peer} to {local}");
        tokio::spawn(connection(socket, peer, local, Arc::clone(&shared), guard));
    }
    info!("SSH front end on {} stopped accepting", config.listen);
    Ok(())
}

/// `addr` with an IPv4-mapped IPv6 address given as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Counts a connection as unauthenticated until dropped.
struct UnauthGuard(Arc<AtomicUsize>);

impl UnauthGuard {
    fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        let taken = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        });
        taken.ok().map(|_| UnauthGuard(Arc::clone(counter)))
    }
}

impl Drop for UnauthGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs one SSH connection: the authentication deadline, then until the client leaves.
async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shared: Arc<Shared>,
    guard: UnauthGuard,
) {
    let deadline = tokio::time::Instant::now() + shared.auth_timeout;
    let (authed_tx, mut authed_rx) = watch::channel(false);
    let handler = Connection {
        shared: Arc::clone(&shared),
        peer,
        local,
        user: None,
        authed: authed_tx,
        channels: HashMap::new(),
    };
    let starting = russh::server::run_stream(Arc::clone(&shared.russh), socket, handler);
    let running = match tokio::time::timeout_at(deadline, starting).await {
        Err(_) => {
            info!("{peer}: no SSH identification within the authentication time; closed");
            return;
        }
        Ok(Err(e)) => {
            debug!("{peer}: SSH start failed: {e}");
            return;
        }
        Ok(Ok(r)) => r,
    };
    let handle = running.handle();
    tokio::pin!(running);
    let ended_early = |ended: Result<(), russh::Error>| match ended {
        Ok(()) => debug!("{peer}: closed before authenticating"),
        Err(russh::Error::NoCommonAlgo { kind, ours, theirs }) => {
            info!("{}", no_common_algorithm(peer, kind, &ours, &theirs));
        }
        Err(e) => debug!("{peer}: closed before authenticating: {e}"),
    };
    let waited = tokio::select! {
        ended = &mut running => {
            ended_early(ended);
            return;
        }
        waited = tokio::time::timeout_at(deadline, authed_rx.wait_for(|a| *a)) => {
            waited.map(|r| r.is_ok())
        }
    };
    let authed = match waited {
        Ok(true) => true,
        // The handler is gone: the connection ended (e.g. the handshake failed); say why.
        Ok(false) => {
            let ended = tokio::time::timeout(Duration::from_secs(5), &mut running).await;
            ended_early(ended.unwrap_or(Ok(())));
            return;
        }
        Err(_) => false,
    };
    if !authed {
        info!(
            "{peer}: not authenticated within {}s; closing",
            shared.auth_timeout.as_secs_f32()
        );
        let _ = handle
            .disconnect(
                Disconnect::ByApplication,
                "authentication timeout".into(),
                "en".into(),
            )
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(5), running).await;
        return;
    }
    drop(guard);
    match running.await {
        Ok(()) => debug!("{peer}: SSH connection closed"),
        Err(e) => debug!("{peer}: SSH connection ended: {e}"),
    }
}

/// One connection's russh handler.
struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    local: SocketAddr,
    /// The authenticated user.
    user: Option<String>,
    /// Turns true on successful authentication.
    authed: watch::Sender<bool>,
    /// Session channels opened and not yet given a command.
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl Connection {
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
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
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
        Ok(Auth::reject())
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        let _ = self.authed.send(true);
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
            let message = format!(
                "fasp-proxy: command not allowed: {}; only {} may run",
                printable(&command),
                self.commands_list()
            );
            return self.refuse(channel, session, &message);
        };
        if !self.shared.handler.admit() {
            info!("{}: {user}: session refused: too many sessions", self.peer);
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
