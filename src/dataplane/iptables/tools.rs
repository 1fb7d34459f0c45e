//! Finding the tools: `iptables`, `ip6tables` next to it, and their `-restore` and `-save`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::dataplane::error::DataplaneError;

/// The Debian package shipping the tools.
pub(super) const PACKAGE_HINT: &str =
    "install the Debian package iptables (apt-get install iptables)";

/// The restore and save tools of one family.
#[derive(Debug)]
pub(super) struct Tools {
    pub(super) restore: String,
    pub(super) save: String,
}

impl Tools {
    /// Checks `binary`, `binary-restore` and `binary-save` exist and are executable.
    pub(super) fn find(binary: &Path) -> Result<Tools, DataplaneError> {
        let restore = with_suffix(binary, "-restore");
        let save = with_suffix(binary, "-save");
        for path in [binary, restore.as_path(), save.as_path()] {
            check_executable(path)?;
        }
        Ok(Tools {
            restore: path_str(&restore)?,
            save: path_str(&save)?,
        })
    }
}

pub(super) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub(super) fn check_executable(path: &Path) -> Result<(), DataplaneError> {
    let why = match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(()),
        Ok(m) if m.is_file() => "is not executable".to_string(),
        Ok(_) => "is not a file".to_string(),
        Err(e) => format!("cannot be used ({e})"),
    };
    Err(DataplaneError::Setup(format!(
        "iptables backend: {} {why}; it needs iptables, ip6tables and their -restore and -save \
         tools next to iptables_path: {PACKAGE_HINT}",
        path.display()
    )))
}

pub(super) fn path_str(path: &Path) -> Result<String, DataplaneError> {
    path.to_str().map(str::to_owned).ok_or_else(|| {
        DataplaneError::Setup(format!(
            "iptables backend: the path {} is not valid UTF-8",
            path.display()
        ))
    })
}

/// The IPv6 sibling of an iptables binary: `/usr/sbin/iptables` → `/usr/sbin/ip6tables`,
/// `/usr/sbin/iptables-legacy` → `/usr/sbin/ip6tables-legacy`.
pub(super) fn ip6_sibling(iptables: &Path) -> PathBuf {
    let name = iptables
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("iptables"))
        .map_or_else(
            || "ip6tables".to_string(),
            |rest| format!("ip6tables{rest}"),
        );
    iptables.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip6tables_is_found_next_to_iptables() {
        assert_eq!(
            ip6_sibling(Path::new("/usr/sbin/iptables")),
            Path::new("/usr/sbin/ip6tables")
        );
        assert_eq!(
            ip6_sibling(Path::new("/sbin/iptables-legacy")),
            Path::new("/sbin/ip6tables-legacy")
        );
        assert_eq!(
            with_suffix(Path::new("/usr/sbin/iptables"), "-restore"),
            Path::new("/usr/sbin/iptables-restore")
        );
    }
}
