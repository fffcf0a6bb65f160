use crate::bindings::botbox::bot::types::BroadcastError as RawBroadcastError;

/// Why the host refused a message. Nothing was queued.
///
/// This mirrors the WIT `broadcast-error` variant with readable messages;
/// `wit-bindgen`'s own type only prints its `Debug` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BroadcastError {
    /// The plugin did not ask for this channel, or the operator did not grant it.
    #[error("not granted: {0}")]
    NotGranted(String),
    /// No channel by this name exists.
    #[error("unknown channel: {0}")]
    UnknownChannel(String),
    /// The message breaks the channel provider's rules (length, JSON, fields).
    #[error("invalid message: {0}")]
    Invalid(String),
    /// The channel's provider cannot carry this kind of content.
    #[error("unsupported content: {0}")]
    Unsupported(String),
    /// The broadcast budget or the provider's quota is used up; the value is
    /// the number of milliseconds until it resets.
    #[error("broadcast quota exhausted; it resets in {0} ms")]
    QuotaExhausted(u64),
    /// Too many messages are waiting for this channel.
    #[error("the channel's backlog is full; try again later")]
    BacklogFull,
    /// The host could not accept the message.
    #[error("the host could not accept the message: {0}")]
    Internal(String),
}

impl BroadcastError {
    /// Whether sending the same message later may succeed: the quota or the
    /// backlog is the problem, not the message.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::QuotaExhausted(_) | Self::BacklogFull)
    }

    /// How long to wait before the quota resets, when that is the problem.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Self::QuotaExhausted(ms) => Some(*ms),
            _ => None,
        }
    }
}

impl From<RawBroadcastError> for BroadcastError {
    fn from(raw: RawBroadcastError) -> Self {
        match raw {
            RawBroadcastError::NotGranted(s) => Self::NotGranted(s),
            RawBroadcastError::UnknownChannel(s) => Self::UnknownChannel(s),
            RawBroadcastError::Invalid(s) => Self::Invalid(s),
            RawBroadcastError::Unsupported(s) => Self::Unsupported(s),
            RawBroadcastError::QuotaExhausted(ms) => Self::QuotaExhausted(ms),
            RawBroadcastError::BacklogFull => Self::BacklogFull,
            RawBroadcastError::Internal(s) => Self::Internal(s),
        }
    }
}

/// Lets `handle` use `?` on sends: its error type is the WIT's `string`.
impl From<BroadcastError> for String {
    fn from(err: BroadcastError) -> Self {
        err.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_readable() {
        assert_eq!(
            BroadcastError::QuotaExhausted(1500).to_string(),
            "broadcast quota exhausted; it resets in 1500 ms"
        );
        assert_eq!(
            String::from(BroadcastError::UnknownChannel("lobby".into())),
            "unknown channel: lobby"
        );
    }

    #[test]
    fn retryable() {
        assert!(BroadcastError::BacklogFull.is_retryable());
        assert_eq!(BroadcastError::QuotaExhausted(7).retry_after_ms(), Some(7));
        assert!(!BroadcastError::Invalid("too long".into()).is_retryable());
    }

    #[test]
    fn converts_every_raw_case() {
        assert_eq!(
            BroadcastError::from(RawBroadcastError::NotGranted("x".into())),
            BroadcastError::NotGranted("x".into())
        );
        assert_eq!(
            BroadcastError::from(RawBroadcastError::BacklogFull),
            BroadcastError::BacklogFull
        );
    }
}
