//! Who may connect, log in, and run what: the front end's decisions, kept apart from its SSH
//! protocol handling. `ssh::server` asks; this module decides, from the `<rproxy>` settings
//! (the client allow-list, the `authorized_keys_file` pattern, password logins through PAM,
//! the commands that may run).

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use russh::keys::{Algorithm, PublicKey};
use russh::{MethodKind, MethodSet};

use super::authorized_keys::check_user_key;
use super::pam::{self, PamError};
use crate::config::CommandShape;

/// Longest a PAM check may take (a module may ask a directory server).
pub const PAM_TIMEOUT: Duration = Duration::from_secs(30);

/// The front end's access rules.
#[derive(Debug, Clone)]
pub struct Access {
    /// Authorized keys path pattern: `%u` user, `%h` home, `%%`.
    authorized_keys: String,
    /// `Some(PAM service)`: password logins are accepted, checked by PAM with that service.
    password_pam_service: Option<String>,
    /// Clients allowed to connect; empty allows all.
    allowed_clients: Vec<IpNet>,
    /// Exact command lines a user may run (parsed sessions: fasp-proxy's own protocol).
    allowed_commands: Vec<String>,
    /// Command shapes run as opaque sessions (IBM's protocol, bridged unread).
    opaque_commands: Vec<CommandShape>,
    /// ssh-rsa (SHA-1) signatures of user keys are accepted.
    ssh_rsa_legacy: bool,
}

/// How an allowed command is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// fasp-proxy's own transfer command: its handshake is read and the UDP port rewritten.
    Parsed,
    /// One of the opaque command shapes (IBM's clients): bridged byte for byte.
    Opaque,
}

/// Why a password login was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRefusal {
    /// Password logins are off (`<password_authentication>false`).
    #[error("not enabled")]
    NotEnabled,
    /// PAM refused, or could not be asked.
    #[error("{0}")]
    Pam(PamError),
}

impl Access {
    /// The rules: keys from `authorized_keys` (a pattern), passwords through PAM service
    /// `password_pam_service` if set, connections from `allowed_clients` (all if empty), and
    /// exactly `allowed_commands`.
    pub fn new(
        authorized_keys: String,
        password_pam_service: Option<String>,
        allowed_clients: Vec<IpNet>,
        allowed_commands: Vec<String>,
    ) -> Access {
        Access {
            authorized_keys,
            password_pam_service,
            allowed_clients,
            allowed_commands,
            opaque_commands: Vec::new(),
            ssh_rsa_legacy: false,
        }
    }

    /// The same rules, with `shapes` accepted as opaque sessions too.
    pub fn with_opaque_commands(mut self, shapes: Vec<CommandShape>) -> Access {
        self.opaque_commands = shapes;
        self
    }

    /// The same rules, with ssh-rsa (SHA-1) signatures of user keys accepted if `on`.
    pub fn with_ssh_rsa_legacy(mut self, on: bool) -> Access {
        self.ssh_rsa_legacy = on;
        self
    }

    /// Whether a user key may sign with `algorithm`: everything russh verifies but ssh-rsa
    /// (SHA-1), which only `<ssh_rsa_legacy>` allows.
    pub fn signature_allowed(&self, algorithm: &Algorithm) -> bool {
        self.ssh_rsa_legacy || *algorithm != (Algorithm::Rsa { hash: None })
    }

    /// Whether a client at `ip` may connect at all (checked before any SSH is spoken).
    pub fn client_allowed(&self, ip: IpAddr) -> bool {
        self.allowed_clients.is_empty() || self.allowed_clients.iter().any(|n| n.contains(&ip))
    }

