//! `expire_branches`: which expired branches go, in what order, and for
//! `mode = "set_expires_at"` which `expires_at` to hand to Neon.
//!
//! Deletion order and refusals come from [`super::branch_tree`]. This module adds Neon's
//! rules for native branch expiry: `expires_at` must be in the future and at most 30 days
//! ahead, and it is not allowed on protected, default or parent branches.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use super::branch_tree::{plan_deletions, TreeBranch};
use super::engine::{
    branch_last_activity, passes_age_filters, JobEnv, Op, PlannedAction, ProjectPlan, RunContext,
    RunError,
};
use super::ledger::ActionSpec;
use super::select::{BranchFacts, BranchSelector, Selection, Why};
use crate::config::{ExpireMode, ExpireSpec, JobConfig};
use crate::neon::{ApiError, Branch, Project};

/// Job state key holding the `expires_at` this job set on a project's branches (JSON object
/// branch id -> RFC 3339 time). Only those are ever taken back, and only while Neon still
/// has exactly that value: an expiry someone else set or changed is never touched.
fn state_key(project: &str) -> String {
    format!("expiries_set/{project}")
}

/// The expiries this job set in a project. A read error is returned, never treated as
/// "none": the caller must neither forget what it set nor overwrite the record.
async fn load_set(
    env: &JobEnv,
    job: &str,
    project: &str,
) -> Result<BTreeMap<String, DateTime<Utc>>, String> {
    match env.store.get_state(job, &state_key(project)).await {
        Ok(Some(v)) => serde_json::from_str(&v).map_err(|e| format!("unreadable job state: {e}")),
        Ok(None) => Ok(BTreeMap::new()),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) async fn plan(
    env: &JobEnv,
    job: &JobConfig,
    spec: &ExpireSpec,
    ctx: &RunContext,
    names: &BranchSelector,
    project: &Project,
) -> Result<ProjectPlan, ApiError> {
    let branches: Vec<Branch> = env.client.list_branches(&project.id).try_collect().await?;
    let endpoints = env.client.list_endpoints(&project.id).await?;
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
    let spec_for = |b: &Branch, action: &'static str, rule: &str, reason: String| ActionSpec {
        resource_kind: "branch",
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
    let ours: BTreeMap<String, DateTime<Utc>> = if spec.mode == ExpireMode::SetExpiresAt {
        match load_set(env, &job.name, project.id.as_str()).await {
            Ok(m) => m,
            Err(e) => {
                out.failures.push((
                    ActionSpec {
                        resource_kind: "project",
                        resource_id: project.id.to_string(),
                        resource_name: Some(project.name.clone()),
                        project_id: Some(project.id.to_string()),
                        action: "set_branch_expiry",
                        rule: None,
                        reason: "reading the expiries this job set; nothing set or cleared in this project".into(),
                    },
                    e,
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
            "clear_branch_expiry",
            "no_longer_due",
            format!("expires_at {} was set by this job; {why}", set.to_rfc3339()),
        ),
        op: Op::ClearBranchExpiry(b.id.clone()),
        requires: Vec::new(),
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
                if let Selection::Selected(why) = with_age.select(ctx.now, &facts) {
                    due.insert(b.id.to_string());
                    whys.insert(b.id.to_string(), why);
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
                            "set_branch_expiry",
                            rule,
                            format!("{reason}; expires_at {}", at.to_rfc3339()),
                        ),
                        op: Op::SetBranchExpiry(b.id.clone(), at),
                        requires: Vec::new(),
                    }),
                    ExpiryDecision::NotAllowed(why) => out.skips.push(spec_for(
                        b,
                        "set_branch_expiry",
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
                spec: spec_for(b, "delete_branch", &why.rule, why.reason.clone()),
                op: Op::DeleteBranch(b.id.clone()),
                requires,
            });
        }
        for (id, refusal) in &plan.refused {
            let Some(b) = by_id.get(id.as_str()) else {
                continue;
            };
            let why = &whys[id];
            out.skips.push(spec_for(
                b,
                "delete_branch",
                &why.rule,
                format!("{}; not deleted: {refusal}", why.reason),
            ));
        }
    }
    Ok(out)
}

/// What to do about an expiry this job set earlier (`set`, still in place), given what the
/// current policy decides for the branch: keep it, move it, or take it back.
fn revisit(
    now: DateTime<Utc>,
    b: &Branch,
    set: DateTime<Utc>,
    decision: &ExpiryDecision,
    clear: &dyn Fn(&Branch, DateTime<Utc>, String) -> PlannedAction,
) -> Option<PlannedAction> {
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
                    resource_kind: "branch",
                    resource_id: b.id.to_string(),
                    resource_name: Some(b.name.clone()),
                    project_id: Some(b.project_id.to_string()),
                    action: "set_branch_expiry",
                    rule: Some(rule.to_string()),
                    reason: format!(
                        "{reason}; expires_at {} (replaces {} set by this job)",
                        at.to_rfc3339(),
                        set.to_rfc3339()
                    ),
                },
                op: Op::SetBranchExpiry(b.id.clone(), *at),
                requires: Vec::new(),
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

/// After a real run: remember the expiries this job set and forget the ones it cleared.
/// Entries whose time has passed are dropped (Neon has deleted the branch, or someone else
/// changed the expiry, and either way there is nothing left to take back).
///
/// A state that cannot be read fails the run and is never overwritten: writing a partial
/// record would forget expiries this job set, which it could then never take back.
pub(crate) async fn remember(
    env: &JobEnv,
    job: &JobConfig,
    now: DateTime<Utc>,
    plan: &ProjectPlan,
    done: &[PlannedAction],
) -> Result<(), RunError> {
    let crate::config::JobSpec::ExpireBranches(spec) = &job.spec else {
        return Ok(());
    };
    if spec.mode != ExpireMode::SetExpiresAt || !plan.failures.is_empty() {
        return Ok(());
    }
    let project = plan.project_id.as_str();
    let mut set = match env.store.get_state(&job.name, &state_key(project)).await {
        Ok(Some(v)) => {
            serde_json::from_str::<BTreeMap<String, DateTime<Utc>>>(&v).map_err(|e| {
                RunError::State(format!(
                    "unreadable expiry record of project {project}: {e}"
                ))
            })?
        }
        Ok(None) => BTreeMap::new(),
        Err(e) => {
            let unrecorded: Vec<String> = done
                .iter()
                .filter_map(|a| match &a.op {
                    Op::SetBranchExpiry(b, _) | Op::ClearBranchExpiry(b) => Some(b.to_string()),
                    _ => None,
                })
                .collect();
            tracing::error!(job = %job.name, project, error = %e, ?unrecorded, "cannot read the expiry record; not updating it");
            return Err(e.into());
        }
    };
    let before = set.clone();
    for a in done {
        match &a.op {
            Op::SetBranchExpiry(b, at) => {
                set.insert(b.to_string(), *at);
            }
            Op::ClearBranchExpiry(b) => {
                set.remove(b.as_str());
            }
            _ => {}
        }
    }
    set.retain(|_, at| *at > now);
    if set != before {
        let json = serde_json::to_string(&set).expect("a map of strings to times serialises");
        env.store
            .set_state(&job.name, &state_key(project), &json)
            .await?;
    }
    Ok(())
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
        }
    }

    fn clear(b: &Branch, set: DateTime<Utc>, why: String) -> PlannedAction {
        PlannedAction {
            spec: ActionSpec {
                resource_kind: "branch",
                resource_id: b.id.to_string(),
                resource_name: None,
                project_id: None,
                action: "clear_branch_expiry",
                rule: Some("no_longer_due".into()),
                reason: format!("set {}; {why}", set.to_rfc3339()),
            },
            op: Op::ClearBranchExpiry(b.id.clone()),
            requires: Vec::new(),
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
        assert_eq!(a.op, Op::SetBranchExpiry(b.id.clone(), t(15)));
        assert!(a.spec.reason.contains("replaces"), "{}", a.spec.reason);
        // A lowered ttl: brought forward.
        let d = decide_expiry(now, Some(6 * DAY), None, &f(t(5)));
        let a = revisit(now, &b, set, &d, &clear).expect("brought forward");
        assert_eq!(a.op, Op::SetBranchExpiry(b.id.clone(), t(11)));
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
            assert_eq!(a.op, Op::ClearBranchExpiry(b.id.clone()), "{d:?}");
        }
    }
}
