//! Reloading the configuration while the daemon runs (SIGHUP, `fasp-proxy reload`,
//! `systemctl reload`): the file is read and validated again; on any error every error is
//! logged and the daemon keeps its configuration; otherwise new sessions use the new rules,
//! live sessions and their kernel entries are left alone, listeners whose address changed are
//! bound anew, and one log line says what changed.
//!
//! [`Listeners`] holds what a reload may replace: the SSH front end (its settings, or the whole
//! front end on a new address), the hand-off's settings, the forward proxy's API listeners and
//! settings, and the metrics listener. Every step that can fail (reading the file, binding, host
//! keys, TLS files) runs before anything is changed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{error, info, warn};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::{self, diff, Config};
use crate::forward::api::Api;
use crate::forward::service::{ForwardService, ForwardSettings};
use crate::policy::penalties::{self, PenaltySettings, SharedPenalties};
use crate::session::Shared;
use crate::ssh::handoff::HandoffConfig;
use crate::ssh::server::{self as frontend, ExecHandler, FrontendError, FrontendUpdater};

/// One request to reload, from SIGHUP or the control socket; the daemon answers on `reply`
/// with the one line that says what changed, or every error.
#[derive(Debug)]
pub struct ReloadRequest {
    /// Who asked: `SIGHUP`, or the control socket's peer (`uid 0 (root)`).
    pub requested_by: String,
    /// Where the outcome goes: `Ok(what changed)` or `Err(every error)`.
    pub reply: Option<oneshot::Sender<Result<String, String>>>,
}

/// The sending side the control socket and the signal handler use.
pub type ReloadSender = mpsc::Sender<ReloadRequest>;

/// Where reload requests come from and which file they re-read.
pub struct ReloadSetup {
    /// The configuration file read at start, read again on each request.
    pub path: PathBuf,
    /// The requests ([`channel`]).
    pub requests: mpsc::Receiver<ReloadRequest>,
    /// A sender for the control socket's `reload`.
    pub sender: ReloadSender,
}

/// A channel for reload requests (a few may wait; more are refused by `try_send`).
pub fn channel() -> (ReloadSender, mpsc::Receiver<ReloadRequest>) {
    mpsc::channel(8)
}

/// Checks that the daemon can run `config` (besides its validity): some proxy enabled, and
/// PAM present when password logins are on. `path` names the file in the messages.
pub fn check_runnable(config: &Config, path: &Path) -> Result<(), String> {
    let rproxy = &config.server.rproxy;
    if !rproxy.enabled && !config.server.proxy.enabled {
        return Err(format!(
            "neither the reverse proxy nor the forward proxy is enabled in {} \
             (<rproxy><enabled>true</enabled> or <proxy><enabled>true</enabled>); nothing to run",
            path.display()
        ));
    }
    if rproxy.enabled && rproxy.password_authentication {
        if let Err(e) = crate::ssh::pam::available() {
            return Err(format!(
                "<password_authentication> is on in {}, but {e}",
                path.display()
            ));
        }
    }
    Ok(())
}

/// A listener being served: its task and the switch that stops it alone.
pub struct Served<T> {
    /// The address it is bound to.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// The serving task.
    pub task: JoinHandle<T>,
}

impl<T: Send + 'static> Served<T> {
    /// Runs `serve(stop)` in a task, with a stop switch of its own; `addr` is where it listens.
    pub fn spawn<F>(addr: SocketAddr, serve: impl FnOnce(watch::Receiver<bool>) -> F) -> Served<T>
    where
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let (stop, stop_rx) = watch::channel(false);
        Served {
            addr,
            stop,
            task: tokio::spawn(serve(stop_rx)),
        }
    }

    /// Stops accepting; returns the task, to wait for it.
    pub fn stop(self) -> JoinHandle<T> {
        let _ = self.stop.send(true);
        self.task
    }
}

/// The SSH front end: where it listens and the handle that changes its settings.
pub struct FrontendRun {
    /// The accept loop.
    pub served: Served<Result<(), FrontendError>>,
    updater: FrontendUpdater,
}

