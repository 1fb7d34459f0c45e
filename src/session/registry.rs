//! The one registry of live sessions: who they are, their kernel entries, which
//! client-facing UDP ports are in use (so that no two live sessions share a DNAT key), and the
//! one handle per session that asks it to end ([`CloseSignal`]).
//!
//! Times are `tokio::time::Instant`s, so paused-time tests drive the idle timeout.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::dataplane::{SessionEntry, SessionKey};

/// What the registry knows of a live session (also what `fasp-proxy sessions` shows).
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The session UUID.
    pub id: Uuid,
    /// The proxy user.
    pub user: String,
    /// The client's SSH address.
    pub client: SocketAddr,
    /// The rule it matched (its label).
    pub rule: String,
    /// The internal server's SSH address, once connected.
    pub backend: Option<SocketAddr>,
    /// The kernel entry, once installed.
    pub entry: Option<SessionEntry>,
    /// When the session started.
    pub started: SystemTime,
    /// Last control-channel activity.
    pub last_activity: Instant,
    /// Kernel counters last read: (packets, bytes) client → server.
    pub forwarded: Option<(u64, u64)>,
}

/// Why a session is asked to end from outside its own task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The daemon is shutting down.
    Shutdown,
    /// No control or data traffic for longer than `<session_idle_timeout>`.
    IdleTimeout,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseReason::Shutdown => "the proxy is shutting down",
            CloseReason::IdleTimeout => "idle timeout: no control or data traffic",
        })
    }
}

/// The session task's end of its close handle: resolves once someone asked it to end.
#[derive(Debug, Clone)]
pub struct CloseSignal(watch::Receiver<Option<CloseReason>>);

impl CloseSignal {
    /// Waits until the session is asked to end; returns why. If the registry dropped the
    /// handle (the session was removed), waits forever: nobody can ask any more.
    pub async fn requested(&mut self) -> CloseReason {
        let asked = self.0.wait_for(Option::is_some).await.map(|r| *r).ok();
        match asked {
            Some(reason) => reason.unwrap_or(CloseReason::Shutdown),
            None => std::future::pending().await,
        }
    }

    /// Whether the session has been asked to end (without waiting).
    pub fn is_requested(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Why the session has been asked to end, if it has.
    pub fn reason(&self) -> Option<CloseReason> {
        *self.0.borrow()
    }
}

/// Why [`Registry::add_within`] did not add a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_sessions` are live.
    TooMany,
    /// The registry was closed ([`Registry::close_all`]).
    Closed(CloseReason),
}

