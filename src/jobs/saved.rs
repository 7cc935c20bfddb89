//! Saved plans as the engine sees them: recording what a dry run planned (`plan --out`), and
//! restricting a real run to the actions of a reviewed plan (`apply`). The file format, the
//! policy hash and the commands are in `crate::saved_plan`; this module is kind-agnostic.
//!
//! An action of a saved plan is identified by its project, its ledger action name and its
//! resource (kind and id), and carries the **facts** it was decided on: the properties of the
//! resource the kind read when it planned (a branch's name, parent, flags, `updated_at`, ...).
//! `apply` plans again from a fresh read under the current policy and carries out an action
//! only if the fresh plan has it too, with the same facts; everything else in the saved plan
//! is recorded as skipped with the reason, and nothing outside it is ever done.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::ledger::{Action, ActionSpec, ResourceKind};
pub use super::plan::Facts;
use super::plan::PlannedAction;
use crate::neon::{Branch, Endpoint, ProjectId, Snapshot};

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The facts of a branch an action is planned on. `updated_at` is in them: Neon moves it
/// whenever the branch is changed, so a branch changed after the plan is not acted on.
pub fn branch_facts(b: &Branch) -> Facts {
    let mut f = Facts::new();
    f.insert("name".into(), b.name.clone());
    f.insert(
        "parent_id".into(),
        b.parent_id
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
    );
    f.insert("default".into(), b.default.to_string());
    f.insert("protected".into(), b.protected.to_string());
    f.insert("created_at".into(), time(b.created_at));
    f.insert("updated_at".into(), time(b.updated_at));
    f.insert(
        "expires_at".into(),
        b.expires_at.map(time).unwrap_or_default(),
    );
    f
}

/// The facts of a branch a snapshot is taken of: which branch, not its contents (a branch
/// in use changes all the time, and a snapshot of it is still the one reviewed).
pub fn snapshot_source_facts(b: &Branch) -> Facts {
    let mut f = Facts::new();
    f.insert("name".into(), b.name.clone());
    f.insert("created_at".into(), time(b.created_at));
    f
}

/// The facts of a snapshot planned for deletion.
pub fn snapshot_facts(s: &Snapshot) -> Facts {
    let mut f = Facts::new();
    f.insert("name".into(), s.name.clone());
    f.insert(
        "source_branch_id".into(),
        s.source_branch_id
            .as_ref()
            .map(|b| b.to_string())
            .unwrap_or_default(),
    );
    f.insert("created_at".into(), time(s.created_at));
    f.insert(
        "expires_at".into(),
        s.expires_at.map(time).unwrap_or_default(),
    );
    f
}

/// The facts of an endpoint planned to be suspended or started (not its activity times,
/// which move while it is in use; its state is in them).
pub fn endpoint_facts(e: &Endpoint) -> Facts {
    let mut f = Facts::new();
    f.insert("branch_id".into(), e.branch_id.to_string());
    f.insert("type".into(), e.endpoint_type.as_str().to_string());
    f.insert("current_state".into(), format!("{:?}", e.current_state));
    f.insert("disabled".into(), e.disabled.to_string());
    f
}

/// One action of a saved plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedAction {
    pub project_id: String,
    /// The ledger's action, as its name (`delete_branch`, `set_branch_expiry`, ...): a plan
    /// naming one this build does not know is refused when it is read.
    pub action: Action,
    pub resource_kind: ResourceKind,
    pub resource_id: String,
    pub resource_name: Option<String>,
    pub rule: Option<String>,
    pub reason: String,
    /// Whether it can destroy something.
    pub destructive: bool,
    pub facts: Facts,
}

