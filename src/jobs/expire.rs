//! `expire_branches`: which expired branches go, in what order, and for
//! `mode = "set_expires_at"` which `expires_at` to hand to Neon.
//!
//! Deletion order and refusals come from [`super::branch_tree`]. This module adds Neon's
//! rules for native branch expiry: `expires_at` must be in the future and at most 30 days
//! ahead, and it is not allowed on protected, default or parent branches.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use super::branch_tree::{plan_deletions, TreeBranch};
use super::engine::{
    branch_last_activity, passes_age_filters, JobEnv, Op, PlannedAction, ProjectPlan, RunContext,
};
use super::ledger::ActionSpec;
use super::select::{BranchFacts, BranchSelector, Selection, Why};
use crate::config::{ExpireMode, ExpireSpec, JobConfig};
use crate::neon::{ApiError, Branch, Project};

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
                let f = ExpiryFacts {
                    default: b.default,
                    protected: b.protected,
                    has_children: parents.contains(b.id.as_str()),
                    created_at: b.created_at,
                    last_activity: activity,
                    current_expires_at: b.expires_at,
                };
                match decide_expiry(ctx.now, spec.ttl, spec.idle_ttl, &f) {
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

/// `t + d`, saturating at chrono's maximum instead of panicking (config bounds durations to
/// 100 years, so this only matters for absurd API timestamps).
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
}
