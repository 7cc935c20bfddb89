//! `enforce_budget`: a monthly budget over the selected projects, its spend and projection,
//! and the thresholds' actions.
//!
//! **Spend** is priced consumption: the samples a `collect_consumption` job stored (its
//! granularity, hourly or daily), each multiplied by the price of its metric in that job's
//! price table. A sample belongs to the calendar month (in the budget's zone) in which its
//! period starts, and counts once complete (its period ended by "now").
//!
//! **Projection** (documented method): the run rate is the cost of the complete samples of
//! the last `projection_days` days of collected data, per hour (the window ends where the
//! collected data ends, and starts no earlier than the oldest stored sample); the projection
//! is the month-to-date spend plus that rate times the hours from the end of the collected
//! data (or the month's start, if later) to the month's end. Both are computed by
//! [`spend`], a pure function.
//!
//! **Thresholds.** When the month-to-date spend reaches a threshold's share of the limit,
//! its actions apply: `notify` once per month and threshold (a `budget` notification to the
//! `[[notify]]` sinks that take it, a warning in the log, a counter and a ledger row, through
//! [`notify`]); the cost actions on the selected projects'
//! endpoints, each recorded in the job's state with the previous value **before** the call
//! (`budget_changes/{project}`), and undone when the month rolls over in the budget's zone
//! or when no crossed threshold asks for it any more (the limit was raised, or the policy
//! changed). A value someone else changed since is left as it is and forgotten.
//!
//! The engine runs it like any kind: `max_actions` bounds a run, and the job is a dry run
//! unless it says `dry_run = false`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::calls::{wait, with_lock_retry};
use super::kind::{ActCx, JobKind, PendingRef, PlanCx, Resolution, StateView};
use super::ledger::{Action, ActionSpec, ResourceKind};
use super::plan::{JobEnv, PlanError, PlannedAction, ProjectPlan};
use super::scope::selected_projects;
use crate::config::{BudgetSpec, JobConfig};
use crate::neon::{
    ApiError, Branch, Endpoint, EndpointId, EndpointState, EndpointUpdate, Project, ProjectId,
};
use crate::store::ConsumptionSample;
use crate::telemetry::events::budget::format_percent;
use crate::telemetry::events::{BudgetEvaluated, BudgetNotice};

/// The `budget` label (and ledger resource) of a budget over all selected projects.
pub const ALL_PROJECTS: &str = "all";
/// With `per_project`, the gauges are exported for at most this many projects (those
/// nearest to or furthest over their limit), so the label stays bounded.
pub const MAX_PROJECT_BUDGETS_EXPORTED: usize = 50;
/// Neon's effective suspend timeout when `suspend_timeout_seconds` is 0.
pub const DEFAULT_SUSPEND_TIMEOUT_SECONDS: i64 = 300;

// ------------------------------------------------------------------ the pure computation

