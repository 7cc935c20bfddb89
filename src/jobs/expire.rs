//! `expire_branches`: which expired branches go, in what order, and for
//! `mode = "set_expires_at"` which `expires_at` to hand to Neon.
//!
//! Deletion order and refusals come from [`super::branch_tree`]. This module adds Neon's
//! rules for native branch expiry: `expires_at` must be in the future and at most 30 days
//! ahead, and it is not allowed on protected, default or parent branches.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use super::branch_tree::{plan_deletions, TreeBranch};
use super::calls::{wait, with_lock_retry};
use super::kind::{ActCx, JobKind, PendingRef, PlanCx, Resolution, StateView};
use super::ledger::{Action, ActionSpec, ResourceKind};
use super::plan::{JobEnv, PlanError, PlannedAction, ProjectPlan};
use super::saved::branch_facts;
use super::scope::{branch_last_activity, passes_age_filters};
use super::select::{BranchFacts, BranchSelector, Selection, Why};
use crate::config::{ExpireMode, ExpireSpec, JobConfig};
use crate::forge::{ForgeClient, ForgeConfig, KnownPulls, Lookup, PullStatus};
use crate::neon::{ApiError, Branch, BranchId, BranchUpdate, Project, ProjectId};

/// The expiries this job set in a project (branch id -> the `expires_at` it set). Only those
/// are ever taken back, and only while Neon still has exactly that value: an expiry someone
/// else set or changed is never touched.
pub type ExpiriesSet = BTreeMap<String, DateTime<Utc>>;

/// What an expire job does to a branch.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpireAction {
    Delete(BranchId),
    /// Set the branch's `expires_at` to the planned time, or, if that is no longer far
    /// enough ahead when the call is made, to the earliest time Neon accepts.
    SetExpiry(BranchId, DateTime<Utc>),
    /// Take back an `expires_at` this job set (`expires_at: null`).
    ClearExpiry(BranchId),
}

/// What an expire call did.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpireDone {
    /// The ledger detail (the recovery window, or "already deleted").
    Deleted(String),
    /// The `expires_at` sent (see [`expiry_at_call`]), which Neon now holds.
    ExpirySet(DateTime<Utc>),
    Cleared,
}

/// `expire_branches`, compiled for one run.
pub struct Expire<'a> {
    job: &'a JobConfig,
    spec: &'a ExpireSpec,
    names: BranchSelector,
    /// `pull_request`: the run's one listing of the forge, made when the first project is
    /// planned and shared by all of them (the per-run cache).
    pulls: tokio::sync::OnceCell<Lookup>,
    /// What this run has read of each project while deleting in it (see [`Acting`]).
    acting: Mutex<HashMap<ProjectId, Acting>>,
}

/// What a run reads once per project while deleting there, instead of once per delete.
#[derive(Default)]
struct Acting {
    /// The project's branches, listed right before its first delete in this run, less the
    /// ones this run has deleted since: every delete is re-checked against it.
    branches: Option<Vec<Branch>>,
    /// Neon's recovery window in the project, once read (after the first delete whose
    /// answer did not carry it).
    recovery: Option<RecoveryWindow>,
}

/// What the one `include_deleted` read of a project told about its recovery window.
#[derive(Clone)]
enum RecoveryWindow {
    /// `recoverable_until - deleted_at` of the branch it was read for.
    Known {
        window: chrono::Duration,
        branch: String,
    },
    /// Not reported (or the read failed): later deletes record the estimate.
    Unknown,
}

impl<'a> Expire<'a> {
    pub fn new(job: &'a JobConfig, spec: &'a ExpireSpec) -> Self {
        Expire {
            job,
            spec,
            names: super::scope::branch_selector(job),
            acting: Mutex::new(HashMap::new()),
            pulls: tokio::sync::OnceCell::new(),
        }
    }

    /// The run's answers about pull requests (`None`: no `pull_request` condition).
    async fn pulls(&self, cx: &PlanCx<'_>) -> Option<&Lookup> {
        let cfg = self.spec.pull_request.as_ref()?;
        Some(
            self.pulls
                .get_or_init(|| load_pulls(cx, &self.job.name, cfg))
                .await,
        )
    }
}

/// Lists the pull requests updated since the job's cursor and brings its record of them
/// up to date: one listing per run. Fails closed: when the record cannot be read or the
/// forge cannot be listed, the lookup says why and every branch it would answer for is
/// kept. A record that cannot be written only costs the next run a longer listing.
pub async fn load_pulls(cx: &PlanCx<'_>, job: &str, cfg: &ForgeConfig) -> Lookup {
    let lookup = |known| Lookup {
        kind: cfg.kind,
        repository: cfg.repository.clone(),
        known,
    };
    let key = KnownPulls::state_key(cfg);
    let store = &*cx.env.store;
    let mut rec =
        match super::state::Recorded::<KnownPulls>::load(store, cx.ctx.run_id, job, &key).await {
            Ok(r) => r,
            Err(e) => return lookup(Err(format!("the job's record of them cannot be read: {e}"))),
        };
    let client = match ForgeClient::new(cfg) {
        Ok(c) => c,
        Err(e) => return lookup(Err(e.to_string())),
    };
    let since = rec.get().cursor;
    let listed = match client.list_updated_since(since).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(job, forge = cfg.kind.as_str(), repository = %cfg.repository, requests = client.requests(), error = %e, "cannot list pull requests; branches mapped to them are kept");
            return lookup(Err(e.to_string()));
        }
    };
    tracing::info!(job, forge = cfg.kind.as_str(), repository = %cfg.repository, since = ?since, updated = listed.len(), requests = client.requests(), "pull requests listed");
    let known = match rec.update(store, |k| k.apply(&listed)).await {
        Ok(()) => rec.get().clone(),
        Err(e) => {
            tracing::warn!(job, key = %key, error = %e, "cannot save the record of pull requests; the next run lists from the older cursor");
            let mut k = rec.get().clone();
            k.apply(&listed);
            k
        }
    };
    lookup(Ok(known))
}

