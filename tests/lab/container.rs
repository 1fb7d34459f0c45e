//! A throw-away systemd container joined to a lab namespace, for the tests that need a real
//! systemd as PID 1 (`tests/systemd.rs`, `tests/deb.rs`).
//!
//! systemd is not PID 1 on the machines the tests run on, so [`Container::boot`] boots one:
//! `systemd-nspawn --boot` over a read-only view of the machine's own root with a tmpfs on top
//! (`--volatile=overlay`), inside a private mount namespace (`unshare -m`), joined to a lab
//! network namespace (`--network-namespace-path`). Whatever runs inside (an install script,
//! `dpkg -i`) writes only to the tmpfs: the machine is not changed. Dropping the container powers
//! it off and removes what nspawn leaves behind: the empty cgroups `payload`/`supervisor` that it
//! creates next to itself, and `/run/systemd/nspawn` if it was created for it.
//!
//! Needs `systemd` and `systemd-nspawn` (Debian: systemd, systemd-container; `scripts/test.sh`
//! installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{text, wait_until};

/// The unit the tests look at.
pub const UNIT: &str = "fasp-proxy.service";
const NSPAWN_RUN_DIR: &str = "/run/systemd/nspawn";

/// A systemd container sharing a lab network namespace. Dropping it powers it off (SIGTERM to
/// nspawn), or kills it, and removes what nspawn leaves behind.
pub struct Container {
    nspawn: Child,
    /// Host PID of the container's systemd (PID 1 inside).
    pub leader: u32,
    log: PathBuf,
    created_run_dir: bool,
}

