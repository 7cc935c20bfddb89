//! How talking to a forge fails, in words an operator can act on. The token never appears.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ForgeError {
    #[error("{0}")]
    Config(String),
    #[error("no token: {0}")]
    NoToken(String),
    #[error("{message}")]
    Status { status: u16, message: String },
    #[error("rate limited{}", .wait.map(|w| format!(" for {}s", w.as_secs())).unwrap_or_default())]
    RateLimited { wait: Option<Duration> },
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected answer: {0}")]
    Decode(String),
}

impl ForgeError {
    pub(super) fn retry_reason(&self) -> Option<&'static str> {
        match self {
            ForgeError::RateLimited { .. } => Some("rate_limited"),
            ForgeError::Status { status: 503, .. } => Some("unavailable"),
            ForgeError::Status { status, .. } if *status >= 500 => Some("server_error"),
            ForgeError::Connect(_) | ForgeError::Transport(_) => Some("connect"),
            ForgeError::Timeout(_) => Some("timeout"),
            _ => None,
        }
    }
    pub(super) fn retry_after(&self) -> Option<Duration> {
        match self {
            ForgeError::RateLimited { wait } => *wait,
            _ => None,
        }
    }
}
