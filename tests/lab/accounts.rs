//! Non-root test accounts and logging in as them through the lab's [`Sshd`]: the account
//! (created if missing, made harmless when dropped, also on panic), binaries copied where it can
//! run them, sshd in a private mount namespace with the test's configuration directory over
//! `/etc/fasp-proxy`, and the client options for `ssh` and our `ascp`.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::{text, Netns, Sshd};

/// The directory every test configuration is bind-mounted over, in sshd's mount namespace.
pub const CONF_DIR: &str = "/etc/fasp-proxy";

/// Gives sshd a private mount namespace with `$0` (the test's configuration directory) over
/// [`CONF_DIR`].
const MOUNT_SCRIPT: &str = "mount --bind \"$0\" /etc/fasp-proxy && exec \"$@\"";

/// Runs a passwd-changing tool, retrying (for up to 30 s) while another one holds the passwd
/// lock (tests running in parallel create accounts too).
pub fn passwd_tool(program: &str, args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("lab: cannot run {program} ({e}); install passwd"));
        let err = text(&out.stderr);
        if out.status.success() || !err.contains("lock") || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a passwd-changing tool and panics, with its message, if it fails.
fn passwd_tool_ok(program: &str, args: &[&str]) {
    let out = passwd_tool(program, args);
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.last().copied().unwrap_or_default(),
        text(&out.stderr)
    );
}

/// A temporary directory of mode 0755 (other accounts may go through it).
pub fn dir_0755() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("lab: tempdir: {e}"));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("lab: chmod {}: {e}", dir.path().display()));
    dir
}

/// Copies each of `binaries` into `dir` under its own file name, mode 0755, and makes `dir`
/// 0755 (creating it if missing): the build tree may not be reachable for a test account.
pub fn copy_binaries(dir: &Path, binaries: &[&str]) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("lab: mkdir {}: {e}", dir.display()));
    for from in binaries {
        let name = Path::new(from)
            .file_name()
            .unwrap_or_else(|| panic!("lab: {from} has no file name"));
        let to = dir.join(name);
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("lab: copy {from}: {e}"));
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A non-root Unix account for one test (tests run in parallel: each needs its own name), with
/// a login shell, a home and password `*` (no password login, but not locked: sshd refuses keys
/// for a locked account) while the value lives. Dropped, also on panic: shell
/// /usr/sbin/nologin, password `*` (and home /nonexistent if [`Account::reset_home_on_drop`]).
pub struct Account {
    /// The account name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    home: PathBuf,
    /// Set the home to /nonexistent on drop.
    reset_home: bool,
    /// The home made by [`Account::with_temp_home`]; removed after the account is harmless.
    _temp_home: Option<tempfile::TempDir>,
}

impl Account {
    /// Creates `name` if missing (a system account without a home, shell nologin), then gives
    /// it `shell`, `home` and password `*`.
    pub fn create(name: &str, home: &Path, shell: &Path) -> Account {
        if nix::unistd::User::from_name(name).unwrap().is_none() {
            passwd_tool_ok(
                "useradd",
                &[
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ],
            );
        }
        let user = nix::unistd::User::from_name(name)
            .unwrap()
            .unwrap_or_else(|| panic!("lab: account {name} missing after useradd"));
        let account = Account {
            name: name.to_string(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: home.to_path_buf(),
            reset_home: false,
            _temp_home: None,
        };
        let home_arg = home.display().to_string();
        let shell_arg = shell.display().to_string();
        passwd_tool_ok(
            "usermod",
            &[
                "--home",
                &home_arg,
                "--shell",
                &shell_arg,
                "--password",
                "*",
                name,
            ],
        );
        account
    }

    /// Like [`Account::create`], with a fresh 0755 temporary directory the account owns as its
    /// home.
    pub fn with_temp_home(name: &str, shell: &Path) -> Account {
        let home = dir_0755();
        let mut account = Account::create(name, home.path(), shell);
        account.own(home.path());
        account._temp_home = Some(home);
        account
    }

    /// Also sets the home to /nonexistent when dropped.
    pub fn reset_home_on_drop(mut self) -> Account {
        self.reset_home = true;
        self
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Makes `path` the account's, user and group (not following a link).
    pub fn own(&self, path: &Path) {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|e| panic!("lab: chown {} to {}: {e}", path.display(), self.name));
    }

    /// Makes `path` the account's user's, keeping its group (not following a link).
    pub fn own_keeping_group(&self, path: &Path) {
        std::os::unix::fs::lchown(path, Some(self.uid), None)
            .unwrap_or_else(|e| panic!("lab: chown {} to {}: {e}", path.display(), self.name));
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let mut args = vec!["--shell", "/usr/sbin/nologin", "--password", "*"];
        if self.reset_home {
            args.extend(["--home", "/nonexistent"]);
        }
        args.push(&self.name);
        let out = passwd_tool("usermod", &args);
        if !out.status.success() {
            eprintln!(
                "WARNING: could not make account {} harmless: {}",
                self.name,
                text(&out.stderr)
            );
        }
    }
}

impl Sshd {
    /// Starts sshd (see [`Sshd::start_configured`]) in a private mount namespace, which only
    /// it and its sessions see, where `conf` is bind-mounted over [`CONF_DIR`]; the machine's
    /// own directory is never read or changed (it is only created, empty, if missing, to have
    /// something to mount over). The key directory is opened to test accounts
    /// ([`Sshd::open_to_accounts`]).
    pub fn start_with_conf(ns: &Netns, addr: SocketAddr, conf: &Path, extra: &str) -> Sshd {
        std::fs::create_dir_all(CONF_DIR).unwrap_or_else(|e| panic!("lab: mkdir {CONF_DIR}: {e}"));
        let conf_arg = conf.display().to_string();
        let prefix = [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            MOUNT_SCRIPT,
            &conf_arg,
        ];
        let sshd = Sshd::start_configured(ns, addr, &prefix, extra);
        sshd.open_to_accounts();
        sshd
    }

    /// Lets non-root accounts log in with the client key: sshd reads the shared
    /// authorized_keys file as the user.
    pub fn open_to_accounts(&self) {
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            self.dir.path().join("authorized_keys"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }

    /// The `ssh` options that log in to this sshd with the client key, checking its host key,
    /// never asking anything and ignoring the machine's ssh configuration.
    pub fn ssh_options(&self) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-p".into(),
            self.addr.port().to_string(),
            "-i".into(),
            self.client_key.display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
        ]
    }

    /// The options of our `ascp` that log in to this sshd with the client key.
    pub fn ascp_options(&self) -> Vec<String> {
        vec![
            "-P".into(),
            self.addr.port().to_string(),
            "-i".into(),
            self.client_key.display().to_string(),
            "--known-hosts".into(),
            self.known_hosts.display().to_string(),
        ]
    }
}
