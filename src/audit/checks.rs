//! The checks of one transfer user, as pure functions of what was read: the login shell, the
//! docroot against the home directory, and the settings `sshd -T` printed for them.

use std::path::{Path, PathBuf};

use super::finding::{Check, Finding};
use super::sshd::SshdSettings;
use crate::config::Docroot;

/// The user has an `<aaa>` entry (at `line`) but `shell` is not aspshell.
pub fn no_restricted_shell(user: &str, shell: &Path, line: u32) -> Finding {
    let shell = if shell.as_os_str().is_empty() {
        "/bin/sh (empty field)".to_string()
    } else {
        shell.display().to_string()
    };
    Finding::user(
        user,
        Check::NoRestrictedShell,
        format!(
            "has an <aaa> <user> entry (line {line}) but the login shell {shell}, not aspshell: \
             any command runs, docroots apply only to the transfer programs"
        ),
        format!("chsh -s /usr/local/bin/aspshell {user}"),
    )
}

/// The docroot finding for `user` with home directory `home`, if any: no docroot, or one at or
/// above the home directory, lexically or after `resolve` (symbolic links; `None` when a path
/// cannot be resolved, e.g. it does not exist).
pub fn docroot(
    user: &str,
    home: &Path,
    docroot: &Docroot,
    resolve: impl Fn(&Path) -> Option<PathBuf>,
) -> Option<Finding> {
    let fix = "set <absolute> (their <aaa> <user> or <default>) below the home directory, \
               e.g. $(home)/data, or outside it, e.g. /srv/data/$(name)"
        .to_string();
    let risk = "they can write ~/.ssh/authorized_keys and shell start-up files";
    let Some(root) = &docroot.root else {
        return Some(Finding::user(
            user,
            Check::DocrootAboveHome,
            format!(
                "no docroot: the whole file system is open to them, the home directory {} \
                 included ({risk})",
                home.display()
            ),
            fix,
        ));
    };
    let place = |root: &Path, home: &Path| {
        if root == home {
            "is the home directory"
        } else {
            "is above the home directory"
        }
    };
    if home.starts_with(root) {
        return Some(Finding::user(
            user,
            Check::DocrootAboveHome,
            format!(
                "docroot {} {} {} ({risk})",
                root.display(),
                place(root, home),
                home.display()
            ),
            fix,
        ));
    }
    if let (Some(real_root), Some(real_home)) = (resolve(root), resolve(home)) {
        if real_home.starts_with(&real_root) {
            return Some(Finding::user(
                user,
                Check::DocrootAboveHome,
                format!(
                    "docroot {} resolves to {}, which {} {} (resolved: {}) ({risk})",
                    root.display(),
                    real_root.display(),
                    place(&real_root, &real_home),
                    home.display(),
                    real_home.display()
                ),
                fix,
            ));
        }
    }
    None
}

