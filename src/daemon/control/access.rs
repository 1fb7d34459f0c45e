//! Who may use the control socket: root, and the members of `<admin_group>` (its primary or
//! supplementary members in the account database, NSS included); the peer's uid comes from the
//! kernel (`SO_PEERCRED`), never from what the client says.

use std::ffi::CString;

use nix::unistd::{getgrouplist, Gid, Group, Uid, User};

/// A control socket peer allowed to list and act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's uid (from its socket credentials).
    pub uid: u32,
    /// Its account name, `unknown` when the uid has none.
    pub name: String,
}

impl Peer {
    /// `uid 0 (root)`: how a reply or a reload request names the peer.
    pub fn described(&self) -> String {
        format!("uid {} ({})", self.uid, self.name)
    }

    /// `uid 0 root`: how a log line of an action names the peer.
    pub fn for_log(&self) -> String {
        format!("uid {} {}", self.uid, self.name)
    }
}

/// Why a peer was refused: the text it is answered (after `error: `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decides whether `uid` may list and act, `admin_group` being `<admin_group>` as configured
/// now. Blocking: reads the account database (which may be LDAP or another NSS source).
pub fn authorize(uid: u32, admin_group: Option<&str>) -> Result<Peer, Denied> {
    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
    let peer = Peer {
        uid,
        name: user
            .as_ref()
            .map_or_else(|| "unknown".to_string(), |u| u.name.clone()),
    };
    if uid == 0 {
        return Ok(peer);
    }
    let Some(group) = admin_group else {
        return Err(Denied(format!(
            "permission denied: {} is not root (no <admin_group> is configured)",
            peer.described()
        )));
    };
    let denied = || {
        Denied(format!(
            "permission denied: {} is not root or in group {group}",
            peer.described()
        ))
    };
    let Some(gid) = Group::from_name(group).ok().flatten().map(|g| g.gid) else {
        log::warn!("control socket: <admin_group> {group} does not exist: only root is let in");
        return Err(denied());
    };
    let Some(user) = user else {
        return Err(denied());
    };
    if in_group(&user, gid) {
        Ok(peer)
    } else {
        Err(denied())
    }
}

/// Whether `user` has `gid` as primary or supplementary group.
fn in_group(user: &User, gid: Gid) -> bool {
    if user.gid == gid {
        return true;
    }
    let Ok(name) = CString::new(user.name.as_bytes()) else {
        return false;
    };
    getgrouplist(&name, user.gid).is_ok_and(|groups| groups.contains(&gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's `nobody` (uid 65534), whose primary group is `nogroup`.
    const NOBODY: u32 = 65534;

    #[test]
    fn root_is_always_let_in_and_names_itself() {
        for group in [None, Some("nogroup"), Some("no-such-group-fp")] {
            let peer = authorize(0, group).unwrap();
            assert_eq!(peer.described(), "uid 0 (root)");
            assert_eq!(peer.for_log(), "uid 0 root");
        }
    }

    #[test]
    fn others_need_the_admin_group_as_primary_or_supplementary_group() {
        let nobody = User::from_uid(Uid::from_raw(NOBODY)).unwrap().unwrap();
        let primary = Group::from_gid(nobody.gid).unwrap().unwrap().name;
        assert_eq!(authorize(NOBODY, Some(&primary)).unwrap().name, "nobody");
        assert_eq!(
            authorize(NOBODY, Some("root")).unwrap_err().0,
            "permission denied: uid 65534 (nobody) is not root or in group root"
        );
        assert_eq!(
            authorize(NOBODY, None).unwrap_err().0,
            "permission denied: uid 65534 (nobody) is not root (no <admin_group> is configured)"
        );
        assert!(authorize(NOBODY, Some("no-such-group-fp")).is_err());
        // A uid without an account.
        assert_eq!(
            authorize(4_000_123, Some(&primary)).unwrap_err().0,
            format!("permission denied: uid 4000123 (unknown) is not root or in group {primary}")
        );
    }
}
