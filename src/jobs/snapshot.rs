//! `snapshot_branches`: naming, ownership and idempotency of the snapshots a policy makes.
//!
//! Names are rendered from the job's template and the *tick* the run is for (not the wall
//! clock), so a re-run of the same tick after a crash renders the same name and finds the
//! snapshot it made before instead of making a second one.
//!
//! Retention only ever touches snapshots this policy made, and "made" is a record, not a
//! guess: every snapshot id the job creates is written to the job's state in the store
//! ([`Ownership`]), and retention considers only recorded ids. The name is a second check:
//! the snapshot's source branch must be the branch we snapshot and its name must match the
//! template with `{branch}`/`{job}` filled in and `{date}`/`{time}` as their digit patterns.
//! Snapshots made by hand, by another policy, or by a version of this daemon that kept no
//! record are never deleted. (Matching by name alone, as an earlier version did, let a job
//! prune another job's snapshots whenever both used the same template.)
//!
//! A branch's retention deletes depend on its new snapshot: if the create fails, the
//! deletes are skipped (`new snapshot was not created`), so a failing create with
//! `keep_last = 1` cannot delete the only good snapshot. When the create was skipped because
//! this tick's snapshot exists already, retention proceeds.

use std::collections::HashSet;
use std::time::Duration;

use chrono::DateTime;
use futures::TryStreamExt;
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::calls::{wait, with_lock_retry};
use super::kind::{ActCx, JobKind, PendingRef, PlanCx, Resolution, StateView};
use super::ledger::{Action, ActionSpec, ResourceKind};
use super::plan::{JobEnv, PlanError, PlannedAction, ProjectPlan};
use super::retention::{self, RetentionPlan, RetentionPolicy, SnapshotRef};
use super::saved::{snapshot_facts, snapshot_source_facts};
use super::scope::passes_age_filters;
use super::select::{BranchFacts, BranchSelector, Selection};
use super::snapshot_quota::{self as quota, PlanQuotas};
use crate::config::{JobConfig, SnapshotSpec};
use crate::neon::{
    ApiError, Branch, BranchId, Project, ProjectId, Snapshot, SnapshotId, SnapshotRequest,
};

/// What the job's state holds for one project: the snapshots it made, and the creates it
/// began whose answer was never recorded (the daemon died during the call).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipRecord {
    #[serde(default)]
    pub snapshots: Vec<OwnedSnapshot>,
    #[serde(default)]
    pub attempts: Vec<CreateAttempt>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedSnapshot {
    pub id: String,
    pub branch_id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAttempt {
    pub branch_id: String,
    pub name: String,
}

/// The job-state key of a project's record.
pub fn ownership_key(project: &ProjectId) -> String {
    format!("{}/{project}", Snapshots::STATE_KEY)
}

impl OwnershipRecord {
    /// Brings the record up to date with the project's snapshots: forgets recorded ids
    /// that no longer exist (Neon expired them, or someone deleted them) and adopts, for
    /// each unfinished create, the snapshot with exactly that name from that branch.
    fn reconcile(&mut self, existing: &[Snapshot]) {
        let ids: HashSet<&str> = existing.iter().map(|s| s.id.as_str()).collect();
        self.snapshots.retain(|o| ids.contains(o.id.as_str()));
        for a in std::mem::take(&mut self.attempts) {
            let made = existing.iter().find(|s| {
                s.name == a.name
                    && s.source_branch_id.as_ref().map(|b| b.as_str()) == Some(a.branch_id.as_str())
                    && !self.owns(s.id.as_str())
            });
            if let Some(s) = made {
                self.snapshots.push(OwnedSnapshot {
                    id: s.id.to_string(),
                    branch_id: a.branch_id.clone(),
                    name: s.name.clone(),
                });
            }
        }
    }

    pub fn owns(&self, id: &str) -> bool {
        self.snapshots.iter().any(|o| o.id == id)
    }
}

/// What a snapshot job does.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotAction {
    Create {
        branch: BranchId,
        name: String,
        /// Neon deletes the snapshot this long after it is made (computed at the call).
        expires_in: Option<Duration>,
    },
    /// Retention.
    Delete(SnapshotId),
}

/// What a snapshot call did.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotDone {
    Created(SnapshotId),
    /// The create was refused because this tick's snapshot exists already (made by an
    /// earlier attempt whose record was lost); it is recorded as the job's.
    Adopted(SnapshotId),
    Deleted {
        already: bool,
    },
}