/// A calendar month in a zone, as UTC instants.
#[derive(Debug, Clone, PartialEq)]
pub struct Month {
    /// `YYYY-MM`.
    pub key: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The first instant of a local date in `tz` (midnight, or the first time after a gap).
fn start_of_day(tz: Tz, d: NaiveDate) -> DateTime<Utc> {
    let mut t = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    // A zone may skip midnight (a DST change at 00:00): the day starts at the first local
    // time that exists. Gaps are at most a few hours.
    for _ in 0..48 {
        if let Some(x) = tz.from_local_datetime(&t).earliest() {
            return x.with_timezone(&Utc);
        }
        t += chrono::Duration::minutes(30);
    }
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// The calendar month of `now` in `tz`.
pub fn month_of(tz: Tz, now: DateTime<Utc>) -> Month {
    let local = now.with_timezone(&tz).date_naive();
    let first = local.with_day(1).unwrap_or(local);
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(first);
    Month {
        key: format!("{:04}-{:02}", first.year(), first.month()),
        start: start_of_day(tz, first),
        end: start_of_day(tz, next),
    }
}

/// A budget's figures at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Spend {
    /// Month-to-date spend.
    pub spent: f64,
    /// Spend projected to the end of the month.
    pub projected: f64,
    /// Cost per hour over the projection window.
    pub rate_per_hour: f64,
    /// The end of the newest complete sample (`None`: no data).
    pub data_until: Option<DateTime<Utc>>,
}

fn hours(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 3_600_000.0
}

/// Month-to-date spend and projection (see the module's documentation for the method) of
/// `samples` (those of the budget's projects), priced by `prices` (a metric without a price
/// is not part of the spend: the policy refuses a consumption job with unpriced metrics, so
/// these are another job's), at `now`.
pub fn spend<'a>(
    samples: impl IntoIterator<Item = &'a ConsumptionSample>,
    prices: &BTreeMap<String, f64>,
    month: &Month,
    now: DateTime<Utc>,
    projection_days: u32,
) -> Spend {
    let priced: Vec<(&ConsumptionSample, f64)> = samples
        .into_iter()
        .filter(|s| s.timeframe_end <= now)
        .filter_map(|s| prices.get(&s.metric).map(|p| (s, p * s.value)))
        .collect();
    let spent: f64 = priced
        .iter()
        .filter(|(s, _)| s.timeframe_start >= month.start && s.timeframe_start < month.end)
        .map(|(_, c)| c)
        .sum();
    let data_until = priced.iter().map(|(s, _)| s.timeframe_end).max();
    let oldest = priced.iter().map(|(s, _)| s.timeframe_start).min();
    let rate_per_hour = match (data_until, oldest) {
        (Some(until), Some(oldest)) => {
            let from = (until - chrono::Duration::days(i64::from(projection_days))).max(oldest);
            let cost: f64 = priced
                .iter()
                .filter(|(s, _)| s.timeframe_start >= from)
                .map(|(_, c)| c)
                .sum();
            let h = hours(until - from);
            if h > 0.0 {
                cost / h
            } else {
                0.0
            }
        }
        _ => 0.0,
    };
    let from = data_until.map_or(month.start, |u| u.max(month.start));
    let left = hours(month.end - from).max(0.0);
    Spend {
        spent,
        projected: spent + rate_per_hour * left,
        rate_per_hour,
        data_until,
    }
}

/// Whether the spend reaches `percent` of `limit`.
pub fn crossed(spent: f64, limit: f64, percent: f64) -> bool {
    spent >= limit * percent / 100.0
}

// ------------------------------------------------------------------ state and actions

/// A setting the guard changes on an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lever {
    /// Suspend the compute (non-default branches only).
    Suspend,
    /// `autoscaling_limit_max_cu` (and the minimum with it, when higher).
    MaxCu,
    /// `suspend_timeout_seconds`.
    SuspendTimeout,
}

impl Lever {
    fn as_str(self) -> &'static str {
        match self {
            Lever::Suspend => "suspend",
            Lever::MaxCu => "max_cu",
            Lever::SuspendTimeout => "suspend_timeout",
        }
    }
}

/// An endpoint setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Setting {
    Active,
    Suspended,
    Cu { min: f64, max: f64 },
    SuspendTimeout { seconds: i64 },
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Setting::Active => f.write_str("active"),
            Setting::Suspended => f.write_str("suspended"),
            Setting::Cu { min, max } => write!(f, "autoscaling {min}-{max} CU"),
            Setting::SuspendTimeout { seconds } => {
                write!(f, "suspend_timeout_seconds {seconds}")
            }
        }
    }
}

/// A change the guard made (or is making) to an endpoint, with what to restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub endpoint: String,
    pub lever: Lever,
    /// The month (`YYYY-MM`, budget's zone) it was made for.
    pub month: String,
    /// The threshold (percent) that asked for it.
    pub threshold: f64,
    /// The value before the guard's first change.
    pub previous: Setting,
    /// The value the guard set.
    pub set: Setting,
}

fn change_key(endpoint: &str, lever: Lever) -> String {
    format!("{endpoint}/{}", lever.as_str())
}

