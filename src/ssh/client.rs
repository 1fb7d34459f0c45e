//! An SSH client (russh) that logs in with a private key, checks the server's host key against
//! a known_hosts file ([`super::trust`]), and runs one command whose stdin/stdout become a
//! blocking socket; and, without logging in, a health check's handshake ([`probe`]) and the
//! fetching of every host key a server offers ([`scan`], for `fasp-proxy trust-host`).
//!
//! Used by `ascp` towards the transfer server (directly or through a proxy), and by the proxy
//! towards its internal servers. Knows nothing of the transfer protocol.

use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, AuthResult, Handle};
use russh::keys::{self, Algorithm, HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, Disconnect};

use super::bridge;
use super::trust::{self, KnownHosts, Recorded, Verdict};

/// What to do with a server whose host key is not in known_hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Refuse it (the default): the user must add the key first.
    Strict,
    /// Accept it and record it in known_hosts (a changed key is still refused).
    AcceptNew,
}

/// Where and how to log in.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Host name or address, as the user typed it (also the known_hosts name).
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Account to log in as.
    pub user: String,
    /// Private keys to try, in order.
    pub identities: Vec<PathBuf>,
    /// A password to try after the keys (`ascp`: from `ASPERA_SCP_PASS`).
    pub password: Option<String>,
    /// The known_hosts file.
    pub known_hosts: PathBuf,
    /// Unknown host keys.
    pub policy: HostKeyPolicy,
    /// Time limit for TCP connect, key exchange and authentication.
    pub timeout: Duration,
    /// Where the TCP connection goes instead of `host:port` (a forward proxy's forwarding);
    /// the host key is still checked for `host:port`.
    pub connect_to: Option<SocketAddr>,
}

/// Why the SSH leg failed; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// TCP connect failed or timed out.
    #[error("cannot connect to {}: {why}", address(host, *port))]
    Connect {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Why.
        why: String,
    },
    /// The server's host key is not in known_hosts (strict policy).
    #[error(
        "host key of {} ({offered}) is not in {}; verify it and rerun with \
         --accept-new-host-key to record it",
        address(host, *port),
        known_hosts.display()
    )]
    UnknownHostKey {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The offered key's fingerprint (`SHA256:…`).
        offered: String,
        /// The known_hosts file.
        known_hosts: PathBuf,
    },
    /// known_hosts records another key of the same kind for the server.
    #[error(
        "HOST KEY OF {} HAS CHANGED (it offered {offered}; {} line {line} records \
         {recorded}): someone may be intercepting the connection; refusing",
        address(host, *port),
        known_hosts.display()
    )]
    ChangedHostKey {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The offered key's fingerprint.
        offered: String,
        /// The recorded key's fingerprint.
        recorded: String,
        /// The known_hosts file.
        known_hosts: PathBuf,
        /// The line recording it.
        line: usize,
    },
    /// The server's host key is refused for another reason (revoked, or a certificate).
    #[error("{0}")]
    HostKey(String),
    /// The known_hosts file could not be read, or a new key not recorded in it.
    #[error("{0}")]
    KnownHosts(String),
    /// No key could be loaded.
    #[error("{0}")]
    Key(String),
    /// The server refused every key.
    #[error("{user}@{host}: authentication failed with {tried}")]
    Auth {
        /// User.
        user: String,
        /// Host.
        host: String,
        /// The keys tried.
        tried: String,
    },
    /// The SSH session broke.
    #[error("SSH session with {host}: {why}")]
    Session {
        /// Host.
        host: String,
        /// What happened.
        why: String,
    },
}

impl SshError {
    /// Whether the failure says something about the server itself (no answer, refused
    /// connection, a broken SSH session, a host key that changed or is revoked), so the server
    /// should be marked faulty. A key the server refuses for one user says nothing about it;
    /// nor does a host key not yet recorded: that is the proxy's own known_hosts not listing
    /// it (the administrator has not run `fasp-proxy trust-host` yet), and the same for every
    /// session until they do, when it should be usable at once, not after a hold time.
    pub fn is_server_fault(&self) -> bool {
        matches!(
            self,
            SshError::Connect { .. }
                | SshError::Session { .. }
                | SshError::ChangedHostKey { .. }
                | SshError::HostKey(_)
        )
    }

