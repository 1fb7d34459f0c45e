//! The data plane's error type: what failed, on which session or kernel object, and why.

use std::fmt;
use std::io;

use uuid::Uuid;

use super::entry::{EntryError, SessionKey};
use super::netlink::Errno;

/// Why a data plane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The entry itself is unusable (mixed IP families, port 0, …).
    #[error(transparent)]
    InvalidEntry(#[from] EntryError),
    /// Another entry already holds the key; nothing was changed.
    #[error("session {id}: the forwarding key {key} is already taken{}; nothing was changed",
        owner.map(|o| format!(" by session {o}")).unwrap_or_default())]
    KeyTaken {
        /// The session that was refused.
        id: Uuid,
        /// The key.
        key: SessionKey,
        /// The session holding it, if its comment says.
        owner: Option<Uuid>,
    },
    /// The kernel refused a request.
    #[error("{what}: the kernel answered: {errno}")]
    Kernel {
        /// What was being done.
        what: String,
        /// The error number.
        errno: Errno,
    },
    /// Talking to the kernel failed (socket, message decoding).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// An external command (`nft`, `iptables-restore`) failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status, or why it could not run.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A system setting stops the proxy from working (e.g. IP forwarding off).
    #[error("{0}")]
    Setup(String),
}

impl DataplaneError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        DataplaneError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Several errors collected by a best-effort operation that tried every step.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<DataplaneError>);

impl Errors {
    /// Adds an error, or every error of an [`Errors`]: the list stays flat (netavark's
    /// `NetavarkErrorList`), never a list of lists.
    pub fn push(&mut self, error: impl Into<Errors>) {
        self.0.extend(error.into().0);
    }

    /// Records the error(s) of a step, if it failed.
    pub fn note<T, E: Into<Errors>>(&mut self, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(e);
                None
            }
        }
    }

    /// Whether no step failed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` if no step failed, else all the errors.
    pub fn into_result<T>(self, value: T) -> Result<T, Errors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<DataplaneError> for Errors {
    fn from(e: DataplaneError) -> Self {
        Errors(vec![e])
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => write!(f, "no error"),
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} steps failed:", many.len())?;
                for e in many {
                    write!(f, "\n  - {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Errors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushing_errors_into_errors_flattens_them() {
        let step = |n: u32| DataplaneError::Setup(format!("step {n}"));
        let mut inner = Errors::default();
        inner.push(step(1));
        inner.push(step(2));
        let mut outer = Errors::default();
        outer.push(step(0));
        outer.push(inner);
        assert_eq!(outer.note(Err::<(), _>(step(3))), None);
        assert_eq!(outer.note(Ok::<_, Errors>(5)), Some(5));
        assert_eq!(outer.0.len(), 4);
        assert_eq!(
            outer.to_string(),
            "4 steps failed:\n  - step 0\n  - step 1\n  - step 2\n  - step 3"
        );
        assert!(Errors::default().into_result(()).is_ok());
    }
}
