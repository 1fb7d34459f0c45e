//! Where the daemon's log lines go: a file in `<log_directory>` (`seconds.millis
//! fasp-proxy[pid]: LOG …` / `ERR …`, the shape of the product guide's `ascp_rproxy` lines);
//! else, under systemd (its stderr is the journal's stream), the journal natively, each line of
//! a session with the field `SESSION_ID` (so `journalctl SESSION_ID=<uuid>` shows one
//! transfer); else syslog (`fasp-proxy[pid]: LOG …`).
//!
//! The level is `<log_level>` unless `FASP_PROXY_LOG_LEVEL` (0-3) is set in the daemon's
//! environment, which wins and pins it: 0 logs sessions and errors, 1 adds debug detail, 2 and 3
//! everything. A reload changes it through [`set_level`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use log::{LevelFilter, Log, Metadata, Record};

/// Name of the log file in `<log_directory>`.
pub const LOG_FILE: &str = "fasp-proxy.log";
/// The environment variable that overrides `<log_level>`.
pub const LEVEL_VARIABLE: &str = "FASP_PROXY_LOG_LEVEL";
/// The journal field naming the session a line belongs to.
pub const SESSION_FIELD: &str = "SESSION_ID";
/// The journal's `SYSLOG_IDENTIFIER` (what `journalctl -t` selects).
pub const IDENTIFIER: &str = "fasp-proxy";

/// The level from [`LEVEL_VARIABLE`], if it was set when logging started.
static PINNED: OnceLock<Option<u8>> = OnceLock::new();
/// The `<log_level>` in force (what [`set_level`] compares with).
static CONFIGURED: AtomicU8 = AtomicU8::new(0);

/// Where the lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// `<log_directory>/fasp-proxy.log`.
    File,
    /// The systemd journal, natively.
    Journal,
    /// Syslog (`/dev/log`).
    Syslog,
}

struct FileLogger {
    file: Mutex<File>,
}

/// Whether a record is logged: the daemon's own up to the configured level; its libraries'
/// (russh, rustls, hyper) warnings and errors, and their debug detail only at the most verbose
/// level (`<log_level>` 2 and up), so `<log_level>` 1 is the proxy's detail, not TLS chatter.
fn wanted(metadata: &Metadata) -> bool {
    let max = log::max_level();
    let own = metadata.target().starts_with("fasp_proxy");
    metadata.level() <= max
        && (own || metadata.level() <= log::Level::Warn || max == LevelFilter::Trace)
}

impl Log for FileLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        wanted(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let line = format!(
            "{}.{:03} fasp-proxy[{}]: {} {}\n",
            now.as_secs(),
            now.subsec_millis(),
            std::process::id(),
            tag(record.level()),
            record.args()
        );
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {
        if let Ok(mut f) = self.file.lock() {
            let _ = f.flush();
        }
    }
}

/// The product guide's tag of a line: `ERR` for warnings and errors, `LOG` for the rest.
fn tag(level: log::Level) -> &'static str {
    if level <= log::Level::Warn {
        "ERR"
    } else {
        "LOG"
    }
}

/// Puts [`tag`] in front of every message, then hands it to `inner` (syslog, whose own header
/// adds `fasp-proxy[pid]:`).
struct Tagged<L> {
    inner: L,
}

