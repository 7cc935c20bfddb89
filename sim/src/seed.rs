//! Deterministic account generation from a seed, and fixture files.
//!
//! Generation draws everything (ids, names, ages, activity) from the state's ChaCha8 generator,
//! so the same seed, sizes and clock start always yield the same account.
//!
//! ## Fixture format (JSON)
//! ```json
//! {
//!   "orgs": [{"name": "acme"}],
//!   "projects": [{
//!     "name": "shop", "org": "acme", "created_at": "2025-01-01T00:00:00Z",
//!     "branches": [
//!       {"name": "main", "endpoints": [{"type": "read_write", "activity": "busy"}],
//!        "backup_schedule": [{"frequency": "daily", "hour": 3, "retention_seconds": 604800}]},
//!       {"name": "preview/pr-1-x", "parent": "main", "created_at": "2025-05-01T00:00:00Z",
//!        "protected": false, "expires_at": "2025-06-10T00:00:00Z",
//!        "endpoints": [{"type": "read_write", "suspend_timeout_seconds": 300}]}
//!     ],
//!     "snapshots": [{"branch": "main", "name": "nightly", "created_at": "2025-05-30T00:00:00Z"}]
//!   }],
//!   "api_keys": [{"key": "secret", "scope": "personal" | "org:acme" | "project:shop"}]
//! }
//! ```
//! Every project gets a default `main` branch; a fixture branch named `main` (without `parent`)
//! configures it, and one with `"default": true` (without `parent`) configures it and renames
//! it (children then name their parent). Endpoints may carry `"state": "active" | "idle"` and
//! `last_active`; a fixture may say when it was taken (`exported_at`, which loading ignores).
//! `parent` names another branch of the same project (default: `main`). Times default to the
//! clock's now; `activity` is `busy` or `idle` (default). `backup_schedule`
//! (default none) is checked by Neon's rules, as a `PUT .../backup_schedule` is: root branches
//! only, `daily`/`weekly`/`monthly`, retention at most 35 days.

use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use serde::Deserialize;

use crate::ids;
use crate::state::{
    Activity, ActivityRecord, BackupScheduleItem, EndpointType, KeyScope, Org, State,
};

/// Sizes of a generated account.
#[derive(Debug, Clone, Default)]
pub struct SeedParams {
    pub orgs: usize,
    pub projects: usize,
    /// Also add, per project, the cases a cleanup policy must get right (see
    /// [`add_lifecycle_cases`]). Off by default so existing seeds keep their accounts.
    pub lifecycle_cases: bool,
}

/// Adds an organization (the primary user is a member); returns its id.
pub fn insert_org(s: &mut State, name: &str) -> String {
    let id = ids::org_id(s.rng());
    let now = s.now();
    let user = s.primary_user_id.clone();
    s.orgs.insert(
        id.clone(),
        Org {
            id: id.clone(),
            name: name.to_string(),
            handle: format!(
                "{}-{}",
                name.to_lowercase().replace(' ', "-"),
                &id[id.len() - 4..]
            ),
            plan: "scale".into(),
            created_at: now - TimeDelta::days(365),
            updated_at: now - TimeDelta::days(30),
            members: vec![user],
        },
    );
    id
}

const SLUGS: &[&str] = &[
    "fix-login",
    "add-search",
    "billing-v2",
    "dark-mode",
    "upgrade-deps",
    "new-onboarding",
    "cache-layer",
    "refactor-api",
    "perf-tuning",
    "docs-update",
    "feature-flags",
    "export-csv",
];