impl SavedAction {
    fn key(&self) -> Key<'_> {
        (
            self.project_id.as_str(),
            self.action,
            self.resource_kind,
            self.resource_id.as_str(),
        )
    }

    fn spec(&self, reason: String) -> ActionSpec {
        ActionSpec {
            resource_kind: self.resource_kind,
            resource_id: self.resource_id.clone(),
            resource_name: self.resource_name.clone(),
            project_id: Some(self.project_id.clone()),
            action: self.action,
            rule: self.rule.clone(),
            reason,
        }
    }
}

/// A decision not to act, as a saved plan shows it (for the reviewer; `apply` ignores it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedSkip {
    pub project_id: String,
    pub action: Action,
    pub resource_kind: ResourceKind,
    pub resource_id: String,
    pub resource_name: Option<String>,
    pub rule: Option<String>,
    pub reason: String,
}

impl SavedSkip {
    fn of(spec: &ActionSpec, project: &ProjectId) -> Self {
        SavedSkip {
            project_id: project.to_string(),
            action: spec.action,
            resource_kind: spec.resource_kind,
            resource_id: spec.resource_id.clone(),
            resource_name: spec.resource_name.clone(),
            rule: spec.rule.clone(),
            reason: spec.reason.clone(),
        }
    }
}

/// What a recording run collected.
#[derive(Debug, Default)]
pub struct Recording {
    pub actions: Vec<SavedAction>,
    pub skips: Vec<SavedSkip>,
}

/// The saved plan a run is restricted to.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub plan_id: String,
    pub actions: Vec<SavedAction>,
}

