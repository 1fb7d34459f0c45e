//! The kernel settings the data plane depends on, read (and written only when the
//! configuration asks) in the calling thread's network namespace.
//!
//! A leaf module: it imports nothing of the crate, so both `config` (which warns about them)
//! and the daemon (which checks and sets them) may use it.

use std::fs;
use std::io;

/// Why a kernel setting could not be read, written, or is in the way.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// Reading or writing the `/proc/sys` file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A setting stops the proxy from working (IP forwarding off): the setting and the fixes.
    #[error("{0}")]
    Setup(String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> SysctlError {
    let what = what.into();
    move |source| SysctlError::Io { what, source }
}

/// `net.ipv4.ip_forward`.
pub const IPV4_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// `net.ipv6.conf.all.forwarding`.
pub const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// `net.netfilter.nf_conntrack_acct`: per-flow packet and byte counters.
pub const CONNTRACK_ACCT: &str = "/proc/sys/net/netfilter/nf_conntrack_acct";

/// Turns conntrack accounting on (the counters `fasp-proxy sessions` shows). Equivalent to
/// `sysctl -w net.netfilter.nf_conntrack_acct=1`.
pub fn enable_conntrack_accounting() -> Result<(), SysctlError> {
    fs::write(CONNTRACK_ACCT, "1\n").map_err(io_error("setting net.netfilter.nf_conntrack_acct=1"))
}

/// Reads a sysctl file: `true` when it holds a non-zero number.
pub fn is_on(path: &str) -> Result<bool, SysctlError> {
    let text = fs::read_to_string(path).map_err(io_error(format!("reading {path}")))?;
    Ok(text.trim().parse::<i64>().is_ok_and(|v| v != 0))
}

/// Makes sure IP forwarding is on for the families the configuration forwards. When it is off:
/// with `enable`, turns it on and reports what it changed; without, fails with the setting
/// and the two ways to fix it.
pub fn ensure_forwarding(ipv4: bool, ipv6: bool, enable: bool) -> Result<Vec<String>, SysctlError> {
    let mut changed = Vec::new();
    for (needed, path, name) in [
        (ipv4, IPV4_FORWARD, "net.ipv4.ip_forward"),
        (ipv6, IPV6_FORWARD, "net.ipv6.conf.all.forwarding"),
    ] {
        if !needed || is_on(path)? {
            continue;
        }
        if !enable {
            return Err(SysctlError::Setup(format!(
                "{name} is 0: the kernel will not forward the sessions' UDP data. Turn it on \
                 (sysctl -w {name}=1, and in /etc/sysctl.d/ to keep it), or set \
                 <enable_ip_forwarding>true</enable_ip_forwarding> in aspera.conf to let the proxy do it"
            )));
        }
        fs::write(path, "1\n").map_err(io_error(format!("setting {name}=1")))?;
        changed.push(format!("{name} set to 1"));
    }
    Ok(changed)
}