/// What the `pull_request` condition and the age rules decide about a branch in delete mode.
#[derive(Debug, Clone, PartialEq)]
pub enum PullDecision {
    /// Expire it, for this rule and reason.
    Due(Why),
    /// Keep it, recorded as skipped with this reason (its pull request is unknown or
    /// unreadable: fail closed, whatever its age).
    Keep(String),
    NotDue,
}

/// Decides a branch from its pull request's status (`None`: its name maps to no pull
/// request, or the job has no `pull_request` condition) and from `by_age`, what `ttl` /
/// `idle_ttl` say (`None`: not due by age, or the job has neither). An ended pull request
/// makes it due; an open one leaves it to its age ("closed, or older than"); one that
/// cannot be found or read keeps it.
pub fn decide_pull_request(status: Option<PullStatus>, by_age: Option<Why>) -> PullDecision {
    match (status, by_age) {
        (None, Some(w)) => PullDecision::Due(w),
        (None, None) => PullDecision::NotDue,
        (Some(PullStatus::Ended(text)), _) => PullDecision::Due(Why::new("pull_request", text)),
        (Some(PullStatus::Open(text)), Some(w)) => {
            PullDecision::Due(Why::new(w.rule, format!("{}; {text}", w.reason)))
        }
        (Some(PullStatus::Open(_)), None) => PullDecision::NotDue,
        (Some(PullStatus::Unknown(text)), None) => PullDecision::Keep(text),
        (Some(PullStatus::Unknown(text)), Some(w)) => {
            PullDecision::Keep(format!("{text}, although {} ({})", w.reason, w.rule))
        }
    }
}

impl JobKind for Expire<'_> {
    type Action = ExpireAction;
    type Done = ExpireDone;
    type State = ExpiriesSet;
    const STATE_KEY: &'static str = "expiries_set";
    const LEDGER_ACTIONS: &'static [Action] = &[
        Action::DeleteBranch,
        Action::SetBranchExpiry,
        Action::ClearBranchExpiry,
    ];

    /// Only native expiry remembers what it set (to take back only its own).
    fn keeps_state(&self) -> bool {
        self.spec.mode == ExpireMode::SetExpiresAt
    }

    async fn plan_project(
        &self,
        cx: &PlanCx<'_>,
        project: &Project,
        state: StateView<'_, ExpiriesSet>,
    ) -> Result<ProjectPlan<ExpireAction>, PlanError> {
        let pulls = self.pulls(cx).await;
        Ok(plan(cx, self.job, self.spec, &self.names, pulls, project, state).await?)
    }

    fn is_destructive(action: &ExpireAction) -> bool {
        // Native expiry is destructive: Neon deletes the branch when it expires.
        matches!(
            action,
            ExpireAction::Delete(_) | ExpireAction::SetExpiry(..)
        )
    }

    fn intend(&self, state: &mut ExpiriesSet, action: &ExpireAction) {
        // Before the call, so that a daemon dying during it still knows the expiry is its
        // own (the time sent is the planned one unless the plan has gone stale; `record`
        // then writes the time actually sent).
        if let ExpireAction::SetExpiry(b, at) = action {
            state.insert(b.to_string(), *at);
        }
    }

    fn record(&self, state: &mut ExpiriesSet, action: &ExpireAction, done: &ExpireDone) {
        match (action, done) {
            (ExpireAction::SetExpiry(b, _), ExpireDone::ExpirySet(sent)) => {
                state.insert(b.to_string(), *sent);
            }
            (ExpireAction::ClearExpiry(b), _) => {
                state.remove(b.as_str());
            }
            _ => {}
        }
    }

    async fn verify(
        &self,
        cx: &ActCx<'_>,
        action: &ExpireAction,
    ) -> Result<Option<String>, ApiError> {
        match action {
            ExpireAction::Delete(b) => Ok(self
                .recheck_branch(cx, b)
                .await?
                .map(|refusal| format!("not deleted: {refusal}"))),
            _ => Ok(None),
        }
    }

    async fn perform(&self, cx: &ActCx<'_>, action: &ExpireAction) -> Result<ExpireDone, ApiError> {
        let (env, project, c) = (cx.env, cx.project, &cx.env.client);
        match action {
            ExpireAction::Delete(b) => {
                let (branch, ops) = match with_lock_retry(cx, || c.delete_branch(project, b)).await
                {
                    Ok(r) => r,
                    Err(ApiError::AlreadyDeleted { .. }) => {
                        self.forget_branch(project, b);
                        return Ok(ExpireDone::Deleted("already deleted".into()));
                    }
                    Err(e) => return Err(e),
                };
                // Gone from the re-check listing: its parent may be deleted after it.
                self.forget_branch(project, b);
                wait(env, project, &ops).await?;
                Ok(ExpireDone::Deleted(
                    self.recovery_detail(cx, b, branch.recoverable_until).await,
                ))
            }
            ExpireAction::SetExpiry(b, planned) => {
                let mut sent = *planned;
                let (_, ops) = with_lock_retry(cx, || {
                    // Computed at each attempt: a retry after waiting for a locked project
                    // must not send a time that has passed meanwhile.
                    sent = expiry_at_call(*planned, cx.now());
                    let update = BranchUpdate {
                        expires_at: Some(Some(sent)),
                        ..Default::default()
                    };
                    c.update_branch(project, b, update)
                })
                .await?;
                wait(env, project, &ops).await?;
                Ok(ExpireDone::ExpirySet(sent))
            }
            ExpireAction::ClearExpiry(b) => {
                let update = BranchUpdate {
                    expires_at: Some(None),
                    ..Default::default()
                };
                let (_, ops) =
                    with_lock_retry(cx, || c.update_branch(project, b, update.clone())).await?;
                wait(env, project, &ops).await?;
                Ok(ExpireDone::Cleared)
            }
        }
    }

    fn detail(done: &ExpireDone) -> Option<String> {
        Some(match done {
            ExpireDone::Deleted(d) => d.clone(),
            ExpireDone::ExpirySet(at) => format!("expires_at={}", at.to_rfc3339()),
            ExpireDone::Cleared => "expires_at cleared".into(),
        })
    }

    async fn check_outcome(env: &JobEnv, p: &PendingRef<'_>) -> Result<Resolution, ApiError> {
        let branch = match env
            .client
            .get_branch(
                &ProjectId::from(p.project_id),
                &BranchId::from(p.resource_id),
            )
            .await
        {
            Ok(b) => Some(b),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        Ok(match (p.action, branch) {
            (Action::DeleteBranch, None) => Resolution::succeeded("the branch no longer exists"),
            (Action::DeleteBranch, Some(_)) => {
                Resolution::failed("the branch still exists: it was not deleted")
            }
            (_, None) => Resolution::unknown(
                "the branch no longer exists (it may have expired): whether its expiry was \
                 changed cannot be told",
            ),
            (Action::SetBranchExpiry, Some(b)) => match b.expires_at {
                Some(at) => Resolution::succeeded(format!("expires_at={}", at.to_rfc3339())),
                None => Resolution::failed("the branch has no expires_at: it was not set"),
            },
            (_, Some(b)) => match b.expires_at {
                None => Resolution::succeeded("expires_at cleared"),
                Some(at) => Resolution::failed(format!(
                    "the branch still expires at {}: it was not cleared",
                    at.to_rfc3339()
                )),
            },
        })
    }

    fn blocked_by(dep: &PlannedAction<ExpireAction>) -> String {
        match dep.action {
            ExpireAction::Delete(_) => format!(
                "its child branch {} was not deleted in this run",
                dep.spec
                    .resource_name
                    .as_deref()
                    .unwrap_or(&dep.spec.resource_id)
            ),
            _ => format!(
                "{} of {} did not succeed in this run",
                dep.spec.action, dep.spec.resource_id
            ),
        }
    }
}