/// What the guard remembers about a project (`budget_changes/{project}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetState {
    /// The changes in force, by `{endpoint}/{lever}`.
    #[serde(default)]
    pub changes: BTreeMap<String, Change>,
    /// Thresholds (percent) noticed, by month; only the newest month is kept. Kept in the
    /// state of the project whose budget it is (with one budget for all projects, the
    /// selected project with the smallest id).
    #[serde(default)]
    pub noticed: BTreeMap<String, Vec<f64>>,
}

/// A threshold notice.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The run giving it (the notification's `run_id`).
    pub run_id: crate::store::RunId,
    /// `all` or a project id.
    pub budget: String,
    pub month: String,
    /// The zone of the month.
    pub timezone: String,
    pub threshold: f64,
    pub spent: f64,
    pub projected: f64,
    pub limit: f64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BudgetAction {
    Notify(Notice),
    /// Make (or keep making) a change: the state records it before the call.
    Apply(Change),
    /// Put `previous` back (the call is made only for values a call can restore).
    Restore(Change),
}

/// The notice hook: what the `notify` action does. The `budget` notifications for the
/// job's sinks that take them are written to the outbox (fenced by the run's lease; their
/// ids are derived from the notice, so writing it again writes nothing: see
/// [`crate::notify::budget`]), then a warning in the log and
/// `neon_steward_budget_notices_total` (the ledger row is the engine's). When the outbox
/// cannot be written the action fails, nothing is recorded as noticed, and the next run
/// gives the notice again.
pub async fn notify(
    env: &JobEnv,
    job: &JobConfig,
    n: &Notice,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let crossing = crate::notify::budget::Crossing {
        budget: &n.budget,
        month: &n.month,
        timezone: &n.timezone,
        threshold_percent: n.threshold,
        spent: n.spent,
        projected: n.projected,
        limit: n.limit,
        currency: &n.currency,
    };
    let notes = crate::notify::budget::crossed(job, n.run_id, &crossing, now);
    if !notes.is_empty() {
        env.store
            .write_notices(n.run_id, &job.name, &[], &[], &notes)
            .await
            .map_err(|e| ApiError::Outbox(e.to_string()))?;
    }
    BudgetNotice {
        job: &job.name,
        budget: &n.budget,
        month: &n.month,
        threshold_percent: n.threshold,
        spent: n.spent,
        projected: n.projected,
        limit: n.limit,
        currency: &n.currency,
        sinks: notes.len(),
    }
    .emit();
    Ok(())
}

// ------------------------------------------------------------------ the kind

/// What one run computes once for every project: the month and each budget's figures.
struct Overview {
    month: Month,
    /// One budget for all projects: its figures and the project whose state keeps its
    /// notices.
    total: Option<(Spend, ProjectId)>,
    /// Per project (`per_project`).
    per_project: HashMap<String, Spend>,
}

/// `enforce_budget`, compiled for one run.
pub struct Budget<'a> {
    job: &'a JobConfig,
    spec: &'a BudgetSpec,
    overview: OnceCell<Arc<Overview>>,
}

impl<'a> Budget<'a> {
    pub fn new(job: &'a JobConfig, spec: &'a BudgetSpec) -> Self {
        Budget {
            job,
            spec,
            overview: OnceCell::new(),
        }
    }

