//! Runs the kernel tools (`nft`, `iptables-restore`, …) in the network namespace the data plane
//! was opened in, whichever thread asks: a forwarder opened inside a test's namespace can never
//! program the machine's own firewall by accident.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::error::DataplaneError;

/// The network namespace a forwarder belongs to.
#[derive(Debug)]
pub struct Netns(OwnedFd);

impl Netns {
    /// The namespace of the calling thread.
    pub fn current() -> Result<Netns, DataplaneError> {
        let file = File::open("/proc/thread-self/ns/net")
            .map_err(|e| DataplaneError::io("opening /proc/thread-self/ns/net", e))?;
        Ok(Netns(OwnedFd::from(file)))
    }
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
    let fd = netns.0.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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
    let mut child = cmd
        .spawn()
        .map_err(|e| fail("could not start".into(), e.to_string()))?;
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
