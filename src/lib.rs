//! fasp-proxy: a proxy for FASP-style file transfers, and an open `ascp` to test it with.
//!
//! # Layout
//!
//! The proxy (`fasp-proxy run`), from the bottom layer up; each layer uses only the ones below
//! it, never one beside or above it:
//!
//! 1. [`config`] (`aspera.conf`: schema, parsing, validation), [`protocol`] (the frame and
//!    datagram codecs, and the one frame reader), [`policy`] (which rule, which account and
//!    key, which internal server, which source address; health marks; penalties after failed
//!    logins), [`sysctl`] (the few kernel settings both the configuration check and the data
//!    plane read), [`heap`] (giving free memory back), [`fsroot`] (paths confined beneath a
//!    docroot by the kernel, for `ascp --server`).
//! 2. [`dataplane`] (the kernel's per-session DNAT entries: one `Forwarder` trait, nftables and
//!    iptables backends, an in-memory one for tests) and [`ssh`] (the front end that accepts
//!    clients, the client that logs in to internal servers). Neither knows of the other.
//! 3. [`session`]: one task per proxied session, where SSH, the handshake, the policy and the
//!    data plane meet; the registry of live sessions and their close handles. Beside it,
//!    [`forward`]: the forward proxy's node API, where HTTP, node-API users, the policy's
//!    penalties and the data plane meet.
//! 4. [`daemon`]: `daemon::serve(setup, shutdown)` runs it all on listeners and a data plane it
//!    is handed (upkeep, idle timeout, health checks, the control socket, reload, shutdown).
//!    Beside it, [`metrics`]'s scrape (`metrics::live`, `metrics::http`: the `/metrics`
//!    listener); what the lower layers record into is `metrics::Metrics`, at layer 1.
//!    Beside it, [`audit`]: `fasp-proxy audit` (IBM's asp-check), which reads the
//!    configuration, the password database and `sshd -T` and changes nothing.
//! 5. The binaries (`src/bin/`): `fasp-proxy` reads the configuration, sets up logging, the
//!    runtime and the kernel, and calls `daemon::serve`; `ascp` is the client and server;
//!    `ascmd` serves [`browse`]; `aspshell` runs [`shell`].
//!
//! The login shell: [`shell`] (`aspshell`, the transfer users' restricted shell: which command
//! lines run, which program runs each, a clean environment, syslog lines) uses [`config`]; on a
//! proxy host in the OpenSSH mode it hands sessions to the daemon with the client half of
//! [`ssh::handoff`], checking them against the same transfer command the [`session`] layer runs.
//!
//! Browsing: [`browse`] (IBM's `ascmd` protocol: the `ascmd` program on a transfer server,
//! confined by [`fsroot`] to the docroot [`config`] gives, and its client for `ascp --ls` and
//! the other browse verbs over [`ssh`]).
//!
//! The transfer tool: [`ascp`] (command line, SSH login, handshake) on top of [`transfer`] (the
//! UDP engine: pacing, retransmission, encryption, files), both over [`protocol`] and [`ssh`].
//!
//! `docs/architecture.md` has the longer map.

pub mod ascp;
pub mod audit;
pub mod browse;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod forward;
pub mod fsroot;
pub mod heap;
pub mod metrics;
pub mod policy;
pub mod protocol;
pub mod session;
pub mod shell;
pub mod ssh;
pub mod sysctl;
pub mod transfer;