/// `snapshot_branches`, compiled for one run.
pub struct Snapshots<'a> {
    job: &'a JobConfig,
    spec: &'a SnapshotSpec,
    branches: BranchSelector,
    /// The plans (manual snapshot limits) looked up in this run.
    quotas: PlanQuotas,
}

impl<'a> Snapshots<'a> {
    pub fn new(job: &'a JobConfig, spec: &'a SnapshotSpec) -> Self {
        Snapshots {
            job,
            spec,
            branches: super::scope::branch_selector(job),
            quotas: PlanQuotas::default(),
        }
    }
}

impl JobKind for Snapshots<'_> {
    type Action = SnapshotAction;
    type Done = SnapshotDone;
    type State = OwnershipRecord;
    const STATE_KEY: &'static str = "owned_snapshots";
    const LEDGER_ACTIONS: &'static [Action] = &[Action::CreateSnapshot, Action::DeleteSnapshot];

    async fn plan_project(
        &self,
        cx: &PlanCx<'_>,
        project: &Project,
        state: StateView<'_, OwnershipRecord>,
    ) -> Result<ProjectPlan<SnapshotAction>, PlanError> {
        // Without the record nothing can be pruned safely: the project fails its planning.
        let record = state.map_err(|e| {
            PlanError::State(super::state::StateError::Corrupt {
                key: ownership_key(&project.id),
                error: format!("{e}; no snapshot is pruned until it is readable"),
            })
        })?;
        plan(
            cx,
            self.job,
            self.spec,
            (&self.branches, &self.quotas),
            project,
            record,
        )
        .await
    }

    fn is_destructive(action: &SnapshotAction) -> bool {
        matches!(action, SnapshotAction::Delete(_))
    }

    fn intend(&self, state: &mut OwnershipRecord, action: &SnapshotAction) {
        // Written before the call: if the daemon dies during it, the next run adopts a
        // snapshot with exactly this name from this branch as ours.
        if let SnapshotAction::Create { branch, name, .. } = action {
            state.attempts.push(CreateAttempt {
                branch_id: branch.to_string(),
                name: name.clone(),
            });
        }
    }

    fn record(&self, state: &mut OwnershipRecord, action: &SnapshotAction, done: &SnapshotDone) {
        match (action, done) {
            (
                SnapshotAction::Create { branch, name, .. },
                SnapshotDone::Created(id) | SnapshotDone::Adopted(id),
            ) => {
                state
                    .attempts
                    .retain(|a| !(a.branch_id == branch.as_str() && a.name == *name));
                state.snapshots.push(OwnedSnapshot {
                    id: id.to_string(),
                    branch_id: branch.to_string(),
                    name: name.clone(),
                });
            }
            (SnapshotAction::Delete(id), _) => state.snapshots.retain(|o| o.id != id.as_str()),
            _ => {}
        }
    }

    async fn perform(
        &self,
        cx: &ActCx<'_>,
        action: &SnapshotAction,
    ) -> Result<SnapshotDone, ApiError> {
        let (env, project, c) = (cx.env, cx.project, &cx.env.client);
        match action {
            SnapshotAction::Create {
                branch,
                name,
                expires_in,
            } => {
                let created = with_lock_retry(cx, || {
                    let req = SnapshotRequest {
                        name: Some(name.clone()),
                        expires_at: expiry(cx.now(), *expires_in),
                        ..Default::default()
                    };
                    c.create_snapshot(project, branch, req)
                })
                .await;
                let (snap, ops) = match created {
                    Ok(r) => r,
                    // Neon keeps snapshot names unique in a project: this tick's snapshot
                    // exists, made by an attempt whose record was lost (a replica that
                    // resumed after a takeover, an answer lost in a crash). It carries this
                    // job's name for this branch and tick, so it is ours: adopt it.
                    Err(e) if e.status() == Some(409) => {
                        let existing = c.list_snapshots(project).await?;
                        return match existing.into_iter().find(|s| {
                            s.name == *name && s.source_branch_id.as_ref() == Some(branch)
                        }) {
                            Some(s) => Ok(SnapshotDone::Adopted(s.id)),
                            None => Err(e),
                        };
                    }
                    Err(e) => return Err(e),
                };
                wait(env, project, &ops).await?;
                Ok(SnapshotDone::Created(snap.id))
            }
            SnapshotAction::Delete(s) => {
                match with_lock_retry(cx, || c.delete_snapshot(project, s)).await {
                    Ok(ops) => wait(env, project, &ops).await?,
                    Err(ApiError::AlreadyDeleted { .. }) => {
                        return Ok(SnapshotDone::Deleted { already: true })
                    }
                    Err(e) => return Err(e),
                }
                Ok(SnapshotDone::Deleted { already: false })
            }
        }
    }

    fn detail(done: &SnapshotDone) -> Option<String> {
        match done {
            SnapshotDone::Created(id) => Some(format!("snapshot_id={id}")),
            SnapshotDone::Adopted(id) => Some(format!(
                "snapshot_id={id} (it existed already, made by an earlier attempt of this tick \
                 whose record was lost; adopted)"
            )),
            SnapshotDone::Deleted { already: true } => Some("already deleted".into()),
            SnapshotDone::Deleted { already: false } => None,
        }
    }

    async fn check_outcome(env: &JobEnv, p: &PendingRef<'_>) -> Result<Resolution, ApiError> {
        let snapshots = env
            .client
            .list_snapshots(&ProjectId::from(p.project_id))
            .await?;
        Ok(match p.action {
            Action::CreateSnapshot => {
                let name = p.resource_name.unwrap_or_default();
                match snapshots.iter().find(|s| {
                    s.name == name
                        && s.source_branch_id.as_ref().map(|b| b.as_str()) == Some(p.resource_id)
                }) {
                    Some(s) => Resolution::succeeded(format!("snapshot_id={}", s.id)),
                    None => Resolution::failed(format!(
                        "no snapshot {name:?} of branch {} exists: it was not created",
                        p.resource_id
                    )),
                }
            }
            _ => {
                if snapshots.iter().any(|s| s.id.as_str() == p.resource_id) {
                    Resolution::failed("the snapshot still exists: it was not deleted")
                } else {
                    Resolution::succeeded("the snapshot no longer exists")
                }
            }
        })
    }

    fn blocked_by(dep: &PlannedAction<SnapshotAction>) -> String {
        match dep.action {
            SnapshotAction::Create { .. } => "new snapshot was not created".to_string(),
            SnapshotAction::Delete(_) => format!(
                "{} of {} did not succeed in this run",
                dep.spec.action, dep.spec.resource_id
            ),
        }
    }
}

