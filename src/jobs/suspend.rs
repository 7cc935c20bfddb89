//! `suspend_computes`: the per-endpoint decision.
//!
//! The job lists endpoints, applies the endpoint selector and evaluates the calendar windows
//! itself; this module decides, from those facts, whether to suspend, to skip (and record
//! why), to resume, or to leave the endpoint alone.
//!
//! With both `idle_for` and windows configured an endpoint is suspended only when it is
//! inside a window **and** idle long enough: combining them narrows, which is the safe
//! reading ("suspend idle computes at night"). With one of them, that one decides.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use super::calls::{wait, with_lock_retry};
use super::kind::{ActCx, JobKind, PendingRef, PlanCx, Resolution, StateView};
use super::ledger::{Action, ActionSpec, ResourceKind};
use super::plan::{JobEnv, PlanError, PlannedAction, ProjectPlan};
use super::saved::endpoint_facts;
use super::select::{age, human_duration, EndpointFacts, EndpointSelector, Selection, Why};
use crate::config::{Exclusion, ExclusionTarget, JobConfig, SuspendSpec};
use crate::neon::{ApiError, Branch, BranchId, EndpointId, EndpointState, EndpointType, Project};

/// The endpoints of a project this job suspended because of a window (endpoint ids): only
/// those are started again when the window ends.
pub type SuspendedByWindow = BTreeSet<String>;

/// What a suspend job does to an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum SuspendAction {
    Suspend {
        endpoint: EndpointId,
        /// Suspended because of a window: remembered, to be started when it ends.
        by_window: bool,
        /// The endpoint's branch (id, and name when listed): a keep of the branch holds
        /// its computes too.
        branch: BranchId,
        branch_name: Option<String>,
    },
    /// Start an endpoint this job suspended for a window that has ended.
    Start(EndpointId),
}

/// `suspend_computes`, compiled for one run.
pub struct Suspend<'a> {
    job: &'a JobConfig,
    spec: &'a SuspendSpec,
}

impl<'a> Suspend<'a> {
    pub fn new(job: &'a JobConfig, spec: &'a SuspendSpec) -> Self {
        Suspend { job, spec }
    }
}

impl JobKind for Suspend<'_> {
    type Action = SuspendAction;
    type Done = ();
    type State = SuspendedByWindow;
    const STATE_KEY: &'static str = "suspended_by_window";
    const LEDGER_ACTIONS: &'static [Action] = &[Action::SuspendEndpoint, Action::StartEndpoint];

    /// Only a job that resumes needs to remember what it suspended.
    fn keeps_state(&self) -> bool {
        self.spec.resume
    }

    async fn plan_project(
        &self,
        cx: &PlanCx<'_>,
        project: &Project,
        state: StateView<'_, SuspendedByWindow>,
    ) -> Result<ProjectPlan<SuspendAction>, PlanError> {
        plan(cx, self.job, self.spec, project, state).await
    }

    fn is_destructive(action: &SuspendAction) -> bool {
        matches!(action, SuspendAction::Suspend { .. })
    }

    /// `notice` applies to window suspensions only (an idle endpoint's is not announced).
    fn under_notice(action: &SuspendAction) -> bool {
        matches!(
            action,
            SuspendAction::Suspend {
                by_window: true,
                ..
            }
        )
    }

    /// A kept branch's computes are not suspended either.
    fn on_branch(action: &SuspendAction) -> Option<(&str, Option<&str>)> {
        match action {
            SuspendAction::Suspend {
                branch,
                branch_name,
                ..
            } => Some((branch.as_str(), branch_name.as_deref())),
            SuspendAction::Start(_) => None,
        }
    }

    fn intend(&self, state: &mut SuspendedByWindow, action: &SuspendAction) {
        // Before the call: an endpoint suspended by a daemon that died during the call is
        // still started when its window ends. If the call fails the id stays; starting an
        // endpoint that is already active changes nothing.
        if let SuspendAction::Suspend {
            endpoint,
            by_window: true,
            ..
        } = action
        {
            state.insert(endpoint.to_string());
        }
    }

    fn record(&self, state: &mut SuspendedByWindow, action: &SuspendAction, _: &()) {
        if let SuspendAction::Start(e) = action {
            state.remove(e.as_str());
        }
    }

    async fn perform(&self, cx: &ActCx<'_>, action: &SuspendAction) -> Result<(), ApiError> {
        let (env, project, c) = (cx.env, cx.project, &cx.env.client);
        let (_, ops) = match action {
            SuspendAction::Suspend { endpoint, .. } => {
                with_lock_retry(cx, || c.suspend_endpoint(project, endpoint)).await?
            }
            SuspendAction::Start(e) => with_lock_retry(cx, || c.start_endpoint(project, e)).await?,
        };
        wait(env, project, &ops).await
    }

    fn detail(_: &()) -> Option<String> {
        None
    }

    async fn check_outcome(env: &JobEnv, p: &PendingRef<'_>) -> Result<Resolution, ApiError> {
        let endpoint = match env
            .client
            .get_endpoint(
                &crate::neon::ProjectId::from(p.project_id),
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
        let state = endpoint.current_state.as_str().to_string();
        Ok(match (p.action, &endpoint.current_state) {
            (Action::SuspendEndpoint, EndpointState::Idle) => {
                Resolution::succeeded("the endpoint is suspended")
            }
            (Action::StartEndpoint, EndpointState::Active) => {
                Resolution::succeeded("the endpoint is active")
            }
            // Traffic wakes a suspended endpoint, and an idle one suspends itself: the state
            // now does not tell what the call did.
            _ => Resolution::unknown(format!(
                "the endpoint is {state} now, which does not tell whether the call took effect"
            )),
        })
    }
}

