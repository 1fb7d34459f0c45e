//! Active health checks of the internal servers: every `<health_check_interval>`, each
//! distinct server in every rule's `<hosts>` of the configuration in force gets an SSH
//! handshake within `<health_check_timeout>` (TCP connect, its banner, key exchange, and its
//! host key checked against known_hosts: a key not recorded fails the check unless
//! `<accept_new_host_keys>`; no login). The results go to the balancer
//! ([`crate::policy::Balancer::record_check`]), which marks a server faulty after
//! `<health_check_failures>` failures in a row and clears the mark after
//! `<health_check_successes>` passes in a row; only those changes are logged.
//!
//! The checks run in their own task, at most [`MAX_CONCURRENT`] at a time, and hold the
//! balancer's lock only to note a result: sessions never wait for them. The configuration is
//! read again each round, so a reload takes effect at the next one; servers gone from it are
//! forgotten.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use log::info;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{Config, HealthCheck};
use crate::session::{self, Shared};
use crate::ssh::client as ssh_client;

/// At most this many checks run at once.
pub const MAX_CONCURRENT: usize = 16;
/// While health checks are off, how often the configuration is looked at again (a reload may
/// turn them on).
pub const OFF_POLL: Duration = Duration::from_secs(5);

/// One check to make: where, and how.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The internal server.
    pub host: SocketAddr,
    /// The known_hosts file its key is checked against.
    pub known_hosts: PathBuf,
    /// Whether a key not recorded passes (`<accept_new_host_keys>`; it is not recorded).
    pub accept_unknown: bool,
    /// The time limit of the whole handshake.
    pub timeout: Duration,
}

/// The real check: [`ssh_client::probe`]; `Err` says why it failed.
pub async fn ssh_probe(probe: Probe) -> Result<(), String> {
    ssh_client::probe(
        probe.host,
        &probe.known_hosts,
        probe.accept_unknown,
        probe.timeout,
    )
    .await
    .map_err(|e| session::backend_failure(probe.host, &e))
}

/// Runs the health checks with the real SSH handshake until `stop` turns true.
pub async fn run(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    run_with(shared, stop, ssh_probe).await
}