impl<L: Log> Log for Tagged<L> {
    fn enabled(&self, metadata: &Metadata) -> bool {
        wanted(metadata) && self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        self.inner.log(
            &Record::builder()
                .args(format_args!("{} {}", tag(record.level()), record.args()))
                .level(record.level())
                .target(record.target())
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// The journal: the same tagged message as syslog gets (`MESSAGE`), the level as `PRIORITY`,
/// `SYSLOG_IDENTIFIER=fasp-proxy`, and `SESSION_ID` on every line of a session. Session lines
/// all start with `[UUID] ` (the session's tag in the product guide's format), so the field is
/// taken from there: every session line carries it, whoever wrote the line.
struct Journal {
    inner: systemd_journal_logger::JournalLog,
}

impl Log for Journal {
    fn enabled(&self, metadata: &Metadata) -> bool {
        wanted(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = record.args().to_string();
        let session = session_of(&text);
        let field = session.map(|id| [(SESSION_FIELD, id)]);
        let fields: &[(&str, &str)] = match &field {
            Some(f) => f,
            None => &[],
        };
        self.inner.log(
            &Record::builder()
                .args(format_args!("{} {text}", tag(record.level())))
                .level(record.level())
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .key_values(&fields)
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// The session UUID a message starts with (`[UUID] …`), if it does.
pub fn session_of(message: &str) -> Option<&str> {
    let rest = message.strip_prefix('[')?;
    let (id, _) = rest.split_once(']')?;
    (id.len() == 36 && uuid::Uuid::parse_str(id).is_ok()).then_some(id)
}

/// The `log` filter of a `<log_level>`.
fn level(log_level: u8) -> LevelFilter {
    match log_level {
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Reads [`LEVEL_VARIABLE`]'s value: unset or empty is `None` (use `<log_level>`), `0`-`3` the
/// level, anything else an error naming the variable.
pub fn level_from_environment(value: Option<&std::ffi::OsStr>) -> Result<Option<u8>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    match trimmed.parse::<u8>() {
        Ok(n) if n <= 3 => Ok(Some(n)),
        _ => Err(format!(
            "{LEVEL_VARIABLE}={text:?} in the environment is not a log level: use 0 (sessions \
             and errors), 1 (debug detail), 2 or 3 (everything), or unset it to use <log_level>"
        )),
    }
}

/// Where the lines go: the file when `<log_directory>` is set, else the journal when stderr is
/// the journal's stream (`JOURNAL_STREAM`, as systemd sets it for a service), else syslog.
pub fn destination(directory: Option<&Path>) -> Destination {
    if directory.is_some() {
        Destination::File
    } else if systemd_journal_logger::connected_to_journal() {
        Destination::Journal
    } else {
        Destination::Syslog
    }
}

/// Installs the logger; an error says why logging could not start (an unreachable syslog, an
/// unwritable `<log_directory>`, an invalid [`LEVEL_VARIABLE`]).
pub fn init(directory: Option<&Path>, log_level: u8) -> Result<(), String> {
    let pinned = level_from_environment(std::env::var_os(LEVEL_VARIABLE).as_deref())?;
    let logger: Box<dyn Log> = match (destination(directory), directory) {
        (Destination::File, Some(dir)) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("log directory {}: {e}", dir.display()))?;
            let path = dir.join(LOG_FILE);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("log file {}: {e}", path.display()))?;
            Box::new(FileLogger {
                file: Mutex::new(file),
            })
        }
        (Destination::Journal, _) => {
            let inner = systemd_journal_logger::JournalLog::empty()
                .map_err(|e| format!("cannot open a socket to the journal: {e}"))?
                .with_syslog_identifier(IDENTIFIER.to_string());
            Box::new(Journal { inner })
        }
        _ => {
            let formatter = syslog::Formatter3164 {
                facility: syslog::Facility::LOG_DAEMON,
                hostname: None,
                process: IDENTIFIER.into(),
                pid: std::process::id(),
            };
            let logger = syslog::unix(formatter).map_err(|e| {
                format!("cannot reach syslog ({e}); set <log_directory> to log to a file")
            })?;
            Box::new(Tagged {
                inner: syslog::BasicLogger::new(logger),
            })
        }
    };
    log::set_boxed_logger(logger).map_err(|e| format!("logger: {e}"))?;
    let _ = PINNED.set(pinned);
    CONFIGURED.store(log_level, Ordering::Relaxed);
    log::set_max_level(level(pinned.unwrap_or(log_level)));
    if let Some(n) = pinned {
        log::info!("log level {n} from {LEVEL_VARIABLE} (over <log_level> {log_level})");
    }
    Ok(())
}

/// A reload's `<log_level>`: puts it in force unless [`LEVEL_VARIABLE`] pins the level; returns
/// what changed (`log level 0 -> 1`) when the level in force changed, else `None`.
pub fn set_level(config_level: u8) -> Option<String> {
    let pinned = PINNED.get().copied().flatten();
    let before = CONFIGURED.swap(config_level, Ordering::Relaxed);
    let change = level_change(pinned, before, config_level)?;
    log::set_max_level(level(config_level));
    Some(change)
}

/// What changing `<log_level>` from `before` to `after` changes, with `pinned` the
/// environment's level: `None` when the level in force stays.
fn level_change(pinned: Option<u8>, before: u8, after: u8) -> Option<String> {
    if pinned.is_some() || level(before) == level(after) {
        return None;
    }
    Some(format!("log level {before} -> {after}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_environment_level_is_0_to_3_or_unset() {
        let read = |v: &str| level_from_environment(Some(OsStr::new(v)));
        assert_eq!(level_from_environment(None), Ok(None));
        assert_eq!(read(""), Ok(None));
        assert_eq!(read(" "), Ok(None));
        for n in 0..=3u8 {
            assert_eq!(read(&n.to_string()), Ok(Some(n)));
        }
        assert_eq!(read(" 2\n"), Ok(Some(2)));
        for bad in ["4", "-1", "debug", "1.5", "256", "0x1"] {
            let e = read(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("{LEVEL_VARIABLE}=\"{bad}\"")) && e.contains("<log_level>"),
                "{bad}: {e}"
            );
        }
        use std::os::unix::ffi::OsStrExt;
        assert!(level_from_environment(Some(OsStr::from_bytes(b"\xff"))).is_err());
    }

    #[test]
    fn a_reload_changes_the_level_only_when_it_is_not_pinned_and_differs() {
        assert_eq!(level_change(None, 0, 1), Some("log level 0 -> 1".into()));
        assert_eq!(level_change(None, 3, 0), Some("log level 3 -> 0".into()));
        assert_eq!(level_change(None, 1, 1), None);
        assert_eq!(level_change(None, 2, 3), None, "2 and 3 log the same");
        assert_eq!(level_change(Some(0), 0, 2), None, "the environment pins it");
    }

    #[test]
    fn session_lines_are_recognised_by_their_leading_uuid() {
        let id = "0b1c6f3e-8d2a-4c47-9a1e-2f3d4c5b6a79";
        assert_eq!(
            session_of(&format!("[{id}] Setup UDP forwarding")),
            Some(id)
        );
        assert_eq!(session_of(&format!("[{id}]")), Some(id));
        for other in [
            "listening on 0.0.0.0:33001".to_string(),
            format!(" [{id}] indented"),
            format!("forwarding 3 [{id}]"),
            "[not-a-uuid] x".into(),
            format!("[{id}x] x"),
            "[".into(),
        ] {
            assert_eq!(session_of(&other), None, "{other}");
        }
    }
}
