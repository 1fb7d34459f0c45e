//! Where the daemon's log lines go: syslog (the default; `fasp-proxy[pid]: LOG …` /
//! `ERR …`, the shape of the product guide's `ascp_rproxy` lines), or a file in
//! `<log_directory>` (the same lines after a `seconds.millis` time stamp); `<log_level>` 0 logs
//! sessions and errors, 1 adds debug detail, 2 and 3 everything.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use log::{LevelFilter, Log, Metadata, Record};

/// Name of the log file in `<log_directory>`.
pub const LOG_FILE: &str = "fasp-proxy.log";

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

fn level(log_level: u8) -> LevelFilter {
    match log_level {
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Installs the logger; an error says why logging could not start.
pub fn init(directory: Option<&Path>, log_level: u8) -> Result<(), String> {
    let logger: Box<dyn Log> = match directory {
        Some(dir) => {
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
        None => {
            let formatter = syslog::Formatter3164 {
                facility: syslog::Facility::LOG_DAEMON,
                hostname: None,
                process: "fasp-proxy".into(),
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
    log::set_max_level(level(log_level));
    Ok(())
}
