//! Neon's manual snapshot limit per project: 1 on the Free plan, 100 on paid plans (Neon's
//! snapshot docs). A project at its limit would refuse a create with a quota `423`, which no
//! retry fixes; `snapshot_branches` skips the create at planning instead, with the reason,
//! and retention still runs, so the deletes that make room again are not held back by a
//! create that could not succeed.
//!
//! The limit depends on the plan the project is billed on: its organization's
//! (`GET /organizations/{org_id}`, `plan`), or for a personal project the account's
//! (`GET /users/me`, `plan`). Each is looked up at most once per run, and only when a
//! project already holds a manual snapshot (below the Free limit every plan allows one more).
//! A plan that cannot be read or is not one Neon documents leaves the limit unknown: the
//! create is planned and Neon decides.

use std::collections::HashMap;

use tokio::sync::Mutex;

use crate::neon::{NeonClient, OrgId, Project, Snapshot};

/// Manual snapshots a project may hold on the Free plan.
pub const FREE_LIMIT: usize = 1;
/// Manual snapshots a project may hold on a paid plan.
pub const PAID_LIMIT: usize = 100;

/// A project's known limit and the plan it comes from (for the reason in the ledger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub plan: String,
    pub limit: usize,
}

/// The limit of a plan name as Neon reports it (the values of the document's
/// `BillingSubscriptionType`, which organizations' and users' `plan` use), or `None` for
/// `UNKNOWN` and names it does not list.
pub fn limit_for_plan(plan: &str) -> Option<usize> {
    let p = plan.trim().to_ascii_lowercase();
    if p.starts_with("free") {
        return Some(FREE_LIMIT);
    }
    const PAID: [&str; 8] = [
        "launch",
        "launch_v3",
        "scale",
        "scale_v3",
        "business",
        "direct_sales",
        "direct_sales_v3",
        "aws_marketplace",
    ];
    PAID.contains(&p.as_str()).then_some(PAID_LIMIT)
}

/// The manual snapshots among a project's snapshots. One without `manual` counts: the
/// snapshots the API creates are manual, and Neon marks its scheduled ones `manual: false`.
pub fn manual_count(snapshots: &[Snapshot]) -> usize {
    snapshots.iter().filter(|s| s.manual != Some(false)).count()
}

/// Whether a new snapshot fits: `held` manual snapshots exist and `planned` more are
/// planned in this run before it. `Err` is the reason it does not.
pub fn fits(quota: Option<&Quota>, held: usize, planned: usize) -> Result<(), String> {
    match quota {
        Some(q) if held + planned >= q.limit => Err(if planned == 0 {
            format!(
                "the project holds {held} manual snapshot(s) and its plan ({}) allows {}: \
                 Neon would refuse the create (quota); retention still runs",
                q.plan, q.limit
            )
        } else {
            format!(
                "the project holds {held} manual snapshot(s), {planned} more are planned in \
                 this run, and its plan ({}) allows {}: Neon would refuse the create (quota); \
                 retention still runs",
                q.plan, q.limit
            )
        }),
        _ => Ok(()),
    }
}

/// The plans looked up in one run, by organization (`None`: the account's own).
#[derive(Default)]
pub struct PlanQuotas {
    known: Mutex<HashMap<Option<OrgId>, Option<Quota>>>,
}

impl PlanQuotas {
    /// The limit of `project`'s plan, looked up once per organization per run.
    pub async fn of(&self, client: &NeonClient, project: &Project) -> Option<Quota> {
        // Held across the lookup: projects of one organization planned concurrently wait
        // for the first one's answer instead of asking again.
        let mut known = self.known.lock().await;
        if let Some(q) = known.get(&project.org_id) {
            return q.clone();
        }
        let plan = match &project.org_id {
            Some(org) => client.organization_plan(org).await,
            None => client.current_user().await.map(|u| u.plan),
        };
        let quota = match plan {
            Ok(plan) => limit_for_plan(&plan).map(|limit| Quota { plan, limit }),
            Err(e) => {
                tracing::debug!(project = %project.id, error = %e, "cannot read the project's plan; its snapshot limit is unknown");
                None
            }
        };
        known.insert(project.org_id.clone(), quota.clone());
        quota
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_map_to_neon_limits() {
        for free in ["free", "free_v2", "free_v3", "FREE_V3"] {
            assert_eq!(limit_for_plan(free), Some(FREE_LIMIT), "{free}");
        }
        for paid in [
            "launch",
            "launch_v3",
            "scale",
            "scale_v3",
            "business",
            "direct_sales",
        ] {
            assert_eq!(limit_for_plan(paid), Some(PAID_LIMIT), "{paid}");
        }
        for unknown in ["UNKNOWN", "", "vercel_pg_legacy", "something_new"] {
            assert_eq!(limit_for_plan(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn a_create_fits_below_the_limit_only() {
        let free = Quota {
            plan: "free_v3".into(),
            limit: FREE_LIMIT,
        };
        assert!(fits(Some(&free), 0, 0).is_ok());
        let why = fits(Some(&free), 1, 0).unwrap_err();
        assert!(why.contains("free_v3") && why.contains("allows 1"), "{why}");
        // A second root branch of the same project: the first create takes the only slot.
        let why = fits(Some(&free), 0, 1).unwrap_err();
        assert!(why.contains("1 more are planned"), "{why}");
        let paid = Quota {
            plan: "scale".into(),
            limit: PAID_LIMIT,
        };
        assert!(fits(Some(&paid), 99, 0).is_ok());
        assert!(fits(Some(&paid), 99, 1).is_err());
        assert!(fits(Some(&paid), 100, 0).is_err());
        // Unknown plan: Neon decides.
        assert!(fits(None, 1_000, 5).is_ok());
    }

    #[test]
    fn snapshots_without_manual_count_as_manual() {
        let s = |manual| Snapshot {
            id: "s".into(),
            name: "n".into(),
            source_branch_id: None,
            created_at: chrono::Utc::now(),
            expires_at: None,
            manual,
        };
        assert_eq!(manual_count(&[s(Some(true)), s(None), s(Some(false))]), 2);
    }
}