impl Container {
    /// Boots systemd into `fasp-lab.target` (basic.target, nothing else) in the network
    /// namespace `netns`, with its files under `dir`, and `binds` (`HOST:CONTAINER`,
    /// read-write) and `binds_ro`.
    pub fn boot(
        netns: &str,
        dir: &Path,
        binds: &[(PathBuf, &str)],
        binds_ro: &[(PathBuf, &str)],
    ) -> Container {
        for tool in ["systemd-nspawn", "/lib/systemd/systemd"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            assert!(
                found,
                "{tool} is missing: install systemd and systemd-container (scripts/test.sh does)"
            );
        }
        let created_run_dir = !Path::new(NSPAWN_RUN_DIR).exists();
        std::fs::create_dir_all(NSPAWN_RUN_DIR).unwrap();
        let units = dir.join("units");
        std::fs::create_dir_all(&units).unwrap();
        std::fs::write(
            units.join("fasp-lab.target"),
            // systemd-user-sessions removes /run/nologin, which makes pam_nologin refuse
            // password logins of anyone but root while the system boots.
            "[Unit]\nDescription=fasp-proxy test target\nRequires=basic.target\n\
             Wants=systemd-user-sessions.service\n\
             After=basic.target systemd-user-sessions.service\n",
        )
        .unwrap();
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let tag = format!("FASP_LAB_CONTAINER={netns}");
        let mut args: Vec<String> = [
            "-q",
            "--boot",
            "--volatile=overlay",
            "--keep-unit",
            "--register=no",
            "--resolv-conf=off",
            "--timezone=off",
            "--link-journal=no",
            "--console=pipe",
            // nspawn keeps CAP_NET_ADMIN only for --private-network; the unit needs it.
            "--capability=CAP_NET_ADMIN",
            // Without CAP_IPC_LOCK in the container, nspawn's seccomp filter refuses mlock()
            // outright (EPERM), for everyone in it; the daemon itself still runs without the
            // capability (the unit's bounding set) and locks within LimitMEMLOCK.
            "--capability=CAP_IPC_LOCK",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--directory={}", root.display()));
        args.push(format!("--network-namespace-path=/run/netns/{netns}"));
        args.push(format!("--setenv={tag}"));
        args.push(format!(
            "--bind-ro={}:/etc/systemd/system/fasp-lab.target",
            units.join("fasp-lab.target").display()
        ));
        for (host, inside) in binds {
            args.push(format!("--bind={}:{inside}", host.display()));
        }
        for (host, inside) in binds_ro {
            args.push(format!("--bind-ro={}:{inside}", host.display()));
        }
        args.extend(["--".into(), "--unit=fasp-lab.target".into()]);
        let log = dir.join("nspawn.log");
        let out = std::fs::File::create(&log).unwrap();
        // In a private mount namespace: nspawn's run directory on a tmpfs (on this machine /run
        // may be a disk directory, which nspawn refuses to clean), and the root bind-mounted
        // without its submounts (nspawn refuses "/" itself).
        let nspawn = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs tmpfs {NSPAWN_RUN_DIR} && mount --bind / \"$0\" && exec systemd-nspawn \"$@\""
            ))
            .arg(&root)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("cannot start unshare + systemd-nspawn");
        let mut container = Container {
            nspawn,
            leader: 0,
            log,
            created_run_dir,
        };
        let found = wait_until(Duration::from_secs(30), || {
            container.leader = find_process_with_env(&tag, "systemd").unwrap_or(0);
            container.leader != 0
        });
        assert!(found, "the container did not start:\n{}", container.log());
        let running = wait_until(Duration::from_secs(60), || {
            let state = container.systemctl(&["is-system-running"]);
            let state = text(&state.stdout);
            state.contains("running") || state.contains("degraded")
        });
        assert!(
            running,
            "the container's systemd did not finish booting:\n{}",
            container.log()
        );
        container
    }

    /// Runs `args` in the container's mount/PID/UTS/IPC namespaces and its network namespace
    /// (the lab's, so whatever it changes in the kernel stays there), bounded to 60 s.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_for(60, args)
    }

    /// Runs `args` in the container's namespaces as [`Container::exec`] does, bounded to
    /// `seconds`.
    pub fn exec_for(&self, seconds: u32, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg(seconds.to_string())
            .args([
                "nsenter",
                "-t",
                &self.leader.to_string(),
                "-m",
                "-p",
                "-u",
                "-i",
                "-n",
                "--",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run nsenter")
    }

    /// `systemctl --no-pager ARGS` in the container.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut all = vec!["systemctl", "--no-pager"];
        all.extend_from_slice(args);
        self.exec(&all)
    }

    /// `systemctl show -p NAME --value fasp-proxy.service`.
    pub fn unit_property(&self, name: &str) -> String {
        text(
            &self
                .systemctl(&["show", "-p", name, "--value", UNIT])
                .stdout,
        )
        .trim()
        .to_string()
    }

    /// The unit's journal (the daemon logs through syslog, which journald receives).
    pub fn journal(&self) -> String {
        text(
            &self
                .exec(&["journalctl", "--no-pager", "-o", "cat", "-u", UNIT])
                .stdout,
        )
    }

    /// What nspawn printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Everything about the unit, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{}\n--- journal ---\n{}",
            text(&self.systemctl(&["status", UNIT]).stdout),
            self.journal()
        )
    }

    /// The host PID of the process that is `inner_pid` in the container's PID namespace.
    pub fn host_pid(&self, inner_pid: &str) -> Option<String> {
        let leader_ns = std::fs::read_link(format!("/proc/{}/ns/pid", self.leader)).ok()?;
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid = e.file_name().to_str()?.to_string();
            pid.parse::<u32>().ok()?;
            if std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()? != leader_ns {
                return None;
            }
            let nspid = status_field(&pid, "NSpid");
            (nspid.split_whitespace().last()? == inner_pid).then_some(pid)
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM to nspawn = an orderly poweroff of the container.
        if let Ok(pid) = i32::try_from(self.nspawn.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the PID is our child's.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let nspawn = &mut self.nspawn;
        let stopped = wait_until(Duration::from_secs(30), || {
            matches!(nspawn.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            eprintln!("lab container: the container did not power off; killing it");
            if let Ok(leader) = i32::try_from(self.leader) {
                if leader > 1 {
                    // SAFETY: as above; the container's init, started by our nspawn.
                    unsafe { libc::kill(leader, libc::SIGKILL) };
                }
            }
            let _ = self.nspawn.kill();
        }
        let _ = self.nspawn.wait();
        remove_nspawn_cgroups();
        if self.created_run_dir {
            let _ = std::fs::remove_dir_all(NSPAWN_RUN_DIR);
        }
    }
}

/// A `/proc/PID/status` field, e.g. `CapBnd` (empty if missing).
pub fn status_field(pid: &str, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The PID of a process named `comm` whose environment holds `entry` exactly.
fn find_process_with_env(entry: &str, comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        if name.trim() != comm {
            return None;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        env.split(|&b| b == 0)
            .any(|v| v == entry.as_bytes())
            .then_some(pid)
    })
}

/// nspawn without a host systemd puts itself and the container into new cgroups `supervisor`
/// and `payload` next to its own (here: the root of each hierarchy); they are empty once it has
/// exited. Removes them, deepest first. Only these two names are touched, and a cgroup with
/// processes in it cannot be removed (rmdir fails), so nothing in use is affected.
fn remove_nspawn_cgroups() {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut roots: Vec<PathBuf> = vec![PathBuf::from("/sys/fs/cgroup")];
    roots.extend(hierarchies.flatten().map(|e| e.path()));
    for root in roots {
        for name in ["payload", "supervisor"] {
            remove_cgroup_tree(&root.join(name));
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
}
