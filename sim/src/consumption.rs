//! Consumption history's model: the values of `/consumption_history/v2/projects`,
//! `/consumption_history/v2/branches` and the legacy `/consumption_history/projects` and
//! `/consumption_history/account`, and their rules (the routes are in `routes::consumption`).
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

use axum::http::StatusCode;
use chrono::{DateTime, Datelike, Months, TimeDelta, TimeZone, Timelike, Utc};

use crate::consumption_view::{BranchFacts, View};
use crate::error::ApiError;
use crate::state::TRANSFER_BYTES_PER_ACTIVE_SECOND;
use crate::wire::{ConsumptionPeriod, MetricValue, V2Timeframe};

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
pub(crate) const LEGACY_REQUIRED: &[&str] = &[
    "active_time_seconds",
    "compute_time_seconds",
    "written_data_bytes",
    "synthetic_storage_size_bytes",
];

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
pub(crate) fn project_v2_values(
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

pub(crate) fn branch_v2_values(
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
pub(crate) fn legacy_values(
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
pub(crate) fn periods<T>(
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

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(crate) fn v2_timeframe(
    s: DateTime<Utc>,
    e: DateTime<Utc>,
    values: Vec<(String, i64)>,
) -> V2Timeframe {
    V2Timeframe {
        timeframe_start: rfc3339(s),
        timeframe_end: rfc3339(e),
        metrics: values
            .into_iter()
            .map(|(metric_name, value)| MetricValue { metric_name, value })
            .collect(),
    }
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
