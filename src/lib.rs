//! fasp-proxy: a proxy for FASP-style file transfers.
//!
//! See `docs/architecture.md` for the module map and how the layers depend on each other.

pub mod ascp;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod policy;
pub mod protocol;
pub mod session;
pub mod ssh;
pub mod sysctl;
pub mod transfer;
