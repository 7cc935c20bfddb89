//! What a job's selectors pick, as every kind reads them: the projects (listed once per
//! run, by the engine), the names of branches, and the age filters.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use super::select::{
    BranchSelector, ComputeActivity, DefaultBranch, NamePattern, ProjectFacts, ProjectSelector,
    Selection,
};
use crate::config::{DefaultBranchFilter, JobConfig};
use crate::neon::{
    ApiError, Branch, Endpoint, EndpointState, NeonClient, OrgId, Project, ProjectFilter,
};

/// The job's project selector, from the patterns the policy compiled when it was read.
pub(crate) fn project_selector(job: &JobConfig) -> ProjectSelector {
    let p = &job.selectors.projects;
    ProjectSelector {
        ids: p.ids.clone(),
        org_id: p.org_id.clone(),
        names: p.names.compiled().to_vec(),
        name_regex: p.name_regex.clone().map(NamePattern::Regex),
        exclude_ids: p.exclude_ids.clone(),
        exclude_names: p.exclude_names.compiled().to_vec(),
    }
}

/// The name part of the branch selector (age and activity are the kinds' business).
pub(crate) fn branch_selector(job: &JobConfig) -> BranchSelector {
    let b = &job.selectors.branches;
    BranchSelector {
        names: b.names.compiled().to_vec(),
        exclude_names: b.exclude.compiled().to_vec(),
        exclude_ids: Vec::new(),
        default_branch: match b.default {
            DefaultBranchFilter::Any => DefaultBranch::Any,
            DefaultBranchFilter::Only => DefaultBranch::Only,
            DefaultBranchFilter::Exclude => DefaultBranch::Exclude,
        },
        ttl: None,
        idle_ttl: None,
    }
}

/// The selector's own `older_than` / `inactive_for` filters (they narrow; the expire job's
/// `ttl` / `idle_ttl` are the reasons to act).
pub(crate) fn passes_age_filters(
    job: &JobConfig,
    now: DateTime<Utc>,
    created_at: DateTime<Utc>,
    last_activity: DateTime<Utc>,
) -> bool {
    let b = &job.selectors.branches;
    b.older_than
        .is_none_or(|d| super::select::age(now, created_at) > d)
        && b.inactive_for
            .is_none_or(|d| super::select::age(now, last_activity) > d)
}

/// A branch's last activity from the project's endpoints.
pub(crate) fn branch_last_activity(
    now: DateTime<Utc>,
    branch: &Branch,
    endpoints: &[Endpoint],
) -> DateTime<Utc> {
    super::select::last_activity(
        now,
        branch.updated_at,
        endpoints
            .iter()
            .filter(|e| e.branch_id == branch.id)
            .map(|e| ComputeActivity {
                active: e.current_state == EndpointState::Active,
                last_active: e.last_active,
            }),
    )
}

/// Why the projects could not be selected.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("listing projects: {0}")]
    Projects(ApiError),
}

/// The projects the job's project selector picks, in the API's order.
pub(crate) async fn selected_projects(
    client: &NeonClient,
    job: &JobConfig,
) -> Result<Vec<Project>, ScopeError> {
    let selector = project_selector(job);
    let filter = ProjectFilter {
        org_id: job.selectors.projects.org_id.clone().map(OrgId::from),
        search: None,
    };
    let all: Vec<Project> = client
        .list_projects(filter)
        .try_collect()
        .await
        .map_err(ScopeError::Projects)?;
    Ok(all
        .into_iter()
        .filter(|p| {
            let facts = ProjectFacts {
                id: p.id.as_str(),
                name: &p.name,
                org_id: p.org_id.as_ref().map(|o| o.as_str()),
            };
            let sel = selector.select(&facts);
            if let Selection::Excluded(w) = &sel {
                tracing::debug!(job = %job.name, project = %p.id, reason = %w.reason, "project excluded");
            }
            sel.is_selected()
        })
        .collect())
}
