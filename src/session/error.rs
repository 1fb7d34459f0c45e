//! Why a session ended before its transfer finished, and what the client is told.

use crate::protocol::ErrorCode;

use super::registry::CloseReason;

/// Why a session ended early. Each kind says whether the client is sent an `Error` frame with
/// the reason ([`SessionError::code`]); all of them are logged and end the SSH channel with
/// exit status 1 and the message on stderr.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Refused by policy (no rule matches, a user name unfit for the rule's key file): the
    /// client gets [`ErrorCode::Refused`].
    #[error("{0}")]
    Refused(String),
    /// The proxy could not set the session up (no internal server reachable, the transfer not
    /// started there, the UDP forwarding not installed): the client gets [`ErrorCode::Other`].
    #[error("{0}")]
    Setup(String),
    /// The internal server refused the session with its own `Error` frame, already passed on
    /// to the client unchanged.
    #[error("{0}")]
    ServerRefused(String),
    /// A side broke the protocol, went silent or went away: no frame is sent (the stream is
    /// not in a state to carry one).
    #[error("{0}")]
    Aborted(String),
    /// Asked to end from outside (shutdown, idle timeout); the stream may be mid-transfer, so
    /// no frame is sent.
    #[error("{0}")]
    Closed(CloseReason),
}

impl SessionError {
    /// The code of the `Error` frame the client is sent, if it is sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            SessionError::Refused(_) => Some(ErrorCode::Refused),
            SessionError::Setup(_) => Some(ErrorCode::Other),
            SessionError::ServerRefused(_) | SessionError::Aborted(_) | SessionError::Closed(_) => {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_and_setup_failures_are_sent_as_frames() {
        assert_eq!(
            SessionError::Refused("no rule".into()).code(),
            Some(ErrorCode::Refused)
        );
        assert_eq!(
            SessionError::Setup("no server".into()).code(),
            Some(ErrorCode::Other)
        );
        assert_eq!(SessionError::Aborted("eof".into()).code(), None);
        let closed = SessionError::Closed(CloseReason::Shutdown);
        assert_eq!(closed.code(), None);
        assert_eq!(closed.to_string(), "the proxy is shutting down");
    }
}
