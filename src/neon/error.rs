//! Errors of the Neon client.
//!
//! Every variant names the route TEMPLATE (never the raw path, never the key) and, where the
//! API gave one, the request id, so an operator can quote it to Neon support. Response bodies
//! are never copied into errors: only Neon's own `message` field.

use std::time::Duration;

use super::types::OperationId;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API answered with a non-success status.
    #[error("Neon API {route}: HTTP {status}{}: {message}{}", code_suffix(.code), rid_suffix(.request_id))]
    Status {
        status: u16,
        /// Neon's `code` field, when the body was a `GeneralError`.
        code: Option<String>,
        message: String,
        request_id: Option<String>,
        route: &'static str,
    },

    /// No complete answer within the per-request timeout.
    #[error("Neon API {route}: request timed out after {timeout:?} (request id {request_id})")]
    Timeout {
        route: &'static str,
        request_id: String,
        timeout: Duration,
    },

    /// The connection could not be established; the request was not sent.
    #[error("Neon API {route}: cannot connect: {detail}")]
    Connect { route: &'static str, detail: String },

    /// The connection failed after the request may have been sent (reset, dropped, truncated
    /// answer). For a create this means it may or may not have happened.
    #[error("Neon API {route}: connection failed mid-request (request id {request_id}): {detail}")]
    Transport {
        route: &'static str,
        request_id: String,
        detail: String,
    },

    /// The answer was not the JSON the API documents.
    #[error("Neon API {route}: malformed response{}: {detail}", rid_suffix(.request_id))]
    Decode {
        route: &'static str,
        request_id: Option<String>,
        detail: String,
    },

    /// An operation we waited for ended `failed`.
    #[error("Neon operation {operation_id} ({action}) failed: {}", .error.as_deref().unwrap_or("no error message"))]
    OperationFailed {
        operation_id: OperationId,
        action: String,
        error: Option<String>,
    },

    /// A retry or wait budget ran out before the API gave a usable answer.
    #[error("gave up on {what} after {elapsed:?}")]
    Deadline { what: String, elapsed: Duration },

    /// The branch (or endpoint) did not exist or was already deleted (Neon answers 204).
    #[error("Neon API {route}: already deleted or never existed")]
    AlreadyDeleted { route: &'static str },

    /// The call was not sent, for the reason given (it cannot have been carried out).
    #[error("not sent: {0}")]
    NotSent(String),

    /// The call was refused before sending because its arguments break Neon's documented
    /// rules (e.g. more than 100 `project_ids`).
    #[error("invalid Neon API request: {0}")]
    InvalidRequest(String),

    /// The client could not be built (bad base URL, TLS setup).
    #[error("cannot build the Neon client: {0}")]
    Config(String),

    /// Not Neon's: an action whose effect is a notification (a budget's `notify`) could not
    /// write it to the store's outbox. Nothing was sent; the action is planned again.
    #[error("writing the notification to the store's outbox: {0}")]
    Outbox(String),
}

fn code_suffix(code: &Option<String>) -> String {
    match code {
        Some(c) if !c.is_empty() => format!(" ({c})"),
        _ => String::new(),
    }
}

fn rid_suffix(rid: &Option<String>) -> String {
    match rid {
        Some(r) => format!(" (request id {r})"),
        None => String::new(),
    }
}

impl ApiError {
    /// The HTTP status, if the API answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Neon's error code, if the API gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            ApiError::Status { request_id, .. } | ApiError::Decode { request_id, .. } => {
                request_id.as_deref()
            }
            ApiError::Timeout { request_id, .. } | ApiError::Transport { request_id, .. } => {
                Some(request_id)
            }
            _ => None,
        }
    }

    /// 404, or a delete that found nothing to delete.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404) || matches!(self, ApiError::AlreadyDeleted { .. })
    }

    /// 423: the project has a conflicting operation running (and waiting helps). A 423
    /// whose code says a quota is exhausted (`QUOTA_EXCEEDED`, e.g. the manual snapshot
    /// limit) is not a lock: waiting does not lift it, so it is neither retried nor waited on.
    pub fn is_locked(&self) -> bool {
        match self {
            ApiError::Status {
                status: 423, code, ..
            } => !code.as_deref().is_some_and(|c| c.contains("QUOTA")),
            _ => false,
        }
    }

    pub fn is_rate_limited(&self) -> bool {
        self.status() == Some(429)
    }

    pub fn is_unauthorized(&self) -> bool {
        matches!(self.status(), Some(401) | Some(403))
    }

    /// A 4xx other than 404/408/423/429: our request (or its target's state) is wrong and
    /// repeating it will not help.
    pub fn is_client_error(&self) -> bool {
        matches!(self.status(), Some(s) if (400..500).contains(&s) && !matches!(s, 408 | 423 | 429))
    }

    pub fn is_server_error(&self) -> bool {
        matches!(self.status(), Some(s) if s >= 500)
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, ApiError::Timeout { .. })
    }

    pub fn is_deadline(&self) -> bool {
        matches!(self, ApiError::Deadline { .. })
    }

    /// True when a non-idempotent request may have been carried out even though we got no
    /// success answer: a timeout, a connection lost after sending, or a 5xx other than 503.
    /// Such a create must be checked for, not repeated blindly.
    pub fn may_have_succeeded(&self) -> bool {
        match self {
            ApiError::Timeout { .. } | ApiError::Transport { .. } => true,
            ApiError::Status { status, .. } => *status >= 500 && *status != 503,
            _ => false,
        }
    }

    pub(crate) fn deadline(what: impl Into<String>, elapsed: Duration) -> Self {
        ApiError::Deadline {
            what: what.into(),
            elapsed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_route_code_and_request_id() {
        let e = ApiError::Status {
            status: 423,
            code: Some("LOCKED".into()),
            message: "project already has running conflicting operations".into(),
            request_id: Some("r-1".into()),
            route: "/projects/{project_id}/branches/{branch_id}",
        };
        let s = e.to_string();
        assert!(s.contains("HTTP 423 (LOCKED)"), "{s}");
        assert!(s.contains("request id r-1"), "{s}");
        assert!(
            s.contains("/projects/{project_id}/branches/{branch_id}"),
            "{s}"
        );
        assert!(e.is_locked());
        assert!(!e.is_not_found());
        assert!(!e.may_have_succeeded());
    }

    #[test]
    fn classification() {
        let s = |status| ApiError::Status {
            status,
            code: None,
            message: String::new(),
            request_id: None,
            route: "/x",
        };
        assert!(s(404).is_not_found());
        assert!(s(400).is_client_error());
        assert!(!s(429).is_client_error());
        assert!(s(500).may_have_succeeded());
        assert!(!s(503).may_have_succeeded());
        assert!(ApiError::AlreadyDeleted { route: "/x" }.is_not_found());
    }
}