/// Marks the snapshot a plan is about to create, in the retention input.
const NEW_SNAPSHOT: &str = "(new)";

/// The start of the schedule window `at` falls in: the newest fire time of the job's
/// schedule at or before `at`. A manual or catch-up run after a crash thus renders the same
/// names as the scheduled run of that window, and finds its snapshots.
pub fn schedule_window_start(job: &JobConfig, at: DateTime<chrono::Utc>) -> DateTime<chrono::Utc> {
    let interval = job
        .schedule
        .nominal_interval(at, job.timezone)
        .unwrap_or(std::time::Duration::from_secs(86_400));
    let lookback = interval
        .saturating_mul(2)
        .max(std::time::Duration::from_secs(3600))
        .min(std::time::Duration::from_secs(400 * 86_400));
    let from = at - chrono::Duration::from_std(lookback).unwrap_or(chrono::Duration::days(400));
    job.schedule
        .last_between(from, at, job.timezone)
        .unwrap_or(at)
}

/// When a snapshot made at `now` expires, for `expires_in`. An instant past the end of
/// time means no expiry (which is what such a policy asks for), never a panic.
pub(crate) fn expiry(
    now: DateTime<chrono::Utc>,
    expires_in: Option<std::time::Duration>,
) -> Option<DateTime<chrono::Utc>> {
    expires_in
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| now.checked_add_signed(d))
}