    /// Reads the stored samples once per run, computes every budget and exports the gauges.
    async fn overview(&self, cx: &PlanCx<'_>) -> Result<Arc<Overview>, PlanError> {
        self.overview
            .get_or_try_init(|| async {
                let now = cx.ctx.now;
                let spec = self.spec;
                let month = month_of(spec.timezone, now);
                let projects = selected_projects(&cx.env.client, self.job)
                    .await
                    .map_err(|super::scope::ScopeError::Projects(e)| PlanError::Api(e))?;
                let ids: HashSet<&str> = projects.iter().map(|p| p.id.as_str()).collect();
                // The month and the projection window (with two days of slack for data
                // that lags behind "now").
                let since = month
                    .start
                    .min(now - chrono::Duration::days(i64::from(spec.projection_days) + 2));
                let samples = cx
                    .env
                    .store
                    .list_consumption(spec.granularity.as_str(), since)
                    .await?;
                let mut by_project: HashMap<&str, Vec<&ConsumptionSample>> = HashMap::new();
                for s in samples
                    .iter()
                    .filter(|s| ids.contains(s.project_id.as_str()))
                {
                    by_project.entry(s.project_id.as_str()).or_default().push(s);
                }
                let figures = |s: &[&ConsumptionSample]| {
                    spend(
                        s.iter().copied(),
                        &spec.prices,
                        &month,
                        now,
                        spec.projection_days,
                    )
                };
                let mut exported = HashSet::new();
                let mut evaluated = |budget: &str, s: &Spend| {
                    BudgetEvaluated {
                        job: &self.job.name,
                        budget,
                        currency: &spec.currency,
                        month: &month.key,
                        spent: s.spent,
                        projected: s.projected,
                        limit: spec.limit,
                    }
                    .emit();
                    exported.insert((budget.to_string(), spec.currency.clone()));
                };
                let mut per_project = HashMap::new();
                let mut total = None;
                if spec.per_project {
                    for p in &projects {
                        let s = figures(by_project.get(p.id.as_str()).map_or(&[], |v| v));
                        per_project.insert(p.id.to_string(), s);
                    }
                    let mut ranked: Vec<(&String, &Spend)> = per_project.iter().collect();
                    ranked.sort_by(|a, b| {
                        b.1.spent
                            .total_cmp(&a.1.spent)
                            .then(b.1.projected.total_cmp(&a.1.projected))
                            .then(a.0.cmp(b.0))
                    });
                    for (p, s) in ranked.into_iter().take(MAX_PROJECT_BUDGETS_EXPORTED) {
                        evaluated(p, s);
                    }
                } else {
                    let all: Vec<&ConsumptionSample> =
                        by_project.values().flatten().copied().collect();
                    let s = figures(&all);
                    evaluated(ALL_PROJECTS, &s);
                    if let Some(anchor) = projects.iter().map(|p| &p.id).min() {
                        total = Some((s, anchor.clone()));
                    }
                }
                BudgetEvaluated::retain(&self.job.name, exported);
                Ok(Arc::new(Overview {
                    month,
                    total,
                    per_project,
                }))
            })
            .await
            .cloned()
    }
}

/// What the crossed thresholds ask of the endpoints: each lever's target and the threshold
/// (percent) that set it (the lowest crossed threshold asking for suspension; the lowest
/// value asked for the others).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wanted {
    pub suspend: Option<f64>,
    pub max_cu: Option<(f64, f64)>,
    pub suspend_timeout: Option<(i64, f64)>,
}

/// The levers the thresholds crossed by `spent` ask for.
pub fn wanted(spec: &BudgetSpec, spent: f64) -> Wanted {
    let mut w = Wanted::default();
    for t in spec
        .thresholds
        .iter()
        .filter(|t| crossed(spent, spec.limit, t.percent))
    {
        if t.suspend_computes && w.suspend.is_none() {
            w.suspend = Some(t.percent);
        }
        if let Some(cu) = t.max_cu {
            if w.max_cu.is_none_or(|(v, _)| cu < v) {
                w.max_cu = Some((cu, t.percent));
            }
        }
        if let Some(s) = t.suspend_timeout_seconds {
            if w.suspend_timeout.is_none_or(|(v, _)| s < v) {
                w.suspend_timeout = Some((s, t.percent));
            }
        }
    }
    w
}

/// The suspend timeout in effect (`None`: never suspends).
fn effective_timeout(seconds: i64) -> Option<i64> {
    match seconds {
        s if s < 0 => None,
        0 => Some(DEFAULT_SUSPEND_TIMEOUT_SECONDS),
        s => Some(s),
    }
}

