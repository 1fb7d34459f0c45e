//! `aspera.conf`: the configuration model, its parser and its checks.
//!
//! Reading happens in three passes, each with one job:
//! 1. [`tree`] reads the XML with quick-xml into a tree that knows where each tag is, and checks the
//!    tags against the [`schema`] (syntax, unknown tags with "did you mean", duplicates);
//! 2. [`raw`] reads the same text with quick-xml's serde support into plain text fields;
//! 3. [`validate`] types and checks every value and the rules against each other.
//!
//! [`environment`] adds warnings that depend on the machine (local addresses, key files); [`ibm`]
//! lets files written for IBM's products load as they are, and [`refused`] says which of IBM's
//! tags must not be ignored.
//!
//! Two kinds of caller: the daemon ([`load`]: every check, the machine's too), and the programs
//! that confine users on a transfer server (`ascp --server`, `ascmd`, `aspshell`:
//! [`load_docroot`] and [`load_quiet`], which need nothing of the daemon's and print nothing). [`docroot`] holds
//! the docroot model and its precedence and substitution.

pub mod command;
pub mod create;
pub mod diagnostic;
pub mod diff;
pub mod docroot;
pub mod environment;
pub mod ibm;
pub mod model;
pub mod raw;
pub mod refused;
pub mod render;
pub mod schema;
pub mod suggest;
pub mod summary;
pub mod tree;
pub mod validate;
mod validate_access;
pub mod values;

use std::path::{Path, PathBuf};

pub use diagnostic::{ConfigError, Diagnostic, Pos, Severity};
pub use docroot::{Docroot, PathSettings};
pub use model::*;

/// Where the configuration is read from when neither `--config` nor `FASP_PROXY_CONFIG` says.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/fasp-proxy/aspera.conf";

/// The iptables binary used when the configuration does not name one.
pub const DEFAULT_IPTABLES_PATH: &str = "/usr/sbin/iptables";

/// Largest configuration file accepted; a larger one is refused before it is read.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// A configuration that passed validation, with the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The file it came from.
    pub file: PathBuf,
    /// The typed configuration.
    pub config: Config,
    /// Warnings: accepted, but worth a look.
    pub warnings: Vec<Diagnostic>,
}

/// The path of a file the proxy keeps beside its configuration (`known_hosts`, `node-users`):
/// `/etc/fasp-proxy/NAME` for `/etc/fasp-proxy/aspera.conf`, `./NAME` for a bare `aspera.conf`.
pub fn beside(config_path: &Path, name: &str) -> PathBuf {
    config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
        .join(name)
}

/// Checks `text` (the contents of `file`) and returns the configuration, or every problem found.
/// Only the pure checks run here; see [`environment::check`] for those that look at the machine.
pub fn parse_str(text: &str, file: &Path) -> Result<Loaded, ConfigError> {
    let fail = |diagnostics| ConfigError {
        file: file.to_path_buf(),
        diagnostics,
    };
    let parsed = tree::parse(text);
    let mut diagnostics = parsed.diagnostics;
    // After a syntax error the tree is incomplete: report that alone. Structure errors (unknown
    // tags, misplaced text) do not stop the value checks, so one run reports everything.
    let root = match parsed.root {
        Some(root) if !parsed.syntax_failed => root,
        _ => return Err(fail(diagnostics)),
    };
    let raw = match raw::from_str(text) {
        Ok(raw) => raw,
        Err(e) if diagnostics.iter().any(Diagnostic::is_error) => {
            // The structure errors already explain why serde could not read the document.
            let _ = e;
            return Err(fail(diagnostics));
        }
        Err(e) => {
            return Err(fail(vec![Diagnostic::error(
                None,
                format!("cannot read the document structure: {e}"),
            )]))
        }
    };
    let (config, found) = validate::validate(&raw, &root);
    diagnostics.extend(found);
    diagnostics.sort_by_key(|d| d.pos);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(fail(diagnostics));
    }
    Ok(Loaded {
        file: file.to_path_buf(),
        config,
        warnings: diagnostics,
    })
}

/// Reads and checks the configuration file at `path`, including the checks against this machine.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = read_text(path).map_err(|message| ConfigError {
        file: path.to_path_buf(),
        diagnostics: vec![Diagnostic::error(None, message)],
    })?;
    let mut loaded = parse_str(&text, path)?;
    let env = environment::Machine::probe();
    loaded
        .warnings
        .extend(environment::check(&loaded.config, &env));
    Ok(loaded)
}

/// For `ascp --server`, `ascmd`, `aspshell`: the docroot of `user` (home directory `home`) in the
/// configuration at `config_path`. A missing file is [`Docroot::unrestricted`] (IBM's default);
/// an unreadable or invalid one is Err with every reason (callers then refuse: fail closed).
/// Read as [`load_quiet`] reads it.
pub fn load_docroot(config_path: &Path, user: &str, home: &Path) -> Result<Docroot, String> {
    match load_quiet(config_path)? {
        None => Ok(Docroot::unrestricted()),
        Some(config) => config
            .docroot_for(user, home)
            .map_err(|m| format!("{}: {m}", config_path.display())),
    }
}

/// For the programs that act for users on a transfer server: the configuration at
/// `config_path`, `None` when there is no file (not even a dangling link: that is an error).
/// Only the pure checks run, nothing of the daemon's is needed (no host keys, no rules), and
/// nothing is printed: warnings are dropped. Err names the file and gives every error, one a
/// line.
pub fn load_quiet(config_path: &Path) -> Result<Option<Config>, String> {
    match std::fs::symlink_metadata(config_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: cannot read: {e}", config_path.display())),
        Ok(_) => {}
    }
    let text = read_text(config_path).map_err(|m| format!("{}: {m}", config_path.display()))?;
    let loaded = parse_str(&text, config_path).map_err(|e| errors_only(&e))?;
    Ok(Some(loaded.config))
}

/// The errors of `e`, one a line after a heading, without its warnings.
fn errors_only(e: &ConfigError) -> String {
    let errors: Vec<String> = e
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.display_in(&e.file).to_string())
        .collect();
    format!(
        "{}: {} error{} in configuration\n{}",
        e.file.display(),
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        errors.join("\n")
    )
}

fn read_text(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".to_string());
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "is {} bytes, larger than the {} bytes a configuration may be",
            meta.len(),
            MAX_CONFIG_BYTES
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    String::from_utf8(bytes).map_err(|e| {
        let pos = Pos::from_offset(
            &String::from_utf8_lossy(e.as_bytes()),
            e.utf8_error().valid_up_to(),
        );
        format!(
            "line {}, column {}: the file is not UTF-8 text",
            pos.line, pos.column
        )
    })
}

#[cfg(test)]
mod tests;