    /// Whether the same login would fail on every other server of the rule too (the account
    /// or key refused or unloadable, known_hosts unreadable), so trying them is pointless.
    pub fn fails_on_every_server(&self) -> bool {
        matches!(
            self,
            SshError::Auth { .. } | SshError::Key(_) | SshError::KnownHosts(_)
        )
    }
}

/// `host:port`, an IPv6 address in brackets (`[2001:db8::10]:22`).
fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What the verifier does with a key not recorded for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unknown {
    /// Refuse it.
    Refuse,
    /// Accept it and record it (trust on first use).
    Record,
    /// Accept it without recording it (a health check under trust on first use).
    Accept,
}

/// How the verifier treats the server's key.
enum KeyCheck {
    /// Against the keys recorded for the server in `known_hosts`.
    Against {
        known_hosts: PathBuf,
        recorded: Vec<Recorded>,
        unknown: Unknown,
    },
    /// Not at all: the key is kept for the caller (`trust-host` fetching keys).
    Capture,
}

/// Checks the server's key against known_hosts, or captures it.
struct Verifier {
    host: String,
    port: u16,
    check: KeyCheck,
    /// Why the key was refused.
    refusal: Arc<Mutex<Option<SshError>>>,
    /// The key the server offered.
    seen: Arc<Mutex<Option<PublicKey>>>,
}

impl Verifier {
    fn new(host: &str, port: u16, check: KeyCheck) -> Verifier {
        Verifier {
            host: host.to_string(),
            port,
            check,
            refusal: Arc::new(Mutex::new(None)),
            seen: Arc::new(Mutex::new(None)),
        }
    }

    fn refuse(&self, why: SshError) -> Result<bool, russh::Error> {
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(why);
        }
        Ok(false)
    }

    /// The preferred host key algorithms: those of the keys recorded for the server first
    /// (as OpenSSH orders them), so a server with several keys proves the one we know.
    fn key_order(&self) -> Vec<Algorithm> {
        let default = russh::Preferred::DEFAULT.key.to_vec();
        let KeyCheck::Against { recorded, .. } = &self.check else {
            return default;
        };
        let known = |a: &Algorithm| {
            recorded.iter().any(|r| {
                let recorded = r.key.algorithm();
                !r.revoked
                    && (recorded == *a
                        || (matches!(a, Algorithm::Rsa { .. })
                            && matches!(recorded, Algorithm::Rsa { .. })))
            })
        };
        let (mut first, rest): (Vec<Algorithm>, Vec<Algorithm>) =
            default.into_iter().partition(|a| known(a));
        first.extend(rest);
        first
    }
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key: &PublicKey = match offered {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key,
            russh::keys::PublicKeyOrCertificate::Certificate(_) => {
                return self.refuse(SshError::HostKey(format!(
                    "{}:{} offered a host certificate; only plain host keys in known_hosts are \
                     checked",
                    self.host, self.port
                )))
            }
        };
        if let Ok(mut slot) = self.seen.lock() {
            *slot = Some(key.clone());
        }
        let KeyCheck::Against {
            known_hosts,
            recorded,
            unknown,
        } = &self.check
        else {
            return Ok(true);
        };
        let offered = trust::fingerprint(key);
        match trust::check(recorded, key) {
            Verdict::Known => Ok(true),
            Verdict::Unknown => match unknown {
                Unknown::Accept => Ok(true),
                Unknown::Record => {
                    match keys::known_hosts::learn_known_hosts_path(
                        &self.host,
                        self.port,
                        key,
                        known_hosts,
                    ) {
                        Ok(()) => Ok(true),
                        Err(e) => self.refuse(SshError::KnownHosts(format!(
                            "cannot record the host key of {}:{} in {}: {e}",
                            self.host,
                            self.port,
                            known_hosts.display()
                        ))),
                    }
                }
                Unknown::Refuse => self.refuse(SshError::UnknownHostKey {
                    host: self.host.clone(),
                    port: self.port,
                    offered,
                    known_hosts: known_hosts.clone(),
                }),
            },
            Verdict::Changed { line, recorded } => self.refuse(SshError::ChangedHostKey {
                host: self.host.clone(),
                port: self.port,
                offered,
                recorded: trust::fingerprint(&recorded),
                known_hosts: known_hosts.clone(),
                line,
            }),
            Verdict::Revoked { line } => self.refuse(SshError::HostKey(format!(
                "the host key of {}:{} ({offered}) is marked @revoked at {} line {line}; refusing",
                self.host,
                self.port,
                known_hosts.display()
            ))),
        }
    }
}