/// Plans one project: a snapshot of each selected branch (unless this tick's exists, or the
/// project is at its plan's manual snapshot limit), then retention over the snapshots this
/// job made of that branch.
async fn plan(
    cx: &PlanCx<'_>,
    job: &JobConfig,
    spec: &SnapshotSpec,
    (selector, quotas): (&BranchSelector, &PlanQuotas),
    project: &Project,
    ownership: &mut OwnershipRecord,
) -> Result<ProjectPlan<SnapshotAction>, PlanError> {
    let (env, ctx) = (cx.env, cx.ctx);
    let branches: Vec<Branch> = env.client.list_branches(&project.id).try_collect().await?;
    let snapshots = env.client.list_snapshots(&project.id).await?;
    ownership.reconcile(&snapshots);
    // Neon's manual snapshot limit: the plan is looked up only once a create could reach it.
    let held = quota::manual_count(&snapshots);
    let mut project_quota: Option<Option<quota::Quota>> = None;
    let mut out = ProjectPlan::new(project.id.clone());
    let tick = schedule_window_start(job, ctx.scheduled_for).with_timezone(&job.timezone);
    let policy = RetentionPolicy {
        keep_last: spec.retention.keep_last,
        keep_hourly: spec.retention.keep_hourly,
        keep_daily: spec.retention.keep_daily,
        keep_weekly: spec.retention.keep_weekly,
        keep_monthly: spec.retention.keep_monthly,
        keep_yearly: None,
    };
    for b in &branches {
        let facts = BranchFacts {
            id: b.id.as_str(),
            name: &b.name,
            default: b.default,
            protected: b.protected,
            created_at: b.created_at,
            last_activity: b.updated_at,
        };
        let Selection::Selected(why) = selector.select(ctx.now, &facts) else {
            continue;
        };
        if !passes_age_filters(job, ctx.now, b.created_at, b.updated_at) {
            continue;
        }
        if b.parent_id.is_some() {
            // Neon takes snapshots of root branches only (it answers 400 otherwise).
            out.skips.push(ActionSpec {
                resource_kind: ResourceKind::Branch,
                resource_id: b.id.to_string(),
                resource_name: Some(b.name.clone()),
                project_id: Some(project.id.to_string()),
                action: Action::CreateSnapshot,
                rule: Some("neon_rules".into()),
                reason: format!(
                    "branch {:?} is not a root branch: Neon takes snapshots of root branches only",
                    b.name
                ),
            });
            continue;
        }
        let name = spec.name_template.render(&b.name, &job.name, &tick);
        let owner = ownership_matcher(spec.name_template.as_str(), &b.name, &job.name);
        let owned: Vec<_> = snapshots
            .iter()
            .filter(|s| {
                ownership.owns(s.id.as_str())
                    && s.source_branch_id.as_ref() == Some(&b.id)
                    && owner.is_match(&s.name)
            })
            .collect();
        // The base of `max_actions_percent`: what retention could delete.
        out.matched += owned.len();
        let mut refs: Vec<SnapshotRef> = owned
            .iter()
            .map(|s| SnapshotRef {
                id: s.id.to_string(),
                created_at: s.created_at,
            })
            .collect();
        let spec_for =
            |action: Action, id: String, name: Option<String>, rule: &str, reason: String| {
                ActionSpec {
                    resource_kind: if action == Action::CreateSnapshot {
                        ResourceKind::Branch
                    } else {
                        ResourceKind::Snapshot
                    },
                    resource_id: id,
                    resource_name: name,
                    project_id: Some(project.id.to_string()),
                    action,
                    rule: Some(rule.to_string()),
                    reason,
                }
            };
        let mut create = None;
        let planned = out
            .actions
            .iter()
            .filter(|a| matches!(a.action, SnapshotAction::Create { .. }))
            .count();
        let at_limit = if held + planned >= quota::FREE_LIMIT {
            if project_quota.is_none() {
                project_quota = Some(quotas.of(&env.client, project).await);
            }
            quota::fits(
                project_quota.as_ref().and_then(Option::as_ref),
                held,
                planned,
            )
            .err()
        } else {
            None
        };
        if owned.iter().any(|s| s.name == name) {
            out.skips.push(spec_for(
                Action::CreateSnapshot,
                b.id.to_string(),
                Some(name.clone()),
                "schedule",
                format!("snapshot {name:?} for this tick exists already (re-run of the same tick)"),
            ));
        } else if let Some(why) = at_limit {
            // Retention below runs without the new snapshot: its deletes need no create.
            out.skips.push(spec_for(
                Action::CreateSnapshot,
                b.id.to_string(),
                Some(name.clone()),
                "neon_rules",
                format!(
                    "snapshot {name:?} of branch {:?} not created: {why}",
                    b.name
                ),
            ));
        } else {
            create = Some(out.actions.len());
            out.actions.push(
                PlannedAction::new(
                    spec_for(
                        Action::CreateSnapshot,
                        b.id.to_string(),
                        Some(name.clone()),
                        "schedule",
                        format!(
                            "scheduled snapshot {name:?} of branch {:?} ({})",
                            b.name, why.reason
                        ),
                    ),
                    SnapshotAction::Create {
                        branch: b.id.clone(),
                        name: name.clone(),
                        expires_in: spec.expires_in,
                    },
                )
                .with_facts(snapshot_source_facts(b)),
            );
            refs.push(SnapshotRef {
                id: NEW_SNAPSHOT.to_string(),
                created_at: ctx.now,
            });
        }
        if spec.retention.is_keep_all() {
            continue;
        }
        let r = retention::plan(&policy, job.timezone, &refs);
        let reason = RetentionPlan::removal_reason(&policy);
        for gone in r.remove.iter().filter(|s| s.id != NEW_SNAPSHOT) {
            let snap = owned
                .iter()
                .find(|s| s.id.as_str() == gone.id)
                .expect("retention only returns snapshots it was given");
            out.actions.push(PlannedAction {
                spec: spec_for(
                    Action::DeleteSnapshot,
                    snap.id.to_string(),
                    Some(snap.name.clone()),
                    "retention",
                    reason.clone(),
                ),
                action: SnapshotAction::Delete(snap.id.clone()),
                // Pruning makes room for the new snapshot: without it, prune nothing.
                requires: create.into_iter().collect(),
                facts: snapshot_facts(snap),
            });
        }
    }
    Ok(out)
}