/// The endpoint's current value of a lever.
fn current(e: &Endpoint, lever: Lever) -> Setting {
    match lever {
        Lever::Suspend => match e.current_state {
            EndpointState::Active => Setting::Active,
            _ => Setting::Suspended,
        },
        Lever::MaxCu => Setting::Cu {
            min: e.autoscaling_limit_min_cu,
            max: e.autoscaling_limit_max_cu,
        },
        Lever::SuspendTimeout => Setting::SuspendTimeout {
            seconds: e.suspend_timeout_seconds,
        },
    }
}

/// What one endpoint gets, from what is wanted, what it is now, and what the guard changed
/// on it before (pure).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Apply(Change),
    Restore(Change),
    /// The recorded change needs no call to undo, or the value was changed by someone else
    /// since: the record is dropped (with the reason, for the ledger).
    Forget(Change, String),
}

/// Decides one lever of one endpoint. `on_default_branch`: the endpoint is the compute of
/// the project's default branch (never suspended).
pub fn decide(
    e: &Endpoint,
    on_default_branch: bool,
    lever: Lever,
    wanted: &Wanted,
    recorded: Option<&Change>,
    month: &str,
) -> Option<Decision> {
    let now = current(e, lever);
    // What the thresholds ask for now, and the threshold asking.
    let target: Option<(Setting, f64)> = match lever {
        Lever::Suspend => wanted
            .suspend
            .filter(|_| !on_default_branch)
            .map(|t| (Setting::Suspended, t)),
        Lever::MaxCu => wanted.max_cu.map(|(cu, t)| {
            (
                Setting::Cu {
                    min: e.autoscaling_limit_min_cu.min(cu),
                    max: cu,
                },
                t,
            )
        }),
        Lever::SuspendTimeout => wanted
            .suspend_timeout
            .map(|(s, t)| (Setting::SuspendTimeout { seconds: s }, t)),
    };
    if let Some(r) = recorded {
        let rolled = r.month != month;
        if rolled || target.is_none() {
            let why = if rolled {
                format!("the month {} is over", r.month)
            } else {
                "no crossed threshold asks for it now".to_string()
            };
            if lever == Lever::Suspend {
                return Some(Decision::Forget(
                    r.clone(),
                    format!("{why}; nothing to undo: a suspended compute starts again on its next connection"),
                ));
            }
            if now == r.previous && now != r.set {
                // A restore whose answer was lost (the daemon died or lost the store after
                // the call), or an intent whose call never happened: not someone else's
                // change, and nothing left to do.
                return Some(Decision::Forget(
                    r.clone(),
                    format!("{why}; already {now}, the value before this job's change: nothing to restore"),
                ));
            }
            if now != r.set {
                return Some(Decision::Forget(
                    r.clone(),
                    format!("{why}; not restored: the value is now {now}, not the {} this job set, so it was changed since and is left as it is", r.set),
                ));
            }
            return Some(Decision::Restore(r.clone()));
        }
    }
    let (set, threshold) = target?;
    let needed = match (lever, &now, &set) {
        (Lever::Suspend, Setting::Active, _) => !e.disabled && e.pending_state.is_none(),
        (Lever::MaxCu, Setting::Cu { max, .. }, Setting::Cu { max: to, .. }) => max > to,
        (
            Lever::SuspendTimeout,
            Setting::SuspendTimeout { seconds },
            Setting::SuspendTimeout { seconds: to },
        ) => effective_timeout(*seconds).is_none_or(|s| s > *to),
        _ => false,
    };
    if !needed {
        return None;
    }
    Some(Decision::Apply(Change {
        endpoint: e.id.to_string(),
        lever,
        month: month.to_string(),
        threshold,
        // The value before the guard's first change, not its own.
        previous: recorded.map_or(now, |r| r.previous),
        set,
    }))
}

