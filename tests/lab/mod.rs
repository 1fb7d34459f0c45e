//! A lab of Linux network namespaces for integration tests.
//!
//! Integration tests include this module with `mod lab;`. It builds throw-away network
//! namespaces joined by veth pairs on documentation address ranges only
//! (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32), runs commands and
//! long-lived processes inside them, and runs Rust closures on threads that have `setns`'d into
//! them (so a test can own sockets living in a namespace).
//!
//! Safety properties:
//! - Every link, address, route, sysctl and firewall change is made inside a namespace this
//!   module created; nothing is ever created in or changed in the machine's own namespace
//!   (veth pairs are created directly inside the namespaces with `ip -n A link add ... peer
//!   ... netns B`).
//! - Everything is removed when the [`Lab`] is dropped, also when the test panics: processes are
//!   killed by PID first, then each namespace is deleted with `ip netns del`.
//! - Namespace names are `fpl-<pid>-<counter>-<role>`, so parallel tests and parallel test
//!   binaries never collide. Creating a lab deletes stale namespaces left by crashed earlier
//!   runs: names of exactly that shape whose PID is no longer alive. Nothing else is touched.
//! - Without root or without `ip` the lab panics with a clear message: tests fail loudly, they
//!   never silently skip.
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::libc;

pub mod accounts;
pub mod container;
pub mod daemon;

/// Prefix of every namespace name this module creates (followed by `-<pid>-<counter>-<role>`).
pub const NETNS_PREFIX: &str = "fpl";

/// Maximum length of a Linux interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Counter making namespace names unique within one test process.
static NETNS_COUNTER: AtomicU64 = AtomicU64::new(0);

/// PIDs of processes spawned by a lab that have not been reaped yet.
type Registry = Arc<Mutex<Vec<u32>>>;

fn lock(registry: &Registry) -> MutexGuard<'_, Vec<u32>> {
    // A panic while holding the lock must not stop the cleanup.
    registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends SIGKILL to `pid`. Only ever called with PIDs of processes we started (or processes
/// living in a namespace we created); errors such as ESRCH are ignored.
fn kill_pid(pid: i32) {
    if pid == 0 || pid == -1 {
        return; // never signal "our process group" or "every process"
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

fn format_cmd(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command on the host side (only `ip netns ...` bookkeeping and `ip -n NS ...`
/// commands that act inside our namespaces), panicking with a full description on failure.
fn run_checked(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("lab: cannot run `{}`: {e}", format_cmd(program, args)));
    check_output(&format_cmd(program, args), output)
}

fn check_output(description: &str, output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        panic!(
            "lab: command `{description}` failed with {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end(),
            stdout.trim_end()
        );
    }
    stdout
}

/// Panics unless we run as root and `ip` (iproute2) is usable.
fn preflight() {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!(
            "lab: the namespace lab needs root (effective uid is {euid}); \
             run the tests as root, e.g. `sudo ./scripts/test.sh`"
        );
    }
    match Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("lab: `ip -V` failed with {status}; is iproute2 installed?"),
        Err(e) => panic!("lab: cannot run `ip` ({e}); install iproute2 (apt-get install iproute2)"),
    }
}

/// Lists the names of all named network namespaces (`ip netns list`).
pub fn list_netns() -> Vec<String> {
    run_checked("ip", &["netns", "list"])
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Parses the PID out of a namespace name created by this module
/// (`fpl-<pid>-<counter>[-<role>]`); `None` for any other name.
pub fn owner_pid(netns_name: &str) -> Option<u32> {
    let rest = netns_name.strip_prefix(NETNS_PREFIX)?.strip_prefix('-')?;
    let mut parts = rest.splitn(3, '-');
    let pid = parts.next()?;
    let counter = parts.next()?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(pid) || !all_digits(counter) {
        return None;
    }
    pid.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces left behind by crashed earlier runs: names of our exact shape whose owner
/// PID is no longer alive. Errors (e.g. a concurrent sweep won the race) are ignored.
pub fn sweep_stale_netns() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        match owner_pid(name) {
            Some(pid) if !pid_alive(pid) => {
                let _ = Command::new("ip")
                    .args(["netns", "del", name])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            _ => {}
        }
    }
}

/// Panics unless `name` is a valid interface name (1..=15 chars, no `/`, `:` or whitespace).
pub fn check_ifname(name: &str) {
    let valid = !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    assert!(
        valid,
        "lab: invalid interface name {name:?} (1..={MAX_IFNAME_LEN} chars, no '/', ':' or whitespace)"
    );
}

/// True if `addr` lies in a documentation range: 192.0.2.0/24, 198.51.100.0/24,
/// 203.0.113.0/24 or 2001:db8::/32.
pub fn is_documentation_addr(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            matches!(
                (o[0], o[1], o[2]),
                (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
            )
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0x2001 && s[1] == 0x0db8
        }
    }
}

/// Parses `ADDR/PREFIX` and panics unless the whole prefix lies inside one documentation range
/// (so the prefix length must be at least 24 for IPv4 and 32 for IPv6).
pub fn check_documentation_cidr(cidr: &str) -> (IpAddr, u8) {
    let (addr, prefix) = cidr
        .split_once('/')
        .unwrap_or_else(|| panic!("lab: {cidr:?} is not ADDR/PREFIX"));
    let addr: IpAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("lab: bad address in {cidr:?}: {e}"));
    let prefix: u8 = prefix
        .parse()
        .unwrap_or_else(|e| panic!("lab: bad prefix length in {cidr:?}: {e}"));
    let (min, max) = if addr.is_ipv4() { (24, 32) } else { (32, 128) };
    assert!(
        is_documentation_addr(addr) && (min..=max).contains(&prefix),
        "lab: {cidr} is outside the documentation ranges \
         (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)"
    );
    (addr, prefix)
}