/// A matcher for the names this policy gives to snapshots of one branch.
pub fn ownership_matcher(template: &str, branch: &str, job: &str) -> Regex {
    let mut pattern = String::from("^");
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        pattern.push_str(&regex::escape(&rest[..open]));
        let after = &rest[open..];
        let (piece, len) = if after.starts_with("{branch}") {
            (regex::escape(branch), "{branch}".len())
        } else if after.starts_with("{job}") {
            (regex::escape(job), "{job}".len())
        } else if after.starts_with("{date}") {
            (r"\d{4}-\d{2}-\d{2}".to_string(), "{date}".len())
        } else if after.starts_with("{time}") {
            (r"\d{6}".to_string(), "{time}".len())
        } else {
            (regex::escape("{"), 1)
        };
        pattern.push_str(&piece);
        rest = &after[len..];
    }
    pattern.push_str(&regex::escape(rest));
    pattern.push('$');
    Regex::new(&pattern).expect("the pattern is built from escaped literals and fixed classes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono::Utc;

    #[test]
    fn expiry_of_huge_expires_in_is_none_not_a_panic() {
        let now = Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap();
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(
            expiry(now, Some(day)),
            Some(Utc.with_ymd_and_hms(2026, 3, 30, 1, 30, 0).unwrap())
        );
        assert_eq!(expiry(now, None), None);
        // Representable as a TimeDelta, but not once added to now.
        assert_eq!(expiry(now, Some(day * 100_000_000)), None);
        assert_eq!(expiry(now, Some(std::time::Duration::MAX)), None);
    }

    #[test]
    fn ownership_matches_only_our_names() {
        let m = ownership_matcher("{branch}-snap-{date}-{time}", "main", "nightly");
        assert!(m.is_match("main-snap-2026-03-29-033000"));
        assert!(!m.is_match("main-snap-2026-03-29-0330"));
        assert!(!m.is_match("xmain-snap-2026-03-29-033000"));
        assert!(!m.is_match("main-snap-2026-03-29-033000-manual"));
        assert!(!m.is_match("dev-snap-2026-03-29-033000"));
        // Regex metacharacters in the branch or template are literals.
        let m = ownership_matcher("({job}) {branch}.{date}", "feat.x+", "j");
        assert!(m.is_match("(j) feat.x+.2026-01-01"));
        assert!(!m.is_match("(j) featax+.2026-01-01"));
        // A rendered name is always owned.
        let tick = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        for t in [
            "{branch}-{job}-{date}-{time}",
            "snap-{job}-{date}{time}",
            "{job}{date}{time}",
        ] {
            let name = crate::config::NameTemplate::parse(t)
                .unwrap()
                .render("br", "job", &tick);
            assert!(
                ownership_matcher(t, "br", "job").is_match(&name),
                "{t} -> {name}"
            );
        }
    }
}
