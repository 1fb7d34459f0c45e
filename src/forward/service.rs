//! What the forward proxy's API does, apart from HTTP: authenticate the node-API user, check the
//! destination, hand out a port, and install, refresh and remove the forwarding's kernel entries
//! (TCP and UDP DNAT from the client to the outside server on the same proxy port, with the
//! proxy's address as the source), logging each change. [`super::api`] puts HTTP around it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use log::{info, warn};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::destinations::Destinations;
use super::table::{self, ForwardTable, Forwarding, TableError};
use super::users::NodeUsers;
use super::wire::{OpenReply, OpenRequest, SPEC_IPV4};
use crate::config::Config;
use crate::dataplane::{Forwarder, SessionEntry, SharedForwarder};
use crate::policy::penalties::{OffenceKind, SharedPenalties};

/// How many password verifications run at once (argon2id takes ~20 MiB and tens of ms each).
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 2;
/// The longest a 401 is held back (at most its penalty): the penalty itself, which refuses the
/// source's calls with 429, is what limits guessing; this only slows the guesser without
/// holding a connection past the API's connection deadline.
pub const MAX_UNAUTHORIZED_DELAY: Duration = Duration::from_secs(5);
/// How long resolving the host name of an open may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many forwardings closed by the administrator are remembered, so that their clients'
/// next keepalive or close is told why the forwarding is gone.
pub const ADMIN_CLOSED_MEMORY: usize = 256;

/// Why a call was refused, with the HTTP status it is answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400: the request cannot be read or asks for something impossible.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the destination is not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 429: the client's address is refused for a while after failed logins.
    #[error("{why}")]
    Penalised {
        /// What the client is told.
        why: String,
        /// Time left of the penalty (`Retry-After`).
        retry_after: Duration,
    },
    /// 404: no such forwarding of this client and user.
    #[error("{0}")]
    NotFound(String),
    /// 503: every port of the range is in use.
    #[error("{0}")]
    Unavailable(String),
    /// 500: the kernel entries could not be installed.
    #[error("{0}")]
    Internal(String),
}

impl Refusal {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::Unauthorized(_) => 401,
            Refusal::Forbidden(_) => 403,
            Refusal::NotFound(_) => 404,
            Refusal::Penalised { .. } => 429,
            Refusal::Unavailable(_) => 503,
            Refusal::Internal(_) => 500,
        }
    }
}

/// Who is calling: the connection's addresses and the Basic credentials, if any.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client's address.
    pub client: IpAddr,
    /// The proxy's address the client reached (told back as `proxy_addr`).
    pub local: IpAddr,
    /// `Authorization: Basic` user and password.
    pub credentials: Option<(String, String)>,
}

/// The forward proxy's settings, from `<proxy>`.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    /// `<authentication>`: a valid node-API user and password is required.
    pub authentication: bool,
    /// `proxy_keepalive` told to clients (`<session_timeout>`; 0 = their default).
    pub keepalive_told: u64,
    /// Source address outside servers see; `None` = masquerade.
    pub snat: Option<IpAddr>,
    /// The destination rules.
    pub destinations: Destinations,
    /// Ports handed out.
    pub port_range: (u16, u16),
    /// A forwarding lives this long after its last keepalive.
    pub expiry: Duration,
    /// How often expired forwardings are swept.
    pub sweep: Duration,
    /// The node-API users file (re-read when it changes).
    pub users_path: PathBuf,
}

impl ForwardSettings {
    /// The settings of `config` with its users file at `users_path`.
    pub fn from_config(config: &Config, users_path: PathBuf) -> ForwardSettings {
        let proxy = &config.server.proxy;
        ForwardSettings {
            authentication: proxy.authentication,
            keepalive_told: proxy.session_timeout.map_or(0, |d| d.as_secs()),
            snat: proxy.bind_source_address,
            destinations: Destinations {
                allowed: proxy.allowed_destinations.clone(),
                denied: proxy.denied_destinations.clone(),
            },
            port_range: (proxy.port_range_low, proxy.port_range_high),
            expiry: proxy.keepalive_interval.unwrap_or(table::DEFAULT_EXPIRY),
            sweep: proxy.cleanup_interval.unwrap_or(table::DEFAULT_SWEEP),
            users_path,
        }
    }