async fn plan(
    cx: &PlanCx<'_>,
    job: &JobConfig,
    spec: &SuspendSpec,
    project: &Project,
    state: StateView<'_, SuspendedByWindow>,
) -> Result<ProjectPlan<SuspendAction>, PlanError> {
    let (env, ctx) = (cx.env, cx.ctx);
    let mut out = ProjectPlan::new(project.id.clone());
    if spec.exclude_until.is_some_and(|until| ctx.now < until) {
        return Ok(out);
    }
    let endpoints = env.client.list_endpoints(&project.id).await?;
    let sel = &job.selectors.endpoints;
    // Branch names are listed only when something needs them (below): otherwise no branch
    // is listed, and the ledger names an endpoint's branch only when they were.
    // Exclusions that still hold at this run (an expired one is as if absent).
    let exclusions: Vec<&Exclusion> = spec
        .exclusions
        .iter()
        .filter(|x| ctx.now < x.until)
        .collect();
    // A keep may name a branch by its name (a kept branch's computes are not suspended),
    // and a notice says how to keep an endpoint's branch by name: those need the names too.
    let mut needs_names = !sel.branches.is_empty()
        || !sel.exclude_branches.is_empty()
        || exclusions
            .iter()
            .any(|x| matches!(x.target, ExclusionTarget::Branch(_)))
        || job.notice.is_some();
    if !needs_names {
        needs_names = cx.keeps().await?.iter().any(|k| {
            k.holds_at(ctx.now) && (k.project == project.id.as_str() || k.project == project.name)
        });
    }
    let names: Option<HashMap<String, String>> = if needs_names {
        Some(branch_names(env, project).await?)
    } else {
        None
    };
    // No listing of the project's operations: an endpoint Neon is changing says so in its
    // `pending_state`, and a call made while an operation of the project runs is answered
    // 423, which `calls::with_lock_retry` waits out before calling again (a plan's listing
    // of operations was as old as the plan anyway).
    // Without the record nothing can be resumed this run: that part fails (recorded), the
    // suspending goes on.
    // Without the record nothing can be resumed this run, and nothing suspended for a
    // window (it could never be resumed): those parts fail (recorded), the rest goes on.
    let mut unrecordable: Option<String> = None;
    let suspended: SuspendedByWindow = match state {
        Ok(s) => s.clone(),
        Err(e) => {
            let e = e.to_string();
            tracing::warn!(job = %job.name, project = %project.id, error = %e, "cannot read which endpoints this job suspended; not resuming any, nor suspending any for a window, this run");
            out.failures.push((
                ActionSpec {
                    resource_kind: ResourceKind::Project,
                    resource_id: project.id.to_string(),
                    resource_name: Some(project.name.clone()),
                    project_id: Some(project.id.to_string()),
                    action: Action::StartEndpoint,
                    rule: Some("resume".into()),
                    reason: "reading which endpoints this job suspended; none resumed in this project this run".into(),
                },
                e.clone(),
            ));
            unrecordable = Some(e);
            BTreeSet::new()
        }
    };
    let selector = EndpointSelector {
        kinds: sel.endpoint_type.into_iter().collect(),
        branch_names: sel.branches.compiled().to_vec(),
        exclude_ids: sel.exclude_ids.clone(),
        exclude_branch_names: sel.exclude_branches.compiled().to_vec(),
        ..Default::default()
    };
    let rules = SuspendRules {
        idle_for: spec.idle_for,
        has_windows: !spec.windows.is_empty(),
        resume: spec.resume,
    };
    let window = spec
        .windows
        .iter()
        .find(|w| w.contains(ctx.now))
        .map(|w| w.source.as_str());
    let mut decided = Vec::new();
    for e in &endpoints {
        let branch_name = names
            .as_ref()
            .and_then(|n| n.get(e.branch_id.as_str()))
            .map(String::as_str)
            .unwrap_or("");
        let facts = EndpointFacts {
            id: e.id.as_str(),
            kind: e.endpoint_type.into(),
            branch_id: e.branch_id.as_str(),
            branch_name,
        };
        // An excluded endpoint is still decided on, so that what the job would have done to
        // it is recorded as skipped with the exclusion as the reason.
        let excluded = match selector.select(&facts) {
            Selection::Selected(_) => exclusions
                .iter()
                .find(|x| x.covers(ctx.now, project.id.as_str(), e.id.as_str(), branch_name))
                .map(|x| Why::new("exclusions", x.describe())),
            Selection::Excluded(why) => Some(why),
            Selection::NotSelected => continue,
        };
        if excluded.is_none() {
            out.matched += 1;
        }
        let now_facts = EndpointNow {
            active: e.current_state == EndpointState::Active,
            idle: e.current_state == EndpointState::Idle,
            disabled: e.disabled,
            operation_in_progress: e.pending_state.is_some(),
            last_active: e.last_active,
            window,
            suspended_by_window: suspended.contains(e.id.as_str()),
            excluded: excluded.as_ref(),
        };
        match decide(ctx.now, &rules, &now_facts) {
            SuspendDecision::Leave => {}
            d => decided.push((e, d)),
        }
    }
    for (e, decision) in decided {
        let branch_name = names
            .as_ref()
            .and_then(|n| n.get(e.branch_id.as_str()))
            .cloned();
        let spec_for = |action: Action, why: Why| ActionSpec {
            resource_kind: ResourceKind::Endpoint,
            resource_id: e.id.to_string(),
            resource_name: branch_name.clone(),
            project_id: Some(project.id.to_string()),
            action,
            rule: Some(why.rule),
            reason: why.reason,
        };
        match decision {
            SuspendDecision::Suspend(why) => {
                let by_window = why.rule.contains("window");
                match &unrecordable {
                    Some(err) if by_window => {
                        let mut spec = spec_for(Action::SuspendEndpoint, why);
                        spec.reason = format!(
                            "{}; not suspended: which endpoints this job suspended cannot be \
                             read, so it could not be started again when the window ends",
                            spec.reason
                        );
                        out.failures.push((spec, err.clone()));
                    }
                    _ => out.actions.push(
                        PlannedAction::new(
                            spec_for(Action::SuspendEndpoint, why),
                            SuspendAction::Suspend {
                                endpoint: e.id.clone(),
                                by_window,
                                branch: e.branch_id.clone(),
                                branch_name: branch_name.clone(),
                            },
                        )
                        .with_facts(endpoint_facts(e)),
                    ),
                }
            }
            SuspendDecision::Resume(why) => out.actions.push(
                PlannedAction::new(
                    spec_for(Action::StartEndpoint, why),
                    SuspendAction::Start(e.id.clone()),
                )
                .with_facts(endpoint_facts(e)),
            ),
            SuspendDecision::Skip(why) => {
                let action = if why.rule == "resume" {
                    Action::StartEndpoint
                } else {
                    Action::SuspendEndpoint
                };
                out.skips.push(spec_for(action, why))
            }
            SuspendDecision::Leave => {}
        }
    }
    Ok(out)
}