    /// The authentication methods offered: public keys, and passwords when enabled.
    pub fn methods(&self) -> MethodSet {
        if self.password_pam_service.is_some() {
            MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..])
        } else {
            MethodSet::from(&[MethodKind::PublicKey][..])
        }
    }

    /// Whether `key` may log in as `user`: the user exists and the key is listed in the file
    /// the pattern names for them. Reads the file on a blocking thread; the error says why not
    /// (for the debug log: it is never shown to the client).
    pub async fn check_key(&self, user: &str, key: &PublicKey) -> Result<(), String> {
        let pattern = self.authorized_keys.clone();
        let (user, key) = (user.to_string(), key.clone());
        tokio::task::spawn_blocking(move || check_user_key(&pattern, &user, &key))
            .await
            .map_err(|e| format!("checking the key failed: {e}"))?
    }

    /// Whether `password` is `user`'s, for a client at `client`: PAM decides (authentication
    /// and account), on a blocking thread, within [`PAM_TIMEOUT`].
    pub async fn check_password(
        &self,
        user: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<(), PasswordRefusal> {
        let Some(service) = self.password_pam_service.clone() else {
            return Err(PasswordRefusal::NotEnabled);
        };
        let (user, password, client) = (user.to_string(), password.to_string(), client.to_string());
        let checking = tokio::task::spawn_blocking(move || {
            pam::check_password(&service, &user, &password, &client)
        });
        let unavailable = |message: String| PamError {
            stage: "PAM unavailable",
            message,
        };
        let outcome = match tokio::time::timeout(PAM_TIMEOUT, checking).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(unavailable(e.to_string())),
            Err(_) => Err(unavailable(format!(
                "no answer within {}s",
                PAM_TIMEOUT.as_secs()
            ))),
        };
        outcome.map_err(PasswordRefusal::Pam)
    }

    /// Whether `command` may run, and how: exactly one of the allowed command lines (parsed),
    /// else one of the opaque shapes; `None` for anything else.
    pub fn classify(&self, command: &str) -> Option<CommandKind> {
        if self.allowed_commands.iter().any(|c| c == command) {
            Some(CommandKind::Parsed)
        } else if self.opaque_commands.iter().any(|s| s.matches(command)) {
            Some(CommandKind::Opaque)
        } else {
            None
        }
    }

    /// The allowed commands, quoted, for messages ("'ascp --server'", or "nothing").
    pub fn commands_list(&self) -> String {
        let quoted: Vec<String> = self
            .allowed_commands
            .iter()
            .map(|c| format!("'{c}'"))
            .chain(self.opaque_commands.iter().map(|s| format!("'{s}'")))
            .collect();
        if quoted.is_empty() {
            "nothing".to_string()
        } else {
            quoted.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(clients: &[&str], commands: &[&str]) -> Access {
        Access::new(
            "/nonexistent/%u.keys".into(),
            None,
            clients.iter().map(|c| c.parse().unwrap()).collect(),
            commands.iter().map(|c| c.to_string()).collect(),
        )
    }

    #[test]
    fn clients_commands_and_methods() {
        let open = access(&[], &["ascp --server"]);
        assert!(open.client_allowed("203.0.113.9".parse().unwrap()));
        let a = access(
            &["192.0.2.0/24", "2001:db8::/32"],
            &["ascp --server", "ascp4 -S."],
        );
        assert!(a.client_allowed("192.0.2.77".parse().unwrap()));
        assert!(a.client_allowed("2001:db8::5".parse().unwrap()));
        assert!(!a.client_allowed("198.51.100.1".parse().unwrap()));
        assert_eq!(a.classify("ascp --server"), Some(CommandKind::Parsed));
        assert_eq!(a.classify("ascp --server "), None, "exact lines only");
        assert_eq!(a.classify("ascp --server; id"), None);
        assert_eq!(a.commands_list(), "'ascp --server', 'ascp4 -S.'");
        assert_eq!(access(&[], &[]).commands_list(), "nothing");
        assert!(!a.methods().contains(&MethodKind::Password));
        let with_passwords = Access::new(String::new(), Some("fasp-proxy".into()), vec![], vec![]);
        assert!(with_passwords.methods().contains(&MethodKind::Password));
    }

    #[test]
    fn opaque_shapes_and_sha1_signatures() {
        let a = access(&[], &["ascp --server"]).with_opaque_commands(CommandShape::ibm());
        assert_eq!(a.classify("ascp --server"), Some(CommandKind::Parsed));
        assert_eq!(a.classify("ascp -S. -V1"), Some(CommandKind::Opaque));
        assert_eq!(a.classify("ascp -S. -V1; id"), None);
        assert!(a.commands_list().contains("'ascp4 -S.'"));
        let sha1 = Algorithm::Rsa { hash: None };
        let sha2 = Algorithm::Rsa {
            hash: Some(russh::keys::HashAlg::Sha256),
        };
        assert!(!a.signature_allowed(&sha1));
        assert!(a.signature_allowed(&sha2));
        assert!(a.signature_allowed(&Algorithm::Ed25519));
        assert!(a.with_ssh_rsa_legacy(true).signature_allowed(&sha1));
    }

    #[tokio::test]
    async fn passwords_off_are_refused_without_asking_pam_and_unknown_users_have_no_keys() {
        let a = access(&[], &[]);
        assert_eq!(
            a.check_password("root", "secret", "192.0.2.2".parse().unwrap())
                .await,
            Err(PasswordRefusal::NotEnabled)
        );
        let key = PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl t",
        )
        .unwrap();
        let err = a
            .check_key("no-such-user-fasp-proxy", &key)
            .await
            .unwrap_err();
        assert!(err.contains("no such user"), "{err}");
        let err = a.check_key("root", &key).await.unwrap_err();
        assert!(err.contains("/nonexistent/root.keys"), "{err}");
    }
}
