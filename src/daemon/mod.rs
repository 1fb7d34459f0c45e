//! The daemon behind `fasp-proxy run`, as a library: [`serve`] runs the reverse proxy on
//! listeners and a data plane it is handed, until a shutdown future resolves; the binary does
//! the configuration, logging, the runtime and the binding (mini-redis's `server::run` split),
//! so tests run the whole daemon in-process, with an in-memory data plane and paused time.
//!
//! While it serves, it refreshes live entries, ends idle sessions, and answers
//! `fasp-proxy sessions`; on shutdown it closes every session (at whatever step each is) through
//! the registry's close handles, waits for their tasks to end, and removes every entry left.

pub mod control;
pub mod health;
pub mod logging;
pub mod notify;
pub mod reload;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ForwardingType};
use crate::dataplane::{self, Backend, Forwarder};
use crate::forward::api::ApiLimits;
use crate::metrics::Metrics;
use crate::policy::penalties::SharedPenalties;
use crate::session::registry::CloseReason;
use crate::session::{self, Sessions, Shared};
use crate::ssh::handoff::{self, HandoffConfig};
use crate::ssh::server::{self as frontend, FrontendConfig, FrontendError, LoginLimits};
use crate::sysctl;

/// How long shutdown waits for sessions to end before removing what is left.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often live entries are refreshed, their counters read and idle sessions ended (at most
/// a third of an entry's lifetime).
pub const UPKEEP_PERIOD: Duration = Duration::from_secs(5);
/// Delay before a refused authentication is answered.
pub const AUTH_REJECTION_DELAY: Duration = Duration::from_secs(1);

/// Why the daemon could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The data plane could not be readied (forwarding sysctls, the backend, its tables, the
    /// removal of a previous run's entries).
    #[error("{0}")]
    Dataplane(String),
    /// The SSH front end could not start (its host key, its port).
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    /// The SSH front end stopped while the daemon was running.
    #[error("{0}")]
    FrontendStopped(String),
}

/// What [`serve`] runs on: prepared by the binary (or by a test).
pub struct Setup {
    /// The configuration (already validated).
    pub config: Arc<Config>,
    /// The data plane, prepared ([`prepare_dataplane`]) or in memory.
    pub forwarder: Box<dyn Forwarder>,
    /// The SSH front end's listening socket (the reverse proxy); `None` when it is off.
    pub ssh_listener: Option<TcpListener>,
    /// The forward proxy's API listeners; `None` when it is off.
    pub api: Option<ApiSetup>,
    /// The control socket for `fasp-proxy sessions` ([`control::bind`]), if any.
    pub control_listener: Option<UnixListener>,
    /// The metrics listener (`<enable_metrics>`), served by [`crate::metrics::http::serve`];
    /// `None` when metrics are off.
    pub metrics_listener: Option<TcpListener>,
    /// The OpenSSH deployment mode's hand-off socket ([`crate::ssh::handoff::bind`]), where
    /// `aspshell` hands sessions over; `None` when `<frontend>` does not include `openssh`.
    pub handoff_listener: Option<UnixListener>,
    /// The known_hosts file for the internal servers' host keys.
    pub backend_known_hosts: PathBuf,
    /// The penalty table the SSH front end and the API share
    /// (`Penalties::new(PenaltySettings::from_config(..))`).
    pub penalties: SharedPenalties,
    /// Where reload requests come from and which file they read; `None` = no reloads.
    pub reload: Option<reload::ReloadSetup>,
}

/// What the forward proxy's API serves on.
pub struct ApiSetup {
    /// The HTTP listener (`<enable_http>`, `<http_port>`).
    pub http: Option<TcpListener>,
    /// The HTTPS listener and its TLS acceptor (`<enable_https>`, `<https_port>`).
    pub https: Option<(TcpListener, TlsAcceptor)>,
    /// The node-API users file.
    pub users_path: PathBuf,
    /// The API's limits.
    pub limits: ApiLimits,
}

/// Where the internal servers' host keys are kept: `known_hosts` beside the configuration.
pub fn backend_known_hosts(config_path: &Path) -> PathBuf {
    crate::config::beside(config_path, "known_hosts")
}

