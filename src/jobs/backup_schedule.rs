//! `snapshot_branches` with `mode = "backup_schedule"`: Neon's own backup schedules, set by
//! policy on each selected root branch (Neon takes, names and expires the snapshots).
//!
//! The job changes only schedules it set, and "set" is a record, not a guess: every schedule
//! it puts on a branch is written to the job's state ([`SchedulesSet`], under
//! `backup_schedules/{project}`) as an *intent* before the call and as *set* after it. At
//! planning, a branch's schedule is the job's when it equals what the record says the job
//! set (or meant to set, when the daemon died during the call). Then:
//!
//! - no schedule, branch selected: the policy's schedule is set;
//! - the job's schedule, unlike the policy's: changed to the policy's;
//! - the job's schedule, branch no longer selected or the policy's list empty: taken back
//!   (an empty schedule, which turns Neon's schedule off);
//! - a schedule the job did not set (made in the console, by another tool, or changed by
//!   someone since the job set it): left alone, recorded as skipped with the reason, and
//!   the record of it forgotten (it is someone else's now).
//!
//! Right before each call the schedule is read again ([`JobKind::verify`]): if it is no
//! longer what the plan saw, nothing is done. Neon's schedules cover root branches only, so
//! a selected child branch is skipped with that reason.
//!
//! A project that leaves the job's project selector is not planned any more, so its
//! schedule stays; to take schedules back, run the job with `backup_schedule = []` first.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::calls::with_lock_retry;
use super::kind::{ActCx, JobKind, PendingRef, PlanCx, Resolution, StateView};
use super::ledger::{Action, ActionSpec, ResourceKind};
use super::plan::{JobEnv, PlanError, PlannedAction, ProjectPlan};
use super::select::{BranchFacts, BranchSelector, Selection};
use crate::config::{JobConfig, SnapshotSpec};
use crate::neon::{ApiError, BackupSchedule, Branch, BranchId, Project, ProjectId};

/// Ledger action names.
pub const SET: Action = Action::SetBackupSchedule;
pub const TAKE_BACK: Action = Action::TakeBackBackupSchedule;

/// What the job has set, per branch id of one project.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulesSet {
    #[serde(default)]
    pub branches: BTreeMap<String, SetByJob>,
}

/// The job's record of one branch's schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetByJob {
    /// What the job last set and Neon accepted.
    #[serde(default)]
    pub set: Option<BackupSchedule>,
    /// A change begun (written before the call) whose outcome was not recorded yet; an
    /// empty schedule is a take-back.
    #[serde(default)]
    pub intent: Option<BackupSchedule>,
}

impl SetByJob {
    /// Whether `current` (non-empty) is a schedule this record says the job set or meant to.
    fn owns(&self, current: &BackupSchedule) -> bool {
        self.set.as_ref() == Some(current) || self.intent.as_ref() == Some(current)
    }
}

/// What the job does to one branch.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleAction {
    /// Puts `schedule` on the branch, whose schedule was `before` at planning.
    Set {
        branch: BranchId,
        schedule: BackupSchedule,
        before: BackupSchedule,
    },
    /// Takes back the job's schedule `before` (puts an empty one).
    TakeBack {
        branch: BranchId,
        before: BackupSchedule,
    },
}

impl ScheduleAction {
    fn branch(&self) -> &BranchId {
        match self {
            ScheduleAction::Set { branch, .. } | ScheduleAction::TakeBack { branch, .. } => branch,
        }
    }
    fn before(&self) -> &BackupSchedule {
        match self {
            ScheduleAction::Set { before, .. } | ScheduleAction::TakeBack { before, .. } => before,
        }
    }
    fn target(&self) -> BackupSchedule {
        match self {
            ScheduleAction::Set { schedule, .. } => schedule.clone(),
            ScheduleAction::TakeBack { .. } => BackupSchedule::default(),
        }
    }
}

/// The decision for one branch (pure: [`decide`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing to do, nothing to say (not selected and not ours, or already as the policy
    /// says).
    None,
    Set {
        reason: String,
        rule: &'static str,
    },
    TakeBack {
        reason: String,
    },
    /// Left alone, with the reason.
    Skip {
        reason: String,
        rule: &'static str,
    },
}

/// What [`decide`] needs about one branch.
pub struct BranchCase<'a> {
    pub name: &'a str,
    /// Selected by the job's branch selector, and why.
    pub selected: Option<&'a str>,
    pub root: bool,
    pub current: &'a BackupSchedule,
    /// The job's record of the branch (after [`reconcile`]).
    pub record: Option<&'a SetByJob>,
}

