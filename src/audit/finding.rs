//! What the audit reports: one [`Finding`] per problem, each of one [`Check`].

use serde::Serialize;

/// The kinds of problem the audit looks for. The first eight concern one transfer user; the
/// rest the proxy's own configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// A user with an `<aaa>` entry whose login shell is not aspshell.
    NoRestrictedShell,
    /// A docroot at or above the home directory, or none.
    DocrootAboveHome,
    /// sshd allows TCP, agent, X11 or stream-local forwarding, or tunnels.
    SshTunneling,
    /// sshd allows a terminal.
    Tty,
    /// sshd serves sftp in-process (`internal-sftp`), past the login shell.
    InternalSftp,
    /// sshd accepts passwords.
    PasswordLogin,
    /// sshd offers SHA-1, CBC or other legacy algorithms.
    LegacyAlgorithms,
    /// sshd reads `~/.ssh/environment` or `environment=` key options.
    UserEnvironment,
    /// A private key (or the node-API users file) readable by group or others.
    KeyFileReadable,
    /// The reverse proxy on with an empty `<allowed_clients>`.
    AllClientsAllowed,
    /// The forward proxy on with `<authentication>` false.
    ForwardWithoutAuthentication,
    /// The forward proxy on with an empty `<allowed_destinations>`.
    ForwardToAnyDestination,
    /// `<ssh_rsa_legacy>` on.
    SshRsaLegacy,
    /// `<accept_new_host_keys>` on: internal servers' keys trusted on first use.
    AcceptNewHostKeys,
}

impl Check {
    /// Every check, in report order.
    pub const ALL: [Check; 14] = [
        Check::NoRestrictedShell,
        Check::DocrootAboveHome,
        Check::SshTunneling,
        Check::Tty,
        Check::InternalSftp,
        Check::PasswordLogin,
        Check::LegacyAlgorithms,
        Check::UserEnvironment,
        Check::KeyFileReadable,
        Check::AllClientsAllowed,
        Check::ForwardWithoutAuthentication,
        Check::ForwardToAnyDestination,
        Check::SshRsaLegacy,
        Check::AcceptNewHostKeys,
    ];

    /// Whether the check concerns one user (else the proxy's configuration).
    pub fn is_per_user(self) -> bool {
        self < Check::KeyFileReadable
    }

    /// The stable name used in JSON (`no-restricted-shell`, …).
    pub fn id(self) -> &'static str {
        match self {
            Check::NoRestrictedShell => "no-restricted-shell",
            Check::DocrootAboveHome => "docroot-above-home",
            Check::SshTunneling => "ssh-tunneling",
            Check::Tty => "tty",
            Check::InternalSftp => "internal-sftp",
            Check::PasswordLogin => "password-login",
            Check::LegacyAlgorithms => "legacy-algorithms",
            Check::UserEnvironment => "user-environment",
            Check::KeyFileReadable => "key-file-readable",
            Check::AllClientsAllowed => "all-clients-allowed",
            Check::ForwardWithoutAuthentication => "forward-without-authentication",
            Check::ForwardToAnyDestination => "forward-to-any-destination",
            Check::SshRsaLegacy => "ssh-rsa-legacy",
            Check::AcceptNewHostKeys => "accept-new-host-keys",
        }
    }

    /// The words of the summary line (the first three are IBM asp-check's).
    pub fn title(self) -> &'static str {
        match self {
            Check::NoRestrictedShell => "no restricted shell (aspshell)",
            Check::DocrootAboveHome => "docroot above home directory",
            Check::SshTunneling => "ssh tunneling enabled",
            Check::Tty => "terminal (tty) allowed",
            Check::InternalSftp => "sftp past the shell (internal-sftp)",
            Check::PasswordLogin => "password logins",
            Check::LegacyAlgorithms => "legacy ssh algorithms",
            Check::UserEnvironment => "user environment (PermitUserEnvironment)",
            Check::KeyFileReadable => "key files readable by others",
            Check::AllClientsAllowed => "reverse proxy open to every client",
            Check::ForwardWithoutAuthentication => "forward proxy without authentication",
            Check::ForwardToAnyDestination => "forward proxy to every destination",
            Check::SshRsaLegacy => "ssh-rsa (SHA-1) signatures accepted",
            Check::AcceptNewHostKeys => "internal servers' host keys trusted on first use",
        }
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The user it concerns; `None` for the proxy's configuration.
    pub user: Option<String>,
    /// Which check found it.
    #[serde(serialize_with = "check_id")]
    pub check: Check,
    /// What exactly is wrong.
    pub detail: String,
    /// How to mend it, in one line.
    pub fix: String,
}

impl Finding {
    /// A finding about `user`.
    pub fn user(user: &str, check: Check, detail: String, fix: String) -> Finding {
        Finding {
            user: Some(user.to_string()),
            check,
            detail,
            fix,
        }
    }

    /// A finding about the proxy's configuration.
    pub fn setting(check: Check, detail: String, fix: String) -> Finding {
        Finding {
            user: None,
            check,
            detail,
            fix,
        }
    }
}

fn check_id<S: serde::Serializer>(check: &Check, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(check.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_match_serde() {
        let mut ids: Vec<&str> = Check::ALL.iter().map(|c| c.id()).collect();
        for c in Check::ALL {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.id())
            );
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), Check::ALL.len());
        assert_eq!(Check::ALL.iter().filter(|c| c.is_per_user()).count(), 8);
    }
}