/// Opens and readies the kernel data plane (blocking): IP forwarding, conntrack accounting,
/// the proxy's tables, and the removal of a previous life's entries.
pub fn prepare_dataplane(config: &Config) -> Result<Box<dyn Forwarder>, DaemonError> {
    let (v4, v6) = config.server.forwarded_families();
    let changes = sysctl::ensure_forwarding(v4, v6, config.server.enable_ip_forwarding)
        .map_err(|e| DaemonError::Dataplane(e.to_string()))?;
    for change in changes {
        info!("{change}");
    }
    // Per-session byte and packet counters for `fasp-proxy sessions`.
    if sysctl::enable_conntrack_accounting().is_err() {
        warn!(
            "could not turn on conntrack accounting: `fasp-proxy sessions` will show no counters"
        );
    }
    let backend = match config.server.forwarding_type {
        ForwardingType::Nftables => Backend::Nftables,
        ForwardingType::Iptables => Backend::Iptables,
    };
    let mut forwarder = dataplane::open(backend, &config.server.iptables_path)
        .map_err(|e| DaemonError::Dataplane(e.to_string()))?;
    if config.server.fast_path {
        // One map entry per session: more than <max_sessions> cannot be live.
        let capacity = config.server.rproxy.max_sessions.max(1);
        forwarder = Box::new(
            dataplane::fast_path::FastPathForwarder::open(forwarder, capacity)
                .map_err(|e| DaemonError::Dataplane(format!("<fast_path>: {e}")))?,
        );
    }
    forwarder
        .prepare()
        .map_err(|e| DaemonError::Dataplane(format!("preparing {}: {e}", forwarder.kind())))?;
    let report = forwarder
        .reconcile(&[])
        .map_err(|e| DaemonError::Dataplane(format!("removing entries of a previous run: {e}")))?;
    if !report.removed.is_empty() {
        info!(
            "removed {} forwarding entries left by a previous run",
            report.removed.len()
        );
    }
    Ok(forwarder)
}

/// The front end's settings, from the configuration.
pub(crate) fn frontend_config(config: &Config, penalties: &SharedPenalties) -> FrontendConfig {
    let rproxy = &config.server.rproxy;
    FrontendConfig {
        listen: rproxy.ssh_listen,
        host_key: rproxy.ssh_host_key.clone(),
        rsa_host_key: rproxy.ssh_host_rsa_key.clone(),
        ssh_rsa_legacy: rproxy.ssh_rsa_legacy,
        authorized_keys: rproxy.authorized_keys_file.clone(),
        password_pam_service: rproxy
            .password_authentication
            .then(|| rproxy.pam_service.clone()),
        allowed_clients: rproxy.allowed_clients.clone(),
        allowed_commands: vec![session::TRANSFER_COMMAND.to_string()],
        opaque_commands: rproxy.opaque_commands.clone(),
        auth_rejection_delay: AUTH_REJECTION_DELAY,
        limits: LoginLimits::from_config(config),
        penalties: Arc::clone(penalties),
    }
}

/// The hand-off front end's settings: the same allow-list and commands as the SSH front end.
pub(crate) fn handoff_config(config: &Config) -> HandoffConfig {
    let rproxy = &config.server.rproxy;
    HandoffConfig {
        allowed_clients: rproxy.allowed_clients.clone(),
        allowed_commands: vec![session::TRANSFER_COMMAND.to_string()],
        opaque_commands: rproxy.opaque_commands.clone(),
    }
}

