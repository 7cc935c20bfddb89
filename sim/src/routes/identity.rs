//! Identity: `/auth`, `/users/me`, organizations, API keys and regions.

use axum::extract::State as AxState;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{ApiJson, ApiPath};
use super::AppState;
use crate::error::ApiError;
use crate::state::{KeyScope, Principal, DEFAULT_REGION, REGIONS};
use crate::wire::{ts, CurrentUser, Organization};

pub async fn auth(AxState(app): AxState<AppState>, who: Principal) -> Json<Value> {
    let s = app.state.settled();
    let (account_id, method) = match &who.scope {
        KeyScope::Personal { user_id } => (user_id.clone(), "api_key_user"),
        KeyScope::Org { org_id } => (org_id.clone(), "api_key_org"),
        KeyScope::Project { org_id, .. } => (
            org_id.clone().unwrap_or_else(|| s.primary_user_id.clone()),
            "api_key_org",
        ),
    };
    Json(json!({ "account_id": account_id, "auth_method": method }))
}

pub async fn me(
    AxState(app): AxState<AppState>,
    who: Principal,
) -> Result<Json<CurrentUser>, ApiError> {
    let s = app.state.settled();
    let user = s
        .users
        .get(&who.user_id)
        .ok_or_else(|| ApiError::not_found("user not found"))?;
    Ok(Json(CurrentUser::from(&s, user)))
}

pub async fn my_orgs(AxState(app): AxState<AppState>, who: Principal) -> Json<Value> {
    let s = app.state.settled();
    let orgs: Vec<Organization> = s
        .visible_orgs(&who)
        .into_iter()
        .map(Organization::from)
        .collect();
    Json(json!({ "organizations": orgs }))
}

pub async fn org(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath(org_id): ApiPath<String>,
) -> Result<Json<Organization>, ApiError> {
    let s = app.state.settled();
    s.visible_orgs(&who)
        .into_iter()
        .find(|o| o.id == org_id)
        .map(|o| Json(Organization::from(o)))
        .ok_or_else(|| ApiError::not_found(format!("organization {org_id} not found")))
}

fn creator(s: &crate::state::State, user_id: &str) -> Value {
    let name = s
        .users
        .get(user_id)
        .map(|u| u.name.clone())
        .unwrap_or_default();
    json!({ "id": user_id, "name": name, "image": "" })
}

/// Personal keys only: `/api_keys` manages the calling user's personal keys.
fn personal_user(who: &Principal) -> Result<&str, ApiError> {
    match &who.scope {
        KeyScope::Personal { user_id } => Ok(user_id),
        _ => Err(ApiError::forbidden(
            "this operation requires a personal API key",
        )),
    }
}

pub async fn list_keys(
    AxState(app): AxState<AppState>,
    who: Principal,
) -> Result<Json<Value>, ApiError> {
    let user = personal_user(&who)?.to_string();
    let s = app.state.settled();
    let keys: Vec<Value> = s
        .api_keys
        .iter()
        .filter(|k| {
            !k.revoked
                && k.scope
                    == KeyScope::Personal {
                        user_id: user.clone(),
                    }
        })
        .map(|k| {
            let mut v = json!({
                "id": k.id, "name": k.name, "created_at": ts(k.created_at),
                "created_by": creator(&s, &k.created_by), "last_used_from_addr": "127.0.0.1",
            });
            if let Some(at) = k.last_used_at {
                v["last_used_at"] = json!(ts(at));
            }
            v
        })
        .collect();
    Ok(Json(Value::Array(keys)))
}

#[derive(Deserialize)]
pub struct CreateKey {
    key_name: String,
}

pub async fn create_key(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<Json<Value>, ApiError> {
    let user = personal_user(&who)?.to_string();
    if body.key_name.trim().is_empty() {
        return Err(ApiError::bad_request("key_name must not be empty"));
    }
    let mut s = app.state.settled();
    let k = s.add_api_key(
        &body.key_name,
        KeyScope::Personal {
            user_id: user.clone(),
        },
        None,
    );
    Ok(Json(json!({
        "id": k.id, "key": k.secret, "name": k.name, "created_at": ts(k.created_at), "created_by": user,
    })))
}

pub async fn revoke_key(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath(key_id): ApiPath<i64>,
) -> Result<Json<Value>, ApiError> {
    let user = personal_user(&who)?.to_string();
    let mut s = app.state.settled();
    let key = s
        .api_keys
        .iter_mut()
        .find(|k| {
            k.id == key_id
                && !k.revoked
                && k.scope
                    == KeyScope::Personal {
                        user_id: user.clone(),
                    }
        })
        .ok_or_else(|| ApiError::not_found(format!("API key {key_id} not found")))?;
    key.revoked = true;
    let mut v = json!({
        "id": key.id, "name": key.name, "created_at": ts(key.created_at), "created_by": key.created_by,
        "last_used_from_addr": "127.0.0.1", "revoked": true,
    });
    if let Some(at) = key.last_used_at {
        v["last_used_at"] = json!(ts(at));
    }
    Ok(Json(v))
}

pub async fn regions(_who: Principal) -> Json<Value> {
    let regions: Vec<Value> = REGIONS
        .iter()
        .map(|(id, name, lat, long)| {
            json!({ "region_id": id, "name": name, "default": *id == DEFAULT_REGION, "geo_lat": lat, "geo_long": long })
        })
        .collect();
    Json(json!({ "regions": regions }))
}
