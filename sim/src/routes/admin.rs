//! `/_sim`: control of the emulator for out-of-process users (no auth; loopback only).

use axum::extract::State as AxState;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::ApiJson;
use super::AppState;
use crate::error::ApiError;

pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/_sim/clock", get(clock))
        .route("/_sim/clock/advance", post(advance))
        .route("/_sim/clock/set", post(set))
        .route("/_sim/mutations", get(mutations).delete(clear_mutations))
        .with_state(app)
}

fn clock_json(app: &AppState) -> Json<Value> {
    let s = app.state.settled();
    Json(json!({ "now": crate::wire::ts(s.now()), "virtual": s.clock.is_virtual() }))
}

async fn clock(AxState(app): AxState<AppState>) -> Json<Value> {
    clock_json(&app)
}

#[derive(Deserialize)]
struct Advance {
    seconds: f64,
}

async fn advance(
    AxState(app): AxState<AppState>,
    ApiJson(body): ApiJson<Advance>,
) -> Result<Json<Value>, ApiError> {
    let d = std::time::Duration::try_from_secs_f64(body.seconds).map_err(|e| {
        ApiError::bad_request(format!("seconds must be a non-negative number: {e}"))
    })?;
    app.state.lock().clock.advance(d);
    Ok(clock_json(&app))
}

#[derive(Deserialize)]
struct Set {
    now: DateTime<Utc>,
}

async fn set(AxState(app): AxState<AppState>, ApiJson(body): ApiJson<Set>) -> Json<Value> {
    app.state.lock().clock.set(body.now);
    clock_json(&app)
}

async fn mutations(AxState(app): AxState<AppState>) -> Json<Value> {
    Json(json!({
        "mutations": app.mutations.snapshot(),
        "dropped": app.mutations.dropped(),
        "limit": app.mutations.limit(),
    }))
}

async fn clear_mutations(AxState(app): AxState<AppState>) -> Json<Value> {
    app.mutations.clear();
    Json(json!({}))
}