/// Command output as text (lossy UTF-8).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A command's status, standard output and standard error in one string, for messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Deterministic pseudo-random content.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Asserts that `ascp` succeeded; returns its standard output and error.
pub fn ok(out: &Output) -> String {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "ascp failed ({}):\n{all}", out.status);
    all
}

/// Asserts that `ascp` failed, and not by the `timeout` it runs under (status 124); returns
/// its standard error.
pub fn failed(out: &Output) -> String {
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "ascp should have failed:\n{}{err}",
        text(&out.stdout)
    );
    assert_ne!(
        out.status.code(),
        Some(124),
        "ascp hung until the timeout:\n{err}"
    );
    err
}

/// Polls `cond` every 20 ms until it returns true or `timeout` elapses; returns the last result.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `UdpSocket::recv_from` that retries when interrupted (EINTR). Blocking socket calls with a
/// timeout (`set_read_timeout`) are never restarted by the kernel, so a stop/continue of the
/// process (or any handled signal) makes std's `recv_from` fail with `Interrupted`.
pub fn udp_recv_from(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    let mut attempts = 0;
    loop {
        match sock.recv_from(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted && attempts < 100 => attempts += 1,
            other => return other,
        }
    }
}

/// Reads (and drops) whatever comes on `s` until the peer closes it (end of file, or an error
/// such as a reset) or `deadline` passes; whether it was closed by then.
pub fn tcp_closed_by(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap_or_else(|e| panic!("lab: set_read_timeout: {e}"));
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
}

/// A set of network namespaces plus the processes spawned in them; all removed on drop.
pub struct Lab {
    namespaces: Mutex<Vec<String>>,
    processes: Registry,
}