fn action_name(a: &BudgetAction) -> Action {
    match a {
        BudgetAction::Notify(_) => Action::BudgetNotify,
        BudgetAction::Apply(c) => match c.lever {
            Lever::Suspend => Action::BudgetSuspendCompute,
            Lever::MaxCu => Action::BudgetLowerMaxCu,
            Lever::SuspendTimeout => Action::BudgetShortenSuspendTimeout,
        },
        BudgetAction::Restore(c) => match c.lever {
            Lever::Suspend => Action::BudgetRestoreCompute,
            Lever::MaxCu => Action::BudgetRestoreMaxCu,
            Lever::SuspendTimeout => Action::BudgetRestoreSuspendTimeout,
        },
    }
}

impl JobKind for Budget<'_> {
    type Action = BudgetAction;
    type Done = ();
    type State = BudgetState;
    const STATE_KEY: &'static str = "budget_changes";
    const LEDGER_ACTIONS: &'static [Action] = &[
        Action::BudgetNotify,
        Action::BudgetSuspendCompute,
        Action::BudgetLowerMaxCu,
        Action::BudgetShortenSuspendTimeout,
        Action::BudgetRestoreCompute,
        Action::BudgetRestoreMaxCu,
        Action::BudgetRestoreSuspendTimeout,
    ];

    async fn plan_project(
        &self,
        cx: &PlanCx<'_>,
        project: &Project,
        state: StateView<'_, BudgetState>,
    ) -> Result<ProjectPlan<BudgetAction>, PlanError> {
        let ov = self.overview(cx).await?;
        Ok(plan(cx, self.job, self.spec, &ov, project, state).await?)
    }

    fn is_destructive(action: &BudgetAction) -> bool {
        matches!(action, BudgetAction::Apply(c) if c.lever == Lever::Suspend)
    }

    fn intend(&self, state: &mut BudgetState, action: &BudgetAction) {
        // Before the call: the previous value is known if the daemon dies during it. A
        // change already recorded keeps its previous value (the one before the guard).
        if let BudgetAction::Apply(c) = action {
            let key = change_key(&c.endpoint, c.lever);
            let previous = state.changes.get(&key).map_or(c.previous, |r| r.previous);
            let mut c = c.clone();
            c.previous = previous;
            state.changes.insert(key, c);
        }
    }

    fn record(&self, state: &mut BudgetState, action: &BudgetAction, _: &()) {
        match action {
            BudgetAction::Restore(c) => {
                state.changes.remove(&change_key(&c.endpoint, c.lever));
            }
            BudgetAction::Notify(n) => {
                state.noticed.retain(|m, _| m >= &n.month);
                let seen = state.noticed.entry(n.month.clone()).or_default();
                if !seen.contains(&n.threshold) {
                    seen.push(n.threshold);
                }
            }
            BudgetAction::Apply(_) => {}
        }
    }

    async fn verify(
        &self,
        cx: &ActCx<'_>,
        action: &BudgetAction,
    ) -> Result<Option<String>, ApiError> {
        // A restore puts the old value back only over the value this job set.
        let BudgetAction::Restore(c) = action else {
            return Ok(None);
        };
        let e = match cx
            .env
            .client
            .get_endpoint(cx.project, &EndpointId::from(c.endpoint.as_str()))
            .await
        {
            Ok(e) => e,
            Err(e) if e.is_not_found() => {
                return Ok(Some("not restored: the endpoint no longer exists".into()))
            }
            Err(e) => return Err(e),
        };
        let now = current(&e, c.lever);
        Ok((now != c.set).then(|| {
            format!(
                "not restored: the value is now {now}, not the {} this job set",
                c.set
            )
        }))
    }

    async fn perform(&self, cx: &ActCx<'_>, action: &BudgetAction) -> Result<(), ApiError> {
        let (env, project, client) = (cx.env, cx.project, &cx.env.client);
        let (endpoint, update) = match action {
            BudgetAction::Notify(n) => return notify(env, self.job, n, cx.now()).await,
            BudgetAction::Apply(c) if c.lever == Lever::Suspend => {
                let endpoint = EndpointId::from(c.endpoint.as_str());
                let (_, ops) =
                    with_lock_retry(cx, || client.suspend_endpoint(project, &endpoint)).await?;
                return wait(env, project, &ops).await;
            }
            BudgetAction::Apply(c) => (&c.endpoint, update_to(c.set)),
            BudgetAction::Restore(c) => (&c.endpoint, update_to(c.previous)),
        };
        let endpoint = EndpointId::from(endpoint.as_str());
        let (_, ops) =
            with_lock_retry(cx, || client.update_endpoint(project, &endpoint, &update)).await?;
        wait(env, project, &ops).await
    }

    fn detail(_: &()) -> Option<String> {
        None
    }

    async fn check_outcome(env: &JobEnv, p: &PendingRef<'_>) -> Result<Resolution, ApiError> {
        if p.action == Action::BudgetNotify {
            return Ok(Resolution::unknown(
                "a notice leaves nothing in Neon to check; it may not have been given (the next run gives it again, and a notification already in the outbox is not written twice)",
            ));
        }
        let e = match env
            .client
            .get_endpoint(
                &ProjectId::from(p.project_id),
                &EndpointId::from(p.resource_id),
            )
            .await
        {
            Ok(e) => e,
            Err(e) if e.is_not_found() => {
                return Ok(Resolution::unknown("the endpoint no longer exists"))
            }
            Err(e) => return Err(e),
        };
        Ok(match p.action {
            Action::BudgetSuspendCompute if e.current_state == EndpointState::Idle => {
                Resolution::succeeded("the endpoint is suspended")
            }
            _ => Resolution::unknown(format!(
                "the endpoint now has {}, {} and is {}; the ledger row says what was asked",
                current(&e, Lever::MaxCu),
                current(&e, Lever::SuspendTimeout),
                e.current_state.as_str()
            )),
        })
    }
}

