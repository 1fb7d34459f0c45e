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
    /// An opaque session (IBM's protocol, bridged unread; its entry is shared, see
    /// [`Registry::join_opaque`]).
    pub opaque: bool,
}

/// Why a session is asked to end from outside its own task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The daemon is shutting down.
    Shutdown,
    /// No control or data traffic for longer than `<session_idle_timeout>`.
    IdleTimeout,
    /// `fasp-proxy sessions close ID` (the control socket logs who asked).
    Administrator,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseReason::Shutdown => "the proxy is shutting down",
            CloseReason::IdleTimeout => "idle timeout: no control or data traffic",
            CloseReason::Administrator => "closed by the administrator",
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
    /// The entries of opaque sessions, each shared by every live opaque session of one client
    /// address on one client-facing port.
    opaque: HashMap<SessionKey, OpaqueGroup>,
    /// Bumped whenever an opaque group is installed or goes, for sessions waiting on one.
    opaque_changes: Option<watch::Sender<u64>>,
}

/// Opaque sessions sharing one kernel entry: the key cannot tell them apart (it has no client
/// UDP port, which only IBM's own stream carries), so they all go to one internal server.
#[derive(Debug)]
struct OpaqueGroup {
    /// The rule the first session matched; a session under another rule cannot join.
    rule: String,
    /// The sessions using the entry (the first one among them while it installs).
    members: Vec<Uuid>,
    state: GroupState,
}

#[derive(Debug, Clone)]
enum GroupState {
    /// Its first session is logging in to an internal server and installing the entry.
    Installing,
    /// The entry is in the kernel, forwarding to the internal server at this SSH address.
    Live(SessionEntry, SocketAddr),
    /// Its last session left; the entry is being removed from the kernel.
    Draining,
}

/// What [`Registry::join_opaque`] tells an opaque session to do.
#[derive(Debug)]
pub enum OpaqueJoin {
    /// No session holds the key: this one is the group's first; it picks an internal server,
    /// installs the entry, then calls [`Registry::opaque_installed`].
    First,
    /// The entry is live: use it, and the internal server at this SSH address.
    Member(SessionEntry, SocketAddr),
    /// The group is being installed or removed: wait for a change, then ask again.
    Wait(watch::Receiver<u64>),
    /// The key is taken in a way this session cannot share (why, for the client).
    Conflict(String),
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
            // Opaque sessions' keys are of that kind.
            let clash = g.exclusive.contains_key(&port)
                || g.opaque
                    .keys()
                    .any(|k| k.proxy_port == port && (exclusive || k.client == client))
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

    /// Joins opaque session `id` (matched `rule`) to the group of `key` (client address, any
    /// client port, client-facing port), making it the first if there is none. A key held by
    /// a parsed session, alone (`<udp_port_reuse>false`), or by opaque sessions of another rule
    /// is a conflict: one kernel entry cannot forward to two places.
    pub fn join_opaque(&self, id: Uuid, key: SessionKey, rule: &str) -> OpaqueJoin {
        let mut g = self.lock();
        if let Some(owner) = g.exclusive.get(&key.proxy_port) {
            return OpaqueJoin::Conflict(format!(
                "UDP port {} is held by session {owner} alone (<udp_port_reuse>false)",
                key.proxy_port
            ));
        }
        if let Some((_, owner)) = g
            .keys
            .iter()
            .find(|(k, _)| k.client == key.client && k.proxy_port == key.proxy_port)
        {
            return OpaqueJoin::Conflict(format!(
                "UDP port {} for {} is held by session {owner}, a fasp-proxy transfer",
                key.proxy_port, key.client
            ));
        }
        let changes = g
            .opaque_changes
            .get_or_insert_with(|| watch::channel(0).0)
            .subscribe();
        match g.opaque.get_mut(&key) {
            None => {
                g.opaque.insert(
                    key,
                    OpaqueGroup {
                        rule: rule.to_string(),
                        members: vec![id],
                        state: GroupState::Installing,
                    },
                );
                OpaqueJoin::First
            }
            Some(group) if group.rule != rule => OpaqueJoin::Conflict(format!(
                "{key} is in use by IBM sessions of {} going to another internal server; \
                 one client address cannot use two rules' servers on the same UDP port at once",
                group.rule
            )),
            Some(group) => match group.state.clone() {
                GroupState::Live(entry, backend) => {
                    group.members.push(id);
                    OpaqueJoin::Member(entry, backend)
                }
                GroupState::Installing | GroupState::Draining => OpaqueJoin::Wait(changes),
            },
        }
    }