/// Generates orgs, projects, branch trees, computes (busy and idle, with past activity) and
/// snapshots into `s`.
pub fn generate(s: &mut State, p: &SeedParams) {
    let now = s.now();
    let mut orgs = Vec::new();
    for i in 0..p.orgs {
        let name = format!("{} org {}", ids::word_pair(s.rng()), i + 1);
        orgs.push(insert_org(s, &name));
    }
    for i in 0..p.projects {
        let org = (!orgs.is_empty()).then(|| orgs[i % orgs.len()].clone());
        let age_days = s.rng().gen_range(30..400);
        let created =
            now - TimeDelta::days(age_days) - TimeDelta::seconds(s.rng().gen_range(0..86_400));
        let name = format!("{}-{}", ids::word_pair(s.rng()), i + 1);
        let (project, main) = s.insert_project(&name, org.as_deref(), created);
        if s.rng().gen_bool(0.5) {
            if let Some(b) = s.branches.get_mut(&main.id) {
                b.protected = true;
            }
        }
        let busy = s.rng().gen_bool(0.4);
        add_seeded_endpoint(s, &main.id, created, busy);
        // Branch tree: mostly children of main, some grandchildren of a dev branch.
        let n_branches = s.rng().gen_range(1..=8);
        let mut dev_parent: Option<String> = None;
        let mut used = std::collections::HashSet::new();
        for _ in 0..n_branches {
            let pr = s.rng().gen_range(1..2000);
            let slug = SLUGS[s.rng().gen_range(0..SLUGS.len())];
            let kind = s.rng().gen_range(0..3);
            let name = match kind {
                0 => format!("preview/pr-{pr}-{slug}"),
                1 => format!("dev/{}", ids::word_pair(s.rng())),
                _ => format!("pr-{pr}"),
            };
            if !used.insert(name.clone()) {
                continue;
            }
            let max_age = (now - created).num_minutes().max(61);
            let age = TimeDelta::minutes(s.rng().gen_range(60..max_age));
            let at = now - age;
            let parent = match (&dev_parent, kind) {
                (Some(d), 0) if s.rng().gen_bool(0.3) => d.clone(),
                _ => main.id.clone(),
            };
            let parent_created = s
                .branches
                .get(&parent)
                .map(|b| b.created_at)
                .unwrap_or(created);
            let at = at.max(parent_created + TimeDelta::minutes(1));
            let b = s.insert_branch(&project.id, &name, Some(&parent), at);
            if kind == 1 && dev_parent.is_none() {
                dev_parent = Some(b.id.clone());
            }
            if kind == 1 && s.rng().gen_bool(0.2) {
                if let Some(x) = s.branches.get_mut(&b.id) {
                    x.protected = true;
                }
            }
            if s.rng().gen_bool(0.6) {
                let busy = s.rng().gen_bool(0.25);
                add_seeded_endpoint(s, &b.id, at, busy);
            }
        }
        let n_snaps = s.rng().gen_range(0..=3);
        for k in 0..n_snaps {
            let at = now - TimeDelta::days(k + 1) - TimeDelta::hours(s.rng().gen_range(0..12));
            let at = at.max(created);
            s.insert_snapshot(&main.id, None, at, None, s_manual(k));
        }
    }
    if p.lifecycle_cases {
        add_lifecycle_cases(s);
    }
}

/// Adds to every project the situations a cleanup policy must handle, which random trees
/// produce too rarely to show: an old preview branch that is protected, an old preview
/// branch whose young child is kept (so the parent must be kept too), a fresh preview
/// branch, and on some projects a compute left running with autosuspend off and no
/// activity for hours (the one that burns money). Drawn from the seeded generator, so the
/// account stays deterministic.
pub fn add_lifecycle_cases(s: &mut State) {
    let now = s.now();
    let projects: Vec<(String, String, DateTime<Utc>)> = s
        .projects
        .values()
        .filter_map(|p| {
            let main = s.default_branch(&p.id)?;
            Some((p.id.clone(), main.id.clone(), main.created_at))
        })
        .collect();
    for (i, (project, main, created)) in projects.into_iter().enumerate() {
        let pr = 2000 + i * 10;
        let slug = SLUGS[s.rng().gen_range(0..SLUGS.len())];
        // Old but protected: a release candidate someone pinned.
        let at = (now - TimeDelta::days(s.rng().gen_range(10..40))).max(created);
        let b = s.insert_branch(
            &project,
            &format!("preview/pr-{pr}-{slug}"),
            Some(&main),
            at,
        );
        if let Some(x) = s.branches.get_mut(&b.id) {
            x.protected = true;
        }
        // Old parent of a young child: the child is kept, so the parent must be too.
        let at = (now - TimeDelta::days(s.rng().gen_range(8..30))).max(created);
        let parent = s.insert_branch(
            &project,
            &format!("preview/pr-{}-base", pr + 1),
            Some(&main),
            at,
        );
        let at = (now - TimeDelta::hours(s.rng().gen_range(1..20))).max(at);
        s.insert_branch(
            &project,
            &format!("preview/pr-{}-followup", pr + 1),
            Some(&parent.id),
            at,
        );
        // Fresh preview with a compute in use.
        let at = (now - TimeDelta::minutes(s.rng().gen_range(5..600))).max(created);
        let fresh = s.insert_branch(&project, &format!("pr-{}", pr + 2), Some(&main), at);
        if s.rng().gen_bool(0.5) {
            add_seeded_endpoint(s, &fresh.id, at, true);
        }
        // A forgotten compute: running, autosuspend disabled, idle for hours.
        if i % 3 == 0 {
            let at = (now - TimeDelta::days(s.rng().gen_range(2..20))).max(created);
            let name = format!("dev/{}", ids::word_pair(s.rng()));
            let dev = s.insert_branch(&project, &name, Some(&main), at);
            if let Some(ep) = s.insert_endpoint(&dev.id, EndpointType::ReadWrite, at) {
                let idle_since = now - TimeDelta::minutes(s.rng().gen_range(60..600));
                s.start_endpoint_at(&ep.id, idle_since.max(at));
                if let Some(e) = s.endpoints.get_mut(&ep.id) {
                    e.suspend_timeout_seconds = -1;
                }
            }
        }
    }
}