/// A verifier checking against `known_hosts` (read now).
fn checking(
    host: &str,
    port: u16,
    known_hosts: &Path,
    unknown: Unknown,
) -> Result<Verifier, SshError> {
    let read = KnownHosts::read(known_hosts).map_err(|e| SshError::KnownHosts(e.to_string()))?;
    let recorded = read.recorded(&trust::known_name(host, port));
    Ok(Verifier::new(
        host,
        port,
        KeyCheck::Against {
            known_hosts: known_hosts.to_path_buf(),
            recorded,
            unknown,
        },
    ))
}

/// TCP connect (to `connect_to`, else `host:port`), the banners, key exchange and the
/// verifier's host key check, within `timeout`; `keys` restricts the host key algorithms.
async fn handshake(
    host: &str,
    port: u16,
    connect_to: Option<SocketAddr>,
    verifier: Verifier,
    keys: Option<Vec<Algorithm>>,
    timeout: Duration,
) -> Result<Handle<Verifier>, SshError> {
    let refusal = Arc::clone(&verifier.refusal);
    let mut preferred = russh::Preferred::DEFAULT.clone();
    preferred.key = keys.unwrap_or_else(|| verifier.key_order()).into();
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        preferred,
        ..Default::default()
    });
    let connecting = async {
        match connect_to {
            Some(addr) => client::connect(config, addr, verifier).await,
            None => client::connect(config, (host, port), verifier).await,
        }
    };
    match tokio::time::timeout(timeout, connecting).await {
        Err(_) => Err(SshError::Connect {
            host: host.to_string(),
            port,
            why: format!("no answer within {}s", timeout.as_secs()),
        }),
        Ok(Ok(h)) => Ok(h),
        Ok(Err(e)) => {
            if let Some(why) = refusal.lock().ok().and_then(|mut r| r.take()) {
                return Err(why);
            }
            Err(SshError::Connect {
                host: host.to_string(),
                port,
                why: match (connect_to, e) {
                    (Some(via), e) => format!("{e} (through the forwarding at {via})"),
                    (
                        None,
                        russh::Error::NoCommonAlgo {
                            kind: russh::AlgorithmKind::Key,
                            theirs,
                            ..
                        },
                    ) => format!(
                        "no host key algorithm in common (the server offers {})",
                        theirs.join(", ")
                    ),
                    (None, e) => e.to_string(),
                },
            })
        }
    }
}

/// A health check's SSH handshake with `addr`, without logging in: TCP connect, the server's
/// banner, key exchange and its host key checked against `known_hosts` (a key not recorded
/// passes only when `accept_unknown`, and is not recorded), all within `timeout`; then a
/// polite disconnect.
pub async fn probe(
    addr: SocketAddr,
    known_hosts: &Path,
    accept_unknown: bool,
    timeout: Duration,
) -> Result<(), SshError> {
    let host = addr.ip().to_string();
    let unknown = if accept_unknown {
        Unknown::Accept
    } else {
        Unknown::Refuse
    };
    let verifier = checking(&host, addr.port(), known_hosts, unknown)?;
    let handle = handshake(&host, addr.port(), None, verifier, None, timeout).await?;
    let _ = tokio::time::timeout(
        timeout,
        handle.disconnect(Disconnect::ByApplication, "health check", "en"),
    )
    .await;
    Ok(())
}

/// The host key algorithms asked for one at a time by [`scan`], one group per kind of key.
fn scan_groups() -> Vec<Vec<Algorithm>> {
    vec![
        vec![Algorithm::Ed25519],
        vec![Algorithm::Ecdsa {
            curve: keys::EcdsaCurve::NistP256,
        }],
        vec![Algorithm::Ecdsa {
            curve: keys::EcdsaCurve::NistP384,
        }],
        vec![Algorithm::Ecdsa {
            curve: keys::EcdsaCurve::NistP521,
        }],
        vec![
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        ],
    ]
}