impl Lab {
    /// Creates an empty lab. Panics unless running as root with `ip` available. Sweeps stale
    /// namespaces of crashed earlier runs (see [`sweep_stale_netns`]).
    pub fn new() -> Lab {
        preflight();
        sweep_stale_netns();
        Lab {
            namespaces: Mutex::new(Vec::new()),
            processes: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Creates a new namespace named `fpl-<pid>-<counter>-<role>`, brings up its `lo` and turns
    /// off IPv6 duplicate address detection inside it. `role` (e.g. "client") is only for
    /// readability and must be ASCII alphanumeric.
    pub fn add_netns(&self, role: &str) -> Netns {
        assert!(
            !role.is_empty() && role.len() <= 32 && role.bytes().all(|b| b.is_ascii_alphanumeric()),
            "lab: namespace role {role:?} must be 1..=32 ASCII alphanumerics"
        );
        let counter = NETNS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NETNS_PREFIX}-{}-{counter}-{role}", std::process::id());
        // Record before creating, so a half-made namespace is still deleted on drop.
        self.namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.clone());
        run_checked("ip", &["netns", "add", &name]);
        let ns = Netns {
            name,
            processes: Arc::clone(&self.processes),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        // New interfaces inherit `default`; `-e` tolerates kernels without IPv6.
        ns.exec(&[
            "sysctl",
            "-q",
            "-e",
            "-w",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
        ns
    }

    /// Names of the namespaces created by this lab so far.
    pub fn netns_names(&self) -> Vec<String> {
        self.namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Creates a veth pair directly inside the namespaces: `a_if` in `a`, its peer `b_if` in
    /// `b`, and brings both ends up. Nothing appears in the machine's own namespace.
    pub fn veth(&self, a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
        check_ifname(a_if);
        check_ifname(b_if);
        run_checked(
            "ip",
            &[
                "-n", &a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns",
                &b.name,
            ],
        );
        a.link_up(a_if);
        b.link_up(b_if);
    }

    /// Kills every process spawned in this lab and every process still living in one of its
    /// namespaces (by PID), then deletes the namespaces. Called by `Drop`; idempotent.
    pub fn cleanup(&self) {
        // 1. Processes we spawned (their process groups too). Handles reap them later; PIDs stay
        //    ours until then because only the handle waits for them.
        for &pid in lock(&self.processes).iter() {
            if let Ok(pid) = i32::try_from(pid) {
                kill_pid(-pid);
                kill_pid(pid);
            }
        }
        let names: Vec<String> =
            std::mem::take(&mut *self.namespaces.lock().unwrap_or_else(|p| p.into_inner()));
        let me = std::process::id();
        for name in names.iter().rev() {
            // 2. Anything else left inside our namespace (e.g. daemons forked by a spawned
            //    process). Only processes inside a namespace we created are listed.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
                for pid in String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok())
                    .filter(|&p| p != me)
                {
                    if let Ok(pid) = i32::try_from(pid) {
                        kill_pid(pid);
                    }
                }
            }
            // 3. The namespace itself.
            let mut last_err = String::new();
            let deleted = (0..5).any(|attempt| {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(50));
                }
                match Command::new("ip").args(["netns", "del", name]).output() {
                    Ok(out) if out.status.success() => true,
                    Ok(out) => {
                        last_err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                        !std::path::Path::new("/run/netns").join(name).exists()
                    }
                    Err(e) => {
                        last_err = e.to_string();
                        false
                    }
                }
            });
            if !deleted {
                // No panic here: we may already be unwinding.
                eprintln!("lab: WARNING: could not delete namespace {name}: {last_err}");
            }
        }
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A handle to one namespace of a [`Lab`]. Cheap to clone; the namespace itself lives until the
/// lab is dropped.
#[derive(Clone, Debug)]
pub struct Netns {
    name: String,
    processes: Registry,
}

impl Netns {
    /// The namespace name as used by `ip netns` (and `/run/netns/<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `args` inside the namespace (`ip netns exec NS args...`) and returns its raw
    /// output without checking the exit status. Panics only if it cannot be started.
    pub fn try_exec(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("lab: cannot run `{}`: {e}", self.describe(args)))
    }

    /// Runs `args` inside the namespace and returns its stdout. Panics on a non-zero exit with a
    /// message naming the command, exit status, stderr and stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        check_output(&self.describe(args), self.try_exec(args))
    }

