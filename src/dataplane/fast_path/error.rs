//! What can go wrong loading, attaching and programming the BPF fast path.

use std::error::Error;
use std::io;

/// An error of the BPF fast path, naming what it was doing (which interface, which key) and
/// the kernel's errno where there is one.
#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    /// The kernel refused to create the maps or load the program for lack of privilege.
    #[error(
        "loading the BPF fast path: permission denied ({detail}); it needs root, or \
         CAP_BPF and CAP_NET_ADMIN"
    )]
    Permission {
        /// The failing step and its errno.
        detail: String,
    },
    /// The verifier rejected the program.
    #[error("the kernel's BPF verifier rejected the fast path ({errno}); its log:\n{log}")]
    Verifier {
        /// The errno of BPF_PROG_LOAD.
        errno: io::Error,
        /// The verifier's log.
        log: String,
    },
    /// The embedded object is not the one this loader speaks, or lacks a map or the program.
    #[error("the BPF fast path object: {0}")]
    Object(String),
    /// Any other failure of the load (map creation, relocation, BTF), with its cause chain.
    #[error("loading the BPF fast path: {0}")]
    Load(String),
    /// An interface that does not exist in this network namespace.
    #[error("interface {iface}: {source}")]
    Interface {
        /// The name (or `#index`) asked for.
        iface: String,
        /// The lookup's error.
        source: io::Error,
    },
    /// Attaching to (or detaching from) an interface failed.
    #[error("{action} the BPF fast path at TC ingress of {iface} (ifindex {ifindex}): {detail}")]
    Attach {
        /// "attaching", "detaching" or "querying the TCX programs beside".
        action: &'static str,
        /// The interface.
        iface: String,
        /// Its index in this network namespace.
        ifindex: u32,
        /// The cause chain, with the errno.
        detail: String,
    },
    /// A map operation failed.
    #[error("fast path map {map}: {op} {key}: {detail}")]
    Map {
        /// `fp_forward` or `fp_reply`.
        map: &'static str,
        /// What was done: "inserting", "removing", "reading", "listing".
        op: &'static str,
        /// The key, in words.
        key: String,
        /// The cause chain, with the errno.
        detail: String,
    },
    /// A key another flow holds already.
    #[error("fast path map {map}: {key} is already there (another session holds it)")]
    KeyTaken {
        /// `fp_forward` or `fp_reply`.
        map: &'static str,
        /// The key, in words.
        key: String,
    },
    /// A flow the fast path cannot hold (mixed families, port 0, unspecified address).
    #[error("fast path flow {flow}: {why}")]
    InvalidFlow {
        /// The flow, in words.
        flow: String,
        /// What is wrong.
        why: String,
    },
}

/// `err` and its sources, joined with ": " (aya's errors keep the errno in a source).
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        next = e.source();
    }
    s
}

/// The first errno in `err`'s source chain.
pub fn errno(err: &(dyn Error + 'static)) -> Option<i32> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(code);
        }
        if let Some(s) = e.downcast_ref::<aya::sys::SyscallError>() {
            if let Some(code) = s.io_error.raw_os_error() {
                return Some(code);
            }
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errno_and_the_cause_chain_are_kept() {
        let err = aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_update_elem",
            io_error: io::Error::from_raw_os_error(libc::E2BIG),
        });
        assert_eq!(errno(&err), Some(libc::E2BIG));
        let text = chain(&err);
        assert!(text.starts_with("`bpf_map_update_elem` failed: "), "{text}");
        assert!(text.contains("os error 7"), "{text}");
    }
}
