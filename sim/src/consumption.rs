//! Consumption history: `/consumption_history/v2/projects`, `/consumption_history/v2/branches`
//! and the legacy `/consumption_history/projects` and `/consumption_history/account`.
//!
//! Why it is built this way: the daemon's `collect` job stores these numbers and the tests
//! check that what it stored adds up. So every value here is derived deterministically from
//! the emulator's own model (compute activity intervals, branch sizes and lifetimes,
//! snapshots) at **hourly** grain, and coarser timeframes are sums of hours. That makes
//! per-branch values add up to per-project ones and hourly values add up to daily and monthly
//! ones exactly, by construction.
//!
//! Parameter rules follow the document's descriptions: `from`/`to` are rounded down to the
//! granularity; `hourly` reaches back 168 hours, `daily` 60 days, `monthly` one year, and never
//! before 2024-03-01T00:00:00Z; a range outside those windows, or empty after rounding, is
//! **406**. The windows are "the last N hours/days/year", so a `to` beyond the end of the
//! current (incomplete) timeframe is outside them too and is also **406**: there is no
//! consumption in the future, and a far-future `to` must not make the emulator enumerate
//! centuries of hourly timeframes. Missing or malformed parameters are 400. `project_ids` takes at most 100 ids
//! (repeated or comma-separated).
//!
//! Units the document leaves open: `*_bytes_month` metrics are byte-hours / 730 (a month
//! of 730 hours) summed hour by hour; `extra_branches_month` counts branch-hours beyond the
//! [`INCLUDED_BRANCHES`] each project includes.

use std::collections::BTreeMap;

use axum::extract::{Query, State as AxState};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Datelike, Months, TimeDelta, TimeZone, Timelike, Utc};

use crate::consumption_view::{BranchFacts, View};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::state::TRANSFER_BYTES_PER_ACTIVE_SECOND;
use crate::state::{Principal, Project, SharedState, State};
use crate::wire::{
    AccountConsumption, BranchConsumption, BranchesConsumption, ConsumptionPeriod, LegacyTimeframe,
    MetricValue, Pagination, ProjectConsumption, ProjectsConsumption, V2Timeframe,
};

/// Branches included per project before `extra_branches_month` counts.
pub const INCLUDED_BRANCHES: i64 = 10;
/// Hours in a billing month, for `*_bytes_month`.
pub const HOURS_PER_MONTH: i64 = 730;
/// The document's earliest allowed `from`.
pub fn history_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0)
        .single()
        .expect("2024-03-01T00:00:00Z is a valid, unambiguous UTC instant")
}

/// `(method, path, operationId)` of the operations this module emulates.
pub const CONSUMPTION_OPERATIONS: &[(&str, &str, &str)] = &[
    (
        "GET",
        "/consumption_history/v2/projects",
        "getConsumptionHistoryPerProjectV2",
    ),
    (
        "GET",
        "/consumption_history/v2/branches",
        "getConsumptionHistoryPerBranchV2",
    ),
    (
        "GET",
        "/consumption_history/projects",
        "getConsumptionHistoryPerProject",
    ),
    (
        "GET",
        "/consumption_history/account",
        "getConsumptionHistoryPerAccount",
    ),
];

/// Metrics of `/v2/projects`.
pub const PROJECT_METRICS_V2: &[&str] = &[
    "compute_unit_seconds",
    "root_branch_bytes_month",
    "child_branch_bytes_month",
    "instant_restore_bytes_month",
    "public_network_transfer_bytes",
    "private_network_transfer_bytes",
    "extra_branches_month",
    "snapshot_storage_bytes_month",
];
/// Metrics of `/v2/branches` (the first six of the project metrics).
pub const BRANCH_METRICS_V2: &[&str] = &[
    "compute_unit_seconds",
    "root_branch_bytes_month",
    "child_branch_bytes_month",
    "instant_restore_bytes_month",
    "public_network_transfer_bytes",
    "private_network_transfer_bytes",
];
/// Metrics of the legacy endpoints (`logical_size_*` only on `/projects`).
pub const LEGACY_METRICS: &[&str] = &[
    "active_time_seconds",
    "compute_time_seconds",
    "written_data_bytes",
    "synthetic_storage_size_bytes",
    "data_storage_bytes_hour",
    "logical_size_bytes",
    "logical_size_bytes_hour",
];
/// Legacy fields the document requires in every timeframe.
const LEGACY_REQUIRED: &[&str] = &[
    "active_time_seconds",
    "compute_time_seconds",
    "written_data_bytes",
    "synthetic_storage_size_bytes",
];