    /// Like [`Netns::exec`] but feeds `input` to the command's stdin (e.g. `nft -f -`).
    pub fn exec_with_stdin(&self, args: &[&str], input: &str) -> String {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("lab: cannot run `{}`: {e}", self.describe(args)));
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = input.to_owned();
        // Write from a thread so a command producing lots of output cannot deadlock us.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("lab: waiting for `{}`: {e}", self.describe(args)));
        let _ = writer.join();
        check_output(&format!("{} <<< {{stdin}}", self.describe(args)), output)
    }

    /// Runs `ip -n NS args...` (an iproute2 command acting inside this namespace).
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_checked("ip", &full)
    }

    /// Brings interface `ifname` up.
    pub fn link_up(&self, ifname: &str) {
        check_ifname(ifname);
        self.ip(&["link", "set", ifname, "up"]);
    }

    /// Adds `cidr` (e.g. "192.0.2.2/24" or "2001:db8:1::2/64") to `ifname`. Panics unless the
    /// prefix lies in a documentation range. IPv6 addresses are added with `nodad`.
    pub fn add_addr(&self, ifname: &str, cidr: &str) {
        check_ifname(ifname);
        let (addr, _) = check_documentation_cidr(cidr);
        if addr.is_ipv6() {
            self.ip(&["-6", "addr", "add", cidr, "dev", ifname, "nodad"]);
        } else {
            self.ip(&["addr", "add", cidr, "dev", ifname]);
        }
    }

    /// Adds a route to `dest` ("default" or a documentation CIDR) via gateway `via` (a
    /// documentation address).
    pub fn add_route(&self, dest: &str, via: IpAddr) {
        assert!(
            is_documentation_addr(via),
            "lab: gateway {via} is not a documentation address"
        );
        if dest != "default" {
            let (addr, _) = check_documentation_cidr(dest);
            assert_eq!(
                addr.is_ipv4(),
                via.is_ipv4(),
                "lab: route {dest} via {via} mixes address families"
            );
        }
        let family = if via.is_ipv4() { "-4" } else { "-6" };
        self.ip(&[family, "route", "add", dest, "via", &via.to_string()]);
    }

    /// Sets `key=value` with `sysctl -w` run inside this namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// Reads a sysctl inside this namespace (`sysctl -n key`), trimmed.
    pub fn sysctl_get(&self, key: &str) -> String {
        self.exec(&["sysctl", "-n", key]).trim().to_owned()
    }

    /// Turns on IPv4 forwarding inside this namespace, and IPv6 forwarding too if `ipv6`.
    pub fn enable_forwarding(&self, ipv6: bool) {
        self.sysctl("net.ipv4.ip_forward", "1");
        if ipv6 {
            self.sysctl("net.ipv6.conf.all.forwarding", "1");
        }
    }

    /// Spawns a long-lived process inside the namespace (`ip netns exec NS args...`, which
    /// execs so the PID is the command's own) in its own process group, with stdin from
    /// /dev/null and stdout+stderr to a log file (see [`NsProcess::log`]). The handle kills it
    /// by PID and reaps it on drop; the lab kills it too if the handle outlives the lab.
    pub fn spawn(&self, args: &[&str]) -> NsProcess {
        let log = tempfile::NamedTempFile::new().expect("lab: cannot create a log file");
        let out = log.reopen().expect("lab: cannot open the log file");
        let err = log.reopen().expect("lab: cannot open the log file");
        let mut registry = lock(&self.processes);
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("lab: cannot spawn `{}`: {e}", self.describe(args)));
        registry.push(child.id());
        NsProcess {
            child,
            description: self.describe(args),
            log,
            processes: Arc::clone(&self.processes),
        }
    }

    /// Runs `f` on a new thread that has `setns`'d into this namespace, and returns its result
    /// (a panic in `f` is propagated). Sockets created in `f` live in this namespace and may be
    /// returned and used from any thread.
    pub fn run_in<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("lab: cannot open {path}: {e}"));
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || {
                // SAFETY: setns(2) on a valid fd; it only affects this (fresh) thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    panic!(
                        "lab: setns({path}) failed: {}",
                        std::io::Error::last_os_error()
                    );
                }
                drop(file);
                f()
            });
            match handle.join() {
                Ok(result) => result,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        assert!(!args.is_empty(), "lab: empty command");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    fn describe(&self, args: &[&str]) -> String {
        format!("ip netns exec {} {}", self.name, args.join(" "))
    }
}

/// A process spawned with [`Netns::spawn`]; killed by PID (with its process group) and reaped
/// on drop.
pub struct NsProcess {
    child: Child,
    description: String,
    log: tempfile::NamedTempFile,
    processes: Registry,
}