/// Serves the reverse proxy (when given its SSH listener) and the forward proxy (when given its
/// API listeners) until `shutdown` resolves (or the front end fails), then closes every session
/// and forwarding and removes every entry. Says READY=1 to systemd once serving. Reload
/// requests (`setup.reload`) are carried out one at a time ([`reload::handle`]).
pub async fn serve(setup: Setup, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let Setup {
        config,
        forwarder,
        ssh_listener,
        api,
        control_listener,
        metrics_listener,
        handoff_listener,
        backend_known_hosts,
        penalties,
        reload: reload_setup,
    } = setup;
    let metrics = Arc::new(Metrics::new());
    let kind = forwarder.kind();
    let shared = Arc::new(Shared::new(
        Arc::clone(&config),
        forwarder,
        backend_known_hosts,
        Arc::clone(&metrics),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let handler: Arc<dyn frontend::ExecHandler> = Arc::new(Sessions(Arc::clone(&shared)));
    let mut listeners = reload::Listeners::new(Arc::clone(&handler));
    // A bad host key fails the start, before READY=1.
    if let Some(ssh_listener) = ssh_listener {
        let run = reload::start_frontend(&config, &penalties, ssh_listener, Arc::clone(&handler))?;
        info!(
            "fasp-proxy {} listening on {} ({} rules, forwarding via {kind})",
            env!("CARGO_PKG_VERSION"),
            run.served.addr,
            config.server.rproxy.rules.len(),
        );
        listeners.frontend = Some(run);
    }
    let handoff_task = handoff_listener.map(|listener| {
        info!(
            "fasp-proxy {} accepting sessions from OpenSSH's sshd through aspshell ({} rules, forwarding via {kind})",
            env!("CARGO_PKG_VERSION"),
            config.server.rproxy.rules.len(),
        );
        let (settings, settings_rx) = watch::channel(handoff_config(&config));
        listeners.handoff = Some(settings);
        tokio::spawn(handoff::serve(
            settings_rx,
            listener,
            Arc::clone(&handler),
            stop_rx.clone(),
        ))
    });
    if let Some(api) = api {
        listeners.start_api(&config, &shared, &penalties, api);
    }
    let forward = listeners.api.as_ref().map(|a| Arc::clone(&a.service));
    listeners.metrics =
        metrics_listener.map(|listener| reload::serve_metrics(listener, &shared, forward.clone()));
    let (reload_path, mut reload_requests, reload_sender) = match reload_setup {
        Some(r) => (Some(r.path), Some(r.requests), Some(r.sender)),
        None => (None, None, None),
    };
    let control_task = control_listener.map(|listener| {
        tokio::spawn(control::serve_shared(
            listener,
            Arc::clone(&shared),
            forward.clone(),
            reload_sender,
            stop_rx.clone(),
        ))
    });
    let upkeep_task = tokio::spawn(upkeep(Arc::clone(&shared), stop_rx.clone()));
    tokio::spawn(health::run(Arc::clone(&shared), stop_rx.clone()));
    notify::notify("READY=1");

    /// What woke the daemon's main loop.
    enum Event {
        Shutdown,
        FrontendEnded(String),
        Reload(reload::ReloadRequest),
    }
    tokio::pin!(shutdown);
    let failed = loop {
        let event = {
            let frontend_ended = async {
                match listeners.frontend.as_mut() {
                    Some(run) => (&mut run.served.task).await,
                    None => std::future::pending().await,
                }
            };
            let reload_requested = async {
                match reload_requests.as_mut() {
                    Some(requests) => requests.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => Event::Shutdown,
                r = frontend_ended => Event::FrontendEnded(match r {
                    Ok(Ok(())) => "the SSH front end stopped".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => format!("the SSH front end failed: {e}"),
                }),
                Some(request) = reload_requested => Event::Reload(request),
            }
        };
        match event {
            Event::Shutdown => break None,
            Event::FrontendEnded(why) => {
                listeners.frontend = None;
                break Some(why);
            }
            Event::Reload(request) => {
                notify::notify("RELOADING=1");
                match &reload_path {
                    Some(path) => {
                        reload::handle(request, path, &shared, &penalties, &mut listeners).await
                    }
                    None => {
                        if let Some(reply) = request.reply {
                            let _ = reply.send(Err(
                                "this daemon has no configuration file to reload".into(),
                            ));
                        }
                    }
                }
                notify::notify("READY=1");
            }
        }
    };
    notify::notify("STOPPING=1");
    // Stop accepting, then ask every session to end, at whatever step it is.
    let _ = stop_tx.send(true);
    let live = shared.close_all(CloseReason::Shutdown);
    info!("shutting down: closing {live} sessions");
    listeners.stop().await;
    if let Some(service) = &forward {
        let n = service.close_all().await;
        if n > 0 {
            info!("closed {n} forwardings");
        }
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, shared.all_ended())
        .await
        .is_err()
    {
        warn!(
            "{} sessions did not end within {}s",
            shared.registry.len(),
            SHUTDOWN_GRACE.as_secs()
        );
    }
    // Whatever a session could not remove goes now.
    match shared.dataplane(|f| f.reconcile(&[])).await {
        Some(Ok(r)) if !r.removed.is_empty() => {
            info!("removed {} leftover forwarding entries", r.removed.len())
        }
        Some(Err(e)) => warn!("removing leftover entries: {e}"),
        _ => {}
    }
    if let Some(task) = control_task {
        let _ = task.await;
    }
    if let Some(task) = handoff_task {
        let _ = task.await;
    }
    let _ = upkeep_task.await;
    info!("stopped");
    match failed {
        Some(e) => Err(DaemonError::FrontendStopped(e)),
        None => Ok(()),
    }
}

/// Every [`UPKEEP_PERIOD`]: refresh live entries, read their counters, and ask sessions idle
/// for longer than `<session_idle_timeout>` to end.
async fn upkeep(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let period = (session::ENTRY_LIFETIME / 3).min(UPKEEP_PERIOD);
    let mut live_before = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => return,
        }
        let sessions = shared.registry.snapshot();
        if sessions.len() < live_before {
            // Sessions ended: hand the memory they used back to the system, so a burst of
            // sessions does not leave the daemon's resident size at its peak (on a blocking
            // thread: trimming a large heap takes milliseconds).
            drop(tokio::task::spawn_blocking(crate::heap::trim));
        }
        live_before = sessions.len();
        for s in sessions {
            let Some(entry) = s.entry else {
                continue;
            };
            let id = s.id;
            let live = Arc::clone(&shared);
            // Checked under the data plane's lock: a session that ended since the snapshot has
            // removed its entry, and a refresh must not put it back.
            let result = shared
                .dataplane(move |f| {
                    live.registry
                        .has_entry(id)
                        .then(|| (f.refresh(&entry), f.counters(&entry)))
                })
                .await
                .flatten();
            if let Some((refreshed, counters)) = result {
                if let Err(e) = refreshed {
                    warn!("[{id}] refreshing the UDP forwarding: {e}");
                }
                if let Ok(Some((packets, bytes))) = counters {
                    shared.registry.set_counters(id, packets, bytes);
                }
            }
        }
        if let Some(limit) = shared.config().server.rproxy.session_idle_timeout {
            for id in shared.registry.idle(limit, Instant::now()) {
                shared.registry.close(id, CloseReason::IdleTimeout);
            }
        }
    }
}