    /// The kernel lifetime of a forwarding's entries: they outlive the table's expiry by two
    /// sweeps, so only a dead daemon lets them expire in the kernel.
    pub fn entry_lifetime(&self) -> Duration {
        self.expiry + 2 * self.sweep
    }
}

/// A live forwarding as `fasp-proxy sessions` shows it.
#[derive(Debug, Clone)]
pub struct ForwardingInfo {
    /// The table's record.
    pub forwarding: Forwarding,
    /// Its kernel entry.
    pub entry: SessionEntry,
    /// When it was opened (wall clock).
    pub opened: SystemTime,
}

#[derive(Debug, Default)]
struct UsersCache {
    modified: Option<SystemTime>,
    users: Arc<NodeUsers>,
}

/// The forward proxy: its table, its users, and the data plane it programs.
pub struct ForwardService {
    /// The settings new requests use; a reload replaces them ([`ForwardService::reconfigure`]).
    settings: std::sync::RwLock<Arc<ForwardSettings>>,
    table: Mutex<ForwardTable>,
    live: Mutex<HashMap<u64, ForwardingInfo>>,
    users: Mutex<UsersCache>,
    verifications: Semaphore,
    verifier: Verifier,
    forwarder: SharedForwarder,
    penalties: SharedPenalties,
    /// The last [`ADMIN_CLOSED_MEMORY`] forwardings the administrator closed: (id, client,
    /// user).
    admin_closed: Mutex<std::collections::VecDeque<(u64, IpAddr, String)>>,
}