impl NsProcess {
    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has exited (without blocking), `None` while running.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("lab: try_wait on `{}`: {e}", self.description))
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits (bounded) for the process to end; panics with its output if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        wait_until(timeout, || {
            status = self.try_wait();
            status.is_some()
        });
        status.unwrap_or_else(|| panic!("still running after {timeout:?}:\n{}", self.log()))
    }

    /// Waits up to `timeout` for `needle` to appear in [`NsProcess::log`].
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// Kills the process (and its process group) and reaps it; same as dropping the handle.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        let pid = self.child.id();
        // Deregister first: from here on only this handle refers to the PID.
        lock(&self.processes).retain(|&p| p != pid);
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // already reaped; the PID may be reused now, so send nothing
        }
        if let Ok(pid) = i32::try_from(pid) {
            kill_pid(-pid); // its process group (created by `process_group(0)`)
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Client interface name (in the client namespace) of a [`Topology`].
pub const CLIENT_IF: &str = "eth0";
/// Proxy interface facing the client.
pub const PROXY_CLIENT_IF: &str = "eth-client";
/// Proxy bridge facing the servers (carries the proxy's server-side addresses).
pub const PROXY_SERVER_IF: &str = "br-servers";
/// Server interface name (in each server namespace).
pub const SERVER_IF: &str = "eth0";

/// Client address: 192.0.2.2/24.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Proxy address on the client link: 192.0.2.1/24.
pub const PROXY_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Proxy address on the server link: 198.51.100.1/24.
pub const PROXY_SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Client address: 2001:db8:1::2/64.
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
/// Proxy address on the client link: 2001:db8:1::1/64.
pub const PROXY_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// Proxy address on the server link: 2001:db8:2::1/64.
pub const PROXY_SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);

/// Maximum number of servers a [`Topology`] supports.
pub const MAX_SERVERS: usize = 8;

/// IPv4 address of server `i` (0-based): 198.51.100.2, .3, .4, ...
pub fn server_v4(i: usize) -> Ipv4Addr {
    assert!(i < MAX_SERVERS, "lab: server index {i} out of range");
    Ipv4Addr::new(198, 51, 100, 2 + i as u8)
}

/// IPv6 address of server `i` (0-based): 2001:db8:2::2, ::3, ::4, ...
pub fn server_v6(i: usize) -> Ipv6Addr {
    assert!(i < MAX_SERVERS, "lab: server index {i} out of range");
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2 + i as u16)
}

/// The common topology: client — proxy — server(s).
///
/// - client `eth0` 192.0.2.2/24, 2001:db8:1::2/64 ↔ proxy `eth-client` 192.0.2.1/24,
///   2001:db8:1::1/64;
/// - proxy bridge `br-servers` 198.51.100.1/24, 2001:db8:2::1/64, with one veth port
///   `eth-srv<i>` per server; server `i` has `eth0` 198.51.100.(2+i)/24, 2001:db8:2::(2+i)/64;
/// - client and servers route by default via the proxy; IPv4 and IPv6 forwarding are on in the
///   proxy namespace (no firewall rules are installed).
pub struct Topology {
    /// The proxy namespace.
    pub proxy: Netns,
    /// The client namespace.
    pub client: Netns,
    /// The server namespaces, index `i` having [`server_v4`]`(i)` / [`server_v6`]`(i)`.
    pub servers: Vec<Netns>,
    /// The lab owning all namespaces; dropping the topology removes everything.
    pub lab: Lab,
}