impl Expire<'_> {
    fn acting(&self) -> std::sync::MutexGuard<'_, HashMap<ProjectId, Acting>> {
        // Plain data, consistent even if a holder panicked.
        self.acting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-checks a branch right before deleting it: the listing the plan was made from can
    /// be minutes old on a large account. The project's branches are listed once, right
    /// before its first delete in this run, and every delete of the project is checked
    /// against that listing (less the branches this run deleted since: a child deleted
    /// first no longer keeps its parent). Returns why it must not be deleted now, if so.
    ///
    /// Neon itself refuses to delete a default, protected, root or parent branch whatever
    /// this listing says: this check keeps a stale plan from even asking, and records why.
    async fn recheck_branch(
        &self,
        cx: &ActCx<'_>,
        branch: &BranchId,
    ) -> Result<Option<String>, ApiError> {
        let project = cx.project;
        let listed = self
            .acting()
            .get(project)
            .is_some_and(|a| a.branches.is_some());
        if !listed {
            let branches: Vec<Branch> = cx.env.client.list_branches(project).try_collect().await?;
            self.acting().entry(project.clone()).or_default().branches = Some(branches);
        }
        let acting = self.acting();
        let branches = acting
            .get(project)
            .and_then(|a| a.branches.as_deref())
            .unwrap_or_default();
        Ok(delete_refusal(branches, branch))
    }

    /// Drops a branch this run deleted from the project's re-check listing.
    fn forget_branch(&self, project: &ProjectId, branch: &BranchId) {
        if let Some(list) = self
            .acting()
            .get_mut(project)
            .and_then(|a| a.branches.as_mut())
        {
            list.retain(|b| b.id != *branch);
        }
    }

    /// The ledger detail of a deleted branch: until when it can be recovered.
    ///
    /// Neon reports `recovery.recoverable_until` on soft-deleted branches listed with
    /// `include_deleted=true` (branch recovery is in preview), so when the delete answer
    /// does not carry it, it is looked up there, once per project and run: for the first
    /// such delete Neon's time is written as `recoverable_until=`; the window it implies
    /// (`recoverable_until - deleted_at`) then dates the project's later deletes, written as
    /// `recoverable_until about` with the window and where it was read. Without a reported
    /// window the detail says so and gives Neon's documented 7-day window as an estimate, so
    /// nobody mistakes an estimate for Neon's word. The delete itself has succeeded either
    /// way: a failed lookup is not a failed action.
    async fn recovery_detail(
        &self,
        cx: &ActCx<'_>,
        branch: &BranchId,
        from_delete: Option<DateTime<Utc>>,
    ) -> String {
        let project: &ProjectId = cx.project;
        if let Some(t) = from_delete {
            return format!("recoverable_until={}", t.to_rfc3339());
        }
        let known = self.acting().get(project).and_then(|a| a.recovery.clone());
        let window = match known {
            Some(w) => w,
            None => {
                let found: Result<Vec<Branch>, ApiError> = cx
                    .env
                    .client
                    .list_recoverable_branches(project)
                    .try_filter(|d| futures::future::ready(d.id == *branch))
                    .try_collect()
                    .await;
                let found = match found {
                    Ok(v) => v.into_iter().find(|d| d.recoverable_until.is_some()),
                    Err(e) => {
                        tracing::warn!(%project, %branch, error = %e, "cannot read the deleted branch's recovery window");
                        None
                    }
                };
                let window = match found
                    .as_ref()
                    .and_then(|d| Some((d.recoverable_until?, d.deleted_at?)))
                {
                    Some((until, at)) if until >= at => RecoveryWindow::Known {
                        window: until - at,
                        branch: branch.to_string(),
                    },
                    _ => RecoveryWindow::Unknown,
                };
                self.acting().entry(project.clone()).or_default().recovery = Some(window);
                if let Some(t) = found.and_then(|d| d.recoverable_until) {
                    return format!("recoverable_until={}", t.to_rfc3339());
                }
                RecoveryWindow::Unknown
            }
        };
        match window {
            RecoveryWindow::Known { window, branch } => format!(
                "recoverable_until about {} (deleted about {}, plus the {} recovery window Neon \
                 reported in this project for branch {branch})",
                (cx.now() + window).to_rfc3339(),
                cx.now().to_rfc3339(),
                humantime::format_duration(window.to_std().unwrap_or_default())
            ),
            RecoveryWindow::Unknown => format!(
                "recoverable_until not reported by Neon (estimated {} from its 7-day recovery window)",
                recoverable_until(cx.now()).to_rfc3339()
            ),
        }
    }
}

