//! The kernel data plane: per-session DNAT entries that make the kernel forward a transfer's UDP
//! data (and, for an entry with a [`SessionEntry::tcp_backend`], the client's TCP to the same
//! port: the forward proxy's SSH), and their teardown.
//!
//! One [`Forwarder`] trait, one backend per kernel interface (as netavark's firewall drivers):
//! - [`nftables::NftablesForwarder`] (default): elements of maps in tables the proxy owns,
//!   added and deleted over one long-lived NETLINK_NETFILTER socket;
//! - [`iptables::IptablesForwarder`]: one rule per session in chains the proxy owns, written with
//!   `iptables-restore --noflush` batches;
//! - [`memory::MemoryForwarder`]: no kernel at all, entries in memory and every call recorded,
//!   for tests of the daemon without root (netavark's `fwnone`).
//!
//! [`timed::Timed`] wraps any of them to time installs and removals for the metrics.
//!
//! Both delete the flow's conntrack entries on removal ([`conntrack`]), since a conntrack entry
//! keeps forwarding a running flow after its DNAT entry is gone. This module knows nothing of SSH.

pub mod command;
pub mod conntrack;
pub mod entry;
pub mod error;
pub mod family;
pub mod fast_path;
pub mod iptables;
pub mod memory;
pub mod netlink;
pub mod nftables;
pub mod timed;

pub use entry::{EntryError, InstalledEntry, SessionEntry, SessionKey};
pub use error::{DataplaneError, Errors};
pub use family::Family;

use std::fmt;
use std::path::Path;

/// Which backend a [`Forwarder`] is: the kernel interface it drives (or none, for the
/// in-memory one). The configuration's `<forwarding_type>` names one of the first two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// [`nftables::NftablesForwarder`].
    Nftables,
    /// [`iptables::IptablesForwarder`].
    Iptables,
    /// [`memory::MemoryForwarder`]: no kernel object, for tests.
    Memory,
}

impl Backend {
    /// What the proxy owns in the kernel with this backend, named from the backend's own
    /// constants, for messages: `tables (ip and ip6 fasp_proxy)`, `chains (FASP_PROXY,
    /// FASP_PROXY_POST)`.
    pub fn owned_objects(self) -> String {
        match self {
            Backend::Nftables => format!(
                "tables ({} and {} {})",
                Family::V4.nft_keyword(),
                Family::V6.nft_keyword(),
                nftables::ruleset::TABLE
            ),
            Backend::Iptables => {
                format!("chains ({}, {})", iptables::CHAIN, iptables::POST_CHAIN)
            }
            Backend::Memory => "in-memory entries".to_string(),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
            Backend::Memory => "memory",
        })
    }
}

/// What a reconcile did: entries kept and entries dropped (with their flows).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Entries owned by a live session, left in place.
    pub kept: usize,
    /// Entries no live session owns, removed with their conntrack flows.
    pub removed: Vec<InstalledEntry>,
}

/// Programs the kernel to forward sessions. A session's entries are added in one batch (one
/// nf_tables transaction, one `iptables-restore`), so they appear together; removal, refresh
/// and reconcile may take more than one (see each backend).
pub trait Forwarder: Send {
    /// Which kernel interface this backend drives.
    fn kind(&self) -> Backend;

    /// Creates what the proxy owns (tables, maps, chains, jump rules) if missing, leaving existing
    /// session entries in place (use [`Forwarder::reconcile`] to drop those of a previous life).
    /// Never touches anything the proxy does not own.
    fn prepare(&mut self) -> Result<(), DataplaneError>;

