//! Runs the kernel tools (`nft`, `iptables-restore`, …) in the network namespace the data plane
//! was opened in, whichever thread asks: a forwarder opened inside a test's namespace can never
//! program the machine's own firewall by accident.
//!
//! When the calling thread already is in that namespace (the daemon's normal case) no `setns`
//! is made at all: under systemd's `RestrictNamespaces=yes` (see `systemd/fasp-proxy.service`)
//! a seccomp filter refuses `setns(…, CLONE_NEWNET)`, even into the namespace one is in.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::error::DataplaneError;

/// The `status` of a [`DataplaneError::Command`] whose program is not installed.
pub const NOT_FOUND: &str = "not found";

/// Where the calling thread's network namespace is found.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// The network namespace a forwarder belongs to.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    /// (device, inode) of the namespace: two handles name the same namespace iff these match.
    id: (u64, u64),
}

impl Netns {
    /// The namespace of the calling thread.
    pub fn current() -> Result<Netns, DataplaneError> {
        let file = File::open(THREAD_NETNS)
            .map_err(|e| DataplaneError::io("opening ".to_string() + THREAD_NETNS, e))?;
        let meta = file
            .metadata()
            .map_err(|e| DataplaneError::io("reading ".to_string() + THREAD_NETNS, e))?;
        Ok(Netns {
            fd: OwnedFd::from(file),
            id: (meta.dev(), meta.ino()),
        })
    }

    /// Runs `f` in this namespace: on the calling thread when it is there already (the
    /// daemon's case, with no `setns`, see the module doc), else on a short-lived thread that
    /// joins it first. For what acts on "the caller's namespace" (interface names, TCX links,
    /// sockets); `f`'s result comes back to the caller.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, DataplaneError> {
        if self.is_current() {
            return Ok(f());
        }
        let fd = self.fd.as_raw_fd();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns(2) on an fd this handle keeps open; it only affects this
                    // fresh thread, which ends when `f` returns.
                    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                        return Err(DataplaneError::io(
                            "joining the data plane's network namespace",
                            std::io::Error::last_os_error(),
                        ));
                    }
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Whether the calling thread is in this namespace already.
    fn is_current(&self) -> bool {
        std::fs::metadata(THREAD_NETNS)
            .map(|meta| (meta.dev(), meta.ino()) == self.id)
            .unwrap_or(false)
    }
}

/// Whether `program` is found in a directory of `$PATH` (as `Command` would find it).
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|dirs| {
        std::env::split_paths(&dirs).any(|d| {
            std::fs::metadata(d.join(program))
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
    })
}

/// Runs `program args…` inside `netns`, feeding `stdin`; returns its stdout, or an error with
/// the command line, exit status and stderr.
pub fn run(
    netns: &Netns,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, DataplaneError> {
    let command_line = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let fail = |status: String, stderr: String| DataplaneError::Command {
        command: command_line.clone(),
        status,
        stderr,
    };
    let fd = netns.fd.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !netns.is_current() {
        // SAFETY: setns(2) is async-signal-safe; the closure touches nothing but the fd, which
        // stays open for the duration of spawn().
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| {
        let status = if e.kind() == std::io::ErrorKind::NotFound {
            NOT_FOUND
        } else {
            "could not start"
        };
        fail(status.into(), e.to_string())
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| fail("could not write its input".into(), e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail("could not be waited for".into(), e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            out.status.to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