/// Every host key `addr` offers, as `ssh-keyscan` fetches them: one handshake per kind this
/// client negotiates (Ed25519, ECDSA P-256, P-384, P-521, RSA with SHA-2), each within
/// `timeout`, kinds the server has no key of skipped; the first kind is the one a session
/// negotiates when nothing is recorded. Nothing is checked or recorded; no login.
pub async fn scan(addr: SocketAddr, timeout: Duration) -> Result<Vec<PublicKey>, SshError> {
    let host = addr.ip().to_string();
    let mut found: Vec<PublicKey> = Vec::new();
    let mut missing = Vec::new();
    for group in scan_groups() {
        let verifier = Verifier::new(&host, addr.port(), KeyCheck::Capture);
        let seen = Arc::clone(&verifier.seen);
        match handshake(
            &host,
            addr.port(),
            None,
            verifier,
            Some(group.clone()),
            timeout,
        )
        .await
        {
            Ok(handle) => {
                let _ = tokio::time::timeout(
                    timeout,
                    handle.disconnect(Disconnect::ByApplication, "", "en"),
                )
                .await;
                if let Some(key) = seen.lock().ok().and_then(|mut s| s.take()) {
                    if !found.iter().any(|k| trust::same_key(k, &key)) {
                        found.push(key);
                    }
                }
            }
            Err(SshError::Connect { why, .. }) if why.starts_with("no host key algorithm") => {
                missing.push(group[0].as_str().to_string());
            }
            Err(e) => return Err(e),
        }
    }
    if found.is_empty() {
        return Err(SshError::HostKey(format!(
            "{addr} offers no host key of a kind the proxy uses ({})",
            missing.join(", ")
        )));
    }
    Ok(found)
}

/// A logged-in SSH connection.
pub struct Client {
    handle: Handle<Verifier>,
    host: String,
}

/// How a remote command ended.
#[derive(Debug, Default, Clone)]
pub struct ExecOutcome {
    /// Its exit status, if the server sent one.
    pub exit_status: Option<u32>,
    /// What it wrote on stderr (at most 64 KiB kept).
    pub stderr: Vec<u8>,
}

/// A running remote command: its stdin/stdout as a blocking socket, and how it ended.
pub struct Exec {
    /// Read = the command's stdout; write = its stdin; `shutdown(Write)` sends EOF.
    pub stream: UnixStream,
    /// Resolves when the channel closes.
    pub outcome: tokio::task::JoinHandle<ExecOutcome>,
}

const STDERR_KEEP: usize = 64 * 1024;

/// Connects, checks the host key and logs in with the first identity the server accepts.
pub async fn connect(cfg: &ClientConfig) -> Result<Client, SshError> {
    let unknown = match cfg.policy {
        HostKeyPolicy::Strict => Unknown::Refuse,
        HostKeyPolicy::AcceptNew => Unknown::Record,
    };
    let verifier = checking(&cfg.host, cfg.port, &cfg.known_hosts, unknown)?;
    let mut handle = handshake(
        &cfg.host,
        cfg.port,
        cfg.connect_to,
        verifier,
        None,
        cfg.timeout,
    )
    .await?;

    let mut tried = Vec::new();
    let mut load_errors = Vec::new();
    for path in &cfg.identities {
        let key = match load_key(path) {
            Ok(k) => k,
            Err(e) => {
                load_errors.push(e);
                continue;
            }
        };
        let hash = match handle.best_supported_rsa_hash().await {
            Ok(h) => h.flatten(),
            Err(_) => None,
        };
        let attempt = handle
            .authenticate_publickey(&cfg.user, PrivateKeyWithHashAlg::new(Arc::new(key), hash));
        let result = tokio::time::timeout(cfg.timeout, attempt).await;
        tried.push(path.display().to_string());
        match result {
            Ok(Ok(AuthResult::Success)) => {
                return Ok(Client {
                    handle,
                    host: cfg.host.clone(),
                })
            }
            Ok(Ok(AuthResult::Failure { .. })) => {}
            Ok(Err(e)) => {
                return Err(SshError::Session {
                    host: cfg.host.clone(),
                    why: e.to_string(),
                })
            }
            Err(_) => {
                return Err(SshError::Session {
                    host: cfg.host.clone(),
                    why: "authentication timed out".into(),
                })
            }
        }
    }
    if let Some(password) = &cfg.password {
        let attempt = handle.authenticate_password(&cfg.user, password);
        tried.push("a password (ASPERA_SCP_PASS)".into());
        match tokio::time::timeout(cfg.timeout, attempt).await {
            Ok(Ok(AuthResult::Success)) => {
                return Ok(Client {
                    handle,
                    host: cfg.host.clone(),
                })
            }
            Ok(Ok(AuthResult::Failure { .. })) => {}
            Ok(Err(e)) => {
                return Err(SshError::Session {
                    host: cfg.host.clone(),
                    why: e.to_string(),
                })
            }
            Err(_) => {
                return Err(SshError::Session {
                    host: cfg.host.clone(),
                    why: "authentication timed out".into(),
                })
            }
        }
    }
    if tried.is_empty() {
        return Err(SshError::Key(if load_errors.is_empty() {
            "no private key to log in with: pass one with -i (or set ASPERA_SCP_PASS for a password login)".to_string()
        } else {
            load_errors.join("; ")
        }));
    }
    Err(SshError::Auth {
        user: cfg.user.clone(),
        host: cfg.host.clone(),
        tried: tried.join(", "),
    })
}