impl Topology {
    /// Builds the topology with `n_servers` servers (1..=[`MAX_SERVERS`]).
    pub fn new(n_servers: usize) -> Topology {
        assert!(
            (1..=MAX_SERVERS).contains(&n_servers),
            "lab: a topology has 1..={MAX_SERVERS} servers, not {n_servers}"
        );
        let lab = Lab::new();
        let client = lab.add_netns("client");
        let proxy = lab.add_netns("proxy");
        let servers: Vec<Netns> = (0..n_servers)
            .map(|i| lab.add_netns(&format!("server{i}")))
            .collect();

        // client <-> proxy
        lab.veth(&client, CLIENT_IF, &proxy, PROXY_CLIENT_IF);
        client.add_addr(CLIENT_IF, &format!("{CLIENT_V4}/24"));
        client.add_addr(CLIENT_IF, &format!("{CLIENT_V6}/64"));
        proxy.add_addr(PROXY_CLIENT_IF, &format!("{PROXY_CLIENT_V4}/24"));
        proxy.add_addr(PROXY_CLIENT_IF, &format!("{PROXY_CLIENT_V6}/64"));
        client.add_route("default", PROXY_CLIENT_V4.into());
        client.add_route("default", PROXY_CLIENT_V6.into());

        // proxy bridge <-> servers (STP is off by default, so ports forward at once)
        proxy.ip(&["link", "add", PROXY_SERVER_IF, "type", "bridge"]);
        proxy.link_up(PROXY_SERVER_IF);
        proxy.add_addr(PROXY_SERVER_IF, &format!("{PROXY_SERVER_V4}/24"));
        proxy.add_addr(PROXY_SERVER_IF, &format!("{PROXY_SERVER_V6}/64"));
        for (i, server) in servers.iter().enumerate() {
            let port = format!("eth-srv{i}");
            lab.veth(&proxy, &port, server, SERVER_IF);
            proxy.ip(&["link", "set", &port, "master", PROXY_SERVER_IF]);
            server.add_addr(SERVER_IF, &format!("{}/24", server_v4(i)));
            server.add_addr(SERVER_IF, &format!("{}/64", server_v6(i)));
            server.add_route("default", PROXY_SERVER_V4.into());
            server.add_route("default", PROXY_SERVER_V6.into());
        }

        proxy.enable_forwarding(true);
        Topology {
            proxy,
            client,
            servers,
            lab,
        }
    }

    /// The first (or only) server.
    pub fn server(&self) -> &Netns {
        &self.servers[0]
    }

    /// `iptables -t nat -L -n` in the proxy namespace (the iptables backend's entries).
    pub fn iptables_nat(&self) -> String {
        text(
            &self
                .proxy
                .try_exec(&["iptables", "-t", "nat", "-L", "-n"])
                .stdout,
        )
    }

    /// `nft list map ip fasp_proxy sessions_any_port` in the proxy namespace (empty if there is
    /// none): the entries without source-port filtering (and those of IBM's opaque sessions).
    pub fn nft_sessions_any_port(&self) -> String {
        text(
            &self
                .proxy
                .try_exec(&[
                    "nft",
                    "list",
                    "map",
                    "ip",
                    "fasp_proxy",
                    "sessions_any_port",
                ])
                .stdout,
        )
    }

    /// `nft list map ip fasp_proxy sessions` in the proxy namespace (empty if there is none):
    /// the proxy's per-session entries.
    pub fn nft_sessions(&self) -> String {
        text(
            &self
                .proxy
                .try_exec(&["nft", "list", "map", "ip", "fasp_proxy", "sessions"])
                .stdout,
        )
    }
}

/// Binds a UDP socket to `addr` inside `ns`, with a read timeout of `timeout`.
pub fn udp_socket(ns: &Netns, addr: SocketAddr, timeout: Duration) -> UdpSocket {
    let sock = ns
        .run_in(|| UdpSocket::bind(addr))
        .unwrap_or_else(|e| panic!("lab: bind UDP {addr} in {}: {e}", ns.name()));
    sock.set_read_timeout(Some(timeout))
        .unwrap_or_else(|e| panic!("lab: set_read_timeout: {e}"));
    sock
}

/// Waits for one datagram on `sock` (up to its read timeout); `None` if none came.
pub fn try_recv(sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 65536];
    match udp_recv_from(sock, &mut buf) {
        Ok((n, from)) => {
            buf.truncate(n);
            Some((buf, from))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("lab: recv_from: {e}"),
    }
}

/// Root's bash start-up file, hidden from the lab's sshd sessions (see [`Sshd::start_configured`]).
const ROOT_BASHRC: &str = "/root/.bashrc";

/// A real OpenSSH `sshd` serving inside a namespace, with a throw-away host key, and a client
/// key pair whose public half it accepts for root. Killed (by PID) when dropped.
pub struct Sshd {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The client's private key (ed25519, no passphrase).
    pub client_key: std::path::PathBuf,
    /// A known_hosts file that already holds the server's host key.
    pub known_hosts: std::path::PathBuf,
    /// Its output (with `-e`, the log).
    pub process: NsProcess,
    /// Keys and configuration.
    pub dir: tempfile::TempDir,
    /// Its command line (for [`Sshd::restart`]).
    argv: Vec<String>,
}