/// How a run relates to a saved plan.
#[derive(Clone, Copy, Default)]
pub enum SavedPlan<'a> {
    /// An ordinary run.
    #[default]
    None,
    /// A dry run that also collects every planned action (with its facts) and skip.
    Record(&'a Mutex<Recording>),
    /// A run that may carry out only these actions, each only if planned again with the same
    /// facts.
    Apply(&'a Allowed),
}

type Key<'a> = (&'a str, Action, ResourceKind, &'a str);

impl Allowed {
    /// The projects with actions in the plan: the only ones `apply` needs to read.
    pub fn projects(&self) -> HashSet<&str> {
        self.actions.iter().map(|a| a.project_id.as_str()).collect()
    }

    /// The saved actions of projects the fresh run did not plan at all (no longer selected,
    /// gone, or their listing failed), as skips with the reason.
    pub(crate) fn unplanned_projects(&self, planned: &HashSet<String>) -> Vec<ActionSpec> {
        self.actions
            .iter()
            .filter(|a| !planned.contains(&a.project_id))
            .map(|a| {
                a.spec(format!(
                    "{}; not done: plan {}: the project was not planned again (it is no longer \
                     selected by the policy, is gone, or could not be listed)",
                    a.reason, self.plan_id
                ))
            })
            .collect()
    }

    /// Restricts one project's fresh plan to the saved plan: keeps the fresh actions the
    /// saved plan has with the same facts (their dependencies renumbered), and returns the
    /// saved actions that are not done, as skips saying why. Fresh actions outside the saved
    /// plan are dropped without a trace in the ledger: they were never asked for.
    pub(crate) fn restrict<A>(
        &self,
        project: &ProjectId,
        actions: Vec<PlannedAction<A>>,
        fresh_skips: &[ActionSpec],
    ) -> (Vec<PlannedAction<A>>, Vec<ActionSpec>) {
        let pid = project.as_str();
        let saved: HashMap<Key<'_>, &SavedAction> = self
            .actions
            .iter()
            .filter(|a| a.project_id == pid)
            .map(|a| (a.key(), a))
            .collect();
        let mut not_done: Vec<ActionSpec> = Vec::new();
        let mut matched: HashSet<Key<'_>> = HashSet::new();
        // Old index -> new index of the kept actions.
        let mut kept_at: HashMap<usize, usize> = HashMap::new();
        let mut kept: Vec<PlannedAction<A>> = Vec::new();
        let keys: Vec<(String, Action, ResourceKind, String)> = actions
            .iter()
            .map(|a| {
                (
                    pid.to_string(),
                    a.spec.action,
                    a.spec.resource_kind,
                    a.spec.resource_id.clone(),
                )
            })
            .collect();
        for (i, mut a) in actions.into_iter().enumerate() {
            let k = &keys[i];
            let key: Key<'_> = (k.0.as_str(), k.1, k.2, k.3.as_str());
            let Some(s) = saved.get(&key) else {
                continue;
            };
            matched.insert(s.key());
            if s.facts != a.facts {
                not_done.push(s.spec(format!(
                    "{}; not done: the {} changed since plan {} ({})",
                    s.reason,
                    s.resource_kind,
                    self.plan_id,
                    fact_changes(&s.facts, &a.facts)
                )));
                continue;
            }
            if let Some(dep) = a.requires.iter().find(|d| !kept_at.contains_key(d)) {
                let d = &keys[*dep];
                not_done.push(s.spec(format!(
                    "{}; not done: it depends on {} {} {}, which plan {} does not carry out \
                     now",
                    s.reason, d.1, d.2, d.3, self.plan_id
                )));
                continue;
            }
            a.requires = a.requires.iter().map(|d| kept_at[d]).collect();
            kept_at.insert(i, kept.len());
            kept.push(a);
        }
        for s in saved.values().filter(|s| !matched.contains(&s.key())) {
            let now = fresh_skips
                .iter()
                .find(|f| {
                    f.action == s.action
                        && f.resource_kind == s.resource_kind
                        && f.resource_id == s.resource_id
                })
                .map(|f| format!(": {}", f.reason))
                .unwrap_or_default();
            not_done.push(s.spec(format!(
                "{}; not done: plan {}: no longer planned under the current policy and what \
                 Neon has now{now}",
                s.reason, self.plan_id
            )));
        }
        // Deterministic order for the ledger.
        not_done.sort_by(|a, b| {
            (a.action.as_str(), &a.resource_id).cmp(&(b.action.as_str(), &b.resource_id))
        });
        (kept, not_done)
    }
}

/// "name: a -> b, ..." for the facts that differ.
fn fact_changes(before: &Facts, now: &Facts) -> String {
    let mut names: Vec<&String> = before.keys().chain(now.keys()).collect();
    names.sort();
    names.dedup();
    let shown = |v: Option<&String>| match v {
        None => "(absent)".to_string(),
        Some(v) if v.is_empty() => "(none)".to_string(),
        Some(v) => v.clone(),
    };
    names
        .into_iter()
        .filter(|n| before.get(*n) != now.get(*n))
        .map(|n| format!("{n}: {} -> {}", shown(before.get(n)), shown(now.get(n))))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Recording {
    /// Adds one project's planned actions and skips.
    pub(crate) fn add<A>(
        &mut self,
        project: &ProjectId,
        actions: &[PlannedAction<A>],
        skips: &[ActionSpec],
        destructive: impl Fn(&A) -> bool,
    ) {
        for a in actions {
            self.actions.push(SavedAction {
                project_id: project.to_string(),
                action: a.spec.action,
                resource_kind: a.spec.resource_kind,
                resource_id: a.spec.resource_id.clone(),
                resource_name: a.spec.resource_name.clone(),
                rule: a.spec.rule.clone(),
                reason: a.spec.reason.clone(),
                destructive: destructive(&a.action),
                facts: a.facts.clone(),
            });
        }
        self.skips
            .extend(skips.iter().map(|s| SavedSkip::of(s, project)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(action: Action, id: &str) -> ActionSpec {
        ActionSpec {
            resource_kind: ResourceKind::Branch,
            resource_id: id.into(),
            resource_name: Some(format!("name-{id}")),
            project_id: Some("p-1".into()),
            action,
            rule: Some("ttl".into()),
            reason: format!("fresh reason {id}"),
        }
    }

    fn facts(updated: &str) -> Facts {
        let mut f = Facts::new();
        f.insert("updated_at".into(), updated.into());
        f
    }

    fn planned(id: &str, updated: &str, requires: Vec<usize>) -> PlannedAction<String> {
        PlannedAction {
            spec: spec(Action::DeleteBranch, id),
            action: id.to_string(),
            requires,
            facts: facts(updated),
        }
    }

    fn saved(id: &str, updated: &str) -> SavedAction {
        SavedAction {
            project_id: "p-1".into(),
            action: Action::DeleteBranch,
            resource_kind: ResourceKind::Branch,
            resource_id: id.into(),
            resource_name: Some(format!("name-{id}")),
            rule: Some("ttl".into()),
            reason: format!("saved reason {id}"),
            destructive: true,
            facts: facts(updated),
        }
    }

    #[test]
    fn only_saved_actions_with_unchanged_facts_are_kept() {
        let allowed = Allowed {
            plan_id: "plan-1".into(),
            actions: vec![saved("a", "t1"), saved("b", "t1"), saved("gone", "t1")],
        };
        let fresh = vec![
            planned("a", "t1", vec![]),
            // Changed since the plan.
            planned("b", "t2", vec![]),
            // Not in the saved plan: never done.
            planned("new", "t1", vec![]),
        ];
        let skips = vec![spec(Action::DeleteBranch, "gone")];
        let (kept, not_done) = allowed.restrict(&ProjectId::new("p-1"), fresh, &skips);
        assert_eq!(
            kept.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(not_done.len(), 2, "{not_done:?}");
        let b = not_done.iter().find(|s| s.resource_id == "b").unwrap();
        assert!(
            b.reason
                .starts_with("saved reason b; not done: the branch changed since plan plan-1"),
            "{}",
            b.reason
        );
        assert!(b.reason.contains("updated_at: t1 -> t2"), "{}", b.reason);
        let gone = not_done.iter().find(|s| s.resource_id == "gone").unwrap();
        assert!(
            gone.reason.contains("no longer planned")
                && gone.reason.ends_with(": fresh reason gone"),
            "{}",
            gone.reason
        );
        assert!(not_done.iter().all(|s| s.resource_id != "new"));
    }

    #[test]
    fn dependencies_are_renumbered_and_a_dropped_dependency_drops_its_dependents() {
        let allowed = Allowed {
            plan_id: "p".into(),
            actions: vec![
                saved("child", "t1"),
                saved("parent", "t1"),
                saved("x", "t1"),
            ],
        };
        // `other` (index 0) is not in the plan; `parent` requires `child`; `x` requires
        // `other`, which is not carried out.
        let fresh = vec![
            planned("other", "t1", vec![]),
            planned("child", "t1", vec![]),
            planned("parent", "t1", vec![1]),
            planned("x", "t1", vec![0]),
        ];
        let (kept, not_done) = allowed.restrict(&ProjectId::new("p-1"), fresh, &[]);
        assert_eq!(
            kept.iter()
                .map(|a| (a.action.as_str(), a.requires.clone()))
                .collect::<Vec<_>>(),
            [("child", vec![]), ("parent", vec![0])]
        );
        assert_eq!(not_done.len(), 1);
        assert!(
            not_done[0]
                .reason
                .contains("depends on delete_branch branch other"),
            "{}",
            not_done[0].reason
        );
    }

    #[test]
    fn actions_of_projects_not_planned_again_are_skipped() {
        let mut other = saved("z", "t1");
        other.project_id = "p-2".into();
        let allowed = Allowed {
            plan_id: "p".into(),
            actions: vec![saved("a", "t1"), other],
        };
        let planned: HashSet<String> = ["p-1".to_string()].into();
        let skipped = allowed.unplanned_projects(&planned);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].resource_id, "z");
        assert_eq!(skipped[0].action, Action::DeleteBranch);
        assert!(skipped[0].reason.contains("not planned again"));
    }
}