/// Everything `sshd -T` shows wrong for `user`.
pub fn sshd(user: &str, s: &SshdSettings) -> Vec<Finding> {
    [
        tunneling(user, s),
        tty(user, s),
        internal_sftp(user, s),
        password(user, s),
        legacy_algorithms(user, s),
        user_environment(user, s),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The sentence every sshd fix ends with.
fn for_them(user: &str) -> String {
    format!(
        "for {user} in sshd_config (globally, or in a Match block that applies to them: the \
         first Match block to set a keyword wins), then reload sshd"
    )
}

/// TCP, agent, X11 and stream-local forwarding, and tunnel devices.
pub fn tunneling(user: &str, s: &SshdSettings) -> Option<Finding> {
    let mut allowed = Vec::new();
    let mut fixes = Vec::new();
    if !s.is("disableforwarding", "yes") {
        if let Some(tcp) = s.get("allowtcpforwarding") {
            let tcp = tcp.to_ascii_lowercase();
            let local =
                matches!(tcp.as_str(), "yes" | "all" | "local") && !s.is("permitopen", "none");
            let remote =
                matches!(tcp.as_str(), "yes" | "all" | "remote") && !s.is("permitlisten", "none");
            let which = match (local, remote) {
                (true, true) => Some("local and remote"),
                (true, false) => Some("local"),
                (false, true) => Some("remote"),
                (false, false) => None,
            };
            if let Some(which) = which {
                allowed.push(format!("AllowTcpForwarding {tcp} ({which})"));
                fixes.push("AllowTcpForwarding no");
            }
        }
        if s.is("allowagentforwarding", "yes") {
            allowed.push("AllowAgentForwarding yes".to_string());
            fixes.push("AllowAgentForwarding no");
        }
        if s.is("x11forwarding", "yes") {
            allowed.push("X11Forwarding yes".to_string());
            fixes.push("X11Forwarding no");
        }
        if let Some(v) = s.get("allowstreamlocalforwarding") {
            if !v.eq_ignore_ascii_case("no") {
                allowed.push(format!("AllowStreamLocalForwarding {v}"));
                fixes.push("AllowStreamLocalForwarding no");
            }
        }
    }
    if let Some(v) = s.get("permittunnel") {
        if !v.eq_ignore_ascii_case("no") {
            allowed.push(format!("PermitTunnel {v}"));
            fixes.push("PermitTunnel no");
        }
    }
    if allowed.is_empty() {
        return None;
    }
    Some(Finding::user(
        user,
        Check::SshTunneling,
        format!(
            "sshd allows {}: `ssh -N` forwards without running the login shell",
            allowed.join(", ")
        ),
        format!("set {} {}", fixes.join(", "), for_them(user)),
    ))
}

/// A terminal.
pub fn tty(user: &str, s: &SshdSettings) -> Option<Finding> {
    s.is("permittty", "yes").then(|| {
        Finding::user(
            user,
            Check::Tty,
            "sshd allows them a terminal (PermitTTY yes)".to_string(),
            format!("set PermitTTY no {}", for_them(user)),
        )
    })
}

/// sftp served in-process by sshd, which neither the login shell nor the docroot sees.
pub fn internal_sftp(user: &str, s: &SshdSettings) -> Option<Finding> {
    let chroot = match s.get("chrootdirectory") {
        Some(c) if !c.eq_ignore_ascii_case("none") => format!(" (chrooted to {c})"),
        _ => String::new(),
    };
    let forced = s.get("forcecommand").unwrap_or("none");
    let forced_program = forced.split_whitespace().next().unwrap_or("none");
    if forced_program == "internal-sftp" {
        return Some(Finding::user(
            user,
            Check::InternalSftp,
            format!(
                "ForceCommand {forced}: sshd serves sftp itself{chroot}, past aspshell and the \
                 docroot"
            ),
            format!("remove ForceCommand internal-sftp {}", for_them(user)),
        ));
    }
    if !forced.eq_ignore_ascii_case("none") {
        return None; // a forced command replaces every subsystem request
    }
    let internal = s.all("subsystem").iter().find(|line| {
        let mut words = line.split_whitespace();
        words.next().is_some() && words.next() == Some("internal-sftp")
    })?;
    Some(Finding::user(
        user,
        Check::InternalSftp,
        format!(
            "Subsystem {internal}: sshd serves sftp itself{chroot}, past aspshell and the docroot"
        ),
        "in sshd_config use `Subsystem sftp /usr/lib/openssh/sftp-server` (it runs through the \
         login shell, which aspshell refuses), then reload sshd"
            .to_string(),
    ))
}

/// Password (or PAM keyboard-interactive) logins on their own.
pub fn password(user: &str, s: &SshdSettings) -> Option<Finding> {
    let mut ways = Vec::new();
    let mut fixes = Vec::new();
    if s.is("passwordauthentication", "yes") {
        ways.push("PasswordAuthentication yes".to_string());
        fixes.push("PasswordAuthentication no");
    }
    for key in [
        "kbdinteractiveauthentication",
        "challengeresponseauthentication",
    ] {
        if s.is(key, "yes") && s.is("usepam", "yes") {
            let name = if key.starts_with("kbd") {
                "KbdInteractiveAuthentication"
            } else {
                "ChallengeResponseAuthentication"
            };
            ways.push(format!("{name} yes with UsePAM yes"));
            fixes.push(if key.starts_with("kbd") {
                "KbdInteractiveAuthentication no"
            } else {
                "ChallengeResponseAuthentication no"
            });
            break;
        }
    }
    if ways.is_empty() {
        return None;
    }
    let methods = s.get("authenticationmethods").unwrap_or("any");
    if !methods.eq_ignore_ascii_case("any") {
        // Every list that logs in without a key must be absent for passwords to be harmless.
        let alone = methods.split_whitespace().any(|list| {
            let methods: Vec<&str> = list.split(',').collect();
            !methods.iter().any(|m| m.starts_with("publickey"))
                && methods
                    .iter()
                    .any(|m| *m == "password" || m.starts_with("keyboard-interactive"))
        });
        if !alone {
            return None;
        }
        ways.push(format!("AuthenticationMethods {methods}"));
    }
    if s.is("permitemptypasswords", "yes") {
        ways.push("PermitEmptyPasswords yes (an empty password logs in)".to_string());
        fixes.push("PermitEmptyPasswords no");
    }
    Some(Finding::user(
        user,
        Check::PasswordLogin,
        format!("sshd accepts a password alone: {}", ways.join(", ")),
        format!("set {} {}", fixes.join(", "), for_them(user)),
    ))
}

/// One algorithm keyword: its sshd_config spelling, its `sshd -T` key, which names are legacy,
/// and a modern list for when nothing else would remain.
struct AlgorithmList {
    keyword: &'static str,
    key: &'static str,
    legacy: fn(&str) -> bool,
    modern: &'static str,
}

fn legacy_signature(name: &str) -> bool {
    name == "ssh-rsa" || name.starts_with("ssh-rsa-cert") || name.starts_with("ssh-dss")
}

const ALGORITHM_LISTS: &[AlgorithmList] = &[
    AlgorithmList {
        keyword: "Ciphers",
        key: "ciphers",
        legacy: |n| n.contains("-cbc") || n.starts_with("3des") || n.starts_with("arcfour"),
        modern: "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes128-ctr",
    },
    AlgorithmList {
        keyword: "MACs",
        key: "macs",
        legacy: |n| {
            n.starts_with("hmac-sha1") || n.starts_with("hmac-md5") || n.starts_with("hmac-ripemd")
        },
        modern: "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com",
    },
    AlgorithmList {
        keyword: "KexAlgorithms",
        key: "kexalgorithms",
        legacy: |n| n.contains("sha1"),
        modern: "sntrup761x25519-sha512@openssh.com,curve25519-sha256,diffie-hellman-group16-sha512",
    },
    AlgorithmList {
        keyword: "HostKeyAlgorithms",
        key: "hostkeyalgorithms",
        legacy: legacy_signature,
        modern: "ssh-ed25519,rsa-sha2-512,rsa-sha2-256",
    },
    AlgorithmList {
        keyword: "PubkeyAcceptedAlgorithms",
        key: "pubkeyacceptedalgorithms",
        legacy: legacy_signature,
        modern: "ssh-ed25519,rsa-sha2-512,rsa-sha2-256",
    },
    AlgorithmList {
        keyword: "CASignatureAlgorithms",
        key: "casignaturealgorithms",
        legacy: legacy_signature,
        modern: "ssh-ed25519,rsa-sha2-512,rsa-sha2-256",
    },
    AlgorithmList {
        keyword: "HostbasedAcceptedAlgorithms",
        key: "hostbasedacceptedalgorithms",
        legacy: legacy_signature,
        modern: "ssh-ed25519,rsa-sha2-512,rsa-sha2-256",
    },
];

/// SHA-1, MD5, CBC, RC4 and DSA algorithms sshd would offer or accept.
pub fn legacy_algorithms(user: &str, s: &SshdSettings) -> Option<Finding> {
    let mut offered = Vec::new();
    let mut fixes = Vec::new();
    for list in ALGORITHM_LISTS {
        if list.key == "hostbasedacceptedalgorithms" && !s.is("hostbasedauthentication", "yes") {
            continue;
        }
        let names = s.list(list.key);
        let (old, kept): (Vec<&str>, Vec<&str>) = names
            .iter()
            .partition(|n| (list.legacy)(&n.to_ascii_lowercase()));
        if old.is_empty() {
            continue;
        }
        offered.push(format!("{} {}", list.keyword, old.join(",")));
        let kept = if kept.is_empty() {
            list.modern.to_string()
        } else {
            kept.join(",")
        };
        fixes.push(format!("{} {kept}", list.keyword));
    }
    if offered.is_empty() {
        return None;
    }
    Some(Finding::user(
        user,
        Check::LegacyAlgorithms,
        format!("sshd offers legacy algorithms: {}", offered.join("; ")),
        format!("set in sshd_config: {}; then reload sshd", fixes.join("; ")),
    ))
}

/// `PermitUserEnvironment`: variables from the user's own files before their shell runs.
pub fn user_environment(user: &str, s: &SshdSettings) -> Option<Finding> {
    let v = s.get("permituserenvironment")?;
    if v.eq_ignore_ascii_case("no") {
        return None;
    }
    Some(Finding::user(
        user,
        Check::UserEnvironment,
        format!(
            "PermitUserEnvironment {v}: ~/.ssh/environment and environment= key options set \
             variables (LD_PRELOAD, PATH) before aspshell starts"
        ),
        format!("set PermitUserEnvironment no {}", for_them(user)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Docroot};

    /// A hardened `sshd -T` output: no finding.
    const HARDENED: &str = "\
usepam yes
passwordauthentication no
kbdinteractiveauthentication no
permitemptypasswords no
x11forwarding no
permittty no
allowtcpforwarding no
allowagentforwarding no
disableforwarding no
allowstreamlocalforwarding no
permittunnel no
permitopen any
permitlisten any
permituserenvironment no
forcecommand none
chrootdirectory none
authenticationmethods any
hostbasedauthentication no
subsystem sftp /usr/lib/openssh/sftp-server
ciphers chacha20-poly1305@openssh.com,aes128-ctr,aes256-gcm@openssh.com
macs hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com
kexalgorithms curve25519-sha256,diffie-hellman-group14-sha256
hostkeyalgorithms ssh-ed25519,rsa-sha2-512
pubkeyacceptedalgorithms ssh-ed25519,rsa-sha2-512,rsa-sha2-256
casignaturealgorithms ssh-ed25519,rsa-sha2-512
hostbasedacceptedalgorithms ssh-rsa
";

    /// The hardened output with `changes` (`key value` lines) replacing their keys.
    fn with(changes: &str) -> SshdSettings {
        let changed: Vec<&str> = changes
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let mut text: String = HARDENED
            .lines()
            .filter(|l| !changed.contains(&l.split_whitespace().next().unwrap_or("")))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str(changes);
        SshdSettings::parse(&text)
    }

    fn checks(s: &SshdSettings) -> Vec<Check> {
        sshd("alice", s).into_iter().map(|f| f.check).collect()
    }

    #[test]
    fn hardened_settings_have_no_finding() {
        assert_eq!(checks(&with("")), []);
    }

    /// Debian's OpenSSH 9.2 defaults, as `sshd -T` prints them.
    #[test]
    fn stock_debian_settings() {
        let stock = with(
            "passwordauthentication yes\nx11forwarding yes\npermittty yes\n\
             allowtcpforwarding yes\nallowagentforwarding yes\nallowstreamlocalforwarding yes\n\
             macs umac-64-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha1-etm@openssh.com,hmac-sha2-256,hmac-sha1\n",
        );
        let found = sshd("alice", &stock);
        assert_eq!(
            found.iter().map(|f| f.check).collect::<Vec<_>>(),
            [
                Check::SshTunneling,
                Check::Tty,
                Check::PasswordLogin,
                Check::LegacyAlgorithms
            ]
        );
        let tunnel = &found[0];
        assert_eq!(tunnel.user.as_deref(), Some("alice"));
        assert!(
            tunnel
                .detail
                .contains("AllowTcpForwarding yes (local and remote)")
                && tunnel.detail.contains("AllowAgentForwarding yes")
                && tunnel.detail.contains("X11Forwarding yes")
                && tunnel.detail.contains("AllowStreamLocalForwarding yes"),
            "{}",
            tunnel.detail
        );
        assert!(tunnel.fix.starts_with(
            "set AllowTcpForwarding no, AllowAgentForwarding no, X11Forwarding no, \
             AllowStreamLocalForwarding no for alice in sshd_config"
        ));
        let legacy = &found[3];
        assert_eq!(
            legacy.detail,
            "sshd offers legacy algorithms: MACs hmac-sha1-etm@openssh.com,hmac-sha1"
        );
        assert_eq!(
            legacy.fix,
            "set in sshd_config: MACs umac-64-etm@openssh.com,hmac-sha2-256-etm@openssh.com,\
             hmac-sha2-256; then reload sshd"
        );
    }

    #[test]
    fn tunneling_variants() {
        let t = |changes: &str| tunneling("a", &with(changes)).map(|f| f.detail);
        assert!(t("allowtcpforwarding local\n").unwrap().contains("(local)"));
        assert!(t("allowtcpforwarding remote\n")
            .unwrap()
            .contains("(remote)"));
        // Every destination closed: local forwarding is not possible.
        assert_eq!(t("allowtcpforwarding local\npermitopen none\n"), None);
        assert!(t("allowtcpforwarding all\npermitopen none\n")
            .unwrap()
            .contains("(remote)"));
        // DisableForwarding covers everything but tunnel devices.
        assert_eq!(
            t(
                "disableforwarding yes\nallowtcpforwarding yes\nx11forwarding yes\n\
               allowagentforwarding yes\nallowstreamlocalforwarding all\n"
            ),
            None
        );
        assert!(t("disableforwarding yes\npermittunnel point-to-point\n")
            .unwrap()
            .contains("PermitTunnel point-to-point"));
    }

    #[test]
    fn internal_sftp_variants() {
        let f = |changes: &str| internal_sftp("a", &with(changes));
        let sub = f("subsystem sftp internal-sftp\n").unwrap();
        assert!(
            sub.detail.starts_with("Subsystem sftp internal-sftp"),
            "{}",
            sub.detail
        );
        assert!(sub.fix.contains("/usr/lib/openssh/sftp-server"));
        let forced = f("forcecommand internal-sftp -d /in\nchrootdirectory /srv/%u\n").unwrap();
        assert!(
            forced.detail.contains("ForceCommand internal-sftp -d /in")
                && forced.detail.contains("chrooted to /srv/%u"),
            "{}",
            forced.detail
        );
        // Another forced command replaces subsystem requests.
        assert_eq!(
            f("subsystem sftp internal-sftp\nforcecommand /usr/local/bin/x\n"),
            None
        );
        assert_eq!(f("subsystem sftp /usr/lib/sftp-server\n"), None);
    }

    #[test]
    fn password_variants() {
        let p = |changes: &str| password("a", &with(changes)).map(|f| f.detail);
        assert!(p("passwordauthentication yes\n")
            .unwrap()
            .contains("PasswordAuthentication yes"));
        assert!(p("kbdinteractiveauthentication yes\n")
            .unwrap()
            .contains("KbdInteractiveAuthentication yes with UsePAM yes"));
        assert_eq!(p("kbdinteractiveauthentication yes\nusepam no\n"), None);
        // Older OpenSSH prints ChallengeResponseAuthentication.
        assert!(p("challengeresponseauthentication yes\n").is_some());
        // A password only after a key: not a password alone.
        assert_eq!(
            p("passwordauthentication yes\nauthenticationmethods publickey,password\n"),
            None
        );
        assert!(
            p("passwordauthentication yes\nauthenticationmethods publickey password\n")
                .unwrap()
                .contains("AuthenticationMethods publickey password")
        );
        let empty = password(
            "a",
            &with("passwordauthentication yes\npermitemptypasswords yes\n"),
        )
        .unwrap();
        assert!(
            empty.fix.contains("PermitEmptyPasswords no"),
            "{}",
            empty.fix
        );
    }

    #[test]
    fn legacy_variants() {
        let l = |changes: &str| legacy_algorithms("a", &with(changes));
        let f = l("ciphers aes128-cbc,aes256-ctr,3des-cbc\nkexalgorithms curve25519-sha256,diffie-hellman-group14-sha1,diffie-hellman-group1-sha1\npubkeyacceptedalgorithms ssh-ed25519,ssh-rsa,ssh-rsa-cert-v01@openssh.com\n").unwrap();
        assert_eq!(
            f.detail,
            "sshd offers legacy algorithms: Ciphers aes128-cbc,3des-cbc; KexAlgorithms \
             diffie-hellman-group14-sha1,diffie-hellman-group1-sha1; PubkeyAcceptedAlgorithms \
             ssh-rsa,ssh-rsa-cert-v01@openssh.com"
        );
        assert!(f.fix.contains("Ciphers aes256-ctr;"), "{}", f.fix);
        // Only legacy names: the fix offers a modern list.
        let f = l("macs hmac-sha1\n").unwrap();
        assert!(
            f.fix.contains("MACs hmac-sha2-256-etm@openssh.com"),
            "{}",
            f.fix
        );
        // Host-based algorithms count only with host-based logins on.
        assert!(l("hostbasedauthentication yes\n")
            .unwrap()
            .detail
            .contains("HostbasedAcceptedAlgorithms ssh-rsa"));
        assert!(l("hostkeyalgorithms ssh-dss\n").is_some());
        assert!(l("macs umac-128-etm@openssh.com,hmac-sha2-512\n").is_none());
    }

    #[test]
    fn tty_and_environment() {
        assert!(tty("a", &with("permittty yes\n")).is_some());
        let env = user_environment("a", &with("permituserenvironment LANG,LC_*\n")).unwrap();
        assert!(env.detail.starts_with("PermitUserEnvironment LANG,LC_*"));
        assert!(user_environment("a", &with("permituserenvironment yes\n")).is_some());
    }

    fn root(template: Option<&str>, user: &str, home: &str) -> Docroot {
        Docroot {
            root: template.map(|t| config::docroot::substitute(t, user, Path::new(home)).unwrap()),
            ..Docroot::unrestricted()
        }
    }

    #[test]
    fn docroots_against_home() {
        let no_links = |_: &Path| None;
        let home = Path::new("/home/alice");
        let check = |t: Option<&str>| {
            docroot("alice", home, &root(t, "alice", "/home/alice"), no_links).map(|f| f.detail)
        };
        assert!(check(Some("$(home)"))
            .unwrap()
            .starts_with("docroot /home/alice is the home directory /home/alice"));
        assert!(check(Some("$(home)/"))
            .unwrap()
            .contains("is the home directory"));
        assert!(check(Some("/home"))
            .unwrap()
            .starts_with("docroot /home is above the home directory /home/alice"));
        assert!(check(Some("/")).unwrap().contains("is above"));
        assert!(check(None).unwrap().starts_with("no docroot"));
        assert_eq!(check(Some("/srv/data/$(name)")), None);
        assert_eq!(check(Some("$(home)/data")), None);
        // A sibling whose name starts with the home's is not above it.
        assert_eq!(check(Some("/home/alice2")), None);
        assert_eq!(check(Some("/home/al")), None);
    }

    #[test]
    fn docroot_through_a_symbolic_link() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home/alice");
        std::fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::symlink(&home, dir.path().join("data")).unwrap();
        let resolve = |p: &Path| std::fs::canonicalize(p).ok();
        let doc = Docroot {
            root: Some(dir.path().join("data")),
            ..Docroot::unrestricted()
        };
        let f = docroot("alice", &home, &doc, resolve).unwrap();
        assert!(f.detail.contains("resolves to"), "{}", f.detail);
        let below = Docroot {
            root: Some(home.join("data")),
            ..Docroot::unrestricted()
        };
        std::fs::create_dir(home.join("data")).unwrap();
        assert_eq!(docroot("alice", &home, &below, resolve), None);
    }

    #[test]
    fn shell_finding_names_the_shell_and_fix() {
        let f = no_restricted_shell("bob", Path::new("/bin/bash"), 12);
        assert!(f.detail.contains("line 12") && f.detail.contains("/bin/bash"));
        assert_eq!(f.fix, "chsh -s /usr/local/bin/aspshell bob");
        let f = no_restricted_shell("bob", Path::new(""), 3);
        assert!(f.detail.contains("/bin/sh (empty field)"), "{}", f.detail);
    }
}
