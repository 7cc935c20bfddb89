//! The consumption routes: `/consumption_history/v2/projects`, `/consumption_history/v2/branches`
//! and the legacy `/consumption_history/projects` and `/consumption_history/account`. The
//! values and the rules (windows, timeframes, billing periods) are in [`crate::consumption`].
//!
//! Query parameters are read as pairs (axum's `Query<Vec<(String, String)>>`) rather than one
//! struct: Neon's clients repeat `project_ids`/`metrics` or comma-separate them, which
//! `serde_urlencoded` structs cannot take; each accessor names the parameter in its 400.

use std::collections::BTreeMap;

use axum::extract::{Query, State as AxState};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};

use super::AppState;
use crate::consumption::{
    branch_v2_values, check_range, legacy_values, periods, project_v2_values, rfc3339, timeframes,
    v2_timeframe, Granularity, RangeParams, BRANCH_METRICS_V2, LEGACY_METRICS, LEGACY_REQUIRED,
    PROJECT_METRICS_V2,
};
use crate::consumption_view::View;
use crate::error::ApiError;
use crate::state::{Principal, Project, SharedState, State};
use crate::wire::{
    AccountConsumption, BranchConsumption, BranchesConsumption, ConsumptionPeriod, LegacyTimeframe,
    Pagination, ProjectConsumption, ProjectsConsumption,
};

/// The consumption routes, to merge into the `/api/v2` router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/consumption_history/v2/projects", get(v2_projects))
        .route("/consumption_history/v2/branches", get(v2_branches))
        .route("/consumption_history/projects", get(legacy_projects))
        .route("/consumption_history/account", get(legacy_account))
}

/// Query parameters as pairs, keeping repeats (`project_ids=a&project_ids=b`).
struct Params(Vec<(String, String)>);

impl Params {
    fn from_uri(uri: &Uri) -> Result<Params, ApiError> {
        Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.one(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            ApiError::bad_request(format!("missing required query parameter `{name}`"))
        })
    }

    /// Repeated and/or comma-separated values.
    fn list(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name || k == &format!("{name}[]"))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn date(&self, name: &str) -> Result<DateTime<Utc>, ApiError> {
        let raw = self.required(name)?;
        DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "query parameter `{name}`: {raw:?} is not an RFC 3339 date-time: {e}"
                ))
            })
    }

    fn range(&self, now: DateTime<Utc>) -> Result<RangeParams, ApiError> {
        let g_raw = self.required("granularity")?;
        let granularity = Granularity::parse(g_raw).ok_or_else(|| {
            ApiError::bad_request(format!(
                "query parameter `granularity`: {g_raw:?} is not one of hourly, daily, monthly"
            ))
        })?;
        let from = self.date("from")?;
        let to = self.date("to")?;
        check_range(from, to, granularity, now)?;
        Ok(RangeParams {
            from,
            to,
            granularity,
        })
    }

    fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.one("limit") {
            None => Ok(default),
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "query parameter `limit`: {raw:?} is not an integer from 1 to {max}"
                ))),
            },
        }
    }

    fn ids(&self, name: &str, required: bool) -> Result<Vec<String>, ApiError> {
        let ids = self.list(name);
        if required && ids.is_empty() {
            return Err(ApiError::bad_request(format!(
                "missing required query parameter `{name}` (1 to 100 ids)"
            )));
        }
        if ids.len() > 100 {
            return Err(ApiError::bad_request(format!(
                "query parameter `{name}`: at most 100 ids are allowed, got {}",
                ids.len()
            )));
        }
        if let Some(bad) = ids.iter().find(|id| {
            id.len() > 60
                || !id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        }) {
            return Err(ApiError::bad_request(format!(
                "query parameter `{name}`: {bad:?} is not a valid id"
            )));
        }
        Ok(ids)
    }

    fn metrics(&self, allowed: &[&str], required: bool) -> Result<Option<Vec<String>>, ApiError> {
        let ms = self.list("metrics");
        if ms.is_empty() {
            return if required {
                Err(ApiError::bad_request(
                    "missing required query parameter `metrics`",
                ))
            } else {
                Ok(None)
            };
        }
        if let Some(bad) = ms.iter().find(|m| !allowed.contains(&m.as_str())) {
            return Err(ApiError::bad_request(format!(
                "query parameter `metrics`: {bad:?} is not supported here; supported: {}",
                allowed.join(", ")
            )));
        }
        let mut out: Vec<String> = Vec::new();
        for m in ms {
            if !out.contains(&m) {
                out.push(m);
            }
        }
        Ok(Some(out))
    }
}