/// Makes an ed25519 key pair without a passphrase at `path` (and `path`.pub).
pub fn ssh_keygen(path: &std::path::Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "fasp-lab", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("lab: cannot run ssh-keygen ({e}); install openssh-client"));
    assert!(
        status.success(),
        "lab: ssh-keygen failed for {}",
        path.display()
    );
}

impl Sshd {
    /// Starts `sshd -D -e` in `ns` on `addr`, and waits until it accepts connections.
    pub fn start(ns: &Netns, addr: SocketAddr) -> Sshd {
        Sshd::start_with(ns, addr, &[])
    }

    /// Like [`Sshd::start`], with `prefix` put before the sshd command line (e.g. an `unshare`
    /// wrapper that gives sshd and its sessions a private mount namespace).
    pub fn start_with(ns: &Netns, addr: SocketAddr, prefix: &[&str]) -> Sshd {
        Sshd::start_configured(ns, addr, prefix, "")
    }

    /// Like [`Sshd::start_with`], with `extra` lines appended to sshd_config (e.g. a
    /// `ForceCommand` that maps the transfer command to the binary under test).
    pub fn start_configured(ns: &Netns, addr: SocketAddr, prefix: &[&str], extra: &str) -> Sshd {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("lab: tempdir: {e}"));
        let host_key = dir.path().join("ssh_host_ed25519_key");
        let client_key = dir.path().join("id_ed25519");
        ssh_keygen(&host_key);
        ssh_keygen(&client_key);
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized)
            .unwrap_or_else(|e| panic!("lab: authorized_keys: {e}"));
        let host_pub = std::fs::read_to_string(host_key.with_extension("pub"))
            .unwrap_or_else(|e| panic!("lab: host key: {e}"));
        let known_name = if addr.port() == 22 {
            addr.ip().to_string()
        } else {
            format!("[{}]:{}", addr.ip(), addr.port())
        };
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, format!("{known_name} {host_pub}"))
            .unwrap_or_else(|e| panic!("lab: known_hosts: {e}"));
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {addr}\nHostKey {}\nPidFile none\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel VERBOSE\n\
                 MaxStartups 100\nMaxSessions 100\n{extra}\n",
                host_key.display(),
                authorized.display()
            ),
        )
        .unwrap_or_else(|e| panic!("lab: sshd_config: {e}"));
        // sshd's privilege separation directory; the openssh-server package makes it at boot.
        let _ = std::fs::create_dir_all("/run/sshd");
        let config_arg = config.display().to_string();
        let mut args: Vec<&str> = prefix.to_vec();
        // The sessions' shell is root's bash, which reads ~/.bashrc when run by sshd. This
        // machine's runs `pyenv init`, whose rehash lock, left behind by a session killed during
        // it (as kill -9 and SIGTERM tests do), makes every later login wait 60 s. So sshd runs
        // in a private mount namespace where root's .bashrc is an empty file; the machine's file
        // is not touched.
        let empty_rc = dir.path().join("empty_bashrc");
        std::fs::write(&empty_rc, "").unwrap_or_else(|e| panic!("lab: empty bashrc: {e}"));
        let empty_rc_arg = empty_rc.display().to_string();
        if std::path::Path::new(ROOT_BASHRC).exists() {
            args.extend([
                "unshare",
                "-m",
                "sh",
                "-c",
                "mount --bind \"$0\" \"$1\" && shift && exec \"$@\"",
                &empty_rc_arg,
                ROOT_BASHRC,
            ]);
        }
        args.extend(["/usr/sbin/sshd", "-D", "-e", "-f", &config_arg]);
        let process = ns.spawn(&args);
        wait_accepting(ns, addr, &process);
        Sshd {
            addr,
            client_key,
            known_hosts,
            process,
            dir,
            argv: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// The line a known_hosts file needs to trust this sshd's host key, under the name OpenSSH
    /// and the proxy look it up by (`ADDR`, or `[ADDR]:PORT` off port 22).
    pub fn known_hosts_line(&self) -> String {
        std::fs::read_to_string(&self.known_hosts)
            .unwrap_or_else(|e| panic!("lab: {}: {e}", self.known_hosts.display()))
    }

    /// How many logins this sshd has accepted so far (its log's "Accepted publickey for").
    pub fn logins(&self) -> usize {
        self.process
            .log()
            .matches("Accepted publickey for ")
            .count()
    }

    /// Stops this sshd (SIGKILL to its process group, by PID) and waits until it is gone; the
    /// server stops answering SSH. Does nothing if it has ended already.
    pub fn stop(&mut self) {
        if self.process.try_wait().is_some() {
            return; // reaped: the PID may belong to another process now
        }
        if let Ok(pid) = i32::try_from(self.process.pid()) {
            kill_pid(-pid);
        }
        let _ = self.process.wait_exit(Duration::from_secs(10));
    }

    /// Starts this sshd again (stopping it first if it runs) with the same configuration and
    /// host key, as a server's sshd restarting does; waits until it accepts connections.
    pub fn restart(&mut self, ns: &Netns) {
        self.stop();
        let argv: Vec<&str> = self.argv.iter().map(String::as_str).collect();
        self.process = ns.spawn(&argv);
        wait_accepting(ns, self.addr, &self.process);
    }

    /// Gives this sshd a fresh host key (its known_hosts file follows) and restarts it: a
    /// server reinstalled, or another machine answering at its address.
    pub fn change_host_key(&mut self, ns: &Netns) {
        let host_key = self.dir.path().join("ssh_host_ed25519_key");
        for path in [host_key.clone(), host_key.with_extension("pub")] {
            std::fs::remove_file(&path)
                .unwrap_or_else(|e| panic!("lab: removing {}: {e}", path.display()));
        }
        ssh_keygen(&host_key);
        let host_pub = std::fs::read_to_string(host_key.with_extension("pub"))
            .unwrap_or_else(|e| panic!("lab: host key: {e}"));
        let line = self.known_hosts_line();
        let name = line.split(' ').next().unwrap_or_default().to_string();
        std::fs::write(&self.known_hosts, format!("{name} {host_pub}"))
            .unwrap_or_else(|e| panic!("lab: known_hosts: {e}"));
        self.restart(ns);
    }
}