    /// Installs a session: DNAT from the client to the backend, and the SNAT the reply needs
    /// (for its UDP, and for its TCP twin when it has a [`SessionEntry::tcp_backend`], in the
    /// same batch), then deletes any stale conntrack entry of the same client tuple, which
    /// would otherwise shadow the new entry (NAT is decided on a flow's first packet). Refuses,
    /// changing nothing, a session whose key another entry already holds; on any other failure
    /// nothing of the session is left installed.
    fn install(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError>;

    /// Extends the session's lifetime to `entry.lifetime` from now (backends whose entries do
    /// not expire accept it and do nothing).
    fn refresh(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError>;

    /// Removes the session's entries (its TCP twin's too) and deletes its conntrack flows (UDP,
    /// and its TCP connections), so a running flow stops at once. Best-effort and total: every
    /// step runs, and the errors are returned together. Removing a session that is already
    /// gone is not an error.
    fn remove(&mut self, entry: &SessionEntry) -> Result<(), Errors>;

    /// The session entries the kernel holds now.
    fn list(&mut self) -> Result<Vec<InstalledEntry>, DataplaneError>;

    /// Packets and bytes the kernel forwarded from the client for this session (its conntrack
    /// counters; needs `net.netfilter.nf_conntrack_acct=1`); `None` when unknown (no flow yet,
    /// or a session without a client port).
    fn counters(&mut self, entry: &SessionEntry) -> Result<Option<(u64, u64)>, DataplaneError>;

    /// Removes (with their flows) every entry whose session is not in `live`.
    fn reconcile(&mut self, live: &[uuid::Uuid]) -> Result<ReconcileReport, Errors>;

    /// Removes everything the proxy owns: every entry, their flows, and the tables or chains.
    fn purge(&mut self) -> Result<ReconcileReport, Errors>;
}

/// The install of every backend: checks `entry`, `add`s its kernel entries (in one batch: all
/// or nothing; a taken key refused), then `finish`es (deletes the stale conntrack flows of the
/// client tuple). When `finish` fails after `add` succeeded, the session's entries are removed
/// again (the caller never owned them), so nothing of it is left half-installed, and `finish`'s
/// error is returned; should that removal fail too, [`Forwarder::reconcile`] drops the rest.
fn install_or_roll_back<F: Forwarder, T>(
    fw: &mut F,
    entry: &SessionEntry,
    add: impl FnOnce(&mut F, &SessionEntry) -> Result<(), DataplaneError>,
    finish: impl FnOnce(&mut F) -> Result<T, DataplaneError>,
) -> Result<(), DataplaneError> {
    entry.validate()?;
    add(fw, entry)?;
    if let Err(e) = finish(fw) {
        if let Err(rollback) = fw.remove(entry) {
            log::warn!(
                "session {}: removing a failed install's entries: {rollback}",
                entry.id
            );
        }
        return Err(e);
    }
    Ok(())
}

/// A forwarder shared by the daemon's tasks (reverse-proxy sessions, forward-proxy calls, upkeep):
/// one lock, so every kernel change is made by one thread at a time.
pub type SharedForwarder = std::sync::Arc<std::sync::Mutex<Box<dyn Forwarder>>>;

/// Runs a blocking data plane call on a blocking thread, under the forwarder's lock; `None` if
/// that thread failed.
pub async fn on_blocking_thread<T: Send + 'static>(
    forwarder: &SharedForwarder,
    f: impl FnOnce(&mut dyn Forwarder) -> T + Send + 'static,
) -> Option<T> {
    let fwd = std::sync::Arc::clone(forwarder);
    tokio::task::spawn_blocking(move || {
        let mut guard = fwd.lock().unwrap_or_else(|p| p.into_inner());
        f(guard.as_mut())
    })
    .await
    .ok()
}

/// Opens one backend in the current network namespace; `iptables_path` is the iptables binary
/// the iptables backend uses (the others ignore it). [`Backend::Memory`] opens an empty
/// [`memory::MemoryForwarder`] (keep its [`memory::MemoryForwarder::handle`] by building it
/// directly instead).
pub fn open(kind: Backend, iptables_path: &Path) -> Result<Box<dyn Forwarder>, DataplaneError> {
    Ok(match kind {
        Backend::Nftables => Box::new(nftables::NftablesForwarder::open()?),
        Backend::Iptables => Box::new(iptables::IptablesForwarder::open(iptables_path)?),
        Backend::Memory => Box::new(memory::MemoryForwarder::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::memory::{Call, MemoryForwarder};
    use super::*;
    use crate::dataplane::entry::sample_entry;

    #[test]
    fn a_failure_after_the_entries_were_added_removes_them_again() {
        let mut fw = MemoryForwarder::new();
        let handle = fw.handle();
        let entry = sample_entry();
        let err = install_or_roll_back(
            &mut fw,
            &entry,
            |fw, e| fw.install(e),
            |_| -> Result<(), _> { Err(DataplaneError::Setup("conntrack said no".into())) },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "conntrack said no");
        assert!(handle.installed().is_empty(), "nothing half-installed");
        assert_eq!(
            handle.calls(),
            vec![Call::Install(entry.id), Call::Remove(entry.id)]
        );
        // A refused add is not rolled back: it changed nothing, and the key is another's.
        fw.install(&entry).unwrap();
        let other = SessionEntry {
            id: uuid::Uuid::from_u128(7),
            ..entry.clone()
        };
        let err = install_or_roll_back(&mut fw, &other, |fw, e| fw.install(e), |_| Ok(()));
        assert!(matches!(err, Err(DataplaneError::KeyTaken { .. })));
        assert_eq!(handle.installed(), vec![entry]);
    }

    #[test]
    fn backends_name_what_they_own() {
        assert_eq!(
            Backend::Nftables.owned_objects(),
            "tables (ip and ip6 fasp_proxy)"
        );
        assert_eq!(
            Backend::Iptables.owned_objects(),
            "chains (FASP_PROXY, FASP_PROXY_POST)"
        );
        assert_eq!(Backend::Iptables.to_string(), "iptables");
    }
}
