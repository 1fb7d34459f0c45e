//! Who is asking: the account (from the real uid's passwd entry, never from the environment)
//! and the client address sshd reports.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::unistd::{Uid, User};

use super::escape::escape;

/// The calling account, as the passwd database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The real user id.
    pub uid: u32,
    /// The account name.
    pub name: String,
    /// Its home directory.
    pub home: PathBuf,
    /// Its login shell.
    pub shell: PathBuf,
}

impl Caller {
    /// Looks up the real uid's passwd entry; the error names the uid.
    pub fn current() -> Result<Caller, String> {
        let uid = Uid::current();
        match User::from_uid(uid) {
            Ok(Some(user)) => Ok(Caller {
                uid: uid.as_raw(),
                name: user.name,
                home: user.dir,
                shell: user.shell,
            }),
            Ok(None) => Err(format!("uid {uid} has no passwd entry")),
            Err(e) => Err(format!("cannot read the passwd entry of uid {uid}: {e}")),
        }
    }

    /// `user NAME (uid N)`, for log lines.
    pub fn describe(&self) -> String {
        format!("user {} (uid {})", escape(self.name.as_bytes()), self.uid)
    }
}

/// The client as sshd reports it in `SSH_CONNECTION` (`client-address client-port
/// server-address server-port`), labelled as sshd's claim: `client 192.0.2.2 port 41234
/// (SSH_CONNECTION)`.
pub fn client(ssh_connection: Option<&OsStr>) -> String {
    let Some(value) = ssh_connection else {
        return "client unknown (no SSH_CONNECTION)".to_string();
    };
    let text = escape(value.as_bytes());
    let mut words = text.split(' ');
    match (words.next(), words.next()) {
        (Some(address), Some(port)) if !address.is_empty() => {
            format!("client {address} port {port} (SSH_CONNECTION)")
        }
        _ => format!("client unknown (SSH_CONNECTION is {text:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_account_comes_from_passwd() {
        let me = Caller::current().unwrap();
        assert_eq!(me.uid, nix::unistd::getuid().as_raw());
        assert!(!me.name.is_empty());
        assert!(me.describe().contains(&format!("(uid {})", me.uid)));
    }

    #[test]
    fn client_is_read_from_ssh_connection_and_escaped() {
        assert_eq!(
            client(Some(OsStr::new("192.0.2.2 41234 198.51.100.2 22"))),
            "client 192.0.2.2 port 41234 (SSH_CONNECTION)"
        );
        assert_eq!(
            client(Some(OsStr::new("2001:db8:1::2 5000 2001:db8:2::2 22"))),
            "client 2001:db8:1::2 port 5000 (SSH_CONNECTION)"
        );
        assert_eq!(client(None), "client unknown (no SSH_CONNECTION)");
        assert_eq!(
            client(Some(OsStr::new(""))),
            "client unknown (SSH_CONNECTION is \"\")"
        );
        let forged = client(Some(OsStr::new("1.2.3.4\nrefused: x 1")));
        assert!(!forged.contains('\n'), "{forged}");
    }
}