/// The routes of this module, to merge into the `/api/v2` router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/consumption_history/v2/projects", get(v2_projects))
        .route("/consumption_history/v2/branches", get(v2_branches))
        .route("/consumption_history/projects", get(legacy_projects))
        .route("/consumption_history/account", get(legacy_account))
}

/// Timeframe length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hourly,
    Daily,
    Monthly,
}

impl Granularity {
    pub fn parse(s: &str) -> Option<Granularity> {
        match s {
            "hourly" => Some(Granularity::Hourly),
            "daily" => Some(Granularity::Daily),
            "monthly" => Some(Granularity::Monthly),
            _ => None,
        }
    }

    /// The parameter value (`hourly`, `daily`, `monthly`).
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hourly => "hourly",
            Granularity::Daily => "daily",
            Granularity::Monthly => "monthly",
        }
    }

    /// Rounds down to the start of the timeframe containing `t`.
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let day = t
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists on every date")
            .and_utc();
        match self {
            Granularity::Hourly => day + TimeDelta::hours(i64::from(t.hour())),
            Granularity::Daily => day,
            Granularity::Monthly => day - TimeDelta::days(i64::from(t.day0())),
        }
    }

    /// The start of the next timeframe after the one starting at `t`.
    pub fn next(self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Granularity::Hourly => t + TimeDelta::hours(1),
            Granularity::Daily => t + TimeDelta::days(1),
            Granularity::Monthly => t
                .checked_add_months(Months::new(1))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    /// The earliest `from` allowed at `now`.
    pub fn earliest_from(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let back = match self {
            Granularity::Hourly => now - TimeDelta::hours(168),
            Granularity::Daily => now - TimeDelta::days(60),
            Granularity::Monthly => now
                .checked_sub_months(Months::new(12))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        };
        self.floor(back).max(history_start())
    }
}

/// The most timeframes one request computes. The retention windows already bound a valid range
/// (169 hourly, 61 daily or 13 monthly timeframes, plus the current one); this cap is defence in
/// depth so no input can make [`timeframes`] loop for long.
pub const MAX_TIMEFRAMES: usize = 400;

/// Timeframe bounds `[start, end)` covering `[from, to)` after rounding both down, at most
/// [`MAX_TIMEFRAMES`] of them (from the start of the range).
pub fn timeframes(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    g: Granularity,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut t = g.floor(from);
    let end = g.floor(to);
    while t < end && out.len() < MAX_TIMEFRAMES {
        let n = g.next(t);
        out.push((t, n));
        t = n;
    }
    out
}