impl ForwardService {
    /// A service handing out ports of `settings.port_range` except `reserved` (the proxy's
    /// own listening ports), programming `forwarder`, refusing addresses that `penalties`
    /// holds (and adding failed logins to it).
    pub fn new(
        settings: ForwardSettings,
        reserved: std::collections::BTreeSet<u16>,
        forwarder: SharedForwarder,
        penalties: SharedPenalties,
    ) -> ForwardService {
        let (low, high) = settings.port_range;
        ForwardService {
            table: Mutex::new(ForwardTable::new(low, high, settings.expiry, reserved)),
            settings: std::sync::RwLock::new(Arc::new(settings)),
            live: Mutex::new(HashMap::new()),
            users: Mutex::new(UsersCache::default()),
            verifications: Semaphore::new(MAX_CONCURRENT_VERIFICATIONS),
            verifier: Verifier::start(MAX_CONCURRENT_VERIFICATIONS),
            forwarder,
            penalties,
            admin_closed: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// The settings it runs with now.
    pub fn settings(&self) -> Arc<ForwardSettings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// A reload: requests from now on use `settings` (authentication, destinations, port range,
    /// expiry, keepalive); live forwardings keep their ports and entries.
    pub fn reconfigure(
        &self,
        settings: ForwardSettings,
        reserved: std::collections::BTreeSet<u16>,
    ) {
        let (low, high) = settings.port_range;
        self.table()
            .reconfigure(low, high, settings.expiry, reserved);
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }

    fn table(&self) -> std::sync::MutexGuard<'_, ForwardTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn penalties(&self) -> std::sync::MutexGuard<'_, crate::policy::penalties::Penalties> {
        crate::policy::penalties::lock(&self.penalties)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ForwardingInfo>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn dataplane<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Forwarder) -> T + Send + 'static,
    ) -> Option<T> {
        crate::dataplane::on_blocking_thread(&self.forwarder, f).await
    }

    /// The users, re-read when the file changed since the last call.
    fn current_users(&self) -> Result<Arc<NodeUsers>, String> {
        let settings = self.settings();
        let path = &settings.users_path;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut cache = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if cache.modified != modified || modified.is_none() {
            let users = NodeUsers::load(path).map_err(|e| e.to_string())?;
            cache.users = Arc::new(users);
            cache.modified = modified;
        }
        Ok(Arc::clone(&cache.users))
    }

    /// The user a call is made as: with `<authentication>` a node-API user whose password
    /// verifies (at most [`MAX_CONCURRENT_VERIFICATIONS`] at once), else the name sent.
    ///
    /// A failed login is an offence of the client's address: it is answered after the
    /// address's penalty (at most [`MAX_UNAUTHORIZED_DELAY`]), and calls from the address are
    /// refused (429) without a verification until the penalty is over, also those that were
    /// already waiting for one: one address guesses one password per penalty.
    pub async fn authenticate(&self, caller: &Caller) -> Result<String, Refusal> {
        if !self.settings().authentication {
            let user = caller.credentials.clone().unwrap_or_default().0;
            return Ok(if user.is_empty() { "-".into() } else { user });
        }
        self.refuse_if_penalised(caller.client)?;
        let Some((user, password)) = caller.credentials.clone() else {
            return Err(self
                .failed_login(caller.client, "-", "no credentials (Authorization: Basic)")
                .await);
        };
        let users = self.current_users().map_err(|e| {
            warn!("forward proxy: cannot read the node-API users: {e}");
            Refusal::Internal("the proxy cannot read its users".into())
        })?;
        let slot = self
            .verifications
            .acquire()
            .await
            .map_err(|_| Refusal::Internal("shutting down".into()))?;
        self.refuse_if_penalised(caller.client)?;
        let name = user.clone();
        let ok = self
            .verifier
            .run(move |memory| users.verify_in(&name, &password, memory))
            .await
            .unwrap_or(false);
        if ok {
            self.penalties().forgive(caller.client);
            return Ok(user);
        }
        // Recorded before the slot is given back, so the calls waiting for it are refused.
        let failed = self.failed_login(caller.client, &user, "wrong user name or password");
        drop(slot);
        Err(failed.await)
    }

    /// The key `addr` is counted under in per-source limits (IPv6: its prefix).
    pub fn source_key(&self, addr: IpAddr) -> IpAddr {
        self.penalties().source_key(addr)
    }

    /// Whether `addr` serves a penalty now (without counting as a refusal).
    pub fn is_penalised(&self, addr: IpAddr) -> bool {
        self.penalties().is_penalised(addr, Instant::now())
    }

    /// `addr` tripped a per-source cap: an offence; `None` when it costs nothing.
    pub fn over_source_cap(&self, addr: IpAddr) -> Option<crate::policy::penalties::Offence> {
        self.penalties()
            .offence(addr, OffenceKind::SourceCap, Instant::now())
    }

    /// 429 while `client` serves a penalty; the first refusal of a penalty is logged.
    fn refuse_if_penalised(&self, client: IpAddr) -> Result<(), Refusal> {
        let Some(refused) = self.penalties().check(client, Instant::now()) else {
            return Ok(());
        };
        let secs = refused.remaining.as_secs() + u64::from(refused.remaining.subsec_nanos() > 0);
        if refused.first {
            warn!(
                "forward proxy: calls from {client} refused (429) for {secs} s more after {} \
                 failed logins; further refusals of this penalty are not logged",
                refused.offences
            );
        }
        Err(Refusal::Penalised {
            why: format!("too many failed logins from {client}: try again in {secs} s"),
            retry_after: refused.remaining,
        })
    }

    /// Records a failed login of `client` at once; the future waits out its penalty and gives
    /// the 401.
    fn failed_login(
        &self,
        client: IpAddr,
        user: &str,
        why: &str,
    ) -> impl std::future::Future<Output = Refusal> {
        let offence = self
            .penalties()
            .offence(client, OffenceKind::AuthFailure, Instant::now());
        let penalty = offence.map_or(Duration::ZERO, |o| o.penalty);
        let user: String = user.chars().take(64).collect();
        warn!(
            "forward proxy: failed login from {client} (user {user:?}): {why}; failure {} of \
             this source, refused for {:.1} s",
            offence.map_or(0, |o| o.count),
            penalty.as_secs_f64()
        );
        let refusal = Refusal::Unauthorized(format!("{why} (user {user:?})"));
        async move {
            tokio::time::sleep(penalty.min(MAX_UNAUTHORIZED_DELAY)).await;
            refusal
        }
    }

    /// `POST /proxy/open`: a forwarding from the caller to the server it names.
    pub async fn open(&self, caller: &Caller, request: &OpenRequest) -> Result<OpenReply, Refusal> {
        let user = self.authenticate(caller).await?;
        let refused = |r: Refusal| {
            warn!(
                "forward proxy: open refused ({}) for user {user}, client {}, server {}: {r}",
                r.status(),
                caller.client,
                request.host
            );
            r
        };
        let (client, local) = (caller.client.to_canonical(), caller.local.to_canonical());
        if !client.is_ipv4() || !local.is_ipv4() {
            return Err(refused(Refusal::BadRequest(
                "this forward proxy forwards IPv4 clients only".into(),
            )));
        }
        let server = resolve(&request.host, request.tcp_port)
            .await
            .map_err(|e| refused(Refusal::BadRequest(e)))?;
        self.settings()
            .destinations
            .check(server, &crate::config::environment::local_addresses())
            .map_err(|e| refused(Refusal::Forbidden(e.to_string())))?;
        let server_tcp = SocketAddr::new(server, request.tcp_port);
        let server_udp = SocketAddr::new(server, request.udp_port);
        let forwarding = self
            .table()
            .open(&user, client, server_tcp, server_udp, Instant::now())
            .map_err(|e| refused(Refusal::Unavailable(e.to_string())))?;
        let entry = SessionEntry {
            id: forwarding.entry_id,
            client,
            client_port: None,
            proxy_addr: local,
            proxy_port: forwarding.port,
            backend: server_udp,
            tcp_backend: Some(server_tcp),
            snat: self.settings().snat,
            lifetime: self.settings().entry_lifetime(),
        };
        let to_install = entry.clone();
        let installed = self
            .dataplane(move |f| f.install(&to_install))
            .await
            .unwrap_or_else(|| {
                Err(crate::dataplane::DataplaneError::Setup(
                    "the data plane thread failed".into(),
                ))
            });
        if let Err(e) = installed {
            self.table().take(forwarding.id);
            return Err(refused(Refusal::Internal(format!(
                "installing forwarding {}: {e}",
                forwarding.id
            ))));
        }
        info!(
            "forwarding {} opened: user {user}, client {client} -> server {server} (tcp {}, udp {}) \
             via proxy {local} port {}",
            forwarding.id, request.tcp_port, request.udp_port, forwarding.port
        );
        let reply = OpenReply {
            proxy_id: forwarding.id.to_string(),
            proxy_spec: SPEC_IPV4.into(),
            server_addr: server.to_string(),
            proxy_addr: Some(local.to_string()),
            proxy_tcp_port: forwarding.port,
            proxy_udp_port: forwarding.port,
            proxy_keepalive: self.settings().keepalive_told,
        };
        self.live().insert(
            forwarding.id,
            ForwardingInfo {
                forwarding,
                entry,
                opened: SystemTime::now(),
            },
        );
        Ok(reply)
    }

    /// `POST /proxy/keepalive`: the forwarding lives on; its kernel entries are refreshed.
    pub async fn keepalive(&self, caller: &Caller, id: u64) -> Result<(), Refusal> {
        let user = self.authenticate(caller).await?;
        let client = caller.client.to_canonical();
        let forwarding = self
            .table()
            .keepalive(id, client, &user, Instant::now())
            .map_err(|e| self.gone(id, client, &user, e))?;
        let entry = self.live().get(&id).map(|i| {
            let mut entry = i.entry.clone();
            entry.lifetime = self.settings().entry_lifetime();
            entry
        });
        if let Some(entry) = entry {
            if let Some(Err(e)) = self.dataplane(move |f| f.refresh(&entry)).await {
                warn!("forwarding {}: refreshing its entries: {e}", forwarding.id);
            }
        }
        Ok(())
    }

    /// `POST /proxy/close`: the forwarding and its kernel entries (and flows) go.
    pub async fn close(&self, caller: &Caller, id: u64) -> Result<(), Refusal> {
        let user = self.authenticate(caller).await?;
        let client = caller.client.to_canonical();
        let forwarding = self
            .table()
            .close(id, client, &user)
            .map_err(|e| self.gone(id, client, &user, e))?;
        self.remove(forwarding, "closed by the client").await;
        Ok(())
    }

    /// `fasp-proxy sessions close ID`: removes forwarding `id` whoever owns it, its kernel
    /// entries and conntrack flows with it, and logs who asked (`by`, e.g. `uid 0 root`); its
    /// client's next keepalive or close is answered "closed by the administrator". Returns
    /// whether it was live.
    pub async fn close_by_administrator(&self, id: u64, by: &str) -> bool {
        let Some(forwarding) = self.table().take(id) else {
            return false;
        };
        {
            let mut closed = self.admin_closed.lock().unwrap_or_else(|p| p.into_inner());
            if closed.len() >= ADMIN_CLOSED_MEMORY {
                closed.pop_front();
            }
            closed.push_back((id, forwarding.client, forwarding.user.clone()));
        }
        self.remove(forwarding, &format!("closed by the administrator ({by})"))
            .await;
        true
    }

    /// The 404 for a call on forwarding `id` that the table does not hold: "closed by the
    /// administrator" when that is what happened to this client's and user's forwarding.
    fn gone(&self, id: u64, client: IpAddr, user: &str, e: TableError) -> Refusal {
        let closed = self.admin_closed.lock().unwrap_or_else(|p| p.into_inner());
        if closed
            .iter()
            .any(|(i, c, u)| *i == id && *c == client && u == user)
        {
            Refusal::NotFound(format!("forwarding {id} was closed by the administrator"))
        } else {
            not_found(e)
        }
    }

    /// Removes the entries of forwardings whose keepalives stopped; returns how many.
    pub async fn sweep(&self) -> usize {
        let expired = self.table().expire(Instant::now());
        let n = expired.len();
        let why = format!(
            "expired (no keepalive for {} s)",
            self.settings().expiry.as_secs()
        );
        for f in expired {
            self.remove(f, &why).await;
        }
        n
    }

    /// Removes every forwarding (shutdown); returns how many there were.
    pub async fn close_all(&self) -> usize {
        let ids: Vec<u64> = self.table().list().map(|f| f.id).collect();
        let n = ids.len();
        for id in ids {
            let taken = self.table().take(id);
            if let Some(f) = taken {
                self.remove(f, "closed: the proxy is shutting down").await;
            }
        }
        n
    }

    async fn remove(&self, forwarding: Forwarding, why: &str) {
        let info = self.live().remove(&forwarding.id);
        if let Some(info) = info {
            let entry = info.entry;
            if let Some(Err(e)) = self.dataplane(move |f| f.remove(&entry)).await {
                warn!("forwarding {}: removing its entries: {e}", forwarding.id);
            }
        }
        info!(
            "forwarding {} {why}: user {}, client {} -> server {} (tcp {}, udp {}), proxy port {}, \
             {} s",
            forwarding.id,
            forwarding.user,
            forwarding.client,
            forwarding.server_tcp.ip(),
            forwarding.server_tcp.port(),
            forwarding.server_udp.port(),
            forwarding.port,
            forwarding.opened.elapsed().as_secs()
        );
    }

    /// The live forwardings, by id.
    pub fn list(&self) -> Vec<ForwardingInfo> {
        let mut all: Vec<ForwardingInfo> = self.live().values().cloned().collect();
        all.sort_by_key(|i| i.forwarding.id);
        all
    }

    /// The kernel counters (packets, bytes client → server) of a forwarding's UDP flow.
    pub async fn counters(&self, entry: SessionEntry) -> Option<(u64, u64)> {
        self.dataplane(move |f| f.counters(&entry))
            .await
            .and_then(Result::ok)
            .flatten()
    }
}

/// Password verifications on threads of their own, the same few for the daemon's life, each
/// with argon2id's working memory (19 MiB) kept between verifications.
///
/// Freed, that memory stays in glibc's arenas once its mmap threshold has grown (measured on
/// the runtime's blocking pool: 1.5 GiB after 1,000 opens); kept by the thread, it is allocated
/// once per burst and no verification waits for fresh pages. When no verification is waiting,
/// a thread gives its buffer back and the heap is trimmed, so an idle daemon holds none of it.
struct Verifier {
    jobs: std::sync::mpsc::Sender<VerifyJob>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

/// A job of a [`Verifier`] thread, handed that thread's argon2 memory.
type VerifyJob = Box<dyn FnOnce(&mut Vec<argon2::Block>) + Send>;

impl Verifier {
    fn start(threads: usize) -> Verifier {
        let (jobs, queue) = std::sync::mpsc::channel::<VerifyJob>();
        let queue = Arc::new(Mutex::new(queue));
        let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            let waiting = Arc::clone(&waiting);
            let spawned = std::thread::Builder::new()
                .name(format!("verify-{i}"))
                .spawn(move || {
                    let mut memory: Vec<argon2::Block> = Vec::new();
                    loop {
                        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(job) = job else { return };
                        // A panicking job loses its answer (the caller sees `None`), not the
                        // thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            job(&mut memory)
                        }));
                        if waiting.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                            memory = Vec::new();
                            crate::heap::trim();
                        }
                    }
                });
            if let Err(e) = spawned {
                warn!("forward proxy: cannot start a password verification thread: {e}");
            }
        }
        Verifier { jobs, waiting }
    }

    /// Runs `f` on a verification thread with its memory; `None` if none could run it.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<argon2::Block>) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let job: VerifyJob = Box::new(move |memory| {
            let _ = tx.send(f(memory));
        });
        if self.jobs.send(job).is_err() {
            self.waiting
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            return None;
        }
        rx.await.ok()
    }
}

