//! Reloading the configuration while the daemon runs (SIGHUP, `fasp-proxy reload`,
//! `systemctl reload`): the file is read and validated again; on any error every error is
//! logged and the daemon keeps its configuration; otherwise new sessions use the new rules,
//! live sessions and their kernel entries are left alone, and listeners whose address changed
//! are bound anew.

use tokio::sync::oneshot;

/// One request to reload, from SIGHUP or the control socket; the daemon answers on `reply`
/// with the one line that says what changed, or every error.
#[derive(Debug)]
pub struct ReloadRequest {
    /// Who asked: `SIGHUP`, or the control socket's peer (`uid 0 (root)`).
    pub requested_by: String,
    /// Where the outcome goes: `Ok(what changed)` or `Err(every error)`.
    pub reply: Option<oneshot::Sender<Result<String, String>>>,
}

/// The sending side the control socket and the signal handler use.
pub type ReloadSender = tokio::sync::mpsc::Sender<ReloadRequest>;