fn s_manual(k: i64) -> bool {
    k % 2 == 0
}

/// A compute with a few past active intervals; busy computes are active now.
fn add_seeded_endpoint(s: &mut State, branch_id: &str, since: DateTime<Utc>, busy: bool) {
    let now = s.now();
    let Some(ep) = s.insert_endpoint(branch_id, EndpointType::ReadWrite, since) else {
        return;
    };
    // Past activity: up to 3 sessions in the last 3 days, each 10..120 minutes.
    let mut last_end = None;
    for day in (1..=3).rev() {
        if !s.rng().gen_bool(0.6) {
            continue;
        }
        let start = now - TimeDelta::days(day) + TimeDelta::minutes(s.rng().gen_range(0..600));
        if start < since {
            continue;
        }
        let end = start + TimeDelta::minutes(s.rng().gen_range(10..120));
        s.activity_log.push(ActivityRecord {
            project_id: ep.project_id.clone(),
            branch_id: ep.branch_id.clone(),
            endpoint_id: ep.id.clone(),
            from: start,
            to: end,
            cu: ep.billed_cu(),
        });
        last_end = Some(end);
    }
    if let Some(e) = s.endpoints.get_mut(&ep.id) {
        e.suspended_at = last_end;
        e.last_active = last_end;
        if last_end.is_some() {
            e.started_at = last_end.map(|t| t - TimeDelta::minutes(10));
        }
        if busy {
            e.activity = Activity::Busy;
        }
    }
    if busy {
        let started = now - TimeDelta::minutes(s.rng().gen_range(1..240));
        s.start_endpoint_at(&ep.id, started.max(since));
        if let Some(e) = s.endpoints.get_mut(&ep.id) {
            e.last_active = Some(now);
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// When the account was read (`neon-steward export-fixture`); where a forecast starts.
    /// Not used when loading.
    pub exported_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub orgs: Vec<FixtureOrg>,
    #[serde(default)]
    pub projects: Vec<FixtureProject>,
    #[serde(default)]
    pub api_keys: Vec<FixtureKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureOrg {
    pub name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureProject {
    pub name: String,
    pub org: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub branches: Vec<FixtureBranch>,
    #[serde(default)]
    pub snapshots: Vec<FixtureSnapshot>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureBranch {
    pub name: String,
    pub parent: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub protected: bool,
    /// This is the project's default branch under its own name (instead of `main`).
    #[serde(default)]
    pub default: bool,
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub endpoints: Vec<FixtureEndpoint>,
    /// The branch's backup schedule, as `PUT .../backup_schedule` takes it (root branches
    /// only, Neon's rules).
    #[serde(default)]
    pub backup_schedule: Vec<BackupScheduleItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureEndpoint {
    #[serde(rename = "type", default = "rw")]
    pub kind: String,
    #[serde(default)]
    pub activity: Option<String>,
    pub suspend_timeout_seconds: Option<i64>,
    /// `active` or `idle` (default): the compute's state when the fixture was taken. An
    /// active idle compute autosuspends per its timeout from `last_active`.
    pub state: Option<String>,
    /// When the compute last had traffic.
    pub last_active: Option<DateTime<Utc>>,
}

fn rw() -> String {
    "read_write".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureSnapshot {
    pub branch: String,
    pub name: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureKey {
    pub key: String,
    pub scope: String,
}

/// Reads and applies a fixture file; errors name the file and the problem.
pub fn load_fixture_file(s: &mut State, path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read fixture {}: {e}", path.display()))?;
    let fixture: Fixture = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("invalid fixture {}: {e}", path.display()))?;
    apply_fixture(s, &fixture).map_err(|e| anyhow::anyhow!("fixture {}: {e}", path.display()))
}

/// Applies a parsed fixture.
pub fn apply_fixture(s: &mut State, f: &Fixture) -> anyhow::Result<()> {
    let now = s.now();
    let mut org_ids = std::collections::HashMap::new();
    for o in &f.orgs {
        org_ids.insert(o.name.clone(), insert_org(s, &o.name));
    }
    let mut project_ids = std::collections::HashMap::new();
    for p in &f.projects {
        let org =
            match &p.org {
                Some(name) => Some(org_ids.get(name).cloned().ok_or_else(|| {
                    anyhow::anyhow!("project {:?}: unknown org {name:?}", p.name)
                })?),
                None => None,
            };
        let created = p.created_at.unwrap_or(now);
        let (project, main) = s.insert_project(&p.name, org.as_deref(), created);
        project_ids.insert(p.name.clone(), project.id.clone());
        let mut by_name = std::collections::HashMap::new();
        by_name.insert("main".to_string(), main.id.clone());
        for b in &p.branches {
            let id = if b.default && b.parent.is_none() {
                // The default branch under its own name.
                by_name.remove("main");
                if let Some(x) = s.branches.get_mut(&main.id) {
                    x.name = b.name.clone();
                }
                main.id.clone()
            } else if b.name == "main" && b.parent.is_none() {
                main.id.clone()
            } else {
                let parent_name = b.parent.clone().unwrap_or_else(|| "main".into());
                let parent = by_name.get(&parent_name).cloned().ok_or_else(|| {
                    anyhow::anyhow!(
                        "branch {:?}: unknown parent {parent_name:?} (list parents first)",
                        b.name
                    )
                })?;
                let branch = s.insert_branch(
                    &project.id,
                    &b.name,
                    Some(&parent),
                    b.created_at.unwrap_or(now),
                );
                branch.id
            };
            by_name.insert(b.name.clone(), id.clone());
            if let Some(x) = s.branches.get_mut(&id) {
                x.protected = b.protected;
                x.expires_at = b.expires_at;
                if let Some(t) = b.created_at {
                    x.created_at = t;
                }
            }
            if !b.backup_schedule.is_empty() {
                if s.branches[&id].parent_id.is_some() {
                    anyhow::bail!(
                        "branch {:?}: backup schedules apply to root branches only",
                        b.name
                    );
                }
                for (i, item) in b.backup_schedule.iter().enumerate() {
                    item.check().map_err(|m| {
                        anyhow::anyhow!("branch {:?}: backup_schedule[{i}]: {m}", b.name)
                    })?;
                }
                s.backup_schedules
                    .insert(id.clone(), b.backup_schedule.clone());
            }
            let created = s.branches[&id].created_at;
            for e in &b.endpoints {
                let kind = EndpointType::parse(&e.kind).ok_or_else(|| {
                    anyhow::anyhow!("branch {:?}: bad endpoint type {:?}", b.name, e.kind)
                })?;
                let ep = s
                    .insert_endpoint(&id, kind, created)
                    .ok_or_else(|| anyhow::anyhow!("branch {:?} vanished", b.name))?;
                let activity = match e.activity.as_deref() {
                    None | Some("idle") => Activity::Idle,
                    Some("busy") => Activity::Busy,
                    Some(other) => anyhow::bail!(
                        "branch {:?}: activity must be busy or idle, got {other:?}",
                        b.name
                    ),
                };
                if let Some(x) = s.endpoints.get_mut(&ep.id) {
                    x.activity = activity;
                    if let Some(t) = e.suspend_timeout_seconds {
                        x.suspend_timeout_seconds = t;
                    }
                }
                let active = match e.state.as_deref() {
                    None | Some("idle") => false,
                    Some("active") => true,
                    Some(other) => anyhow::bail!(
                        "branch {:?}: endpoint state must be active or idle, got {other:?}",
                        b.name
                    ),
                };
                if activity == Activity::Busy {
                    s.start_endpoint_at(&ep.id, now);
                } else if active {
                    s.start_endpoint_at(&ep.id, e.last_active.unwrap_or(now));
                }
                if let (Some(t), Some(x)) = (e.last_active, s.endpoints.get_mut(&ep.id)) {
                    if x.activity == Activity::Idle {
                        x.last_active = Some(t);
                    }
                }
            }
        }
        for sn in &p.snapshots {
            let branch = by_name
                .get(&sn.branch)
                .ok_or_else(|| anyhow::anyhow!("snapshot: unknown branch {:?}", sn.branch))?
                .clone();
            s.insert_snapshot(
                &branch,
                sn.name.as_deref(),
                sn.created_at.unwrap_or(now),
                sn.expires_at,
                true,
            );
        }
    }
    for k in &f.api_keys {
        let scope = if k.scope == "personal" {
            KeyScope::Personal {
                user_id: s.primary_user_id.clone(),
            }
        } else if let Some(org) = k.scope.strip_prefix("org:") {
            KeyScope::Org {
                org_id: org_ids
                    .get(org)
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("api key: unknown org {org:?}"))?,
            }
        } else if let Some(project) = k.scope.strip_prefix("project:") {
            let project_id = project_ids
                .get(project)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("api key: unknown project {project:?}"))?;
            let org_id = s.projects.get(&project_id).and_then(|p| p.org_id.clone());
            KeyScope::Project { org_id, project_id }
        } else {
            anyhow::bail!(
                "api key scope must be personal, org:<name> or project:<name>; got {:?}",
                k.scope
            );
        };
        s.add_api_key("fixture-key", scope, Some(k.key.clone()));
    }
    Ok(())
}
