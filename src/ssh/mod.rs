//! SSH: the client side (russh) that `ascp` uses towards a transfer server and the proxy uses
//! towards its internal servers; the proxy's front end (`server`), the access decisions it
//! asks (`access`: allow-list, keys, passwords, commands) and its `authorized_keys` parser
//! (`authorized_keys`); password checks through PAM (`pam`); the OpenSSH deployment mode's
//! front end (`handoff`: `aspshell` hands a session over a Unix socket); host keys in
//! known_hosts files (`trust`: looked up, checked, recorded by `fasp-proxy trust-host`).
//! Knows nothing of nftables or of the transfer protocol.

pub mod access;
pub mod authorized_keys;
pub(crate) mod bridge;
pub mod client;
pub mod handoff;
pub mod pam;
pub mod server;
pub mod trust;
