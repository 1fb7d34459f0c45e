//! An in-memory [`Forwarder`] for tests of the daemon without root (netavark keeps a no-op
//! `fwnone` driver for the same purpose; this one also records what it was asked).
//!
//! It touches no kernel object and holds its entries in a map, with the semantics of the real
//! backends: [`Forwarder::install`] refuses, changing nothing, an entry whose [`SessionKey`]
//! another entry holds; removing an absent session is not an error; [`Forwarder::reconcile`]
//! removes and reports the entries no live session owns; [`Forwarder::purge`] removes all.
//! Unlike the real backends it needs no [`Forwarder::prepare`] before an install.
//!
//! The test keeps a [`MemoryHandle`] (from [`MemoryForwarder::handle`]) to read the calls and
//! the installed entries, and to make installs fail, after the forwarder itself was boxed and
//! handed to the code under test.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use super::entry::{InstalledEntry, SessionEntry, SessionKey};
use super::error::{DataplaneError, Errors};
use super::Backend;
use super::{Forwarder, ReconcileReport};

/// One call made to a [`MemoryForwarder`], with the session it was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// [`Forwarder::prepare`].
    Prepare,
    /// [`Forwarder::install`] of this session (recorded also when refused).
    Install(Uuid),
    /// [`Forwarder::refresh`] of this session.
    Refresh(Uuid),
    /// [`Forwarder::remove`] of this session.
    Remove(Uuid),
    /// [`Forwarder::list`].
    List,
    /// [`Forwarder::counters`] of this session.
    Counters(Uuid),
    /// [`Forwarder::reconcile`] with these live sessions.
    Reconcile(Vec<Uuid>),
    /// [`Forwarder::purge`].
    Purge,
}

/// What a [`MemoryForwarder`] and its handles share.
#[derive(Debug, Default)]
struct MemoryState {
    calls: Vec<Call>,
    /// Installed entries, in installation order.
    entries: Vec<SessionEntry>,
    fail_installs: Option<String>,
    counters: Vec<(Uuid, (u64, u64))>,
}

/// A [`Forwarder`] that keeps its entries in memory and records every call.
#[derive(Debug, Default)]
pub struct MemoryForwarder {
    state: Arc<Mutex<MemoryState>>,
}

/// A test's view of a [`MemoryForwarder`]: its calls and entries, and the failures to inject.
#[derive(Debug, Clone)]
pub struct MemoryHandle {
    state: Arc<Mutex<MemoryState>>,
}

/// Locks the state; a test that panicked while holding the lock does not hide the state.
fn lock(state: &Mutex<MemoryState>) -> MutexGuard<'_, MemoryState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryForwarder {
    /// An empty forwarder: no entries, installs succeed, no counters.
    pub fn new() -> MemoryForwarder {
        MemoryForwarder::default()
    }

    /// A handle the test keeps after the forwarder is boxed and handed to the daemon.
    pub fn handle(&self) -> MemoryHandle {
        MemoryHandle {
            state: Arc::clone(&self.state),
        }
    }

    fn state(&self) -> MutexGuard<'_, MemoryState> {
        lock(&self.state)
    }
}

impl MemoryHandle {
    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// The entries installed now, in installation order.
    pub fn installed(&self) -> Vec<SessionEntry> {
        lock(&self.state).entries.clone()
    }

    /// `Some(why)`: every install fails, changing nothing, with a [`DataplaneError::Setup`]
    /// carrying `why`, until set back to `None`.
    pub fn fail_installs(&self, why: Option<String>) {
        lock(&self.state).fail_installs = why;
    }

    /// What [`Forwarder::counters`] answers for session `id` from now on (default `None`).
    pub fn set_counters(&self, id: Uuid, packets: u64, bytes: u64) {
        let mut state = lock(&self.state);
        state.counters.retain(|(other, _)| *other != id);
        state.counters.push((id, (packets, bytes)));
    }
}

