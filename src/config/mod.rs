//! `aspera.conf`: the configuration model, its parser and its checks.
//!
//! Reading happens in three passes, each with one job:
//! 1. [`tree`] reads the XML with quick-xml into a tree that knows where each tag is, and checks the
//!    tags against the [`schema`] (syntax, unknown tags with "did you mean", duplicates);
//! 2. [`raw`] reads the same text with quick-xml's serde support into plain text fields;
//! 3. [`validate`] types and checks every value and the rules against each other.
//!
//! [`environment`] adds warnings that depend on the machine (local addresses, key files); [`ibm`]
//! lets files written for IBM's products load as they are.

pub mod command;
pub mod create;
pub mod diagnostic;
pub mod environment;
pub mod ibm;
pub mod model;
pub mod raw;
pub mod render;
pub mod schema;
pub mod suggest;
pub mod summary;
pub mod tree;
pub mod validate;
pub mod values;

use std::path::{Path, PathBuf};

pub use diagnostic::{ConfigError, Diagnostic, Pos, Severity};
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

/// Checks `text` (the contents of `file`) and returns the configuration, or every problem found.
/// Only the pure checks run here; see [`environment::check`] for those that look at the machine.
/// The path of a file the proxy keeps beside its configuration (`known_hosts`, `node-users`):
/// `/etc/fasp-proxy/NAME` for `/etc/fasp-proxy/aspera.conf`, `./NAME` for a bare `aspera.conf`.
pub fn beside(config_path: &Path, name: &str) -> PathBuf {
    config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
        .join(name)
}

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