// ----- handlers --------------------------------------------------------------------------------

/// The org the caller names, or 404 when it is not theirs.
fn org_for<'a>(
    state: &'a State,
    who: &Principal,
    org_id: &str,
) -> Result<&'a crate::state::Org, ApiError> {
    state
        .visible_orgs(who)
        .into_iter()
        .find(|o| o.id == org_id)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "organization {org_id} not found or not accessible with this API key"
            ))
        })
}

/// Visible projects, filtered by org (when given) and ids (when given), newest first.
fn select_projects<'a>(
    state: &'a State,
    who: &Principal,
    org_id: Option<&str>,
    ids: &[String],
) -> Result<Vec<&'a Project>, ApiError> {
    for id in ids {
        let p = state.project_for(who, id)?;
        if org_id.is_some() && p.org_id.as_deref() != org_id {
            return Err(ApiError::not_found(format!(
                "project {id} not found in organization {}",
                org_id.unwrap_or("")
            )));
        }
    }
    let mut ps: Vec<&Project> = state
        .projects
        .values()
        .filter(|p| state.can_see_project(who, p))
        .filter(|p| org_id.is_none() || p.org_id.as_deref() == org_id)
        .filter(|p| ids.is_empty() || ids.contains(&p.id))
        .collect();
    ps.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.id.cmp(&a.id))
    });
    Ok(ps)
}

/// Applies a cursor (the last id of the previous page) and a limit.
fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let start = match cursor.filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => items
            .iter()
            .position(|i| key(i) == c)
            .map(|p| p + 1)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "query parameter `cursor`: {c:?} is not a cursor of this listing"
                ))
            })?,
    };
    let page: Vec<T> = items.into_iter().skip(start).take(limit).collect();
    let next = page.last().map(&key);
    Ok((page, next))
}

fn pagination(cursor: Option<String>) -> Option<Pagination> {
    cursor.map(|cursor| Pagination { cursor })
}

/// The per-project answer of the v2 and legacy project endpoints.
fn projects_answer<T: serde::Serialize>(
    computed: Vec<(String, Vec<ConsumptionPeriod<T>>)>,
    next: Option<String>,
) -> Response {
    let projects = computed
        .into_iter()
        .map(|(project_id, periods)| ProjectConsumption {
            project_id,
            periods,
        })
        .collect();
    Json(ProjectsConsumption {
        projects,
        pagination: pagination(next),
    })
    .into_response()
}

fn plan_of(state: &State, org_id: Option<&str>) -> String {
    org_id
        .and_then(|o| state.orgs.get(o))
        .map(|o| o.plan.clone())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "scale".to_string())
}

/// Computes the `periods` of each scope (a project, a branch, the account) off the async
/// runtime, from a [`View`] of `projects` gathered under one short lock, so a wide range over
/// many branches neither holds the model's lock nor scans the whole model per value.
#[allow(clippy::too_many_arguments)]
async fn compute_periods<K, T, F>(
    shared: SharedState,
    projects: Vec<String>,
    plan: String,
    now: DateTime<Utc>,
    frames: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    keys: Vec<K>,
    scope: fn(&K) -> String,
    timeframe: F,
) -> Result<Vec<(K, Vec<ConsumptionPeriod<T>>)>, ApiError>
where
    K: Send + 'static,
    T: Send + 'static,
    F: Fn(&View, &K, DateTime<Utc>, DateTime<Utc>) -> T + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let view = View::of(&shared.lock(), &projects);
        keys.into_iter()
            .map(|k| {
                let ps = periods(&scope(&k), &plan, now, &frames, |s, e| {
                    timeframe(&view, &k, s, e)
                });
                (k, ps)
            })
            .collect()
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            format!("neon-sim failed computing consumption: {e}"),
        )
    })
}