/// Runs the health checks until `stop` turns true, each made by `probe` (tests give an
/// in-memory one). The first round starts at once, the next `interval` after the start of
/// the one before (at once when a round took longer).
pub async fn run_with<P, F>(shared: Arc<Shared>, mut stop: watch::Receiver<bool>, probe: P)
where
    P: Fn(Probe) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    let probe = Arc::new(probe);
    let mut on = false;
    loop {
        let config = shared.config();
        let started = Instant::now();
        let wait = match active(&config) {
            None => {
                if on {
                    balancer(&shared).retain_checked(&BTreeSet::new());
                    info!("health checks of the internal servers are off; their marks are cleared");
                    on = false;
                }
                OFF_POLL
            }
            Some(settings) => {
                on = true;
                let hosts = config.server.rproxy.servers();
                balancer(&shared).retain_checked(&hosts);
                let accept_unknown = config.server.rproxy.accept_new_host_keys;
                drop(config);
                let checks = round(&shared, hosts, settings, accept_unknown, &probe);
                tokio::select! {
                    () = checks => {}
                    _ = stop.changed() => return,
                }
                settings
                    .interval
                    .unwrap_or(OFF_POLL)
                    .saturating_sub(started.elapsed())
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The health-check settings when checks are on (an interval, the reverse proxy enabled).
fn active(config: &Config) -> Option<HealthCheck> {
    let rproxy = &config.server.rproxy;
    let settings = rproxy.health_check;
    (rproxy.enabled && settings.interval.is_some()).then_some(settings)
}

/// One round: every server checked, [`MAX_CONCURRENT`] at a time, each result noted in the
/// balancer (and a change of its mark logged) as soon as it is in.
async fn round<P, F>(
    shared: &Arc<Shared>,
    hosts: BTreeSet<SocketAddr>,
    settings: HealthCheck,
    accept_unknown: bool,
    probe: &Arc<P>,
) where
    P: Fn(Probe) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    let mut checks = JoinSet::new();
    for host in hosts {
        let shared = Arc::clone(shared);
        let probe = Arc::clone(probe);
        let permits = Arc::clone(&permits);
        let job = Probe {
            host,
            known_hosts: shared.backend_known_hosts.clone(),
            accept_unknown,
            timeout: settings.timeout,
        };
        checks.spawn(async move {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            // The probe keeps its own time limit; this one holds whatever the probe does.
            let limit = settings.timeout + Duration::from_secs(1);
            let result = match tokio::time::timeout(limit, probe(job)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {}s", settings.timeout.as_secs())),
            };
            let event = balancer(&shared).record_check(host, result, &settings, Instant::now());
            if let Some(event) = event {
                event.log();
            }
        });
    }
    while checks.join_next().await.is_some() {}
}

fn balancer(shared: &Shared) -> std::sync::MutexGuard<'_, crate::policy::Balancer> {
    shared.balancer.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::memory::MemoryForwarder;
    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;

    /// Two rules sharing one server: three distinct servers in all.
    fn config(interval: u64) -> Arc<Config> {
        let text = format!(
            r#"<CONF><server><rproxy><enabled>true</enabled>
<health_check_interval>{interval}</health_check_interval><health_check_timeout>2</health_check_timeout>
<health_check_failures>3</health_check_failures><health_check_successes>2</health_check_successes>
<rules>
<rule host_ip="203.0.113.7"><hosts><host>198.51.100.10</host><host>198.51.100.11</host></hosts><keyfile>/k</keyfile></rule>
<rule><hosts><host>198.51.100.11</host><host>198.51.100.12:2222</host></hosts><keyfile>/k</keyfile></rule>
</rules></rproxy></server></CONF>"#
        );
        let loaded = crate::config::parse_str(&text, std::path::Path::new("t")).unwrap();
        Arc::new(loaded.config)
    }

    fn shared(config: Arc<Config>) -> Arc<Shared> {
        Arc::new(Shared::new(
            config,
            Box::new(MemoryForwarder::new()),
            PathBuf::from("/nonexistent/known_hosts"),
            Arc::default(),
        ))
    }

    /// An in-memory probe: the servers in `down` fail (after `delay`); every check counted.
    #[derive(Clone, Default)]
    struct Fake {
        down: Arc<Mutex<HashSet<SocketAddr>>>,
        checks: Arc<Mutex<HashMap<SocketAddr, u32>>>,
        delay: Duration,
    }

    impl Fake {
        fn probe(&self) -> impl Fn(Probe) -> futures_like::Boxed + Send + Sync + 'static {
            let me = self.clone();
            move |p: Probe| {
                let me = me.clone();
                Box::pin(async move {
                    tokio::time::sleep(me.delay).await;
                    *me.checks.lock().unwrap().entry(p.host).or_insert(0) += 1;
                    if me.down.lock().unwrap().contains(&p.host) {
                        Err("connection refused".to_string())
                    } else {
                        Ok(())
                    }
                })
            }
        }

        fn set_down(&self, host: SocketAddr, down: bool) {
            let mut set = self.down.lock().unwrap();
            if down {
                set.insert(host);
            } else {
                set.remove(&host);
            }
        }

        fn count(&self, host: SocketAddr) -> u32 {
            self.checks.lock().unwrap().get(&host).copied().unwrap_or(0)
        }
    }

    mod futures_like {
        /// A boxed check future.
        pub type Boxed =
            std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn faulty(shared: &Shared, host: SocketAddr) -> bool {
        balancer(shared).is_faulty(&host, Instant::now())
    }

    /// Lets the spawned checks run (the paused clock does not move).
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn three_failures_mark_a_server_and_two_passes_clear_it_round_by_round() {
        let shared = shared(config(10));
        let fake = Fake::default();
        let (a, b, c) = (
            addr("198.51.100.10:22"),
            addr("198.51.100.11:22"),
            addr("198.51.100.12:2222"),
        );
        fake.set_down(b, true);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run_with(Arc::clone(&shared), stop, fake.probe()));
        // Round 1 at once, rounds 2 and 3 ten seconds apart: b is marked at the third.
        settle().await;
        assert_eq!((fake.count(a), fake.count(b), fake.count(c)), (1, 1, 1));
        assert!(!faulty(&shared, b));
        tokio::time::sleep(Duration::from_secs(10)).await;
        settle().await;
        assert!(!faulty(&shared, b), "two failures are not enough");
        tokio::time::sleep(Duration::from_secs(10)).await;
        settle().await;
        assert_eq!(
            fake.count(b),
            3,
            "one check per server per round (b is in two rules)"
        );
        assert!(faulty(&shared, b));
        assert!(!faulty(&shared, a) && !faulty(&shared, c));
        let health = balancer(&shared).health(Instant::now());
        let b_health = health.iter().find(|(h, _)| *h == b).unwrap().1;
        assert!(b_health.active && b_health.passive_until.is_none());
        assert_eq!(b_health.failures, 3);
        // Back: one pass is not enough, the second clears the mark.
        fake.set_down(b, false);
        tokio::time::sleep(Duration::from_secs(10)).await;
        settle().await;
        assert!(faulty(&shared, b), "one pass is not enough");
        tokio::time::sleep(Duration::from_secs(10)).await;
        settle().await;
        assert!(!faulty(&shared, b));
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn checks_run_concurrently_and_a_slow_one_is_cut_at_the_timeout() {
        let shared = shared(config(10));
        // Every check takes 1.5 s (under the 2 s timeout): the three of a round together
        // take 1.5 s, not 4.5 s.
        let fake = Fake {
            delay: Duration::from_millis(1500),
            ..Fake::default()
        };
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run_with(Arc::clone(&shared), stop, fake.probe()));
        tokio::time::sleep(Duration::from_millis(1600)).await;
        settle().await;
        let a = addr("198.51.100.10:22");
        let c = addr("198.51.100.12:2222");
        assert_eq!((fake.count(a), fake.count(c)), (1, 1));
        stop_tx.send(true).unwrap();
        task.await.unwrap();

        // A probe that never ends fails at the time limit (2 s, and the 1 s margin).
        let shared2 = self::shared(config(10));
        let hung = |_: Probe| -> futures_like::Boxed { Box::pin(std::future::pending()) };
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run_with(Arc::clone(&shared2), stop, hung));
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            settle().await;
        }
        assert!(faulty(&shared2, a), "three timeouts mark it");
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_turning_checks_off_clears_their_marks_and_turning_them_on_resumes_them() {
        let shared = shared(config(10));
        let fake = Fake::default();
        let c = addr("198.51.100.12:2222");
        fake.set_down(c, true);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run_with(Arc::clone(&shared), stop, fake.probe()));
        settle().await;
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            settle().await;
        }
        assert!(faulty(&shared, c));
        // Checks off (interval 0): at the next look the mark goes, and nothing is checked.
        shared.replace_config(config(0));
        let before = fake.count(c);
        tokio::time::sleep(Duration::from_secs(10)).await;
        settle().await;
        assert!(!faulty(&shared, c));
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        assert_eq!(fake.count(c), before, "no checks while off");
        // On again: checks resume within OFF_POLL.
        shared.replace_config(config(10));
        tokio::time::sleep(OFF_POLL).await;
        settle().await;
        assert_eq!(fake.count(c), before + 1);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
