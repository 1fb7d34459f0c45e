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
//! The lab around the container's daemon is the same for these tests: [`Backend`], one server
//! running OpenSSH whose transfer command is this build's `ascp --server`, and [`ProxyClient`],
//! the lab's client sending files through the daemon to it.
//!
//! Needs `systemd` and `systemd-nspawn` (Debian: systemd, systemd-container; `scripts/test.sh`
//! installs them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{ssh_keygen, text, wait_until, Netns, NsProcess, Sshd, Topology};

/// The unit the tests look at.
pub const UNIT: &str = "fasp-proxy.service";
/// Where the daemon in the container listens for clients (the proxy's client-side address).
pub const PROXY_PORT: u16 = 33001;
const ASCP: &str = env!("CARGO_BIN_EXE_ascp");
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
            // The BPF fast path (`<fast_path>`) under the unit with its documented drop-in: the
            // container must hold CAP_BPF for the unit to grant it, and let bpf() through.
            "--capability=CAP_BPF",
            "--system-call-filter=bpf",
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

    /// `systemctl --no-pager ARGS` in the container, which must succeed: panics with what it
    /// said on stderr and the unit's state otherwise.
    #[track_caller]
    pub fn systemctl_ok(&self, args: &[&str]) {
        let out = self.systemctl(args);
        assert!(
            out.status.success(),
            "systemctl {} failed ({}): {}\n{}",
            args.join(" "),
            out.status,
            text(&out.stderr),
            self.describe()
        );
    }

    /// Panics unless the unit's property `name` (`systemctl show -p NAME`) is `value`; the
    /// message holds `context` (what led here, may be empty) and the unit's state.
    #[track_caller]
    pub fn assert_unit(&self, name: &str, value: &str, context: &str) {
        assert_eq!(
            self.unit_property(name),
            value,
            "{name} of {UNIT}: {context}\n{}",
            self.describe()
        );
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

/// The backend the container tests send to, and root's key for logins at the proxy.
pub struct Backend {
    /// OpenSSH on the lab's one server, port 22, whose transfer command is this build's
    /// `ascp --server`.
    pub sshd: Sshd,
    /// root's private key for logins at the proxy (ed25519, no passphrase).
    pub client_key: PathBuf,
}

impl Backend {
    /// Starts the backend's sshd in `topo`'s one server, makes root's key `dir/client_key`,
    /// and puts what the administrator gives the proxy into `conf` (the directory that becomes
    /// `/etc/fasp-proxy`): root's public key as `root.keys`, the backend's login key as
    /// `backend_key`.
    pub fn start(topo: &Topology, dir: &Path, conf: &Path) -> Backend {
        let sshd = Sshd::start_configured(
            &topo.servers[0],
            SocketAddr::new(super::server_v4(0).into(), 22),
            &[],
            &format!("ForceCommand {ASCP} --server\n"),
        );
        let client_key = dir.join("client_key");
        ssh_keygen(&client_key);
        let copy = |from: &Path, name: &str| {
            std::fs::copy(from, conf.join(name)).unwrap_or_else(|e| {
                panic!("cannot copy {} to {}: {e}", from.display(), conf.display())
            });
        };
        copy(&client_key.with_extension("pub"), "root.keys");
        copy(&sshd.client_key, "backend_key");
        Backend { sshd, client_key }
    }
}

/// The lab's client sending files with this build's `ascp` through the daemon in the container
/// (the proxy's client-side address, [`PROXY_PORT`]) to the [`Backend`].
pub struct ProxyClient<'a> {
    client: &'a Netns,
    key: PathBuf,
    known_hosts: PathBuf,
    empty_home: PathBuf,
    /// Where the files land on the backend.
    pub inbox: PathBuf,
}

impl<'a> ProxyClient<'a> {
    /// A client in `client` logging in as root with `key`, trusting only the daemon's host key
    /// `host_pub` (a line of an OpenSSH `.pub` file); writes its known-hosts file and makes the
    /// inbox under `dir`.
    pub fn new(client: &'a Netns, dir: &Path, key: &Path, host_pub: &str) -> ProxyClient<'a> {
        let known_hosts = dir.join("proxy_known_hosts");
        let host_key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        std::fs::write(
            &known_hosts,
            format!(
                "[{}]:{PROXY_PORT} {}\n",
                super::PROXY_CLIENT_V4,
                host_key.join(" ")
            ),
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", known_hosts.display()));
        let inbox = dir.join("inbox");
        let empty_home = dir.join("empty_home");
        for made in [&inbox, &empty_home] {
            std::fs::create_dir(made)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", made.display()));
        }
        ProxyClient {
            client,
            key: key.to_path_buf(),
            known_hosts,
            empty_home,
            inbox,
        }
    }

    /// Starts `ascp -q OPTIONS PAYLOAD` to the inbox as root with the key, in the background.
    pub fn spawn(&self, options: &[&str], payload: &Path) -> NsProcess {
        let args = self.ascp_as_root(options, payload);
        self.client
            .spawn(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Runs `ascp -q OPTIONS PAYLOAD` to the inbox as root with the key, 60 s at most.
    pub fn send(&self, options: &[&str], payload: &Path) -> Output {
        self.run(&[], &self.ascp_as_root(options, payload))
    }

    /// Runs `ascp -q PAYLOAD` to the inbox as `user` with `password` (`ASPERA_SCP_PASS`; an
    /// empty HOME, so no key of this machine is offered), 60 s at most.
    pub fn send_with_password(&self, user: &str, password: &str, payload: &Path) -> Output {
        let home = format!("HOME={}", self.empty_home.display());
        let pass = format!("ASPERA_SCP_PASS={password}");
        self.run(&["env", &home, &pass], &self.ascp(user, &[], payload))
    }

    fn run(&self, prefix: &[&str], ascp: &[String]) -> Output {
        let mut args = prefix.to_vec();
        args.extend(["timeout", "60"]);
        args.extend(ascp.iter().map(String::as_str));
        self.client.try_exec(&args)
    }

    fn ascp_as_root(&self, options: &[&str], payload: &Path) -> Vec<String> {
        let key = self.key.display().to_string();
        let mut all = vec!["-i", key.as_str()];
        all.extend_from_slice(options);
        self.ascp("root", &all, payload)
    }

    /// `ascp -P PORT --known-hosts FILE -q OPTIONS PAYLOAD USER@PROXY:INBOX`.
    fn ascp(&self, user: &str, options: &[&str], payload: &Path) -> Vec<String> {
        let mut args: Vec<String> = vec![
            ASCP.into(),
            "-P".into(),
            PROXY_PORT.to_string(),
            "--known-hosts".into(),
            self.known_hosts.display().to_string(),
            "-q".into(),
        ];
        args.extend(options.iter().map(|o| o.to_string()));
        args.push(payload.display().to_string());
        args.push(format!(
            "{user}@{}:{}",
            super::PROXY_CLIENT_V4,
            self.inbox.display()
        ));
        args
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