/// Branch id -> name for one project.
async fn branch_names(
    env: &JobEnv,
    project: &Project,
) -> Result<HashMap<String, String>, ApiError> {
    let branches: Vec<Branch> = env.client.list_branches(&project.id).try_collect().await?;
    Ok(branches
        .into_iter()
        .map(|b| (b.id.to_string(), b.name))
        .collect())
}

/// Neon's endpoint type in the policy's terms (the one place they are mapped).
impl From<EndpointType> for crate::config::EndpointType {
    fn from(t: EndpointType) -> Self {
        match t {
            EndpointType::ReadWrite => crate::config::EndpointType::ReadWrite,
            EndpointType::ReadOnly => crate::config::EndpointType::ReadOnly,
        }
    }
}

/// What the job knows about one selected endpoint.
#[derive(Debug, Clone, Copy)]
pub struct EndpointNow<'a> {
    /// `current_state == active`.
    pub active: bool,
    /// `current_state == idle` (suspended).
    pub idle: bool,
    pub disabled: bool,
    /// A `pending_state` is set (Neon is changing the endpoint). The project's operations
    /// are not listed for this: a call made while one runs is answered 423 and waited out.
    pub operation_in_progress: bool,
    pub last_active: Option<DateTime<Utc>>,
    /// The window (its text) the instant is inside, if any.
    pub window: Option<&'a str>,
    /// This job suspended the endpoint earlier because of a window (from the job's state).
    pub suspended_by_window: bool,
    /// An exclusion covers the endpoint (`[jobs.endpoints].exclude_*` or an unexpired
    /// `[[jobs.exclusions]]` entry): it is not suspended. Starting an endpoint this job
    /// suspended earlier is not prevented: that undoes the job's own action.
    pub excluded: Option<&'a Why>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuspendDecision {
    Suspend(Why),
    /// Start it again: its window ended (`resume = true`).
    Resume(Why),
    /// Would act but must not; recorded as skipped.
    Skip(Why),
    /// Nothing to do (not active, not idle long enough, outside windows).
    Leave,
}