async fn v2_projects(
    AxState(app): AxState<AppState>,
    who: Principal,
    uri: Uri,
) -> Result<Response, ApiError> {
    let q = Params::from_uri(&uri)?;
    let (now, range, metrics, plan, ids, next) = {
        let state = app.state.settled();
        let now = state.now();
        let range = q.range(now)?;
        let org_id = q.required("org_id")?.to_string();
        let metrics = q.metrics(PROJECT_METRICS_V2, true)?.unwrap_or_default();
        let ids = q.ids("project_ids", false)?;
        let limit = q.limit(10, 100)?;
        let org = org_for(&state, &who, &org_id)?;
        let plan = if org.plan.is_empty() {
            "scale".to_string()
        } else {
            org.plan.clone()
        };
        let projects = select_projects(&state, &who, Some(&org_id), &ids)?;
        let (projects, next) = page(projects, |p| p.id.clone(), q.one("cursor"), limit)?;
        let ids: Vec<String> = projects.iter().map(|p| p.id.clone()).collect();
        (now, range, metrics, plan, ids, next)
    };
    let frames = timeframes(range.from, range.to, range.granularity);
    let computed = compute_periods(
        app.state.clone(),
        ids.clone(),
        plan,
        now,
        frames,
        ids,
        String::clone,
        move |v, id, s, e| v2_timeframe(s, e, project_v2_values(v, id, s, e, &metrics)),
    )
    .await?;
    Ok(projects_answer(computed, next))
}

async fn v2_branches(
    AxState(app): AxState<AppState>,
    who: Principal,
    uri: Uri,
) -> Result<Response, ApiError> {
    let q = Params::from_uri(&uri)?;
    let (now, frames, metrics, plan, pairs, next) = {
        let state = app.state.settled();
        let now = state.now();
        let range = q.range(now)?;
        let org_id = q.required("org_id")?.to_string();
        let metrics = q.metrics(BRANCH_METRICS_V2, true)?.unwrap_or_default();
        let project_ids = q.ids("project_ids", true)?;
        let branch_ids = q.ids("branch_ids", false)?;
        let limit = q.limit(100, 1000)?;
        let org = org_for(&state, &who, &org_id)?;
        let plan = if org.plan.is_empty() {
            "scale".to_string()
        } else {
            org.plan.clone()
        };
        let projects = select_projects(&state, &who, Some(&org_id), &project_ids)?;
        let frames = timeframes(range.from, range.to, range.granularity);
        let (from, to) = (
            frames.first().map(|f| f.0).unwrap_or(range.from),
            frames.last().map(|f| f.1).unwrap_or(range.to),
        );
        // Pages are ordered by project id, then branch id.
        let mut pairs: Vec<(String, String)> = Vec::new();
        for p in &projects {
            for b in state.project_branch_ids_between(&p.id, from, to) {
                if branch_ids.is_empty() || branch_ids.contains(&b) {
                    pairs.push((p.id.clone(), b));
                }
            }
        }
        pairs.sort();
        let (pairs, next) = page(pairs, |(p, b)| format!("{p}/{b}"), q.one("cursor"), limit)?;
        (now, frames, metrics, plan, pairs, next)
    };
    let mut projects: Vec<String> = pairs.iter().map(|(p, _)| p.clone()).collect();
    projects.dedup();
    let computed = compute_periods(
        app.state.clone(),
        projects,
        plan,
        now,
        frames,
        pairs,
        |(p, b): &(String, String)| format!("{p}/{b}"),
        move |v, (_, b), s, e| v2_timeframe(s, e, branch_v2_values(v, b, s, e, &metrics)),
    )
    .await?;
    let branches = computed
        .into_iter()
        .map(|((project_id, branch_id), periods)| BranchConsumption {
            project_id,
            branch_id,
            periods,
        })
        .collect();
    Ok(Json(BranchesConsumption {
        branches,
        pagination: pagination(next),
    })
    .into_response())
}

