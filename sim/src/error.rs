//! Neon's error model: every failure is a `GeneralError {code, message, request_id}`.
//!
//! Handlers return [`ApiError`]; it renders as a response carrying the error in an extension and
//! the request-id middleware (see `routes::request_id_layer`) fills in the body with the request
//! id, so no handler has to thread the id through.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer of the emulated API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// Neon's `GeneralError` body.
#[derive(Debug, Clone, Serialize)]
pub struct GeneralError {
    pub code: String,
    pub message: String,
    pub request_id: String,
}

/// The message Neon uses for 423 Locked.
pub const LOCKED_MESSAGE: &str =
    "project already has running conflicting operations, scheduling of new ones is prohibited";

/// The `code` of a quota 423 (an operation lock's is `LOCKED`).
pub const QUOTA_EXCEEDED_CODE: &str = "QUOTA_EXCEEDED";

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "CONFLICT", message)
    }
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNPROCESSABLE_ENTITY",
            message,
        )
    }
    /// 423 for an exhausted quota: retrying does not help until something is freed. Told apart
    /// from the operation lock by its `code` (`QUOTA_EXCEEDED`, not `LOCKED`).
    pub fn quota_exceeded(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::LOCKED, QUOTA_EXCEEDED_CODE, message)
    }
    pub fn locked() -> ApiError {
        ApiError::new(StatusCode::LOCKED, "LOCKED", LOCKED_MESSAGE)
    }
    pub fn not_implemented(method: &str, path: &str, operation_id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NOT_IMPLEMENTED",
            format!("neon-sim does not emulate {operation_id} ({method} {path})"),
        )
    }

    /// The body for this error, given the request id.
    pub fn body(&self, request_id: &str) -> GeneralError {
        GeneralError {
            code: self.code.to_string(),
            message: self.message.clone(),
            request_id: request_id.to_string(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The body is rendered by the request-id middleware, which knows the id. If an error
        // escapes that middleware (it should not), the fallback body below is still valid.
        let mut response = (self.status, axum::Json(self.body(""))).into_response();
        response.extensions_mut().insert(self);
        response
    }
}