#[derive(Debug, Clone, Default)]
pub struct SuspendRules {
    pub idle_for: Option<Duration>,
    /// Whether windows are configured at all.
    pub has_windows: bool,
    pub resume: bool,
}

pub fn decide(now: DateTime<Utc>, rules: &SuspendRules, e: &EndpointNow<'_>) -> SuspendDecision {
    if rules.resume && e.idle && e.suspended_by_window && e.window.is_none() && rules.has_windows {
        if e.disabled {
            return SuspendDecision::Skip(Why::new(
                "resume",
                "window ended but endpoint is disabled",
            ));
        }
        if e.operation_in_progress {
            return SuspendDecision::Skip(Why::new(
                "resume",
                "window ended but an operation is in progress",
            ));
        }
        return SuspendDecision::Resume(Why::new(
            "resume",
            "its suspend window ended (suspended earlier by this job)",
        ));
    }
    if !e.active {
        return SuspendDecision::Leave;
    }
    let mut rule = Vec::new();
    let mut reasons = Vec::new();
    if rules.has_windows {
        match e.window {
            Some(w) => {
                rule.push("window");
                reasons.push(format!("inside window {w:?}"));
            }
            None => return SuspendDecision::Leave,
        }
    }
    if let Some(idle_for) = rules.idle_for {
        // An endpoint that never reported activity is not known to be idle: leave it.
        let Some(last) = e.last_active else {
            return SuspendDecision::Leave;
        };
        let idle = age(now, last);
        if idle <= idle_for {
            return SuspendDecision::Leave;
        }
        rule.push("idle_for");
        reasons.push(format!(
            "idle {} > idle_for {}",
            human_duration(idle),
            human_duration(idle_for)
        ));
    }
    if rule.is_empty() {
        // Neither rule configured: the config layer rejects this; never suspend blindly.
        return SuspendDecision::Leave;
    }
    let why = Why::new(rule.join("+"), reasons.join(", "));
    if let Some(x) = e.excluded {
        return SuspendDecision::Skip(Why::new(
            x.rule.clone(),
            format!("{}; but excluded: {}", why.reason, x.reason),
        ));
    }
    if e.disabled {
        return SuspendDecision::Skip(Why::new(
            why.rule,
            format!("{}; but the endpoint is disabled", why.reason),
        ));
    }
    if e.operation_in_progress {
        return SuspendDecision::Skip(Why::new(
            why.rule,
            format!("{}; but an operation is in progress", why.reason),
        ));
    }
    SuspendDecision::Suspend(why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, 22, 0, 0).unwrap()
    }
    fn active(last_min_ago: i64, window: Option<&str>) -> EndpointNow<'_> {
        EndpointNow {
            active: true,
            idle: false,
            disabled: false,
            operation_in_progress: false,
            last_active: Some(now() - chrono::Duration::minutes(last_min_ago)),
            window,
            suspended_by_window: false,
            excluded: None,
        }
    }
    const M: u64 = 60;

    #[test]
    fn idle_for_alone() {
        let r = SuspendRules {
            idle_for: Some(Duration::from_secs(30 * M)),
            ..Default::default()
        };
        match decide(now(), &r, &active(45, None)) {
            SuspendDecision::Suspend(w) => {
                assert_eq!(w.rule, "idle_for");
                assert_eq!(w.reason, "idle 45m > idle_for 30m");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decide(now(), &r, &active(10, None)), SuspendDecision::Leave);
        let mut unknown = active(0, None);
        unknown.last_active = None;
        assert_eq!(decide(now(), &r, &unknown), SuspendDecision::Leave);
        let mut idle = active(45, None);
        idle.active = false;
        idle.idle = true;
        assert_eq!(decide(now(), &r, &idle), SuspendDecision::Leave);
    }

    #[test]
    fn windows_and_idle_narrow_each_other() {
        let r = SuspendRules {
            idle_for: Some(Duration::from_secs(30 * M)),
            has_windows: true,
            resume: false,
        };
        assert_eq!(decide(now(), &r, &active(45, None)), SuspendDecision::Leave);
        assert_eq!(
            decide(now(), &r, &active(5, Some("Mon-Fri 20:00-08:00"))),
            SuspendDecision::Leave
        );
        match decide(now(), &r, &active(45, Some("Mon-Fri 20:00-08:00"))) {
            SuspendDecision::Suspend(w) => {
                assert_eq!(w.rule, "window+idle_for");
                assert!(
                    w.reason
                        .starts_with("inside window \"Mon-Fri 20:00-08:00\""),
                    "{}",
                    w.reason
                );
            }
            other => panic!("{other:?}"),
        }
        let only_windows = SuspendRules {
            has_windows: true,
            ..Default::default()
        };
        assert!(matches!(
            decide(now(), &only_windows, &active(0, Some("Sat-Sun"))),
            SuspendDecision::Suspend(_)
        ));
    }

    #[test]
    fn disabled_and_busy_are_skipped_with_reason() {
        let r = SuspendRules {
            has_windows: true,
            ..Default::default()
        };
        let mut e = active(0, Some("Sat-Sun"));
        e.disabled = true;
        match decide(now(), &r, &e) {
            SuspendDecision::Skip(w) => assert!(w.reason.contains("disabled"), "{}", w.reason),
            other => panic!("{other:?}"),
        }
        let mut e = active(0, Some("Sat-Sun"));
        e.operation_in_progress = true;
        match decide(now(), &r, &e) {
            SuspendDecision::Skip(w) => assert!(
                w.reason.contains("an operation is in progress"),
                "{}",
                w.reason
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn excluded_is_skipped_with_the_exclusion_reason_but_resume_still_undoes_ours() {
        let r = SuspendRules {
            idle_for: Some(Duration::from_secs(30 * M)),
            has_windows: true,
            resume: true,
        };
        let x = Why::new("exclude_ids", "endpoint ep-1 is listed in exclude_ids");
        let mut e = active(45, Some("Sat-Sun"));
        e.excluded = Some(&x);
        match decide(now(), &r, &e) {
            SuspendDecision::Skip(w) => {
                assert_eq!(w.rule, "exclude_ids");
                assert!(w.reason.contains("idle 45m > idle_for 30m"), "{}", w.reason);
                assert!(
                    w.reason
                        .ends_with("but excluded: endpoint ep-1 is listed in exclude_ids"),
                    "{}",
                    w.reason
                );
            }
            other => panic!("{other:?}"),
        }
        // Nothing would be done anyway: nothing to record.
        let mut busy = active(5, Some("Sat-Sun"));
        busy.excluded = Some(&x);
        assert_eq!(decide(now(), &r, &busy), SuspendDecision::Leave);
        // The job's own suspension is still undone when the window ends.
        let mut ours = active(0, None);
        ours.active = false;
        ours.idle = true;
        ours.suspended_by_window = true;
        ours.excluded = Some(&x);
        assert!(matches!(
            decide(now(), &r, &ours),
            SuspendDecision::Resume(_)
        ));
    }

    #[test]
    fn resume_only_what_we_suspended_after_the_window() {
        let r = SuspendRules {
            has_windows: true,
            resume: true,
            ..Default::default()
        };
        let mut e = active(0, None);
        e.active = false;
        e.idle = true;
        assert_eq!(
            decide(now(), &r, &e),
            SuspendDecision::Leave,
            "not suspended by us"
        );
        e.suspended_by_window = true;
        assert!(matches!(decide(now(), &r, &e), SuspendDecision::Resume(_)));
        e.window = Some("Sat-Sun");
        assert_eq!(
            decide(now(), &r, &e),
            SuspendDecision::Leave,
            "window still on"
        );
        let no_resume = SuspendRules {
            has_windows: true,
            ..Default::default()
        };
        e.window = None;
        assert_eq!(decide(now(), &no_resume, &e), SuspendDecision::Leave);
    }
}