/// The record after comparing it with the branch's schedule now: an intent that Neon shows
/// done becomes `set`; a record of a schedule that is no longer on the branch is forgotten
/// (taken back, cleared by someone, or replaced by someone's own). `None`: no record.
pub fn reconcile(record: Option<&SetByJob>, current: &BackupSchedule) -> Option<SetByJob> {
    let r = record?;
    if current.is_empty() || !r.owns(current) {
        return None;
    }
    Some(SetByJob {
        set: Some(current.clone()),
        intent: None,
    })
}

/// Decides one branch: `policy` is the job's schedule (empty: take back everything).
pub fn decide(b: &BranchCase<'_>, policy: &BackupSchedule) -> Decision {
    let ours = b.record.is_some();
    let current = b.current;
    if !b.root {
        return match b.selected {
            Some(_) if !policy.is_empty() => Decision::Skip {
                reason: format!(
                    "branch {:?} is not a root branch: Neon's backup schedules cover root \
                     branches only (for snapshots of other branches use mode = \"snapshots\")",
                    b.name
                ),
                rule: "neon_rules",
            },
            _ => Decision::None,
        };
    }
    let wanted = match b.selected {
        Some(_) if !policy.is_empty() => Some(policy),
        _ => None,
    };
    match (wanted, ours) {
        (Some(p), true) if current == p => Decision::None,
        (Some(p), true) => Decision::Set {
            reason: format!(
                "the policy's schedule changed: {current} -> {p} (branch {:?}, a schedule this \
                 job set)",
                b.name
            ),
            rule: "policy_changed",
        },
        (Some(p), false) if current.is_empty() => Decision::Set {
            reason: format!(
                "branch {:?} has no backup schedule; setting the policy's: {p} ({})",
                b.name,
                b.selected.unwrap_or("selected")
            ),
            rule: "backup_schedule",
        },
        (Some(_), false) => Decision::Skip {
            reason: format!(
                "branch {:?} has a backup schedule this job did not set ({current}); left alone",
                b.name
            ),
            rule: "not_ours",
        },
        (None, true) => Decision::TakeBack {
            reason: if b.selected.is_some() {
                format!(
                    "the policy lists no schedule any more: taking back the one this job set on \
                     branch {:?} ({current})",
                    b.name
                )
            } else {
                format!(
                    "branch {:?} is no longer selected by the policy: taking back the schedule \
                     this job set ({current})",
                    b.name
                )
            },
        },
        (None, false) => Decision::None,
    }
}

/// `snapshot_branches` with `mode = "backup_schedule"`, compiled for one run.
pub struct BackupSchedules<'a> {
    spec: &'a SnapshotSpec,
    branches: BranchSelector,
}

impl<'a> BackupSchedules<'a> {
    pub fn new(job: &'a JobConfig, spec: &'a SnapshotSpec) -> Self {
        BackupSchedules {
            spec,
            branches: super::scope::branch_selector(job),
        }
    }
}

/// Why the selector selects `b`, or `None`.
fn selection(
    selector: &BranchSelector,
    now: chrono::DateTime<chrono::Utc>,
    b: &Branch,
) -> Option<String> {
    let facts = BranchFacts {
        id: b.id.as_str(),
        name: &b.name,
        default: b.default,
        protected: b.protected,
        created_at: b.created_at,
        last_activity: b.updated_at,
    };
    match selector.select(now, &facts) {
        Selection::Selected(why) => Some(why.reason),
        _ => None,
    }
}