    /// The first session of `key`'s group installed `entry`, forwarding to the internal server
    /// at SSH address `backend`; sessions waiting may join.
    pub fn opaque_installed(&self, key: SessionKey, entry: SessionEntry, backend: SocketAddr) {
        let mut g = self.lock();
        if let Some(group) = g.opaque.get_mut(&key) {
            group.state = GroupState::Live(entry, backend);
        }
        Self::opaque_changed(&mut g);
    }

    /// Opaque session `id` leaves `key`'s group. If it was the last one and the entry is live,
    /// returns the entry: the caller removes it from the kernel, then calls
    /// [`Registry::opaque_drained`] (until then the key is not handed out again).
    pub fn leave_opaque(&self, id: Uuid, key: SessionKey) -> Option<SessionEntry> {
        let mut g = self.lock();
        let group = g.opaque.get_mut(&key)?;
        group.members.retain(|m| *m != id);
        let installing = matches!(group.state, GroupState::Installing);
        if installing && !group.members.is_empty() {
            // Only the first session installs; if it leaves before, the group goes and a
            // waiting session starts it again.
            group.members.clear();
        }
        if !group.members.is_empty() {
            return None;
        }
        let state = std::mem::replace(&mut group.state, GroupState::Draining);
        match state {
            GroupState::Live(entry, _) => Some(entry),
            GroupState::Installing | GroupState::Draining => {
                g.opaque.remove(&key);
                Self::opaque_changed(&mut g);
                None
            }
        }
    }

    /// The entry [`Registry::leave_opaque`] returned is out of the kernel: the key is free.
    pub fn opaque_drained(&self, key: SessionKey) {
        let mut g = self.lock();
        g.opaque.remove(&key);
        Self::opaque_changed(&mut g);
    }