/// The forward proxy's API: the service, the server, and its listeners.
pub struct ApiRun {
    /// The forward proxy's service (its forwardings).
    pub service: Arc<ForwardService>,
    server: Arc<Api>,
    users_path: PathBuf,
    http: Option<Served<()>>,
    https: Option<Served<()>>,
    /// The sweep of expired forwardings.
    pub sweep: JoinHandle<()>,
}

/// What a reload may replace while the daemon serves.
pub struct Listeners {
    /// The built-in SSH front end, when it runs.
    pub frontend: Option<FrontendRun>,
    handler: Arc<dyn ExecHandler>,
    /// The hand-off's settings, when the OpenSSH mode is on.
    pub handoff: Option<watch::Sender<HandoffConfig>>,
    /// The forward proxy, when it runs.
    pub api: Option<ApiRun>,
    /// The metrics listener, when metrics are on.
    pub metrics: Option<Served<()>>,
}

/// Binds `addr` (a reload's new listener).
async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{what}: cannot listen on {addr}: {e}"))
}

/// Starts the SSH front end on `listener` (its host keys loaded first: an error stops the start).
pub fn start_frontend(
    config: &Config,
    penalties: &SharedPenalties,
    listener: TcpListener,
    handler: Arc<dyn ExecHandler>,
) -> Result<FrontendRun, FrontendError> {
    let addr = listener
        .local_addr()
        .unwrap_or(config.server.rproxy.ssh_listen);
    let frontend =
        frontend::with_listener(super::frontend_config(config, penalties), listener, handler)?;
    let updater = frontend.updater();
    let served = Served::spawn(addr, move |stop| frontend.serve(stop));
    Ok(FrontendRun { served, updater })
}

impl Listeners {
    /// Nothing served yet; `handler` takes the front end's sessions.
    pub fn new(handler: Arc<dyn ExecHandler>) -> Listeners {
        Listeners {
            frontend: None,
            handler,
            handoff: None,
            api: None,
            metrics: None,
        }
    }

    /// Starts the forward proxy's API (its service, server, listeners and sweep).
    pub fn start_api(
        &mut self,
        config: &Config,
        shared: &Arc<Shared>,
        penalties: &SharedPenalties,
        api: super::ApiSetup,
    ) {
        let settings = ForwardSettings::from_config(config, api.users_path.clone());
        let (low, high) = settings.port_range;
        let service = Arc::new(ForwardService::new(
            settings,
            config.server.own_ports(),
            Arc::clone(&shared.forwarder),
            Arc::clone(penalties),
        ));
        let server = Api::new(
            Arc::clone(&service),
            api.limits,
            Arc::clone(&shared.metrics),
        );
        let http = api.http.map(|l| serve_api(&server, l, None));
        let https = api.https.map(|(l, tls)| serve_api(&server, l, Some(tls)));
        let mut ports: Vec<String> = Vec::new();
        ports.extend(http.as_ref().map(|s| s.addr.port().to_string()));
        ports.extend(https.as_ref().map(|s| format!("{}s", s.addr.port())));
        let sweeper = Arc::clone(&service);
        let sweep = tokio::spawn(async move {
            loop {
                tokio::time::sleep(sweeper.settings().sweep).await;
                sweeper.sweep().await;
            }
        });
        info!("proxy service ready (port range {low}-{high})");
        info!("Started on port(s) {}", ports.join(","));
        self.api = Some(ApiRun {
            service,
            server,
            users_path: api.users_path,
            http,
            https,
            sweep,
        });
    }