/// Waits until `addr` (in `ns`) accepts TCP connections; panics with `process`'s log if it
/// does not within 10 s.
fn wait_accepting(ns: &Netns, addr: SocketAddr, process: &NsProcess) {
    let started = wait_until(Duration::from_secs(10), || {
        ns.run_in(|| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
    });
    assert!(
        started,
        "lab: sshd did not start on {addr}:\n{}",
        process.log()
    );
}

/// Writes `path` as a known_hosts file holding the host key of each of `servers` (replacing
/// what it held): what a daemon's `known_hosts` beside its configuration needs before it may
/// connect to them, host keys being checked strictly (`<accept_new_host_keys>` false).
pub fn seed_known_hosts(path: &std::path::Path, servers: &[&Sshd]) {
    let text: String = servers.iter().map(|s| s.known_hosts_line()).collect();
    std::fs::write(path, text).unwrap_or_else(|e| panic!("lab: writing {}: {e}", path.display()));
}

/// A local account with a random password for the password-login test (created if missing,
/// shell nologin, no home); its password is set for the test and replaced by `*` (no password
/// login possible) when dropped, also on panic.
pub struct PasswordAccount {
    /// The account name.
    pub name: &'static str,
    /// Its password while the value lives.
    pub password: String,
}

impl PasswordAccount {
    /// Creates the account if missing and gives it a fresh random password.
    pub fn create(name: &'static str) -> PasswordAccount {
        if nix::unistd::User::from_name(name).unwrap().is_none() {
            let out = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "useradd {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut random = [0u8; 16];
        File::open("/dev/urandom")
            .and_then(|mut f| io::Read::read_exact(&mut f, &mut random))
            .expect("lab: /dev/urandom");
        let password: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd (package passwd)");
        chpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{name}:{password}\n").as_bytes())
            .unwrap();
        assert!(chpasswd.wait().unwrap().success(), "chpasswd {name}");
        PasswordAccount { name, password }
    }
}

impl Drop for PasswordAccount {
    fn drop(&mut self) {
        let _ = Command::new("usermod")
            .args(["--password", "*", self.name])
            .output();
    }
}
