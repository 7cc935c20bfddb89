//! `export-fixture`: the account as a neon-sim fixture (see `neon_sim::seed`), read through
//! the ordinary client (read-only calls only, rate-limited like every run).
//!
//! What is written: projects (name, org, creation time), each project's branch tree (names,
//! parents, creation times, protection, `expires_at`, which one is the default), its
//! computes (type, autosuspend timeout, state and last activity) and its snapshots (name,
//! source branch, times). What is never written: secrets of any kind. The calls that could
//! return them (connection URIs, role passwords, API keys) are not made at all, and no field
//! of what is listed carries one.
//!
//! Backup schedules of root branches are exported (one read per root branch; one that cannot
//! be read is counted in [`ExportNotes`] and left out). neon-sim keeps them but does not take
//! Neon's scheduled snapshots, so a forecast does not show those.
//!
//! `--redact-names` replaces project, branch, snapshot and organisation names with
//! placeholders (`project-3`, `branch-7`, ...) numbered in a stable order (creation time,
//! then id), so two exports of an unchanged account are identical.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::neon::{ApiError, Branch, EndpointState, NeonClient, ProjectFilter};

/// A neon-sim fixture (the subset neon-steward writes). Field names are the fixture format's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fixture {
    /// When the account was read: where `simulate` starts by default.
    pub exported_at: DateTime<Utc>,
    pub orgs: Vec<FixtureOrg>,
    pub projects: Vec<FixtureProject>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FixtureOrg {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FixtureProject {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    pub created_at: DateTime<Utc>,
    pub branches: Vec<FixtureBranch>,
    pub snapshots: Vec<FixtureSnapshot>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FixtureBranch {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub default: bool,
    pub created_at: DateTime<Utc>,
    pub protected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub endpoints: Vec<FixtureEndpoint>,
    /// Neon's backup schedule of a root branch (empty: none, or a child branch), in the
    /// shape `PUT .../backup_schedule` takes; neon-sim checks it by Neon's rules on load.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub backup_schedule: Vec<crate::neon::BackupScheduleItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FixtureEndpoint {
    #[serde(rename = "type")]
    pub kind: String,
    pub suspend_timeout_seconds: i64,
    /// `active` or `idle`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FixtureSnapshot {
    pub branch: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// What an export found that the fixture cannot hold (printed by the command).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportNotes {
    /// Snapshots whose source branch no longer exists (left out).
    pub orphan_snapshots: usize,
    /// Branches whose parent is not listed (exported as children of the default branch).
    pub reparented_branches: usize,
    /// Root branches whose backup schedule could not be read (exported without one).
    pub unread_backup_schedules: usize,
}

/// Reads the account through `client` (GET calls only) and builds its fixture.
pub async fn export(
    client: &NeonClient,
    redact_names: bool,
    now: DateTime<Utc>,
) -> Result<(Fixture, ExportNotes), ApiError> {
    let mut projects: Vec<_> = client
        .list_projects(ProjectFilter::default())
        .try_collect()
        .await?;
    projects.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let mut notes = ExportNotes::default();
    let mut orgs: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut branch_no = 0usize;
    let mut snapshot_no = 0usize;
    for (pi, p) in projects.iter().enumerate() {
        let mut branches: Vec<Branch> = client.list_branches(&p.id).try_collect().await?;
        branches.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let endpoints = client.list_endpoints(&p.id).await?;
        let snapshots = client.list_snapshots(&p.id).await?;

        let org = p.org_id.as_ref().map(|o| {
            let id = o.to_string();
            let i = orgs.iter().position(|x| *x == id).unwrap_or_else(|| {
                orgs.push(id.clone());
                orgs.len() - 1
            });
            if redact_names {
                format!("org-{}", i + 1)
            } else {
                id
            }
        });
        let mut names: HashMap<String, String> = HashMap::new();
        for b in &branches {
            branch_no += 1;
            let name = if redact_names {
                format!("branch-{branch_no}")
            } else {
                b.name.clone()
            };
            names.insert(b.id.to_string(), name);
        }
        let default = branches
            .iter()
            .find(|b| b.default)
            .or_else(|| branches.iter().find(|b| b.parent_id.is_none()))
            .map(|b| b.id.to_string());
        let mut fixture_branches = Vec::new();
        for b in parents_first(&branches, default.as_deref()) {
            let id = b.id.to_string();
            let is_default = default.as_deref() == Some(id.as_str());
            let parent = if is_default {
                None
            } else {
                match b.parent_id.as_ref().and_then(|p| names.get(p.as_str())) {
                    Some(n) => Some(n.clone()),
                    None => {
                        notes.reparented_branches += 1;
                        default.as_ref().and_then(|d| names.get(d)).cloned()
                    }
                }
            };
            let eps = endpoints
                .iter()
                .filter(|e| e.branch_id == b.id)
                .map(|e| FixtureEndpoint {
                    kind: e.endpoint_type.as_str().to_string(),
                    suspend_timeout_seconds: e.suspend_timeout_seconds,
                    state: if e.current_state == EndpointState::Active {
                        "active".into()
                    } else {
                        "idle".into()
                    },
                    last_active: e.last_active,
                })
                .collect();
            // Neon keeps backup schedules on root branches only: one read per root branch.
            let backup_schedule = if b.parent_id.is_none() {
                match client.get_backup_schedule(&p.id, &b.id).await {
                    Ok(schedule) => schedule.items().to_vec(),
                    Err(e) => {
                        tracing::warn!(project = %p.id, branch = %b.id, error = %e, "backup schedule not readable; exported without it");
                        notes.unread_backup_schedules += 1;
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            fixture_branches.push(FixtureBranch {
                name: names.get(&id).cloned().unwrap_or_default(),
                parent,
                default: is_default,
                created_at: b.created_at,
                protected: b.protected,
                expires_at: b.expires_at,
                endpoints: eps,
                backup_schedule,
            });
        }
        let mut snaps: Vec<_> = snapshots.iter().collect();
        snaps.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let mut fixture_snapshots = Vec::new();
        for s in snaps {
            let Some(branch) = s
                .source_branch_id
                .as_ref()
                .and_then(|b| names.get(b.as_str()))
            else {
                notes.orphan_snapshots += 1;
                continue;
            };
            snapshot_no += 1;
            fixture_snapshots.push(FixtureSnapshot {
                branch: branch.clone(),
                name: if redact_names {
                    format!("snapshot-{snapshot_no}")
                } else {
                    s.name.clone()
                },
                created_at: s.created_at,
                expires_at: s.expires_at,
            });
        }
        out.push(FixtureProject {
            name: if redact_names {
                format!("project-{}", pi + 1)
            } else {
                p.name.clone()
            },
            org,
            created_at: p.created_at,
            branches: fixture_branches,
            snapshots: fixture_snapshots,
        });
    }
    let orgs = orgs
        .iter()
        .enumerate()
        .map(|(i, id)| FixtureOrg {
            name: if redact_names {
                format!("org-{}", i + 1)
            } else {
                id.clone()
            },
        })
        .collect();
    Ok((
        Fixture {
            exported_at: now,
            orgs,
            projects: out,
        },
        notes,
    ))
}

/// The branches ordered so that every parent comes before its children (the fixture names
/// parents that must already exist): the default branch first; a branch whose parent is not
/// listed (or a second root) is placed as if it were a child of the default branch.
fn parents_first<'a>(branches: &'a [Branch], default: Option<&str>) -> Vec<&'a Branch> {
    let ids: std::collections::HashSet<&str> = branches.iter().map(|b| b.id.as_str()).collect();
    let mut out: Vec<&Branch> = Vec::with_capacity(branches.len());
    let mut placed: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut rest: Vec<&Branch> = Vec::new();
    for b in branches {
        if Some(b.id.as_str()) == default {
            out.push(b);
            placed.insert(b.id.as_str());
        } else {
            rest.push(b);
        }
    }
    while !rest.is_empty() {
        let before = rest.len();
        rest.retain(|b| {
            let parent = b
                .parent_id
                .as_ref()
                .map(|p| p.as_str())
                .filter(|p| ids.contains(p))
                .or(default);
            let ready = parent.is_none_or(|p| placed.contains(p));
            if ready {
                out.push(b);
                placed.insert(b.id.as_str());
            }
            !ready
        });
        if rest.len() == before {
            // A cycle cannot come from Neon; keep whatever is left rather than loop.
            out.append(&mut rest);
        }
    }
    out
}