/// Why `branch` must not be deleted, judged from a fresh listing of its project's branches.
fn delete_refusal(branches: &[Branch], branch: &BranchId) -> Option<String> {
    let Some(b) = branches.iter().find(|b| b.id == *branch) else {
        return Some("the branch no longer exists".into());
    };
    if b.default {
        return Some("the branch is now the project's default branch".into());
    }
    if b.protected {
        return Some("the branch is now protected".into());
    }
    if b.parent_id.is_none() {
        return Some("the branch is a root branch".into());
    }
    let children: Vec<&str> = branches
        .iter()
        .filter(|c| c.parent_id.as_ref() == Some(branch))
        .map(|c| c.name.as_str())
        .collect();
    if !children.is_empty() {
        return Some(format!(
            "the branch now has children ({})",
            children.join(", ")
        ));
    }
    None
}

/// The `expires_at` to send for a planned one, at `now`: the plan's time while it is still
/// comfortably ahead (at least [`MIN_EXPIRY_LEAD`]), otherwise (planning and waiting for a
/// locked project take time) the earliest time the job hands Neon, `now` plus
/// [`EXPIRE_NOW_MARGIN`]. Keeping the plan's time when it is still fine keeps re-runs
/// idempotent: Neon then holds exactly the time a re-plan computes.
pub fn expiry_at_call(planned: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    if planned >= add(now, MIN_EXPIRY_LEAD) {
        planned
    } else {
        add(now, EXPIRE_NOW_MARGIN)
    }
}

/// How far ahead a planned `expires_at` must still be when the call is made to be sent as
/// planned (Neon refuses a time in the past; this absorbs the call's latency and clock skew).
pub const MIN_EXPIRY_LEAD: Duration = Duration::from_secs(60);

