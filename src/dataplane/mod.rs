//! The kernel data plane: per-session DNAT entries that make the kernel forward a transfer's UDP
//! data, and their teardown.
//!
//! One [`Forwarder`] trait, one backend per kernel interface (as netavark's firewall drivers):
//! - [`nftables::NftablesForwarder`] (default): elements of maps in tables the proxy owns,
//!   added and deleted over one long-lived NETLINK_NETFILTER socket;
//! - [`iptables::IptablesForwarder`]: one rule per session in chains the proxy owns, written with
//!   `iptables-restore --noflush` batches;
//! - [`memory::MemoryForwarder`]: no kernel at all, entries in memory and every call recorded,
//!   for tests of the daemon without root (netavark's `fwnone`).
//!
//! Both delete the flow's conntrack entries on removal ([`conntrack`]), since a conntrack entry
//! keeps forwarding a running flow after its DNAT entry is gone. This module knows nothing of SSH.

pub mod command;
pub mod conntrack;
pub mod entry;
pub mod error;
pub mod iptables;
pub mod memory;
pub mod netlink;
pub mod nftables;

pub use entry::{EntryError, InstalledEntry, SessionEntry, SessionKey};
pub use error::{DataplaneError, Errors};

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

    /// Installs a session: DNAT from the client to the backend, and the SNAT the reply needs,
    /// then deletes any stale conntrack entry of the same client tuple, which would otherwise
    /// shadow the new entry (NAT is decided on a flow's first packet). Refuses, changing
    /// nothing, a session whose key another entry already holds; on any other failure nothing
    /// of the session is left installed.
    fn install(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError>;

    /// Extends the session's lifetime to `entry.lifetime` from now (backends whose entries do
    /// not expire accept it and do nothing).
    fn refresh(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError>;

    /// Removes the session's entries and deletes its conntrack flows, so a running flow stops at
    /// once. Best-effort and total: every step runs, and the errors are returned together.
    /// Removing a session that is already gone is not an error.
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