    /// Stops every listener and waits for the accept loops (not the connections) to end;
    /// returns the front end's outcome if it ran.
    pub async fn stop(&mut self) {
        let mut tasks = Vec::new();
        if let Some(f) = self.frontend.take() {
            let task = f.served.stop();
            tasks.push(tokio::spawn(async move {
                let _ = task.await;
            }));
        }
        if let Some(api) = self.api.as_mut() {
            api.sweep.abort();
            for served in [api.http.take(), api.https.take()].into_iter().flatten() {
                tasks.push(served.stop());
            }
        }
        if let Some(m) = self.metrics.take() {
            tasks.push(m.stop());
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Serves the API on `listener`.
fn serve_api(server: &Arc<Api>, listener: TcpListener, tls: Option<TlsAcceptor>) -> Served<()> {
    let server = Arc::clone(server);
    let addr = listener
        .local_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    Served::spawn(addr, move |stop| server.serve(listener, tls, stop))
}

/// Serves metrics on `listener`.
pub fn serve_metrics(
    listener: TcpListener,
    shared: &Arc<Shared>,
    forward: Option<Arc<ForwardService>>,
) -> Served<()> {
    let shared = Arc::clone(shared);
    let addr = listener
        .local_addr()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
    Served::spawn(addr, move |stop| {
        crate::metrics::http::serve(listener, Arc::clone(&shared.metrics), shared, forward, stop)
    })
}

/// What a reload binds before it changes anything.
struct Prepared {
    ssh: Option<TcpListener>,
    http: Option<Option<TcpListener>>,
    https: Option<Option<(TcpListener, TlsAcceptor)>>,
    /// A new certificate on the HTTPS port in use: the old listener must let go of the port
    /// first, which happens after the last step that can fail.
    https_same_port: Option<(SocketAddr, TlsAcceptor)>,
    metrics: Option<Option<TcpListener>>,
}

/// Reads `path` again and puts the new configuration in force, or changes nothing; the `Ok`
/// text is the line logged.
pub async fn reload(
    path: &Path,
    requested_by: &str,
    shared: &Arc<Shared>,
    penalties: &SharedPenalties,
    listeners: &mut Listeners,
) -> Result<String, String> {
    let owned = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || config::load(&owned))
        .await
        .map_err(|e| format!("reading the configuration: {e}"))?
        .map_err(|e| e.to_string())?;
    for w in &loaded.warnings {
        warn!("reload: {}", w.display_in(path));
    }
    let old = shared.config();
    check_runnable(&loaded.config, path)?;
    let (new, restart_only) = diff::restart_only(&old, &loaded.config);
    let prepared = prepare(&old, &new, listeners).await?;
    // The last step that can fail: the front end's new host keys and settings.
    let mut new_frontend = None;
    if let Some(listener) = prepared.ssh {
        new_frontend = Some(
            start_frontend(&new, penalties, listener, Arc::clone(&listeners.handler))
                .map_err(|e| e.to_string())?,
        );
    } else if let Some(running) = &listeners.frontend {
        running
            .updater
            .update(&super::frontend_config(&new, penalties))
            .map_err(|e| e.to_string())?;
    }
    // From here on nothing fails.
    let new = Arc::new(new);
    let changes = diff::changes(&old, &new);
    shared.replace_config(Arc::clone(&new));
    penalties::lock(penalties).reconfigure(PenaltySettings::from_config(&new));
    if let Some(frontend) = new_frontend {
        if let Some(old) = listeners.frontend.replace(frontend) {
            info!(
                "SSH front end moves from {} to {}",
                old.served.addr, new.server.rproxy.ssh_listen
            );
            drop(old.served.stop());
        }
    }
    if let Some(handoff) = &listeners.handoff {
        handoff.send_replace(super::handoff_config(&new));
    }
    if let Some(api) = listeners.api.as_mut() {
        api.service.reconfigure(
            ForwardSettings::from_config(&new, api.users_path.clone()),
            new.server.own_ports(),
        );
        if let Some(http) = prepared.http {
            if let Some(old) = api.http.take() {
                drop(old.stop());
            }
            api.http = http.map(|l| serve_api(&api.server, l, None));
        }
        if let Some(https) = prepared.https {
            if let Some(old) = api.https.take() {
                drop(old.stop());
            }
            api.https = https.map(|(l, tls)| serve_api(&api.server, l, Some(tls)));
        }
        if let Some((addr, tls)) = prepared.https_same_port {
            if let Some(old) = api.https.take() {
                // Its accept loop ends and drops the listener; then the port is free.
                let _ = old.stop().await;
            }
            match bind(addr, "forward proxy API (HTTPS)").await {
                Ok(l) => api.https = Some(serve_api(&api.server, l, Some(tls))),
                Err(e) => {
                    error!("reload: {e}: the HTTPS API is closed until the next reload or restart")
                }
            }
        }
    }
    if let Some(metrics) = prepared.metrics {
        if let Some(old) = listeners.metrics.take() {
            drop(old.stop());
        }
        let forward = listeners.api.as_ref().map(|a| Arc::clone(&a.service));
        listeners.metrics = metrics.map(|l| serve_metrics(l, shared, forward));
    }
    if let Some(level) = super::logging::set_level(new.server.rproxy.log_level) {
        info!("{level}");
    }
    for s in shared.registry.snapshot() {
        let selector = |label: &str| label.split_once(" (").map(|(_, s)| s.to_string());
        let still = new
            .server
            .rproxy
            .rules
            .iter()
            .any(|r| selector(&r.label()) == selector(&s.rule));
        if !s.rule.is_empty() && !still {
            info!(
                "[{}] its {} is no longer in the configuration: the session keeps running on it until it ends",
                s.id, s.rule
            );
        }
    }
    if !restart_only.is_empty() {
        warn!(
            "reload: not applied until the daemon restarts: {}",
            restart_only.join("; ")
        );
    }
    let what = if changes.is_empty() {
        "no changes".to_string()
    } else {
        changes.join("; ")
    };
    Ok(format!(
        "configuration reloaded from {} (asked by {requested_by}): {what}",
        path.display()
    ))
}

/// Binds the listeners whose address or TLS files changed (`None` = unchanged; `Some(None)` =
/// now off).
async fn prepare(old: &Config, new: &Config, listeners: &Listeners) -> Result<Prepared, String> {
    let mut prepared = Prepared {
        ssh: None,
        http: None,
        https: None,
        https_same_port: None,
        metrics: None,
    };
    let listen = new.server.rproxy.ssh_listen;
    if listeners.frontend.is_some() && listen != old.server.rproxy.ssh_listen {
        prepared.ssh = Some(bind(listen, "SSH front end").await?);
    }
    if listeners.api.is_some() {
        let (o, n) = (&old.server, &new.server);
        let ip_changed = o.proxy.bind_ip_address != n.proxy.bind_ip_address;
        if ip_changed || o.enable_http != n.enable_http || o.http_port != n.http_port {
            let addr = SocketAddr::new(n.proxy.bind_ip_address, n.http_port);
            prepared.http = Some(match n.enable_http {
                true => Some(bind(addr, "forward proxy API").await?),
                false => None,
            });
        }
        let tls_changed = o.https_certificate != n.https_certificate
            || o.https_private_key != n.https_private_key;
        if ip_changed
            || tls_changed
            || o.enable_https != n.enable_https
            || o.https_port != n.https_port
        {
            let addr = SocketAddr::new(n.proxy.bind_ip_address, n.https_port);
            let same_port = !ip_changed && o.enable_https && o.https_port == n.https_port;
            if n.enable_https {
                let tls =
                    crate::forward::api::tls_acceptor(&n.https_certificate, &n.https_private_key)?;
                if same_port {
                    prepared.https_same_port = Some((addr, tls));
                } else {
                    prepared.https = Some(Some((bind(addr, "forward proxy API").await?, tls)));
                }
            } else {
                prepared.https = Some(None);
            }
        }
    }
    if old.server.metrics_listen != new.server.metrics_listen {
        prepared.metrics = Some(match new.server.metrics_listen {
            Some(addr) => Some(bind(addr, "metrics").await?),
            None => None,
        });
    }
    Ok(prepared)
}

/// Carries out one reload request: logs the outcome (every error, or the line of what
/// changed) and answers the requester.
pub async fn handle(
    request: ReloadRequest,
    path: &Path,
    shared: &Arc<Shared>,
    penalties: &SharedPenalties,
    listeners: &mut Listeners,
) {
    let outcome = reload(path, &request.requested_by, shared, penalties, listeners).await;
    match &outcome {
        Ok(line) => info!("{line}"),
        Err(errors) => {
            for line in errors.lines().filter(|l| !l.trim().is_empty()) {
                error!("reload: {line}");
            }
            error!(
                "reload asked by {} refused: {} has errors; still running on the previous configuration",
                request.requested_by,
                path.display()
            );
        }
    }
    if let Some(reply) = request.reply {
        let _ = reply.send(outcome);
    }
}