async fn plan(
    cx: &PlanCx<'_>,
    job: &JobConfig,
    spec: &ExpireSpec,
    names: &BranchSelector,
    pulls: Option<&Lookup>,
    project: &Project,
    state: StateView<'_, ExpiriesSet>,
) -> Result<ProjectPlan<ExpireAction>, ApiError> {
    let (env, ctx) = (cx.env, cx.ctx);
    let branches: Vec<Branch> = env.client.list_branches(&project.id).try_collect().await?;
    // Last activity comes from the endpoints; only `idle_ttl` and the selector's
    // `inactive_for` use it, so a ttl-only policy lists none.
    let endpoints = if spec.idle_ttl.is_some() || job.selectors.branches.inactive_for.is_some() {
        env.client.list_endpoints(&project.id).await?
    } else {
        Vec::new()
    };
    let mut out = ProjectPlan::new(project.id.clone());
    let by_id: HashMap<&str, &Branch> = branches.iter().map(|b| (b.id.as_str(), b)).collect();
    let parents: HashSet<&str> = branches
        .iter()
        .filter_map(|b| b.parent_id.as_ref().map(|p| p.as_str()))
        .collect();
    let with_age = BranchSelector {
        ttl: spec.ttl,
        idle_ttl: spec.idle_ttl,
        ..names.clone()
    };
    let spec_for = |b: &Branch, action: Action, rule: &str, reason: String| ActionSpec {
        resource_kind: ResourceKind::Branch,
        resource_id: b.id.to_string(),
        resource_name: Some(b.name.clone()),
        project_id: Some(project.id.to_string()),
        action,
        rule: Some(rule.to_string()),
        reason,
    };
    let mut due: BTreeSet<String> = BTreeSet::new();
    let mut whys: HashMap<String, Why> = HashMap::new();
    // The expiries this job set that Neon still holds unchanged: the only ones it may take
    // back. Without that record it cannot tell its own from others', so it decides
    // nothing in the project rather than set expiries it could not later take back.
    let ours: ExpiriesSet = if spec.mode == ExpireMode::SetExpiresAt {
        match state {
            Ok(set) => {
                // A time that has passed: Neon has deleted the branch, or someone else
                // changed the expiry; either way there is nothing left to take back.
                set.retain(|_, at| *at > ctx.now);
                set.clone()
            }
            Err(e) => {
                out.failures.push((
                    ActionSpec {
                        resource_kind: ResourceKind::Project,
                        resource_id: project.id.to_string(),
                        resource_name: Some(project.name.clone()),
                        project_id: Some(project.id.to_string()),
                        action: Action::SetBranchExpiry,
                        rule: None,
                        reason: "reading the expiries this job set; nothing set or cleared in this project".into(),
                    },
                    e.to_string(),
                ));
                return Ok(out);
            }
        }
    } else {
        BTreeMap::new()
    };
    // Neon may hand the time back at a coarser precision than it was sent.
    let mine = |b: &Branch| {
        ours.get(b.id.as_str()).copied().filter(|at| {
            b.expires_at
                .is_some_and(|cur| (cur - *at).abs() < chrono::Duration::seconds(1))
        })
    };
    let clear = |b: &Branch, set: DateTime<Utc>, why: String| PlannedAction {
        spec: spec_for(
            b,
            Action::ClearBranchExpiry,
            "no_longer_due",
            format!("expires_at {} was set by this job; {why}", set.to_rfc3339()),
        ),
        action: ExpireAction::ClearExpiry(b.id.clone()),
        requires: Vec::new(),
        facts: branch_facts(b),
    };
    for b in &branches {
        let activity = branch_last_activity(ctx.now, b, &endpoints);
        let facts = BranchFacts {
            id: b.id.as_str(),
            name: &b.name,
            default: b.default,
            protected: b.protected,
            created_at: b.created_at,
            last_activity: activity,
        };
        if !names.select(ctx.now, &facts).is_selected()
            || !passes_age_filters(job, ctx.now, b.created_at, activity)
        {
            if let Some(set) = mine(b) {
                out.matched += 1;
                out.actions.push(clear(
                    b,
                    set,
                    "the branch is no longer selected by the policy".into(),
                ));
            }
            continue;
        }
        out.matched += 1;
        match spec.mode {
            ExpireMode::Delete => {
                // Without `ttl` and `idle_ttl` the selector selects every name it matches:
                // age says nothing then.
                let by_age = match with_age.select(ctx.now, &facts) {
                    Selection::Selected(why) if spec.ttl.is_some() || spec.idle_ttl.is_some() => {
                        Some(why)
                    }
                    _ => None,
                };
                let status = pulls.and_then(|l| {
                    let cfg = spec.pull_request.as_ref()?;
                    Some(l.status(&cfg.branch.key(&b.name)?))
                });
                match decide_pull_request(status, by_age) {
                    PullDecision::Due(why) => {
                        due.insert(b.id.to_string());
                        whys.insert(b.id.to_string(), why);
                    }
                    PullDecision::Keep(reason) => {
                        out.skips
                            .push(spec_for(b, Action::DeleteBranch, "pull_request", reason));
                    }
                    PullDecision::NotDue => {}
                }
            }
            ExpireMode::SetExpiresAt => {
                let set_by_us = mine(b);
                let f = ExpiryFacts {
                    default: b.default,
                    protected: b.protected,
                    has_children: parents.contains(b.id.as_str()),
                    created_at: b.created_at,
                    last_activity: activity,
                    // Our own expiry is re-decided from scratch under the current policy.
                    current_expires_at: if set_by_us.is_some() {
                        None
                    } else {
                        b.expires_at
                    },
                };
                let decision = decide_expiry(ctx.now, spec.ttl, spec.idle_ttl, &f);
                if let Some(set) = set_by_us {
                    if let Some(a) = revisit(ctx.now, b, set, &decision, &clear) {
                        out.actions.push(a);
                    }
                    continue;
                }
                match decision {
                    ExpiryDecision::Set { at, rule, reason } => out.actions.push(PlannedAction {
                        spec: spec_for(
                            b,
                            Action::SetBranchExpiry,
                            rule,
                            format!("{reason}; expires_at {}", at.to_rfc3339()),
                        ),
                        action: ExpireAction::SetExpiry(b.id.clone(), at),
                        requires: Vec::new(),
                        facts: branch_facts(b),
                    }),
                    ExpiryDecision::NotAllowed(why) => out.skips.push(spec_for(
                        b,
                        Action::SetBranchExpiry,
                        "neon_rules",
                        why.to_string(),
                    )),
                    ExpiryDecision::AlreadySet(_)
                    | ExpiryDecision::TooFarAhead(_)
                    | ExpiryDecision::NotDue => {}
                }
            }
        }
    }
    if spec.mode == ExpireMode::Delete {
        let tree: Vec<TreeBranch> = branches
            .iter()
            .map(|b| TreeBranch {
                id: b.id.to_string(),
                parent_id: b.parent_id.as_ref().map(|p| p.to_string()),
                default: b.default,
                protected: b.protected,
            })
            .collect();
        let plan = plan_deletions(&tree, &due);
        // Children come first in the order; a parent's delete requires every child delete
        // planned before it, so a failed child never leaves its parent deleted under it.
        let first = out.actions.len();
        for (k, id) in plan.order.iter().enumerate() {
            let b = by_id[id.as_str()];
            let why = &whys[id];
            let requires = plan.order[..k]
                .iter()
                .enumerate()
                .filter(|(_, c)| by_id[c.as_str()].parent_id.as_ref() == Some(&b.id))
                .map(|(j, _)| first + j)
                .collect();
            out.actions.push(PlannedAction {
                spec: spec_for(b, Action::DeleteBranch, &why.rule, why.reason.clone()),
                action: ExpireAction::Delete(b.id.clone()),
                requires,
                facts: branch_facts(b),
            });
        }
        for (id, refusal) in &plan.refused {
            let Some(b) = by_id.get(id.as_str()) else {
                continue;
            };
            let why = &whys[id];
            out.skips.push(spec_for(
                b,
                Action::DeleteBranch,
                &why.rule,
                format!("{}; not deleted: {refusal}", why.reason),
            ));
        }
    }
    Ok(out)
}

/// Plans taking back an expiry this job set (the branch, the time it set, why).
type TakeBack<'a> = dyn Fn(&Branch, DateTime<Utc>, String) -> PlannedAction<ExpireAction> + 'a;

