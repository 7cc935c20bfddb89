//! Extractors that turn bad input into 400 `GeneralError`s (never axum's plain-text rejections),
//! and the authenticated caller.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::Principal;

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("authentication required"))
    }
}

/// A JSON request body; malformed or mistyped JSON is a 400 naming the problem.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read request body: {e}")))?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &bytes
        };
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(de)
            .map(ApiJson)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if path == "." {
                    ApiError::bad_request(format!("invalid request body: {inner}"))
                } else {
                    ApiError::bad_request(format!("invalid request body: {path}: {inner}"))
                }
            })
    }
}

/// Query parameters; a bad value is a 400 naming it.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                ApiError::bad_request(format!("invalid query parameters: {}", e.body_text()))
            })
    }
}

/// Path parameters; a bad value is a 400 naming it.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| {
                ApiError::bad_request(format!("invalid path parameter: {}", e.body_text()))
            })
    }
}

/// A boolean query parameter as Neon's server reads one: `true`/`false` in any case, `1`/`0`,
/// `t`/`f` (what clients send: Python's `requests` writes `True`). Anything else is an error
/// naming the value. Use with `#[serde(default, deserialize_with = "query_bool")]`.
pub fn query_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let raw: Option<String> = serde::Deserialize::deserialize(d)?;
    raw.map(|s| match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" => Ok(true),
        "false" | "f" | "0" => Ok(false),
        _ => Err(serde::de::Error::custom(format!(
            "expected a boolean (true or false), got {s:?}"
        ))),
    })
    .transpose()
}

/// An RFC 3339 timestamp field that may be absent (`None`), `null` (`Some(None)`) or set,
/// with an error naming the format. Use with `#[serde(default, deserialize_with = ...)]`.
pub fn nullable_timestamp<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<chrono::DateTime<chrono::Utc>>>, D::Error> {
    let raw: Option<String> = serde::Deserialize::deserialize(d)?;
    raw.map(|s| parse_timestamp(&s).map_err(serde::de::Error::custom))
        .transpose()
        .map(Some)
}

/// An optional RFC 3339 timestamp field, with an error naming the format.
pub fn timestamp<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, D::Error> {
    let raw: Option<String> = serde::Deserialize::deserialize(d)?;
    raw.map(|s| parse_timestamp(&s).map_err(serde::de::Error::custom))
        .transpose()
}

fn parse_timestamp(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| {
            format!("expected an RFC 3339 timestamp such as 2025-07-15T18:02:16Z, got {s:?} ({e})")
        })
}