/// Live sessions and the DNAT keys they hold.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<Uuid, SessionInfo>,
    /// Each live session's close handle (the sending side of its [`CloseSignal`]).
    close: HashMap<Uuid, watch::Sender<Option<CloseReason>>>,
    /// Set by [`Registry::close_all`]: no session is added any more.
    closed: Option<CloseReason>,
    keys: HashMap<SessionKey, Uuid>,
    /// Ports held by one session alone (`<udp_port_reuse>false`), and by whom.
    exclusive: HashMap<u16, Uuid>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a session if fewer than `max` are live (checked and added under one lock, so
    /// concurrent callers never exceed `max`) and the registry is not closed; returns the
    /// session's close signal, or why it was not added.
    pub fn add_within(&self, info: SessionInfo, max: usize) -> Result<CloseSignal, Refusal> {
        let mut g = self.lock();
        if let Some(reason) = g.closed {
            return Err(Refusal::Closed(reason));
        }
        if g.sessions.len() >= max {
            return Err(Refusal::TooMany);
        }
        let (tx, rx) = watch::channel(None);
        g.close.insert(info.id, tx);
        g.sessions.insert(info.id, info);
        Ok(CloseSignal(rx))
    }

    /// Asks session `id` to end for `reason` (its task acts on it); returns whether it is live.
    /// A session asked twice keeps the first reason.
    pub fn close(&self, id: Uuid, reason: CloseReason) -> bool {
        let g = self.lock();
        match g.close.get(&id) {
            Some(tx) => {
                tx.send_if_modified(|r| r.is_none() && r.replace(reason).is_none());
                true
            }
            None => false,
        }
    }

    /// Asks every live session to end and refuses new ones from now on; returns how many were
    /// live.
    pub fn close_all(&self, reason: CloseReason) -> usize {
        let mut g = self.lock();
        g.closed.get_or_insert(reason);
        for tx in g.close.values() {
            tx.send_if_modified(|r| r.is_none() && r.replace(reason).is_none());
        }
        g.sessions.len()
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves a client-facing UDP port for `id`: `preferred` if the key
    /// (client, client port or any, port) is free, else the next free port above it (up to
    /// `span` ports). With `exclusive` (`<udp_port_reuse>false`) the port must be used by no
    /// other live session at all, and no other session may take it while `id` holds it.
    /// Returns the port, or `None` when all are taken.
    pub fn reserve_port(
        &self,
        id: Uuid,
        client: IpAddr,
        client_port: Option<u16>,
        preferred: u16,
        span: u16,
        exclusive: bool,
    ) -> Option<u16> {
        let mut g = self.lock();
        for offset in 0..span.max(1) {
            let port = preferred.checked_add(offset)?;
            let key = SessionKey {
                client,
                client_port,
                proxy_port: port,
            };
            // A session without source-port filtering takes every port of its client: it
            // conflicts with the port-specific keys of that client and port, and vice versa.
            let clash = g.exclusive.contains_key(&port)
                || g.keys.keys().any(|k| {
                    k.proxy_port == port
                        && (exclusive
                            || (k.client == client
                                && (k.client_port.is_none()
                                    || client_port.is_none()
                                    || k.client_port == client_port)))
                });
            if !clash {
                g.keys.insert(key, id);
                if exclusive {
                    g.exclusive.insert(port, id);
                }
                return Some(port);
            }
        }
        None
    }

    /// Records the rule a session matched.
    pub fn set_rule(&self, id: Uuid, rule: String) {
        if let Some(s) = self.lock().sessions.get_mut(&id) {
            s.rule = rule;
        }
    }

    /// Records the installed entry of a session.
    pub fn set_entry(&self, id: Uuid, entry: SessionEntry, backend: SocketAddr) {
        if let Some(s) = self.lock().sessions.get_mut(&id) {
            s.entry = Some(entry);
            s.backend = Some(backend);
        }
    }

    /// Notes control-channel activity.
    pub fn touch(&self, id: Uuid) {
        if let Some(s) = self.lock().sessions.get_mut(&id) {
            s.last_activity = Instant::now();
        }
    }

    /// Records kernel counters; returns whether they moved since the last reading.
    pub fn set_counters(&self, id: Uuid, packets: u64, bytes: u64) -> bool {
        match self.lock().sessions.get_mut(&id) {
            Some(s) => {
                let moved = s.forwarded.is_none_or(|(p, _)| p != packets);
                s.forwarded = Some((packets, bytes));
                if moved {
                    s.last_activity = Instant::now();
                }
                moved
            }
            None => false,
        }
    }

    /// Removes a session and frees its keys; returns what was known of it.
    pub fn remove(&self, id: Uuid) -> Option<SessionInfo> {
        let mut g = self.lock();
        g.keys.retain(|_, owner| *owner != id);
        g.exclusive.retain(|_, owner| *owner != id);
        g.close.remove(&id);
        g.sessions.remove(&id)
    }

    /// Transferring sessions (those with a kernel entry; the handshake has time limits of its
    /// own) whose last activity is older than `limit` at `now`.
    pub fn idle(&self, limit: std::time::Duration, now: Instant) -> Vec<Uuid> {
        self.lock()
            .sessions
            .values()
            .filter(|s| s.entry.is_some())
            .filter(|s| now.saturating_duration_since(s.last_activity) > limit)
            .map(|s| s.id)
            .collect()
    }

    /// A copy of every live session.
    pub fn snapshot(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self.lock().sessions.values().cloned().collect();
        v.sort_by_key(|s| s.started);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> SessionInfo {
        SessionInfo {
            id: Uuid::new_v4(),
            user: "u".into(),
            client: "192.0.2.2:40000".parse().unwrap(),
            rule: String::new(),
            backend: None,
            entry: None,
            started: SystemTime::now(),
            last_activity: Instant::now(),
            forwarded: None,
        }
    }

    fn entry(id: Uuid) -> SessionEntry {
        SessionEntry {
            id,
            client: "192.0.2.2".parse().unwrap(),
            client_port: Some(40000),
            proxy_addr: "192.0.2.1".parse().unwrap(),
            proxy_port: 33001,
            backend: "198.51.100.2:33001".parse().unwrap(),
            snat: None,
            lifetime: std::time::Duration::from_secs(60),
        }
    }

    #[test]
    fn the_session_cap_holds_under_concurrent_adds() {
        let r = std::sync::Arc::new(Registry::new());
        let added: usize = (0..16)
            .map(|_| {
                let r = std::sync::Arc::clone(&r);
                std::thread::spawn(move || usize::from(r.add_within(info(), 3).is_ok()))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(added, 3);
        assert_eq!(r.len(), 3);
        let first = r.snapshot()[0].id;
        r.remove(first);
        assert!(r.add_within(info(), 3).is_ok());
        assert_eq!(r.add_within(info(), 3).err(), Some(Refusal::TooMany));
    }

    #[tokio::test]
    async fn one_close_handle_per_session_and_close_all_refuses_new_ones() {
        let r = Registry::new();
        let a = info();
        let a_id = a.id;
        let mut a_signal = r.add_within(a, 10).unwrap();
        let mut b_signal = r.add_within(info(), 10).unwrap();
        assert!(!a_signal.is_requested());
        assert!(r.close(a_id, CloseReason::IdleTimeout));
        assert!(r.close(a_id, CloseReason::Shutdown), "still live");
        assert_eq!(
            a_signal.requested().await,
            CloseReason::IdleTimeout,
            "first reason kept"
        );
        assert!(!b_signal.is_requested());
        assert_eq!(r.close_all(CloseReason::Shutdown), 2);
        assert_eq!(b_signal.requested().await, CloseReason::Shutdown);
        assert_eq!(
            r.add_within(info(), 10).err(),
            Some(Refusal::Closed(CloseReason::Shutdown))
        );
        r.remove(a_id);
        assert!(!r.close(a_id, CloseReason::Shutdown), "gone");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_sessions_are_those_untouched_for_longer_than_the_limit() {
        let r = Registry::new();
        let a = info();
        let (a_id, b) = (a.id, info());
        let b_id = b.id;
        let _sa = r.add_within(a, 10).unwrap();
        let _sb = r.add_within(b, 10).unwrap();
        let limit = std::time::Duration::from_secs(60);
        tokio::time::advance(std::time::Duration::from_secs(100)).await;
        assert!(
            r.idle(limit, Instant::now()).is_empty(),
            "still in the handshake"
        );
        for id in [a_id, b_id] {
            r.set_entry(id, entry(id), "198.51.100.2:22".parse().unwrap());
            r.touch(id);
        }
        tokio::time::advance(std::time::Duration::from_secs(50)).await;
        r.touch(b_id);
        tokio::time::advance(std::time::Duration::from_secs(11)).await;
        assert_eq!(r.idle(limit, Instant::now()), vec![a_id]);
        // Counters that move count as activity.
        assert!(r.set_counters(a_id, 5, 500));
        assert!(r.idle(limit, Instant::now()).is_empty());
    }

    #[test]
    fn ports_never_give_two_sessions_one_key() {
        let r = Registry::new();
        let c: IpAddr = "192.0.2.2".parse().unwrap();
        let (a, b, d, e) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        assert_eq!(
            r.reserve_port(a, c, Some(40000), 33001, 10, false),
            Some(33001)
        );
        assert_eq!(
            r.reserve_port(b, c, Some(40001), 33001, 10, false),
            Some(33001),
            "other client port"
        );
        assert_eq!(
            r.reserve_port(d, c, Some(40000), 33001, 10, false),
            Some(33002),
            "same key: next port"
        );
        // Any-port sessions conflict with every port-specific key of the client on that port.
        assert_eq!(r.reserve_port(e, c, None, 33001, 10, false), Some(33003));
        assert_eq!(
            r.reserve_port(Uuid::new_v4(), c, Some(50000), 33003, 1, false),
            None
        );
        r.remove(a);
        assert_eq!(
            r.reserve_port(Uuid::new_v4(), c, Some(40000), 33001, 10, false),
            Some(33001)
        );
        assert_eq!(
            r.reserve_port(Uuid::new_v4(), c, Some(1), 65535, 1, false),
            Some(65535)
        );
        assert_eq!(
            r.reserve_port(Uuid::new_v4(), c, None, 65535, 10, false),
            None,
            "no overflow"
        );
    }

    #[test]
    fn without_port_reuse_a_session_has_its_port_to_itself() {
        let r = Registry::new();
        let c: IpAddr = "192.0.2.2".parse().unwrap();
        let other: IpAddr = "198.51.100.9".parse().unwrap();
        let shared = Uuid::new_v4();
        assert_eq!(
            r.reserve_port(shared, c, Some(40000), 33001, 10, false),
            Some(33001)
        );
        // Exclusive: not even another client's port may be shared, in either order.
        let alone = Uuid::new_v4();
        assert_eq!(
            r.reserve_port(alone, other, Some(40000), 33001, 10, true),
            Some(33002)
        );
        assert_eq!(
            r.reserve_port(Uuid::new_v4(), c, Some(40001), 33002, 1, false),
            None,
            "33002 is held alone"
        );
        assert_eq!(
            r.reserve_port(Uuid::new_v4(), other, Some(40001), 33001, 10, true),
            Some(33003)
        );
        r.remove(alone);
        assert_eq!(
            r.reserve_port(Uuid::new_v4(), c, Some(40001), 33002, 1, false),
            Some(33002),
            "freed with its session"
        );
    }
}