/// The PATCH that sets a value.
fn update_to(s: Setting) -> EndpointUpdate {
    match s {
        Setting::Cu { min, max } => EndpointUpdate {
            autoscaling_limit_min_cu: Some(min),
            autoscaling_limit_max_cu: Some(max),
            ..Default::default()
        },
        Setting::SuspendTimeout { seconds } => EndpointUpdate {
            suspend_timeout_seconds: Some(seconds),
            ..Default::default()
        },
        Setting::Active | Setting::Suspended => EndpointUpdate::default(),
    }
}

fn money(v: f64, currency: &str) -> String {
    format!("{v:.2} {currency}")
}

async fn plan(
    cx: &PlanCx<'_>,
    job: &JobConfig,
    spec: &BudgetSpec,
    ov: &Overview,
    project: &Project,
    state: StateView<'_, BudgetState>,
) -> Result<ProjectPlan<BudgetAction>, ApiError> {
    let env = cx.env;
    let mut out = ProjectPlan::new(project.id.clone());
    let month = &ov.month;
    // This project's budget, and whether its notices are kept here.
    let (figures, budget, notices_here) = if spec.per_project {
        match ov.per_project.get(project.id.as_str()) {
            Some(s) => (s.clone(), project.id.to_string(), true),
            None => return Ok(out),
        }
    } else {
        match &ov.total {
            Some((s, anchor)) => (s.clone(), ALL_PROJECTS.to_string(), *anchor == project.id),
            None => return Ok(out),
        }
    };
    let state = match state {
        Ok(s) => s,
        Err(e) => {
            // Without the record nothing can be restored nor changed (its previous value
            // could not be kept): that fails, recorded; nothing else is done here.
            out.failures.push((
                ActionSpec {
                    resource_kind: ResourceKind::Project,
                    resource_id: project.id.to_string(),
                    resource_name: Some(project.name.clone()),
                    project_id: Some(project.id.to_string()),
                    action: Action::BudgetLowerMaxCu,
                    rule: Some("budget".into()),
                    reason: "reading the changes this job made; nothing is changed or restored in this project this run".into(),
                },
                e.to_string(),
            ));
            return Ok(out);
        }
    };
    let pct = 100.0 * figures.spent / spec.limit;
    let situation = format!(
        "month-to-date spend {} is {:.1}% of the {} budget for {} ({}), projected {} by the month's end",
        money(figures.spent, &spec.currency),
        pct,
        money(spec.limit, &spec.currency),
        month.key,
        spec.timezone,
        money(figures.projected, &spec.currency)
    );
    // Notices of this month's crossed thresholds, once each.
    if notices_here {
        let seen = state.noticed.get(&month.key).cloned().unwrap_or_default();
        for t in spec
            .thresholds
            .iter()
            .filter(|t| t.notify && crossed(figures.spent, spec.limit, t.percent))
            .filter(|t| !seen.contains(&t.percent))
        {
            out.actions.push(PlannedAction::new(
                ActionSpec {
                    resource_kind: ResourceKind::Budget,
                    resource_id: budget.clone(),
                    resource_name: Some(job.name.clone()),
                    project_id: Some(project.id.to_string()),
                    action: Action::BudgetNotify,
                    rule: Some(format!("threshold {}%", format_percent(t.percent))),
                    reason: situation.clone(),
                },
                BudgetAction::Notify(Notice {
                    run_id: cx.ctx.run_id,
                    budget: budget.clone(),
                    month: month.key.clone(),
                    timezone: spec.timezone.to_string(),
                    threshold: t.percent,
                    spent: figures.spent,
                    projected: figures.projected,
                    limit: spec.limit,
                    currency: spec.currency.clone(),
                }),
            ));
        }
    }
    let want = wanted(spec, figures.spent);
    if want == Wanted::default() && state.changes.is_empty() {
        return Ok(out);
    }
    let endpoints = env.client.list_endpoints(&project.id).await?;
    let default_branch: BTreeSet<String> = if want.suspend.is_some() {
        let branches: Vec<Branch> = env.client.list_branches(&project.id).try_collect().await?;
        branches
            .into_iter()
            .filter(|b| b.default)
            .map(|b| b.id.to_string())
            .collect()
    } else {
        BTreeSet::new()
    };
    // Records of endpoints that no longer exist are dropped.
    let present: HashSet<&str> = endpoints.iter().map(|e| e.id.as_str()).collect();
    state
        .changes
        .retain(|_, c| present.contains(c.endpoint.as_str()));
    out.matched = endpoints.len();
    for e in &endpoints {
        let on_default = default_branch.contains(e.branch_id.as_str());
        for lever in [Lever::Suspend, Lever::MaxCu, Lever::SuspendTimeout] {
            let key = change_key(e.id.as_str(), lever);
            let recorded = state.changes.get(&key).cloned();
            let Some(d) = decide(e, on_default, lever, &want, recorded.as_ref(), &month.key) else {
                continue;
            };
            let spec_for = |a: &BudgetAction, rule: String, reason: String| ActionSpec {
                resource_kind: ResourceKind::Endpoint,
                resource_id: e.id.to_string(),
                resource_name: None,
                project_id: Some(project.id.to_string()),
                action: action_name(a),
                rule: Some(rule),
                reason,
            };
            match d {
                Decision::Apply(c) => {
                    let reason = format!(
                        "{situation}; {} -> {} (the previous value is recorded and restored when the month ends or no crossed threshold asks for it)",
                        c.previous, c.set
                    );
                    let a = BudgetAction::Apply(c.clone());
                    let rule = format!("threshold {}%", format_percent(c.threshold));
                    out.actions
                        .push(PlannedAction::new(spec_for(&a, rule, reason), a));
                }
                Decision::Restore(c) => {
                    let why = if c.month != month.key {
                        format!("the month {} is over", c.month)
                    } else {
                        format!("no crossed threshold asks for it now ({situation})")
                    };
                    let reason = format!("{why}; {} -> {} (restored)", c.set, c.previous);
                    let a = BudgetAction::Restore(c);
                    out.actions.push(PlannedAction::new(
                        spec_for(&a, "restore".into(), reason),
                        a,
                    ));
                }
                Decision::Forget(c, why) => {
                    state.changes.remove(&key);
                    let a = BudgetAction::Restore(c);
                    out.skips.push(spec_for(&a, "restore".into(), why));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