    fn opaque_changed(g: &mut Inner) {
        if let Some(tx) = &g.opaque_changes {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
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

    /// Forgets the session's entry (just before its removal from the kernel), so that a refresh
    /// taken from an earlier [`Registry::snapshot`] does not put it back (see
    /// [`Registry::has_entry`]).
    pub fn clear_entry(&self, id: Uuid) {
        if let Some(s) = self.lock().sessions.get_mut(&id) {
            s.entry = None;
        }
    }

    /// Whether the session is live and still has its entry. Asked under the data plane's lock
    /// before a refresh: a refresh can re-create an element, so it must not follow the
    /// session's own removal.
    pub fn has_entry(&self, id: Uuid) -> bool {
        self.lock()
            .sessions
            .get(&id)
            .is_some_and(|s| s.entry.is_some())
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

    /// Whether session `id` is live (added and not yet removed).
    pub fn contains(&self, id: Uuid) -> bool {
        self.lock().sessions.contains_key(&id)
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
            opaque: false,
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
            tcp_backend: None,
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

    #[tokio::test]
    async fn an_administrator_close_reaches_the_session_and_says_so() {
        let r = Registry::new();
        let a = info();
        let id = a.id;
        let mut signal = r.add_within(a, 10).unwrap();
        assert!(r.contains(id));
        assert!(!r.contains(Uuid::new_v4()));
        assert!(r.close(id, CloseReason::Administrator));
        let reason = signal.requested().await;
        assert_eq!(reason, CloseReason::Administrator);
        assert_eq!(reason.to_string(), "closed by the administrator");
        r.remove(id);
        assert!(!r.contains(id));
        assert!(!r.close(id, CloseReason::Administrator), "gone");
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

    fn opaque_key(client: &str, port: u16) -> SessionKey {
        SessionKey {
            client: client.parse().unwrap(),
            client_port: None,
            proxy_port: port,
        }
    }

    #[tokio::test]
    async fn opaque_sessions_of_one_client_share_one_entry_until_the_last_leaves() {
        let r = Registry::new();
        let key = opaque_key("192.0.2.2", 33001);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert!(matches!(r.join_opaque(a, key, "rule 1"), OpaqueJoin::First));
        let OpaqueJoin::Wait(mut changes) = r.join_opaque(b, key, "rule 1") else {
            panic!("b must wait while a installs")
        };
        let mut e = entry(a);
        e.client_port = None;
        let backend: SocketAddr = "198.51.100.2:22".parse().unwrap();
        r.opaque_installed(key, e.clone(), backend);
        changes.changed().await.unwrap();
        assert!(
            matches!(r.join_opaque(b, key, "rule 1"), OpaqueJoin::Member(got, at) if got == e && at == backend)
        );
        assert!(
            matches!(r.join_opaque(c, key, "rule 2"), OpaqueJoin::Conflict(why) if why.contains("rule 1"))
        );
        // A parsed session of that client cannot take the port, another client's can.
        assert_eq!(
            r.reserve_port(c, key.client, Some(40000), 33001, 1, false),
            None
        );
        let other: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(
            r.reserve_port(c, other, Some(40000), 33001, 1, false),
            Some(33001)
        );
        // The first one leaving keeps the entry for the other.
        assert!(r.leave_opaque(a, key).is_none());
        assert_eq!(r.leave_opaque(b, key), Some(e));
        assert!(
            matches!(r.join_opaque(a, key, "rule 1"), OpaqueJoin::Wait(_)),
            "draining"
        );
        r.opaque_drained(key);
        assert!(matches!(r.join_opaque(a, key, "rule 2"), OpaqueJoin::First));
    }

    #[test]
    fn an_opaque_key_held_by_a_parsed_session_is_a_conflict_and_a_failed_first_frees_it() {
        let r = Registry::new();
        let key = opaque_key("192.0.2.2", 33001);
        let parsed = Uuid::new_v4();
        assert_eq!(
            r.reserve_port(parsed, key.client, Some(40000), 33001, 1, false),
            Some(33001)
        );
        assert!(
            matches!(r.join_opaque(Uuid::new_v4(), key, "rule 1"), OpaqueJoin::Conflict(why) if why.contains("fasp-proxy transfer"))
        );
        r.remove(parsed);
        let first = Uuid::new_v4();
        assert!(matches!(
            r.join_opaque(first, key, "rule 1"),
            OpaqueJoin::First
        ));
        assert!(
            r.leave_opaque(first, key).is_none(),
            "nothing was installed"
        );
        assert!(matches!(
            r.join_opaque(Uuid::new_v4(), key, "rule 1"),
            OpaqueJoin::First
        ));
    }

    #[test]
    fn a_cleared_entry_is_no_longer_refreshed_nor_idle() {
        let r = Registry::new();
        let a = info();
        let id = a.id;
        let _signal = r.add_within(a, 10).unwrap();
        assert!(!r.has_entry(id), "no entry before the install");
        r.set_entry(id, entry(id), "198.51.100.2:22".parse().unwrap());
        assert!(r.has_entry(id));
        r.clear_entry(id);
        assert!(!r.has_entry(id), "the upkeep must not refresh it back");
        assert!(r
            .idle(
                std::time::Duration::ZERO,
                Instant::now() + std::time::Duration::from_secs(1)
            )
            .is_empty());
        r.remove(id);
        assert!(!r.has_entry(id));
    }
}