impl JobKind for BackupSchedules<'_> {
    type Action = ScheduleAction;
    type Done = BackupSchedule;
    type State = SchedulesSet;
    const STATE_KEY: &'static str = "backup_schedules";
    const LEDGER_ACTIONS: &'static [Action] = &[SET, TAKE_BACK];

    async fn plan_project(
        &self,
        cx: &PlanCx<'_>,
        project: &Project,
        state: StateView<'_, SchedulesSet>,
    ) -> Result<ProjectPlan<ScheduleAction>, PlanError> {
        // Without the record no schedule can be told to be the job's: nothing is planned.
        let record = state.map_err(|e| {
            PlanError::State(super::state::StateError::Corrupt {
                key: format!("{}/{}", Self::STATE_KEY, project.id),
                error: format!("{e}; no backup schedule is changed until it is readable"),
            })
        })?;
        let (env, ctx) = (cx.env, cx.ctx);
        let branches: Vec<Branch> = env.client.list_branches(&project.id).try_collect().await?;
        // Records of branches that no longer exist are forgotten.
        record
            .branches
            .retain(|id, _| branches.iter().any(|b| b.id.as_str() == id));
        let mut out = ProjectPlan::new(project.id.clone());
        let policy = &self.spec.backup_schedule;
        for b in &branches {
            let why = selection(&self.branches, ctx.now, b);
            let selected = why.as_deref();
            let has_record = record.branches.contains_key(b.id.as_str());
            if selected.is_none() && !has_record {
                continue;
            }
            let root = b.parent_id.is_none();
            // A child branch has no schedule to read (Neon's schedules are root-only).
            let current = if root {
                env.client.get_backup_schedule(&project.id, &b.id).await?
            } else {
                BackupSchedule::default()
            };
            let reconciled = reconcile(record.branches.get(b.id.as_str()), &current);
            let forgotten = has_record && reconciled.is_none();
            match &reconciled {
                Some(r) => {
                    record.branches.insert(b.id.to_string(), r.clone());
                }
                None => {
                    record.branches.remove(b.id.as_str());
                }
            }
            let case = BranchCase {
                name: &b.name,
                selected,
                root,
                current: &current,
                record: reconciled.as_ref(),
            };
            if reconciled.is_some() {
                // The base of `max_actions_percent`: the schedules a take-back could end.
                out.matched += 1;
            }
            let spec = |action: Action, rule: &str, reason: String| ActionSpec {
                resource_kind: ResourceKind::Branch,
                resource_id: b.id.to_string(),
                resource_name: Some(b.name.clone()),
                project_id: Some(project.id.to_string()),
                action,
                rule: Some(rule.to_string()),
                reason,
            };
            match decide(&case, policy) {
                Decision::None => {}
                Decision::Set { reason, rule } => out.actions.push(PlannedAction::new(
                    spec(SET, rule, reason),
                    ScheduleAction::Set {
                        branch: b.id.clone(),
                        schedule: policy.clone(),
                        before: current.clone(),
                    },
                )),
                Decision::TakeBack { reason } => out.actions.push(PlannedAction::new(
                    spec(TAKE_BACK, "taken_back", reason),
                    ScheduleAction::TakeBack {
                        branch: b.id.clone(),
                        before: current.clone(),
                    },
                )),
                Decision::Skip { mut reason, rule } => {
                    if forgotten {
                        reason.push_str(
                            "; it is not the schedule this job set, so the job's record of \
                             the branch is forgotten",
                        );
                    }
                    out.skips.push(spec(SET, rule, reason));
                }
            }
        }
        Ok(out)
    }

    /// A take-back ends Neon's scheduled snapshots of the branch.
    fn is_destructive(action: &ScheduleAction) -> bool {
        matches!(action, ScheduleAction::TakeBack { .. })
    }

    fn intend(&self, state: &mut SchedulesSet, action: &ScheduleAction) {
        state
            .branches
            .entry(action.branch().to_string())
            .or_default()
            .intent = Some(action.target());
    }

    fn record(&self, state: &mut SchedulesSet, action: &ScheduleAction, _done: &BackupSchedule) {
        match action {
            ScheduleAction::Set {
                branch, schedule, ..
            } => {
                state.branches.insert(
                    branch.to_string(),
                    SetByJob {
                        set: Some(schedule.clone()),
                        intent: None,
                    },
                );
            }
            ScheduleAction::TakeBack { branch, .. } => {
                state.branches.remove(branch.as_str());
            }
        }
    }

    async fn verify(
        &self,
        cx: &ActCx<'_>,
        action: &ScheduleAction,
    ) -> Result<Option<String>, ApiError> {
        let now = cx
            .env
            .client
            .get_backup_schedule(cx.project, action.branch())
            .await?;
        Ok((&now != action.before()).then(|| {
            format!(
                "not changed: the branch's schedule changed since the plan (it was {}, it is \
                 {now})",
                action.before()
            )
        }))
    }

    async fn perform(
        &self,
        cx: &ActCx<'_>,
        action: &ScheduleAction,
    ) -> Result<BackupSchedule, ApiError> {
        let (env, project) = (cx.env, cx.project);
        let target = action.target();
        with_lock_retry(cx, || {
            env.client
                .put_backup_schedule(project, action.branch(), &target)
        })
        .await?;
        Ok(target)
    }

    fn detail(done: &BackupSchedule) -> Option<String> {
        Some(format!("schedule now: {done}"))
    }

    async fn check_outcome(env: &JobEnv, p: &PendingRef<'_>) -> Result<Resolution, ApiError> {
        let now = env
            .client
            .get_backup_schedule(
                &ProjectId::from(p.project_id),
                &BranchId::from(p.resource_id),
            )
            .await?;
        Ok(match (p.action, now.is_empty()) {
            (TAKE_BACK, true) => Resolution::succeeded("the branch has no backup schedule"),
            (TAKE_BACK, false) => Resolution::failed(format!(
                "the branch still has a backup schedule ({now}): it was not taken back"
            )),
            (_, true) => Resolution::failed("the branch has no backup schedule: it was not set"),
            // Whether this is the schedule the call meant to set is for the job's next run to
            // tell, from the intent in its state.
            (_, false) => Resolution::unknown(format!(
                "the branch has a backup schedule ({now}); the job's next run compares it with \
                 the one it meant to set"
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neon::{BackupFrequency, BackupScheduleItem};

    fn daily(hour: i64) -> BackupSchedule {
        BackupSchedule::new(vec![BackupScheduleItem {
            frequency: BackupFrequency::Daily,
            hour: Some(hour),
            day: None,
            month: None,
            retention_seconds: Some(7 * 86_400),
        }])
    }

    fn case<'a>(
        selected: bool,
        root: bool,
        current: &'a BackupSchedule,
        record: Option<&'a SetByJob>,
    ) -> BranchCase<'a> {
        BranchCase {
            name: "main",
            selected: selected.then_some("all branches"),
            root,
            current,
            record,
        }
    }

    fn ours(s: &BackupSchedule) -> SetByJob {
        SetByJob {
            set: Some(s.clone()),
            intent: None,
        }
    }

    #[test]
    fn sets_where_there_is_none_and_leaves_others_alone() {
        let (none, p, other) = (BackupSchedule::default(), daily(3), daily(5));
        assert!(matches!(
            decide(&case(true, true, &none, None), &p),
            Decision::Set {
                rule: "backup_schedule",
                ..
            }
        ));
        assert!(matches!(
            decide(&case(true, true, &other, None), &p),
            Decision::Skip {
                rule: "not_ours",
                ..
            }
        ));
        assert_eq!(decide(&case(false, true, &other, None), &p), Decision::None);
        assert!(matches!(
            decide(&case(true, false, &none, None), &p),
            Decision::Skip {
                rule: "neon_rules",
                ..
            }
        ));
        assert_eq!(decide(&case(false, false, &none, None), &p), Decision::None);
        // An emptied policy wants nothing of a child branch, so says nothing of it.
        assert_eq!(
            decide(&case(true, false, &none, None), &BackupSchedule::default()),
            Decision::None
        );
    }

    #[test]
    fn changes_and_takes_back_only_its_own() {
        let (p, old) = (daily(3), daily(1));
        let r = ours(&old);
        assert!(matches!(
            decide(&case(true, true, &old, Some(&r)), &p),
            Decision::Set {
                rule: "policy_changed",
                ..
            }
        ));
        let r = ours(&p);
        assert_eq!(decide(&case(true, true, &p, Some(&r)), &p), Decision::None);
        assert!(matches!(
            decide(&case(false, true, &p, Some(&r)), &p),
            Decision::TakeBack { .. }
        ));
        assert!(matches!(
            decide(&case(true, true, &p, Some(&r)), &BackupSchedule::default()),
            Decision::TakeBack { .. }
        ));
        // The policy is emptied: a schedule someone else set stays.
        assert_eq!(
            decide(&case(true, true, &p, None), &BackupSchedule::default()),
            Decision::None
        );
    }

    #[test]
    fn the_record_follows_what_is_on_the_branch() {
        let (a, b) = (daily(3), daily(4));
        // An intent Neon shows done becomes what the job set.
        let r = SetByJob {
            set: Some(a.clone()),
            intent: Some(b.clone()),
        };
        assert_eq!(reconcile(Some(&r), &b), Some(ours(&b)));
        assert_eq!(reconcile(Some(&r), &a), Some(ours(&a)));
        // Someone else's schedule, or none: forgotten.
        assert_eq!(reconcile(Some(&r), &daily(9)), None);
        assert_eq!(reconcile(Some(&r), &BackupSchedule::default()), None);
        assert_eq!(reconcile(None, &a), None);
    }
}
