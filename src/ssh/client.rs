//! An SSH client (russh) that logs in with a private key, checks the server's host key against
//! a known_hosts file, and runs one command whose stdin/stdout become a blocking socket.
//!
//! Used by `ascp` towards the transfer server (directly or through a proxy), and by the proxy
//! towards its internal servers. Knows nothing of the transfer protocol.

use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, AuthResult, Handle};
use russh::keys::{self, HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, Disconnect};

use super::bridge;

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
    #[error("cannot connect to {host}:{port}: {why}")]
    Connect {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Why.
        why: String,
    },
    /// The server's host key is unknown (strict policy) or changed.
    #[error("{0}")]
    HostKey(String),
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
    /// connection, a broken SSH session, a host key that is unknown or changed), so the server
    /// should be marked faulty. A key the server refuses for one user says nothing about it.
    pub fn is_server_fault(&self) -> bool {
        matches!(
            self,
            SshError::Connect { .. } | SshError::Session { .. } | SshError::HostKey(_)
        )
    }

    /// Whether the failure is the account's or key's (refused, unloadable), so the same
    /// login would fail on every other server of the rule too.
    pub fn is_credentials_fault(&self) -> bool {
        matches!(self, SshError::Auth { .. } | SshError::Key(_))
    }
}

/// Checks the server's key against known_hosts.
struct Verifier {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    policy: HostKeyPolicy,
    /// Why the key was refused, for the error message.
    refusal: Arc<Mutex<Option<String>>>,
}

impl Verifier {
    fn refuse(&self, why: String) -> Result<bool, russh::Error> {
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(why);
        }
        Ok(false)
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
                return self.refuse(format!(
                "{} offered a host certificate; ascp checks plain host keys in known_hosts only",
                self.host
            ))
            }
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256);
        match keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => Ok(true),
            Ok(false) => match self.policy {
                HostKeyPolicy::AcceptNew => {
                    match keys::known_hosts::learn_known_hosts_path(
                        &self.host,
                        self.port,
                        key,
                        &self.known_hosts,
                    ) {
                        Ok(()) => Ok(true),
                        Err(e) => self.refuse(format!(
                            "cannot record the host key of {} in {}: {e}",
                            self.host,
                            self.known_hosts.display()
                        )),
                    }
                }
                HostKeyPolicy::Strict => self.refuse(format!(
                    "host key of {}:{} ({fingerprint}) is not in {}; verify it and rerun with \
                     --accept-new-host-key to record it",
                    self.host,
                    self.port,
                    self.known_hosts.display()
                )),
            },
            Err(keys::Error::KeyChanged { line }) => self.refuse(format!(
                "HOST KEY OF {}:{} HAS CHANGED (now {fingerprint}; {} line {line} says otherwise): \
                 someone may be intercepting the connection; refusing",
                self.host,
                self.port,
                self.known_hosts.display()
            )),
            Err(e) => self.refuse(format!("cannot read {}: {e}", self.known_hosts.display())),
        }
    }
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
    let refusal = Arc::new(Mutex::new(None));
    let verifier = Verifier {
        host: cfg.host.clone(),
        port: cfg.port,
        known_hosts: cfg.known_hosts.clone(),
        policy: cfg.policy,
        refusal: Arc::clone(&refusal),
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        ..Default::default()
    });
    let connecting = async {
        match cfg.connect_to {
            Some(addr) => client::connect(config, addr, verifier).await,
            None => client::connect(config, (cfg.host.as_str(), cfg.port), verifier).await,
        }
    };
    let mut handle = match tokio::time::timeout(cfg.timeout, connecting).await {
        Err(_) => {
            return Err(SshError::Connect {
                host: cfg.host.clone(),
                port: cfg.port,
                why: format!("no answer within {}s", cfg.timeout.as_secs()),
            })
        }
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            if let Some(why) = refusal.lock().ok().and_then(|mut r| r.take()) {
                return Err(SshError::HostKey(why));
            }
            return Err(SshError::Connect {
                host: cfg.host.clone(),
                port: cfg.port,
                why: match cfg.connect_to {
                    Some(via) => format!("{e} (through the forwarding at {via})"),
                    None => e.to_string(),
                },
            });
        }
    };

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