/// What to do about an expiry this job set earlier (`set`, still in place), given what the
/// current policy decides for the branch: keep it, move it, or take it back.
fn revisit(
    now: DateTime<Utc>,
    b: &Branch,
    set: DateTime<Utc>,
    decision: &ExpiryDecision,
    clear: &TakeBack<'_>,
) -> Option<PlannedAction<ExpireAction>> {
    match decision {
        ExpiryDecision::Set { at, rule, reason } => {
            // Due "now" (`now + margin`, which moves with every run): an earlier expiry of
            // ours is as good, keep it. A fixed later date means the policy now gives the
            // branch longer: move it there. An earlier date: bring it forward.
            let due_now = *at <= add(now, EXPIRE_NOW_MARGIN);
            if *at == set || (due_now && set <= *at) {
                return None;
            }
            Some(PlannedAction {
                spec: ActionSpec {
                    resource_kind: ResourceKind::Branch,
                    resource_id: b.id.to_string(),
                    resource_name: Some(b.name.clone()),
                    project_id: Some(b.project_id.to_string()),
                    action: Action::SetBranchExpiry,
                    rule: Some(rule.to_string()),
                    reason: format!(
                        "{reason}; expires_at {} (replaces {} set by this job)",
                        at.to_rfc3339(),
                        set.to_rfc3339()
                    ),
                },
                action: ExpireAction::SetExpiry(b.id.clone(), *at),
                requires: Vec::new(),
                facts: branch_facts(b),
            })
        }
        ExpiryDecision::TooFarAhead(at) => Some(clear(
            b,
            set,
            format!(
                "the policy now has it due at {}, beyond Neon's 30-day horizon (a later run sets it again)",
                at.to_rfc3339()
            ),
        )),
        ExpiryDecision::NotDue => Some(clear(
            b,
            set,
            "neither ttl nor idle_ttl makes it due under the current policy".into(),
        )),
        ExpiryDecision::NotAllowed(why) => Some(clear(b, set, why.to_string())),
        // Not produced without a current expiry; nothing to take back.
        ExpiryDecision::AlreadySet(_) => None,
    }
}

/// Neon's horizon for `expires_at`.
pub const MAX_EXPIRES_AHEAD: Duration = Duration::from_secs(30 * 86_400);
/// An already-expired branch gets `expires_at = now + this` (Neon wants a future time; a
/// margin absorbs clock skew between us and Neon).
pub const EXPIRE_NOW_MARGIN: Duration = Duration::from_secs(10 * 60);
/// Deleted branches stay recoverable this long (Neon's branch recovery).
pub const RECOVERY_PERIOD: Duration = Duration::from_secs(7 * 86_400);