/// The parsed, validated common parameters.
#[derive(Debug, Clone)]
pub struct RangeParams {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: Granularity,
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

/// Checks a range against the granularity's retention window (406 when it does not fit).
pub fn check_range(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    g: Granularity,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let (f, t, name) = (rfc3339(from), rfc3339(to), g.as_str());
    let not_acceptable = |m: String| ApiError::new(StatusCode::NOT_ACCEPTABLE, "NOT_ACCEPTABLE", m);
    if from < history_start() {
        return Err(not_acceptable(format!(
            "`from` {f} is before the earliest allowed date 2024-03-01T00:00:00Z"
        )));
    }
    let earliest = g.earliest_from(now);
    if g.floor(from) < earliest {
        let window = match g {
            Granularity::Hourly => "the last 168 hours",
            Granularity::Daily => "the last 60 days",
            Granularity::Monthly => "the last year",
        };
        return Err(not_acceptable(format!(
            "`from` {f} is outside the range of {name} granularity ({window}, from {}); \
             choose a later `from` or a coarser granularity",
            rfc3339(earliest)
        )));
    }
    // Timeframes up to and including the current, incomplete one may be asked for; anything
    // later lies outside "the last 168 hours" (or 60 days, or year) as well.
    let latest_to = g.next(g.floor(now));
    if g.floor(to) > latest_to {
        return Err(not_acceptable(format!(
            "`to` {t} is in the future, outside the range of {name} granularity (timeframes end \
             at the latest at {}); choose an earlier `to`",
            rfc3339(latest_to)
        )));
    }
    if g.floor(to) <= g.floor(from) {
        return Err(not_acceptable(format!(
            "the range from {f} to {t} is shorter than one {name} timeframe after rounding"
        )));
    }
    Ok(())
}

// ----- the value model -------------------------------------------------------------------------

/// Hourly values of the six branch-level metrics, in [`BRANCH_METRICS_V2`] order.
fn branch_hour(
    now: DateTime<Utc>,
    b: &BranchFacts,
    retention_hours: i64,
    h: DateTime<Utc>,
    active: bool,
) -> [i64; 6] {
    let e = h + TimeDelta::hours(1);
    let byte_hours = b.storage_byte_hours(now, h, e);
    let (cu, transfer, written) = if active {
        (
            b.cu_seconds(now, h, e),
            b.active_seconds(now, h, e) * TRANSFER_BYTES_PER_ACTIVE_SECOND,
            b.written_bytes(now, h, e),
        )
    } else {
        (0, 0, 0)
    };
    [
        cu,
        if b.is_root {
            byte_hours / HOURS_PER_MONTH
        } else {
            0
        },
        if b.is_root {
            0
        } else {
            byte_hours / HOURS_PER_MONTH
        },
        written.saturating_mul(retention_hours) / HOURS_PER_MONTH,
        transfer,
        0,
    ]
}

/// Sums of the branch metrics over `[start, end)`, hour by hour.
fn branch_totals(v: &View, branch_id: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> [i64; 6] {
    let mut total = [0i64; 6];
    let now = v.now();
    let end = end.min(Granularity::Hourly.next(Granularity::Hourly.floor(now)));
    let Some(b) = v.branch(branch_id) else {
        return total;
    };
    if start >= end {
        return total;
    }
    let retention_hours = v.retention_hours(&b.project_id);
    // Skip the activity lookups when the branch had no compute activity at all.
    let active = b.active_seconds(now, start, end) > 0;
    let mut h = start;
    while h < end {
        let x = branch_hour(now, b, retention_hours, h, active);
        for (t, x) in total.iter_mut().zip(x) {
            *t += x;
        }
        h += TimeDelta::hours(1);
    }
    total
}

/// Project-only hourly metrics: (extra branch-hours, snapshot bytes-month).
fn project_only_totals(
    v: &View,
    project_id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> (i64, i64) {
    let now = v.now();
    let end = end.min(Granularity::Hourly.next(Granularity::Hourly.floor(now)));
    let branches: Vec<&BranchFacts> = v
        .project_branch_ids_between(project_id, start, end.max(start))
        .iter()
        .filter_map(|id| v.branch(id))
        .collect();
    let snapshots = v.snapshots_by_time(project_id);
    let mut next_snapshot = 0;
    let mut snap_bytes = 0;
    let mut extra = 0;
    let mut snap = 0;
    let mut h = start;
    while h < end {
        let e = h + TimeDelta::hours(1);
        let alive = branches
            .iter()
            .filter(|b| b.storage_byte_hours(now, h, e) > 0 || b.alive_in(h, e))
            .count() as i64;
        extra += (alive - INCLUDED_BRANCHES).max(0);
        while let Some((at, size)) = snapshots.get(next_snapshot) {
            if *at >= e {
                break;
            }
            snap_bytes += size;
            next_snapshot += 1;
        }
        snap += snap_bytes / HOURS_PER_MONTH;
        h = e;
    }
    (extra, snap)
}

/// The value of each requested v2 metric for a project over a timeframe.
fn project_v2_values(
    v: &View,
    project_id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    metrics: &[String],
) -> Vec<(String, i64)> {
    let mut sums = [0i64; 6];
    for b in v.project_branch_ids_between(project_id, start, end) {
        for (s, x) in sums.iter_mut().zip(branch_totals(v, &b, start, end)) {
            *s += x;
        }
    }
    let needs_project_only = metrics
        .iter()
        .any(|m| m == "extra_branches_month" || m == "snapshot_storage_bytes_month");
    let (extra, snap) = if needs_project_only {
        project_only_totals(v, project_id, start, end)
    } else {
        (0, 0)
    };
    metrics
        .iter()
        .map(|m| {
            let x = match m.as_str() {
                "extra_branches_month" => extra,
                "snapshot_storage_bytes_month" => snap,
                other => BRANCH_METRICS_V2
                    .iter()
                    .position(|x| *x == other)
                    .map(|i| sums[i])
                    .unwrap_or(0),
            };
            (m.clone(), x)
        })
        .collect()
}

fn branch_v2_values(
    v: &View,
    branch_id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    metrics: &[String],
) -> Vec<(String, i64)> {
    let t = branch_totals(v, branch_id, start, end);
    metrics
        .iter()
        .map(|m| {
            let x = BRANCH_METRICS_V2
                .iter()
                .position(|x| *x == m.as_str())
                .map(|i| t[i])
                .unwrap_or(0);
            (m.clone(), x)
        })
        .collect()
}

/// Legacy metric values of a set of projects over a timeframe.
fn legacy_values(
    v: &View,
    project_ids: &[String],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> BTreeMap<&'static str, i64> {
    let mut out: BTreeMap<&'static str, i64> = LEGACY_METRICS.iter().map(|m| (*m, 0)).collect();
    let now = v.now();
    let clipped_end = end.min(now);
    for p in project_ids {
        let branches = v.project_branch_ids_between(p, start, end);
        let mut byte_hours = 0;
        let mut cu = 0;
        let mut written = 0;
        for b in &branches {
            cu += branch_totals(v, b, start, end)[0];
            written += v.branch_written_bytes(b, start, end);
            let mut h = start;
            while h < end && h < now {
                byte_hours += v.branch_storage_byte_hours(b, h, h + TimeDelta::hours(1));
                h += TimeDelta::hours(1);
            }
        }
        // Size at the end of the timeframe: branches alive then.
        let size: i64 = branches
            .iter()
            .filter(|b| v.alive_in(b, clipped_end - TimeDelta::seconds(1), clipped_end))
            .filter_map(|b| v.branch(b).map(|x| x.logical_size))
            .sum();
        *out.entry("active_time_seconds").or_default() += v.project_active_seconds(p, start, end);
        *out.entry("compute_time_seconds").or_default() += cu;
        *out.entry("written_data_bytes").or_default() += written;
        *out.entry("synthetic_storage_size_bytes").or_default() += size;
        *out.entry("data_storage_bytes_hour").or_default() += byte_hours;
        *out.entry("logical_size_bytes").or_default() += size;
        *out.entry("logical_size_bytes_hour").or_default() += byte_hours;
    }
    out
}

/// A deterministic UUID-shaped id for a billing period.
fn period_id(scope: &str, start: DateTime<Utc>) -> String {
    // FNV-1a: stable across runs and platforms (unlike `DefaultHasher`).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in scope.bytes().chain(start.timestamp().to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let l = h.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        l >> 52,
        l & 0xffff_ffff_ffff
    )
}

/// Groups timeframes into billing periods (calendar months).
fn periods<T>(
    scope: &str,
    plan: &str,
    now: DateTime<Utc>,
    frames: &[(DateTime<Utc>, DateTime<Utc>)],
    mut consumption: impl FnMut(DateTime<Utc>, DateTime<Utc>) -> T,
) -> Vec<ConsumptionPeriod<T>> {
    let mut out: Vec<ConsumptionPeriod<T>> = Vec::new();
    for (s, e) in frames {
        let ps = Granularity::Monthly.floor(*s);
        if out.last().map(|p| p.period_start.as_str()) != Some(rfc3339(ps).as_str()) {
            let pe = Granularity::Monthly.next(ps);
            out.push(ConsumptionPeriod {
                period_id: period_id(scope, ps),
                period_plan: plan.to_string(),
                period_start: rfc3339(ps),
                period_end: (pe <= now).then(|| rfc3339(pe)),
                consumption: Vec::new(),
            });
        }
        if let Some(p) = out.last_mut() {
            p.consumption.push(consumption(*s, *e));
        }
    }
    out
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn v2_timeframe(s: DateTime<Utc>, e: DateTime<Utc>, values: Vec<(String, i64)>) -> V2Timeframe {
    V2Timeframe {
        timeframe_start: rfc3339(s),
        timeframe_end: rfc3339(e),
        metrics: values
            .into_iter()
            .map(|(metric_name, value)| MetricValue { metric_name, value })
            .collect(),
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
    let projects = computed
        .into_iter()
        .map(|(project_id, periods)| ProjectConsumption {
            project_id,
            periods,
        })
        .collect();
    Ok(Json(ProjectsConsumption {
        projects,
        pagination: pagination(next),
    })
    .into_response())
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
    let projects = computed
        .into_iter()
        .map(|(project_id, periods)| ProjectConsumption {
            project_id,
            periods,
        })
        .collect();
    Ok(Json(ProjectsConsumption {
        projects,
        pagination: pagination(next),
    })
    .into_response())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn rounding_and_timeframes() {
        let g = Granularity::Daily;
        assert_eq!(
            g.floor(t("2024-03-15T15:30:00Z")),
            t("2024-03-15T00:00:00Z")
        );
        assert_eq!(
            Granularity::Hourly.floor(t("2024-03-15T15:30:10Z")),
            t("2024-03-15T15:00:00Z")
        );
        assert_eq!(
            Granularity::Monthly.floor(t("2024-03-15T15:30:00Z")),
            t("2024-03-01T00:00:00Z")
        );
        let f = timeframes(
            t("2024-01-31T10:00:00Z"),
            t("2024-04-02T00:00:00Z"),
            Granularity::Monthly,
        );
        assert_eq!(
            f.iter().map(|x| rfc3339(x.0)).collect::<Vec<_>>(),
            [
                "2024-01-01T00:00:00Z",
                "2024-02-01T00:00:00Z",
                "2024-03-01T00:00:00Z"
            ]
        );
        assert_eq!(f[1].1, t("2024-03-01T00:00:00Z"));
        assert_eq!(
            timeframes(
                t("2024-05-01T10:20:00Z"),
                t("2024-05-01T13:00:00Z"),
                Granularity::Hourly
            )
            .len(),
            3
        );
    }

    #[test]
    fn retention_windows_give_406() {
        let now = t("2025-06-10T12:34:00Z");
        let ok = |f: &str, to: &str, g| check_range(t(f), t(to), g, now);
        assert!(ok(
            "2025-06-03T12:00:00Z",
            "2025-06-10T12:00:00Z",
            Granularity::Hourly
        )
        .is_ok());
        assert_eq!(
            ok(
                "2025-06-03T11:00:00Z",
                "2025-06-10T12:00:00Z",
                Granularity::Hourly
            )
            .unwrap_err()
            .status,
            StatusCode::NOT_ACCEPTABLE
        );
        assert!(ok(
            "2025-04-11T00:00:00Z",
            "2025-06-10T00:00:00Z",
            Granularity::Daily
        )
        .is_ok());
        assert_eq!(
            ok(
                "2025-04-10T00:00:00Z",
                "2025-06-10T00:00:00Z",
                Granularity::Daily
            )
            .unwrap_err()
            .status,
            StatusCode::NOT_ACCEPTABLE
        );
        assert!(ok(
            "2024-06-01T00:00:00Z",
            "2025-06-01T00:00:00Z",
            Granularity::Monthly
        )
        .is_ok());
        assert!(ok(
            "2024-05-31T00:00:00Z",
            "2025-06-01T00:00:00Z",
            Granularity::Monthly
        )
        .is_err());
        // Empty after rounding.
        assert!(ok(
            "2025-06-10T10:10:00Z",
            "2025-06-10T10:50:00Z",
            Granularity::Hourly
        )
        .is_err());
        // Before the document's history start.
        let old = check_range(
            t("2024-02-01T00:00:00Z"),
            t("2024-04-01T00:00:00Z"),
            Granularity::Monthly,
            t("2024-06-01T00:00:00Z"),
        );
        assert!(old.unwrap_err().message.contains("2024-03-01"));
    }

    #[test]
    fn future_to_is_406_and_timeframes_are_capped() {
        let now = t("2025-06-10T12:34:00Z");
        let from = t("2025-06-10T10:00:00Z");
        for g in [
            Granularity::Hourly,
            Granularity::Daily,
            Granularity::Monthly,
        ] {
            let e = check_range(from, t("2400-01-01T00:00:00Z"), g, now).unwrap_err();
            assert_eq!(e.status, StatusCode::NOT_ACCEPTABLE, "{g:?}");
            assert!(e.message.contains("future"), "{}", e.message);
        }
        // Up to the end of the current timeframe is fine; one more is not.
        assert!(check_range(from, t("2025-06-10T13:00:00Z"), Granularity::Hourly, now).is_ok());
        assert!(check_range(from, t("2025-06-10T13:59:59Z"), Granularity::Hourly, now).is_ok());
        assert!(check_range(from, t("2025-06-10T14:00:00Z"), Granularity::Hourly, now).is_err());
        assert!(check_range(
            t("2025-06-01T00:00:00Z"),
            t("2025-06-11T00:00:00Z"),
            Granularity::Daily,
            now
        )
        .is_ok());
        // Whatever the input, the enumeration stops at the cap.
        let f = timeframes(
            history_start(),
            t("2400-01-01T00:00:00Z"),
            Granularity::Hourly,
        );
        assert_eq!(f.len(), MAX_TIMEFRAMES);
        assert_eq!(f[0].0, history_start());
    }

    #[test]
    fn period_ids_are_stable_uuids() {
        let a = period_id("p-1", t("2024-03-01T00:00:00Z"));
        assert_eq!(a, period_id("p-1", t("2024-03-01T00:00:00Z")));
        assert_ne!(a, period_id("p-2", t("2024-03-01T00:00:00Z")));
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }
}