fn load_key(path: &Path) -> Result<keys::PrivateKey, String> {
    keys::load_secret_key(path, None).map_err(|e| match e {
        keys::Error::KeyIsEncrypted => format!(
            "{}: the key is protected by a passphrase, which ascp cannot ask for; use an unencrypted key",
            path.display()
        ),
        other => format!("{}: cannot load the private key: {other}", path.display()),
    })
}

impl Client {
    /// Runs `command` on the server. Its stdout and stdin are bridged to [`Exec::stream`];
    /// its stderr and exit status end up in [`Exec::outcome`].
    pub async fn exec(&self, command: &str) -> Result<Exec, SshError> {
        let session_error = |e: russh::Error| SshError::Session {
            host: self.host.clone(),
            why: e.to_string(),
        };
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(session_error)?;
        channel.exec(true, command).await.map_err(session_error)?;
        let (ours, theirs) = UnixStream::pair().map_err(|e| SshError::Session {
            host: self.host.clone(),
            why: format!("local socket pair: {e}"),
        })?;
        theirs
            .set_nonblocking(true)
            .map_err(|e| SshError::Session {
                host: self.host.clone(),
                why: format!("local socket pair: {e}"),
            })?;
        let theirs = tokio::net::UnixStream::from_std(theirs).map_err(|e| SshError::Session {
            host: self.host.clone(),
            why: format!("local socket pair: {e}"),
        })?;
        let outcome = tokio::spawn(bridge(channel, theirs));
        Ok(Exec {
            stream: ours,
            outcome,
        })
    }

    /// Closes the connection politely.
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "done", "en")
            .await;
    }
}

/// Copies bytes between the channel and the local socket, in order, both ways (each direction
/// on its own, so neither can stall the other), until the channel closes or the local side
/// stops reading; collects stderr and the exit status.
async fn bridge(
    channel: russh::Channel<client::Msg>,
    local: tokio::net::UnixStream,
) -> ExecOutcome {
    let (rx, tx) = channel.split();
    let (mut local_read, local_write) = local.into_split();
    let mut outcome = ExecOutcome::default();
    let inbound = bridge::inbound(rx, local_write, true, |msg| match msg {
        ChannelMsg::ExtendedData { data, ext: 1 } => {
            let room = STDERR_KEEP.saturating_sub(outcome.stderr.len());
            outcome
                .stderr
                .extend_from_slice(&data[..data.len().min(room)]);
        }
        ChannelMsg::ExitStatus { exit_status } => outcome.exit_status = Some(exit_status),
        _ => {}
    });
    let outbound = async {
        let stop = std::future::pending::<()>();
        if let bridge::Outbound::LocalEof = bridge::outbound(&tx, &mut local_read, stop).await {
            let _ = tx.eof().await;
        }
        // Keep going until the channel closes.
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
    outcome
}