fn not_found(e: TableError) -> Refusal {
    Refusal::NotFound(e.to_string())
}

/// The server's IPv4 address: the literal, or the first IPv4 address its name resolves to.
async fn resolve(host: &str, port: u16) -> Result<IpAddr, String> {
    if let Ok(addr) = host.parse::<IpAddr>() {
        return if addr.to_canonical().is_ipv4() {
            Ok(addr.to_canonical())
        } else {
            Err(format!("{host} is not an IPv4 address"))
        };
    }
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| format!("resolving {host} took over {} s", RESOLVE_TIMEOUT.as_secs()))?
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    found
        .map(|a| a.ip())
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| format!("{host} has no IPv4 address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::memory::MemoryForwarder;
    use crate::policy::penalties::{Penalties, PenaltySettings};
    use std::collections::BTreeSet;

    fn settings(dir: &std::path::Path, authentication: bool) -> ForwardSettings {
        ForwardSettings {
            authentication,
            keepalive_told: 5,
            snat: None,
            destinations: Destinations::default(),
            port_range: (5000, 5002),
            expiry: Duration::from_secs(30),
            sweep: Duration::from_secs(10),
            users_path: dir.join("node-users"),
        }
    }

    fn service(dir: &std::path::Path, authentication: bool) -> ForwardService {
        let fw: Box<dyn Forwarder> = Box::new(MemoryForwarder::new());
        ForwardService::new(
            settings(dir, authentication),
            BTreeSet::from([5001]),
            Arc::new(Mutex::new(fw)),
            Arc::new(Mutex::new(Penalties::new(PenaltySettings {
                auth_failure: Duration::from_millis(10),
                max: Duration::from_millis(40),
                ..PenaltySettings::default()
            }))),
        )
    }

    fn caller(user: &str, pass: &str) -> Caller {
        Caller {
            client: "192.0.2.2".parse().unwrap(),
            local: "192.0.2.1".parse().unwrap(),
            credentials: Some((user.into(), pass.into())),
        }
    }

    fn open_request(host: &str) -> OpenRequest {
        OpenRequest {
            host_spec: SPEC_IPV4.into(),
            host: host.into(),
            tcp_port: 22,
            udp_port: 33001,
        }
    }

    fn installed(s: &ForwardService) -> Vec<crate::dataplane::InstalledEntry> {
        s.forwarder.lock().unwrap().list().unwrap()
    }

    #[tokio::test]
    async fn open_installs_tcp_and_udp_on_one_port_and_close_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = service(dir.path(), false);
        let reply = s
            .open(&caller("alice", ""), &open_request("203.0.113.23"))
            .await
            .unwrap();
        assert_eq!(reply.proxy_id, "1");
        assert_eq!(reply.server_addr, "203.0.113.23");
        assert_eq!(reply.proxy_addr.as_deref(), Some("192.0.2.1"));
        assert_eq!((reply.proxy_tcp_port, reply.proxy_udp_port), (5000, 5000));
        assert_eq!(reply.proxy_keepalive, 5);
        let entries = installed(&s);
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].key.client,
            "192.0.2.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(entries[0].key.client_port, None);
        assert_eq!(entries[0].key.proxy_port, 5000);
        assert_eq!(entries[0].backend, "203.0.113.23:33001".parse().unwrap());
        assert_eq!(
            entries[0].tcp_backend,
            Some("203.0.113.23:22".parse().unwrap())
        );
        // The reserved port 5001 is skipped.
        let second = s
            .open(&caller("alice", ""), &open_request("203.0.113.24"))
            .await
            .unwrap();
        assert_eq!(second.proxy_tcp_port, 5002);
        s.keepalive(&caller("alice", ""), 1).await.unwrap();
        // Another user cannot close alice's forwarding.
        assert_eq!(
            s.close(&caller("bob", ""), 1).await.unwrap_err().status(),
            404
        );
        s.close(&caller("alice", ""), 1).await.unwrap();
        assert_eq!(installed(&s).len(), 1);
        assert_eq!(s.list().len(), 1);
        assert_eq!(s.close_all().await, 1);
        assert!(installed(&s).is_empty());
    }

    #[tokio::test]
    async fn the_administrator_closes_any_forwarding_and_its_client_is_told_why() {
        let dir = tempfile::tempdir().unwrap();
        let s = service(dir.path(), false);
        s.open(&caller("alice", ""), &open_request("203.0.113.23"))
            .await
            .unwrap();
        s.open(&caller("bob", ""), &open_request("203.0.113.24"))
            .await
            .unwrap();
        assert!(!s.close_by_administrator(99, "uid 0 root").await);
        assert!(s.close_by_administrator(1, "uid 0 root").await);
        assert!(!s.close_by_administrator(1, "uid 0 root").await, "gone");
        let left = installed(&s);
        assert_eq!(left.len(), 1, "only bob's entry is left");
        assert_eq!(left[0].backend, "203.0.113.24:33001".parse().unwrap());
        assert_eq!(s.list().len(), 1);
        for refusal in [
            s.keepalive(&caller("alice", ""), 1).await.unwrap_err(),
            s.close(&caller("alice", ""), 1).await.unwrap_err(),
        ] {
            assert_eq!(refusal.status(), 404);
            assert_eq!(
                refusal.to_string(),
                "forwarding 1 was closed by the administrator"
            );
        }
        // Someone else asking about it learns nothing of it.
        let other = s.keepalive(&caller("bob", ""), 1).await.unwrap_err();
        assert_eq!(other.status(), 404);
        assert!(!other.to_string().contains("administrator"), "{other}");
        s.keepalive(&caller("bob", ""), 2).await.unwrap();
    }

    #[tokio::test]
    async fn refusals_carry_their_status_and_install_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = NodeUsers::default();
        users.set("alice", "right password").unwrap();
        users.save(&dir.path().join("node-users")).unwrap();
        let s = service(dir.path(), true);
        let c = caller("alice", "wrong");
        assert_eq!(
            s.open(&c, &open_request("203.0.113.23"))
                .await
                .unwrap_err()
                .status(),
            401
        );
        let mut anonymous = caller("", "");
        anonymous.credentials = None;
        assert_eq!(
            s.open(&anonymous, &open_request("203.0.113.23"))
                .await
                .unwrap_err()
                .status(),
            401
        );
        let ok = caller("alice", "right password");
        assert_eq!(
            s.open(&ok, &open_request("127.0.0.1"))
                .await
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            s.open(&ok, &open_request("no-such-host.invalid"))
                .await
                .unwrap_err()
                .status(),
            400
        );
        assert!(installed(&s).is_empty());
        s.open(&ok, &open_request("203.0.113.23")).await.unwrap();
        s.open(&ok, &open_request("203.0.113.23")).await.unwrap();
        let full = s
            .open(&ok, &open_request("203.0.113.23"))
            .await
            .unwrap_err();
        assert_eq!(full.status(), 503, "{full}");
        assert_eq!(installed(&s).len(), 2);
        // A user added while running is seen at once (the file is re-read when it changes).
        let mut users = NodeUsers::load(&dir.path().join("node-users")).unwrap();
        users.set("bob", "bobs password").unwrap();
        // Make sure the modification time differs even on coarse-grained file systems.
        std::thread::sleep(Duration::from_millis(20));
        users.save(&dir.path().join("node-users")).unwrap();
        assert_eq!(
            s.authenticate(&caller("bob", "bobs password"))
                .await
                .unwrap(),
            "bob"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_forwarding_without_keepalives_expires_and_its_entries_go() {
        let dir = tempfile::tempdir().unwrap();
        let s = service(dir.path(), false);
        s.open(&caller("alice", ""), &open_request("203.0.113.23"))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(s.sweep().await, 0);
        s.keepalive(&caller("alice", ""), 1).await.unwrap();
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(s.sweep().await, 0);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(s.sweep().await, 1);
        assert!(installed(&s).is_empty());
        assert_eq!(
            s.keepalive(&caller("alice", ""), 1)
                .await
                .unwrap_err()
                .status(),
            404
        );
    }
}
