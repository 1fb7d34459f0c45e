//! The one registry of live sessions: who they are, their kernel entries, and which
//! client-facing UDP ports are in use, so that no two live sessions share a DNAT key.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

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
    /// Wakes the session task to end it (idle timeout).
    pub cancel: std::sync::Arc<tokio::sync::Notify>,
}

/// Live sessions and the DNAT keys they hold.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<Uuid, SessionInfo>,
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
    /// concurrent callers never exceed `max`); returns whether it was added.
    pub fn add_within(&self, info: SessionInfo, max: usize) -> bool {
        let mut g = self.lock();
        if g.sessions.len() >= max {
            return false;
        }
        g.sessions.insert(info.id, info);
        true
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

    /// The handle that ends a session.
    pub fn cancel_handle(&self, id: Uuid) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        self.lock()
            .sessions
            .get(&id)
            .map(|s| std::sync::Arc::clone(&s.cancel))
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
        g.sessions.remove(&id)
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
            cancel: std::sync::Arc::new(tokio::sync::Notify::new()),
        }
    }

    #[test]
    fn the_session_cap_holds_under_concurrent_adds() {
        let r = std::sync::Arc::new(Registry::new());
        let added: usize = (0..16)
            .map(|_| {
                let r = std::sync::Arc::clone(&r);
                std::thread::spawn(move || usize::from(r.add_within(info(), 3)))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(added, 3);
        assert_eq!(r.len(), 3);
        let first = r.snapshot()[0].id;
        r.remove(first);
        assert!(r.add_within(info(), 3));
        assert!(!r.add_within(info(), 3));
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
