//! `fasp-proxy run`: the daemon. Refuses to start on any configuration error, prepares the data
//! plane (and drops what a previous life left), serves SSH, refreshes live entries, ends idle
//! sessions, answers `fasp-proxy sessions`, and on SIGTERM closes every session and removes
//! every entry before it exits.

pub mod control;
pub mod logging;
pub mod notify;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use crate::config::{self, Config, ForwardingType};
use crate::dataplane::{self, Backend};
use crate::session::{self, Sessions, Shared};
use crate::ssh::server::{self as frontend, FrontendConfig};
use crate::sysctl;

/// How long shutdown waits for sessions to end before removing what is left.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the daemon with the configuration at `config_path`; returns the exit status.
pub fn run(config_path: &Path) -> i32 {
    let loaded = match config::load(config_path) {
        Ok(l) => l,
        Err(e) => {
            eprint!("{e}");
            eprintln!("fasp-proxy: refusing to start with an invalid configuration");
            return 1;
        }
    };
    for w in &loaded.warnings {
        eprintln!("{}", w.display_in(config_path));
    }
    let config = Arc::new(loaded.config);
    let rproxy = &config.server.rproxy;
    if !rproxy.enabled {
        eprintln!(
            "fasp-proxy: the reverse proxy is not enabled in {} (<rproxy><enabled>true</enabled>); nothing to run",
            config_path.display()
        );
        return 1;
    }
    if rproxy.password_authentication {
        if let Err(e) = crate::ssh::pam::available() {
            eprintln!(
                "fasp-proxy: <password_authentication> is on in {}, but {e}",
                config_path.display()
            );
            return 1;
        }
    }
    if let Err(e) = logging::init(rproxy.log_directory.as_deref(), rproxy.log_level) {
        eprintln!("fasp-proxy: {e}");
        return 1;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fasp-proxy: starting the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(serve(config, config_path)) {
        Ok(()) => 0,
        Err(e) => {
            error!("{e}");
            eprintln!("fasp-proxy: {e}");
            1
        }
    }
}

/// Opens and readies the data plane: IP forwarding, conntrack accounting, the proxy's tables,
/// and the removal of a previous life's entries.
fn prepare_dataplane(config: &Config) -> Result<Box<dyn dataplane::Forwarder>, String> {
    let (v4, v6) = config.server.forwarded_families();
    for change in sysctl::ensure_forwarding(v4, v6, config.server.enable_ip_forwarding)
        .map_err(|e| e.to_string())?
    {
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
    let mut forwarder =
        dataplane::open(backend, &config.server.iptables_path).map_err(|e| e.to_string())?;
    forwarder
        .prepare()
        .map_err(|e| format!("preparing {}: {e}", forwarder.kind()))?;
    let report = forwarder
        .reconcile(&[])
        .map_err(|e| format!("removing entries of a previous run: {e}"))?;
    if !report.removed.is_empty() {
        info!(
            "removed {} forwarding entries left by a previous run",
            report.removed.len()
        );
    }
    Ok(forwarder)
}

async fn serve(config: Arc<Config>, config_path: &Path) -> Result<(), String> {
    // First: the control socket is also the "one daemon per network namespace" lock. A second
    // daemon must stop here, before its reconcile removes the first one's live entries.
    let control_listener = control::bind()?;
    let prepared = {
        let config = Arc::clone(&config);
        tokio::task::spawn_blocking(move || prepare_dataplane(&config))
            .await
            .map_err(|e| e.to_string())??
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let known_hosts = config_path
        .parent()
        .unwrap_or_else(|| Path::new("/etc/fasp-proxy"))
        .join("known_hosts");
    let shared = Arc::new(Shared::new(
        Arc::clone(&config),
        prepared,
        known_hosts,
        stop_rx.clone(),
    ));
    let rproxy = &config.server.rproxy;
    let frontend_config = FrontendConfig {
        listen: rproxy.ssh_listen,
        host_key: rproxy.ssh_host_key.clone(),
        authorized_keys: rproxy.authorized_keys_file.clone(),
        password_pam_service: rproxy
            .password_authentication
            .then(|| rproxy.pam_service.clone()),
        allowed_clients: rproxy.allowed_clients.clone(),
        allowed_commands: vec![session::TRANSFER_COMMAND.to_string()],
        max_unauthenticated: 64,
        auth_rejection_delay: Duration::from_secs(1),
        auth_timeout: Duration::from_secs(30),
    };
    // Bound before READY=1: a bad host key or a taken port fails the start.
    let frontend = frontend::bind(frontend_config, Arc::new(Sessions(Arc::clone(&shared))))
        .await
        .map_err(|e| e.to_string())?;
    let frontend_task = tokio::spawn(frontend.serve(stop_rx.clone()));
    let control_task = tokio::spawn(control::serve_shared(
        control_listener,
        Arc::clone(&shared),
        stop_rx.clone(),
    ));
    let upkeep_task = tokio::spawn(upkeep(Arc::clone(&shared), stop_rx.clone()));
    info!(
        "fasp-proxy {} listening on {} ({} rules, forwarding via {})",
        env!("CARGO_PKG_VERSION"),
        rproxy.ssh_listen,
        rproxy.rules.len(),
        config.server.forwarding_type
    );
    notify::notify("READY=1");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))?;
    let failed = tokio::select! {
        _ = term.recv() => None,
        _ = tokio::signal::ctrl_c() => None,
        r = frontend_task => Some(match r {
            Ok(Ok(())) => "the SSH front end stopped".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the SSH front end failed: {e}"),
        }),
    };
    notify::notify("STOPPING=1");
    info!("shutting down: closing {} sessions", shared.registry.len());
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while !shared.registry.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Whatever a session could not remove goes now.
    let report = shared.dataplane(|f| f.reconcile(&[])).await;
    match report {
        Some(Ok(r)) if !r.removed.is_empty() => {
            info!("removed {} leftover forwarding entries", r.removed.len())
        }
        Some(Err(e)) => warn!("removing leftover entries: {e}"),
        _ => {}
    }
    let _ = control_task.await;
    let _ = upkeep_task.await;
    info!("stopped");
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Every 5 s (at most a third of an entry's lifetime): refresh live entries, read their
/// counters, end sessions idle for longer than `<session_idle_timeout>`.
async fn upkeep(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let period = session::ENTRY_LIFETIME / 3;
    let idle = shared.config.server.rproxy.session_idle_timeout;
    let mut live_before = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period.min(Duration::from_secs(5))) => {}
            _ = stop.changed() => return,
        }
        let sessions = shared.registry.snapshot();
        if sessions.len() < live_before {
            // Sessions ended: hand the memory they used back to the system, so a burst of
            // sessions does not leave the daemon's resident size at its peak.
            // SAFETY: malloc_trim only releases free heap memory; no pointer is involved.
            unsafe {
                libc::malloc_trim(0);
            }
        }
        live_before = sessions.len();
        for s in sessions {
            let Some(entry) = s.entry.clone() else {
                continue;
            };
            let id = s.id;
            let result = shared
                .dataplane(move |f| (f.refresh(&entry), f.counters(&entry)))
                .await;
            if let Some((refreshed, counters)) = result {
                if let Err(e) = refreshed {
                    warn!("[{id}] refreshing the UDP forwarding: {e}");
                }
                if let Ok(Some((packets, bytes))) = counters {
                    shared.registry.set_counters(id, packets, bytes);
                }
            }
            if let Some(limit) = idle {
                if s.last_activity.elapsed() > limit {
                    if let Some(cancel) = shared.registry.cancel_handle(id) {
                        cancel.notify_one();
                    }
                }
            }
        }
    }
}