impl MemoryState {
    /// Removes the entries `drop` selects and returns them as the kernel would list them.
    fn remove_where(&mut self, drop: impl Fn(&SessionEntry) -> bool) -> Vec<InstalledEntry> {
        let (gone, kept): (Vec<_>, Vec<_>) = self.entries.drain(..).partition(|e| drop(e));
        self.entries = kept;
        gone.iter().map(installed).collect()
    }
}

/// An entry as [`Forwarder::list`] reports it.
fn installed(entry: &SessionEntry) -> InstalledEntry {
    InstalledEntry {
        id: Some(entry.id),
        key: entry.key(),
        backend: entry.backend,
        tcp_backend: entry.tcp_backend,
        snat: entry.snat,
        expires: None,
    }
}

impl Forwarder for MemoryForwarder {
    fn kind(&self) -> Backend {
        Backend::Memory
    }

    fn prepare(&mut self) -> Result<(), DataplaneError> {
        self.state().calls.push(Call::Prepare);
        Ok(())
    }

    fn install(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError> {
        let mut state = self.state();
        state.calls.push(Call::Install(entry.id));
        entry.validate()?;
        if let Some(why) = &state.fail_installs {
            return Err(DataplaneError::Setup(why.clone()));
        }
        let key: SessionKey = entry.key();
        if let Some(owner) = state.entries.iter().find(|e| e.key() == key) {
            return Err(DataplaneError::KeyTaken {
                id: entry.id,
                key,
                owner: Some(owner.id),
            });
        }
        state.entries.push(entry.clone());
        Ok(())
    }

    fn refresh(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError> {
        self.state().calls.push(Call::Refresh(entry.id));
        Ok(entry.validate()?)
    }

    fn remove(&mut self, entry: &SessionEntry) -> Result<(), Errors> {
        let mut state = self.state();
        state.calls.push(Call::Remove(entry.id));
        state.remove_where(|e| e.id == entry.id);
        Ok(())
    }

    fn list(&mut self) -> Result<Vec<InstalledEntry>, DataplaneError> {
        let mut state = self.state();
        state.calls.push(Call::List);
        Ok(state.entries.iter().map(installed).collect())
    }

    fn counters(&mut self, entry: &SessionEntry) -> Result<Option<(u64, u64)>, DataplaneError> {
        let mut state = self.state();
        state.calls.push(Call::Counters(entry.id));
        Ok(state
            .counters
            .iter()
            .find(|(id, _)| *id == entry.id)
            .map(|(_, c)| *c))
    }

    fn reconcile(&mut self, live: &[Uuid]) -> Result<ReconcileReport, Errors> {
        let mut state = self.state();
        state.calls.push(Call::Reconcile(live.to_vec()));
        let live: HashSet<Uuid> = live.iter().copied().collect();
        let removed = state.remove_where(|e| !live.contains(&e.id));
        Ok(ReconcileReport {
            kept: state.entries.len(),
            removed,
        })
    }

    fn purge(&mut self) -> Result<ReconcileReport, Errors> {
        let mut state = self.state();
        state.calls.push(Call::Purge);
        Ok(ReconcileReport {
            kept: 0,
            removed: state.remove_where(|_| true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::entry::sample_entry;

    fn entry(n: u128, client_port: Option<u16>) -> SessionEntry {
        SessionEntry {
            id: Uuid::from_u128(n),
            client_port,
            ..sample_entry()
        }
    }

    #[test]
    fn installs_lists_and_removes_recording_every_call() {
        let mut fw = MemoryForwarder::new();
        let handle = fw.handle();
        let a = entry(1, Some(40000));
        let b = entry(2, None);
        fw.prepare().unwrap();
        fw.install(&a).unwrap();
        fw.install(&b).unwrap();
        fw.refresh(&a).unwrap();
        assert_eq!(handle.installed(), vec![a.clone(), b.clone()]);
        assert_eq!(fw.list().unwrap(), vec![installed(&a), installed(&b)]);
        fw.remove(&a).unwrap();
        // Removing what is gone is not an error.
        fw.remove(&a).unwrap();
        assert_eq!(handle.installed(), vec![b.clone()]);
        assert_eq!(
            handle.calls(),
            vec![
                Call::Prepare,
                Call::Install(a.id),
                Call::Install(b.id),
                Call::Refresh(a.id),
                Call::List,
                Call::Remove(a.id),
                Call::Remove(a.id),
            ]
        );
    }

    #[test]
    fn a_taken_key_is_refused_and_nothing_changes() {
        let mut fw = MemoryForwarder::new();
        let first = entry(1, Some(40000));
        fw.install(&first).unwrap();
        let mut second = entry(2, Some(40000));
        second.backend = "198.51.100.3:33001".parse().unwrap();
        match fw.install(&second) {
            Err(DataplaneError::KeyTaken { id, key, owner }) => {
                assert_eq!((id, key, owner), (second.id, first.key(), Some(first.id)));
            }
            other => panic!("expected KeyTaken, got {other:?}"),
        }
        assert_eq!(fw.handle().installed(), vec![first.clone()]);
        // Same client and proxy port without a client port is another key.
        fw.install(&entry(3, None)).unwrap();
        // A malformed entry is refused as the real backends refuse it.
        let mut bad = entry(4, Some(40001));
        bad.backend = "[2001:db8::2]:33001".parse().unwrap();
        assert!(matches!(
            fw.install(&bad),
            Err(DataplaneError::InvalidEntry { .. })
        ));
        assert_eq!(fw.handle().installed().len(), 2);
    }

    #[test]
    fn failing_installs_change_nothing_until_turned_off() {
        let mut fw = MemoryForwarder::new();
        let handle = fw.handle();
        handle.fail_installs(Some("no room".into()));
        let e = entry(1, Some(40000));
        match fw.install(&e) {
            Err(DataplaneError::Setup(why)) => assert_eq!(why, "no room"),
            other => panic!("expected Setup, got {other:?}"),
        }
        assert!(handle.installed().is_empty());
        handle.fail_installs(None);
        fw.install(&e).unwrap();
        assert_eq!(handle.installed(), vec![e]);
        assert_eq!(handle.calls(), vec![Call::Install(Uuid::from_u128(1)); 2]);
    }

    #[test]
    fn reconcile_drops_what_no_live_session_owns_and_purge_drops_all() {
        let mut fw = MemoryForwarder::new();
        let (a, b, c) = (entry(1, Some(1)), entry(2, Some(2)), entry(3, Some(3)));
        for e in [&a, &b, &c] {
            fw.install(e).unwrap();
        }
        let report = fw.reconcile(&[b.id, Uuid::from_u128(99)]).unwrap();
        assert_eq!(report.kept, 1);
        assert_eq!(report.removed, vec![installed(&a), installed(&c)]);
        assert_eq!(fw.handle().installed(), vec![b.clone()]);
        let report = fw.purge().unwrap();
        assert_eq!((report.kept, report.removed), (0, vec![installed(&b)]));
        assert!(fw.list().unwrap().is_empty());
        assert_eq!(fw.purge().unwrap(), ReconcileReport::default());
        assert_eq!(
            fw.handle().calls().last(),
            Some(&Call::Purge),
            "{:?}",
            fw.handle().calls()
        );
        assert!(fw
            .handle()
            .calls()
            .contains(&Call::Reconcile(vec![b.id, Uuid::from_u128(99)])));
    }

    #[test]
    fn counters_are_what_the_test_set() {
        let mut fw = MemoryForwarder::new();
        let e = entry(1, Some(40000));
        assert_eq!(fw.counters(&e).unwrap(), None);
        fw.handle().set_counters(e.id, 3, 300);
        fw.handle().set_counters(e.id, 4, 400);
        assert_eq!(fw.counters(&e).unwrap(), Some((4, 400)));
        assert_eq!(fw.handle().calls(), vec![Call::Counters(e.id); 2]);
    }
}
