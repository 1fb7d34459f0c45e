//! fasp-proxy: a proxy for FASP-style file transfers.
//!
//! See `docs/architecture.md` for the module map and how the layers depend on each other.

pub mod ascp;
pub mod config;
pub mod dataplane;
pub mod protocol;
pub mod ssh;
pub mod transfer;