/// The facts `set_expires_at` decides on.
#[derive(Debug, Clone, Copy)]
pub struct ExpiryFacts {
    pub default: bool,
    pub protected: bool,
    pub has_children: bool,
    pub created_at: DateTime<Utc>,
    pub last_activity: DateTime<Utc>,
    pub current_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryDecision {
    /// Set `expires_at` to this, for this rule and reason.
    Set {
        at: DateTime<Utc>,
        rule: &'static str,
        reason: String,
    },
    /// Neon already has an expiry no later than ours.
    AlreadySet(DateTime<Utc>),
    /// The branch's expiry is further than Neon's 30-day horizon: a later run sets it.
    TooFarAhead(DateTime<Utc>),
    /// Neon does not allow `expires_at` on this branch.
    NotAllowed(&'static str),
    /// Neither rule applies (e.g. only `idle_ttl` and the branch is active).
    NotDue,
}

/// `t + d`, saturating at the end of time: a ttl that reaches past it never expires.
fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Decides the native expiry of one branch.
///
/// `ttl` gives a fixed date (`created_at + ttl`), set as soon as it is within 30 days.
/// Inactivity moves, so `idle_ttl` only sets an expiry once the branch *is* idle past it
/// (then "now", i.e. `now + EXPIRE_NOW_MARGIN`). The earlier of the two wins.
pub fn decide_expiry(
    now: DateTime<Utc>,
    ttl: Option<Duration>,
    idle_ttl: Option<Duration>,
    b: &ExpiryFacts,
) -> ExpiryDecision {
    if b.default {
        return ExpiryDecision::NotAllowed("Neon does not allow expires_at on the default branch");
    }
    if b.protected {
        return ExpiryDecision::NotAllowed("Neon does not allow expires_at on a protected branch");
    }
    if b.has_children {
        return ExpiryDecision::NotAllowed(
            "Neon does not allow expires_at on a branch with children",
        );
    }
    let soonest = add(now, EXPIRE_NOW_MARGIN);
    let mut best: Option<(DateTime<Utc>, &'static str, String)> = None;
    if let Some(ttl) = ttl {
        let due = add(b.created_at, ttl);
        best = Some((
            due.max(soonest),
            "ttl",
            format!(
                "created {} + ttl {} = {}",
                b.created_at.to_rfc3339(),
                super::select::human_duration(ttl),
                due.to_rfc3339()
            ),
        ));
    }
    if let Some(idle_ttl) = idle_ttl {
        let idle = super::select::age(now, b.last_activity);
        if idle > idle_ttl && best.as_ref().is_none_or(|(at, _, _)| soonest < *at) {
            best = Some((
                soonest,
                "idle_ttl",
                format!(
                    "idle {} > idle_ttl {}",
                    super::select::human_duration(idle),
                    super::select::human_duration(idle_ttl)
                ),
            ));
        }
    }
    let Some((at, rule, reason)) = best else {
        return ExpiryDecision::NotDue;
    };
    if let Some(current) = b.current_expires_at {
        if current <= at {
            return ExpiryDecision::AlreadySet(current);
        }
    }
    if at > add(now, MAX_EXPIRES_AHEAD) {
        return ExpiryDecision::TooFarAhead(at);
    }
    ExpiryDecision::Set { at, rule, reason }
}

/// Until when a branch deleted at `deleted_at` can be recovered, when Neon does not say.
pub fn recoverable_until(deleted_at: DateTime<Utc>) -> DateTime<Utc> {
    add(deleted_at, RECOVERY_PERIOD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_keeps_the_plan_while_it_is_ahead_and_moves_it_when_it_is_not() {
        use chrono::{TimeDelta, TimeZone};
        let t = |h: u32, m: u32| Utc.with_ymd_and_hms(2026, 3, 10, h, m, 0).unwrap();
        let planned = t(12, 10);
        // Called soon after planning: the plan's time (a re-plan computes the same).
        assert_eq!(expiry_at_call(planned, t(12, 0)), planned);
        assert_eq!(expiry_at_call(planned, t(12, 9)), planned);
        // Less than a minute ahead, or past (a locked project held the call): now + 10 min.
        assert_eq!(
            expiry_at_call(planned, t(12, 9) + TimeDelta::seconds(30)),
            t(12, 19) + TimeDelta::seconds(30)
        );
        assert_eq!(expiry_at_call(planned, t(13, 0)), t(13, 10));
    }

    #[test]
    fn pull_request_decides_with_age_as_ceiling_and_fails_closed() {
        let age = || Some(Why::new("ttl", "age 40d > ttl 30d"));
        let ended = || {
            Some(PullStatus::Ended(
                "pull request #1 merged 2026-12-01T10:00Z".into(),
            ))
        };
        let open = || Some(PullStatus::Open("pull request #2 is open".into()));
        let unknown = || Some(PullStatus::Unknown("pull request #3 cannot be read".into()));
        match decide_pull_request(ended(), None) {
            PullDecision::Due(w) => {
                assert_eq!(w.rule, "pull_request");
                assert_eq!(w.reason, "pull request #1 merged 2026-12-01T10:00Z");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decide_pull_request(open(), None), PullDecision::NotDue);
        match decide_pull_request(open(), age()) {
            PullDecision::Due(w) => {
                assert_eq!(w.rule, "ttl");
                assert!(w.reason.contains("#2 is open"), "{}", w.reason);
            }
            other => panic!("{other:?}"),
        }
        // Unknown or unreadable: kept, even when its age would expire it.
        for by_age in [None, age()] {
            match decide_pull_request(unknown(), by_age) {
                PullDecision::Keep(r) => assert!(r.contains("#3 cannot be read"), "{r}"),
                other => panic!("{other:?}"),
            }
        }
        // No pull request for the name: age alone.
        assert!(
            matches!(decide_pull_request(None, age()), PullDecision::Due(w) if w.rule == "ttl")
        );
        assert_eq!(decide_pull_request(None, None), PullDecision::NotDue);
    }

    #[test]
    fn add_saturates_instead_of_panicking() {
        let t = DateTime::<Utc>::MAX_UTC - chrono::Duration::days(1);
        assert_eq!(
            add(t, Duration::from_secs(10 * 86_400)),
            DateTime::<Utc>::MAX_UTC
        );
        let now = Utc::now();
        assert_eq!(
            add(now, Duration::from_secs(60)),
            now + chrono::Duration::seconds(60)
        );
    }
    use chrono::TimeZone;

    const DAY: Duration = Duration::from_secs(86_400);
    fn t(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, 12, 0, 0).unwrap()
    }
    fn facts(created: DateTime<Utc>, active: DateTime<Utc>) -> ExpiryFacts {
        ExpiryFacts {
            default: false,
            protected: false,
            has_children: false,
            created_at: created,
            last_activity: active,
            current_expires_at: None,
        }
    }

    #[test]
    fn huge_ttl_is_too_far_ahead_not_a_panic() {
        let now = t(10);
        for ttl in [DAY * 100_000_000, Duration::MAX] {
            let d = decide_expiry(now, Some(ttl), None, &facts(t(5), now));
            assert_eq!(d, ExpiryDecision::TooFarAhead(DateTime::<Utc>::MAX_UTC));
        }
    }

    #[test]
    fn ttl_sets_created_plus_ttl_within_horizon() {
        let now = t(10);
        let d = decide_expiry(now, Some(7 * DAY), None, &facts(t(5), now));
        match d {
            ExpiryDecision::Set { at, rule, reason } => {
                assert_eq!(at, t(12));
                assert_eq!(rule, "ttl");
                assert!(reason.contains("ttl 7d"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Already past: as soon as Neon allows.
        let d = decide_expiry(now, Some(2 * DAY), None, &facts(t(1), now));
        assert!(matches!(d, ExpiryDecision::Set { at, .. } if at == add(now, EXPIRE_NOW_MARGIN)));
        // Beyond 30 days: not yet.
        let d = decide_expiry(now, Some(60 * DAY), None, &facts(t(5), now));
        assert!(matches!(d, ExpiryDecision::TooFarAhead(_)));
    }

    #[test]
    fn neon_rules_forbid_default_protected_and_parents() {
        let now = t(10);
        for f in [
            ExpiryFacts {
                default: true,
                ..facts(t(1), now)
            },
            ExpiryFacts {
                protected: true,
                ..facts(t(1), now)
            },
            ExpiryFacts {
                has_children: true,
                ..facts(t(1), now)
            },
        ] {
            assert!(matches!(
                decide_expiry(now, Some(DAY), None, &f),
                ExpiryDecision::NotAllowed(_)
            ));
        }
    }

    #[test]
    fn idle_ttl_only_once_idle_and_earlier_wins() {
        let now = t(10);
        assert_eq!(
            decide_expiry(now, None, Some(3 * DAY), &facts(t(1), t(9))),
            ExpiryDecision::NotDue
        );
        match decide_expiry(now, Some(20 * DAY), Some(3 * DAY), &facts(t(1), t(5))) {
            ExpiryDecision::Set { rule, at, .. } => {
                assert_eq!(rule, "idle_ttl");
                assert_eq!(at, add(now, EXPIRE_NOW_MARGIN));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_earlier_existing_expiry_is_left_alone() {
        let now = t(10);
        let f = ExpiryFacts {
            current_expires_at: Some(t(11)),
            ..facts(t(5), now)
        };
        assert_eq!(
            decide_expiry(now, Some(7 * DAY), None, &f),
            ExpiryDecision::AlreadySet(t(11))
        );
        let later = ExpiryFacts {
            current_expires_at: Some(t(20)),
            ..facts(t(5), now)
        };
        assert!(matches!(
            decide_expiry(now, Some(7 * DAY), None, &later),
            ExpiryDecision::Set { .. }
        ));
        assert_eq!(recoverable_until(t(1)), t(8));
    }

    #[test]
    fn a_delete_is_refused_from_the_fresh_listing() {
        let at = Utc::now();
        let named = |id: &str, parent: Option<&str>| Branch {
            id: id.into(),
            name: format!("name-{id}"),
            parent_id: parent.map(Into::into),
            expires_at: None,
            ..branch(at, at)
        };
        let mut list = vec![
            named("br-main", None),
            named("br-a", Some("br-main")),
            named("br-b", Some("br-main")),
            named("br-c", Some("br-b")),
        ];
        list[0].default = true;
        let refusal = |l: &[Branch], id: &str| delete_refusal(l, &BranchId::from(id));
        assert_eq!(refusal(&list, "br-a"), None);
        assert!(refusal(&list, "br-gone")
            .unwrap()
            .contains("no longer exists"));
        assert!(refusal(&list, "br-main")
            .unwrap()
            .contains("default branch"));
        assert!(refusal(&list, "br-b")
            .unwrap()
            .contains("now has children (name-br-c)"));
        list[1].protected = true;
        assert!(refusal(&list, "br-a").unwrap().contains("now protected"));
        list[0].default = false;
        assert!(refusal(&list, "br-main").unwrap().contains("root branch"));
        // Once the run has deleted the child (and dropped it from the listing), the parent
        // may go.
        list.retain(|b| b.id.as_str() != "br-c");
        assert_eq!(refusal(&list, "br-b"), None);
    }

    fn branch(created: DateTime<Utc>, expires: DateTime<Utc>) -> Branch {
        Branch {
            id: "br-1".into(),
            project_id: "p-1".into(),
            name: "preview/x".into(),
            parent_id: Some("br-main".into()),
            default: false,
            protected: false,
            created_at: created,
            updated_at: created,
            expires_at: Some(expires),
            current_state: "ready".into(),
            logical_size: None,
            recoverable_until: None,
            deleted_at: None,
        }
    }

    fn clear(b: &Branch, set: DateTime<Utc>, why: String) -> PlannedAction<ExpireAction> {
        PlannedAction {
            spec: ActionSpec {
                resource_kind: ResourceKind::Branch,
                resource_id: b.id.to_string(),
                resource_name: None,
                project_id: None,
                action: Action::ClearBranchExpiry,
                rule: Some("no_longer_due".into()),
                reason: format!("set {}; {why}", set.to_rfc3339()),
            },
            action: ExpireAction::ClearExpiry(b.id.clone()),
            requires: Vec::new(),
            facts: Default::default(),
        }
    }

    /// Re-deciding an expiry this job set: keep, move or take back.
    #[test]
    fn revisit_keeps_moves_or_takes_back_our_expiry() {
        let now = t(10);
        let f = |created| ExpiryFacts {
            current_expires_at: None,
            ..facts(created, now)
        };
        // Same policy, same date: nothing.
        let set = t(12);
        let b = branch(t(5), set);
        let d = decide_expiry(now, Some(7 * DAY), None, &f(t(5)));
        assert!(revisit(now, &b, set, &d, &clear).is_none());
        // Overdue ("now + margin" moves with every run): our earlier expiry stays, so
        // running often never postpones a due branch.
        let set_earlier = now - chrono::Duration::minutes(5) + chrono::Duration::minutes(10);
        let old = branch(t(1), set_earlier);
        let d = decide_expiry(now, Some(2 * DAY), None, &f(t(1)));
        assert!(matches!(d, ExpiryDecision::Set { .. }));
        assert!(revisit(now, &old, set_earlier, &d, &clear).is_none());
        // A raised ttl within Neon's horizon: moved later.
        let d = decide_expiry(now, Some(10 * DAY), None, &f(t(5)));
        let a = revisit(now, &b, set, &d, &clear).expect("moved");
        assert_eq!(a.action, ExpireAction::SetExpiry(b.id.clone(), t(15)));
        assert!(a.spec.reason.contains("replaces"), "{}", a.spec.reason);
        // A lowered ttl: brought forward.
        let d = decide_expiry(now, Some(6 * DAY), None, &f(t(5)));
        let a = revisit(now, &b, set, &d, &clear).expect("brought forward");
        assert_eq!(a.action, ExpireAction::SetExpiry(b.id.clone(), t(11)));
        // Beyond the horizon, not due, or no longer allowed: taken back.
        let beyond = decide_expiry(now, Some(60 * DAY), None, &f(t(5)));
        let not_due = decide_expiry(now, None, Some(3 * DAY), &f(t(5)));
        let not_allowed = decide_expiry(
            now,
            Some(7 * DAY),
            None,
            &ExpiryFacts {
                protected: true,
                ..f(t(5))
            },
        );
        for d in [beyond, not_due, not_allowed] {
            let a = revisit(now, &b, set, &d, &clear).unwrap_or_else(|| panic!("{d:?}"));
            assert_eq!(a.action, ExpireAction::ClearExpiry(b.id.clone()), "{d:?}");
        }
    }
}