/// Legacy metric names to report: the four required ones always, plus those asked for.
fn legacy_metric_names(q: &Params, allowed: &[&str]) -> Result<Vec<&'static str>, ApiError> {
    let asked = q.metrics(allowed, false)?;
    let mut names: Vec<&'static str> = LEGACY_REQUIRED.to_vec();
    match asked {
        Some(ms) => {
            for m in ms {
                if let Some(s) = LEGACY_METRICS.iter().find(|x| **x == m) {
                    if !names.contains(s) {
                        names.push(s);
                    }
                }
            }
        }
        None => {
            if q.one("include_v1_metrics") == Some("true") {
                names.push("data_storage_bytes_hour");
            }
        }
    }
    Ok(names)
}

fn legacy_timeframe(
    s: DateTime<Utc>,
    e: DateTime<Utc>,
    values: &BTreeMap<&'static str, i64>,
    names: &[&'static str],
) -> LegacyTimeframe {
    LegacyTimeframe {
        timeframe_start: rfc3339(s),
        timeframe_end: rfc3339(e),
        values: names
            .iter()
            .map(|n| (*n, values.get(n).copied().unwrap_or(0)))
            .collect(),
    }
}

async fn legacy_projects(
    AxState(app): AxState<AppState>,
    who: Principal,
    uri: Uri,
) -> Result<Response, ApiError> {
    let q = Params::from_uri(&uri)?;
    let (now, range, names, plan, ids, next) = {
        let state = app.state.settled();
        let now = state.now();
        let range = q.range(now)?;
        let org_id = q
            .one("org_id")
            .filter(|o| !o.is_empty())
            .map(str::to_string);
        if let Some(o) = &org_id {
            org_for(&state, &who, o)?;
        }
        let names = legacy_metric_names(&q, LEGACY_METRICS)?;
        let ids = q.ids("project_ids", false)?;
        let limit = q.limit(10, 100)?;
        let plan = plan_of(&state, org_id.as_deref());
        let projects = select_projects(&state, &who, org_id.as_deref(), &ids)?;
        let (projects, next) = page(projects, |p| p.id.clone(), q.one("cursor"), limit)?;
        let ids: Vec<String> = projects.iter().map(|p| p.id.clone()).collect();
        (now, range, names, plan, ids, next)
    };
    let frames = timeframes(range.from, range.to, range.granularity);
    let computed = compute_periods(
        app.state.clone(),
        ids.clone(),
        plan,
        now,
        frames,
        ids,
        String::clone,
        move |v, id, s, e| {
            let one = [id.clone()];
            legacy_timeframe(s, e, &legacy_values(v, &one, s, e), &names)
        },
    )
    .await?;
    Ok(projects_answer(computed, next))
}

async fn legacy_account(
    AxState(app): AxState<AppState>,
    who: Principal,
    uri: Uri,
) -> Result<Response, ApiError> {
    let q = Params::from_uri(&uri)?;
    let (now, range, names, plan, ids, scope) = {
        let state = app.state.settled();
        let now = state.now();
        let range = q.range(now)?;
        let org_id = q
            .one("org_id")
            .filter(|o| !o.is_empty())
            .map(str::to_string);
        if let Some(o) = &org_id {
            org_for(&state, &who, o)?;
        }
        // `logical_size_*` are per-project metrics; the account endpoint does not offer them.
        let names = legacy_metric_names(&q, &LEGACY_METRICS[..5])?;
        let plan = plan_of(&state, org_id.as_deref());
        let ids: Vec<String> = select_projects(&state, &who, org_id.as_deref(), &[])?
            .iter()
            .map(|p| p.id.clone())
            .collect();
        let scope = org_id.unwrap_or_else(|| format!("user:{}", who.user_id));
        (now, range, names, plan, ids, scope)
    };
    let frames = timeframes(range.from, range.to, range.granularity);
    let computed = compute_periods(
        app.state.clone(),
        ids.clone(),
        plan,
        now,
        frames,
        vec![(scope, ids)],
        |(scope, _): &(String, Vec<String>)| scope.clone(),
        move |v, (_, ids), s, e| legacy_timeframe(s, e, &legacy_values(v, ids, s, e), &names),
    )
    .await?;
    let periods = computed.into_iter().flat_map(|(_, ps)| ps).collect();
    Ok(Json(AccountConsumption { periods }).into_response())
}
