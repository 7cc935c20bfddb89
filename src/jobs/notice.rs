//! The notice step the engine runs for every destructive kind, between the limits and
//! acting: keeps (`neon-steward keep`) and the job's `notice` period.
//!
//! For each destructive action of the plan:
//! - a branch that is kept is skipped with the keep's reason (and any mark on it dropped),
//!   and so is an action on a kept branch's compute (`JobKind::on_branch`);
//! - under `notice`, a resource without a mark is marked (due `now + notice`), announced,
//!   and not acted on; one whose mark is not due yet is skipped with the time it falls due;
//!   one whose mark is due is acted on (after the kind's fresh read), and its mark dropped;
//! - a mark of the job that no plan still wants (no longer due) is dropped and recorded.
//!
//! [`decide`] is pure; the engine writes the marks, drops and notifications in one
//! transaction ([`crate::store::Store::write_notices`]), fenced by the run's lease.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::ledger::{Action, ActionSpec, ResourceKind};
use crate::store::{Keep, NoticeKey, NoticeMark, RunId};

/// What the engine does with one planned action.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Act,
    /// Act, then drop the mark whose notice has ended.
    ActThenDrop(NoticeKey),
    /// Not now: skipped with this reason appended.
    Hold(String),
}

/// One destructive action as the notice step sees it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub project_name: &'a str,
    pub spec: &'a ActionSpec,
    /// The branch `(id, name)` the resource is on when it is not a branch itself
    /// (`JobKind::on_branch`): a keep of that branch holds the action.
    pub on_branch: Option<(&'a str, Option<&'a str>)>,
    /// Whether the job's `notice` applies to it (`JobKind::under_notice`).
    pub under_notice: bool,
}

/// What [`decide`] found.
#[derive(Debug, Default)]
pub struct Decision {
    pub steps: Vec<Step>,
    pub new_marks: Vec<NoticeMark>,
    /// Marks to drop now, with why (recorded in the ledger).
    pub dropped: Vec<(NoticeMark, String)>,
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn key_of(spec: &ActionSpec) -> Option<NoticeKey> {
    Some(NoticeKey {
        project_id: spec.project_id.clone()?,
        resource_id: spec.resource_id.clone(),
        action: spec.action.to_string(),
    })
}

/// The keep that holds at `now` for the candidate's branch (the resource itself, or the
/// branch its compute is on), if any.
pub fn kept_by<'k>(keeps: &'k [Keep], c: &Candidate<'_>, now: DateTime<Utc>) -> Option<&'k Keep> {
    let spec = c.spec;
    let branch = if spec.resource_kind == ResourceKind::Branch {
        (spec.resource_id.as_str(), spec.resource_name.as_deref())
    } else {
        c.on_branch?
    };
    let project = spec.project_id.as_deref()?;
    keeps
        .iter()
        .find(|k| k.holds_at(now) && k.names((project, c.project_name), branch))
}

/// Decides every candidate (`None`: not destructive, acted on as planned). `projects` are
/// the projects planned in this run: marks elsewhere are left alone (their project was not
/// listed, so whether they are still due is unknown).
#[allow(clippy::too_many_arguments)]
pub fn decide(
    job: &str,
    run_id: RunId,
    now: DateTime<Utc>,
    notice: Option<Duration>,
    keeps: &[Keep],
    marks: &[NoticeMark],
    candidates: &[Option<Candidate<'_>>],
    projects: &BTreeSet<String>,
) -> Decision {
    let by_key: BTreeMap<NoticeKey, &NoticeMark> = marks.iter().map(|m| (m.key(), m)).collect();
    let mut out = Decision::default();
    let mut wanted: BTreeSet<NoticeKey> = BTreeSet::new();
    for c in candidates {
        let Some(c) = c else {
            out.steps.push(Step::Act);
            continue;
        };
        let key = key_of(c.spec);
        if let Some(k) = kept_by(keeps, c, now) {
            let until = k.until.map_or("until it is removed".to_string(), |u| {
                format!("until {}", at(u))
            });
            let note = k
                .note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let whose = if c.spec.resource_kind == ResourceKind::Branch {
                ""
            } else {
                "its branch is "
            };
            out.steps.push(Step::Hold(format!(
                "not acted on: {whose}kept by `neon-steward keep {}/{}` {until}{note}",
                k.project, k.branch
            )));
            if let Some(m) = key.as_ref().and_then(|k| by_key.get(k)) {
                wanted.insert(m.key());
                out.dropped
                    .push(((*m).clone(), "the branch is kept".into()));
            }
            continue;
        }
        let (Some(notice), true, Some(key)) = (notice, c.under_notice, key) else {
            out.steps.push(Step::Act);
            continue;
        };
        wanted.insert(key.clone());
        match by_key.get(&key) {
            None => {
                let due = now + chrono::Duration::from_std(notice).unwrap_or(chrono::Duration::MAX);
                // A compute is kept through its branch.
                let (branch, keep_it) = match c.on_branch {
                    Some((id, name)) if c.spec.resource_kind != ResourceKind::Branch => {
                        (name.unwrap_or(id), "keep its branch")
                    }
                    _ => (
                        c.spec
                            .resource_name
                            .as_deref()
                            .unwrap_or(&c.spec.resource_id),
                        "keep it",
                    ),
                };
                out.steps.push(Step::Hold(format!(
                    "notice given: falls due at {}; {keep_it} with `{}`",
                    at(due),
                    crate::notify::keep_command(&key.project_id, branch)
                )));
                out.new_marks.push(NoticeMark {
                    job: job.to_string(),
                    project_id: key.project_id,
                    resource_kind: c.spec.resource_kind.to_string(),
                    resource_id: key.resource_id,
                    resource_name: c.spec.resource_name.clone(),
                    action: key.action,
                    rule: c.spec.rule.clone(),
                    reason: c.spec.reason.clone(),
                    marked_at: now,
                    due_at: due,
                    run_id: Some(run_id),
                });
            }
            Some(m) if m.due_at > now => out.steps.push(Step::Hold(format!(
                "under notice since {}: falls due at {}",
                at(m.marked_at),
                at(m.due_at)
            ))),
            Some(_) => out.steps.push(Step::ActThenDrop(key)),
        }
    }
    for m in marks {
        if !wanted.contains(&m.key()) && projects.contains(&m.project_id) {
            out.dropped.push((
                m.clone(),
                format!(
                    "notice of {} dropped: no longer due under the policy",
                    at(m.marked_at)
                ),
            ));
        }
    }
    out
}

/// The ledger row recording a dropped mark (skipped: nothing was done to the resource). A
/// mark written by another build may name an action or kind this one does not know: the row
/// then says `notice` (on an `endpoint`, as marks of a kind not known were before), and
/// keeps the mark's resource.
pub fn dropped_spec(m: &NoticeMark, why: &str) -> ActionSpec {
    ActionSpec {
        resource_kind: m.resource_kind.parse().unwrap_or(ResourceKind::Endpoint),
        resource_id: m.resource_id.clone(),
        resource_name: m.resource_name.clone(),
        project_id: Some(m.project_id.clone()),
        action: m.action.parse().unwrap_or(Action::Notice),
        rule: Some("notice".into()),
        reason: why.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn spec(id: &str, name: &str) -> ActionSpec {
        ActionSpec {
            resource_kind: ResourceKind::Branch,
            resource_id: id.into(),
            resource_name: Some(name.into()),
            project_id: Some("p-1".into()),
            action: Action::DeleteBranch,
            rule: Some("ttl".into()),
            reason: "age 9d > ttl 7d".into(),
        }
    }

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, h, 0, 0).unwrap()
    }

    #[test]
    fn first_marks_then_holds_then_acts() {
        let s = spec("br-1", "preview/a");
        let c = vec![Some(Candidate {
            project_name: "proj",
            spec: &s,
            on_branch: None,
            under_notice: true,
        })];
        let projects: BTreeSet<String> = ["p-1".to_string()].into();
        let day = Some(Duration::from_secs(3600 * 10));
        let d = decide("j", 1, t(0), day, &[], &[], &c, &projects);
        assert!(
            matches!(&d.steps[0], Step::Hold(r) if r.contains("falls due at 2026-01-01T10:00:00Z"))
        );
        assert_eq!(d.new_marks.len(), 1);
        let marks = d.new_marks;
        let d = decide("j", 2, t(9), day, &[], &marks, &c, &projects);
        assert!(
            matches!(&d.steps[0], Step::Hold(r) if r.contains("under notice")),
            "{:?}",
            d.steps
        );
        assert!(d.new_marks.is_empty() && d.dropped.is_empty());
        let d = decide("j", 3, t(10), day, &[], &marks, &c, &projects);
        assert!(matches!(&d.steps[0], Step::ActThenDrop(_)));
        // No longer planned: dropped (only in a project that was planned).
        let d = decide("j", 4, t(11), day, &[], &marks, &[], &projects);
        assert_eq!(d.dropped.len(), 1);
        let d = decide("j", 4, t(11), day, &[], &marks, &[], &BTreeSet::new());
        assert!(d.dropped.is_empty());
    }

    #[test]
    fn a_kept_branch_is_held_by_id_or_name_until_the_keep_ends() {
        let s = spec("br-1", "preview/a");
        let c = vec![Some(Candidate {
            project_name: "proj",
            spec: &s,
            on_branch: None,
            under_notice: false,
        })];
        let keep = Keep {
            project: "proj".into(),
            branch: "preview/a".into(),
            until: Some(t(5)),
            note: Some("demo on Friday".into()),
            created_at: t(0),
        };
        let projects = BTreeSet::new();
        let d = decide(
            "j",
            1,
            t(1),
            None,
            std::slice::from_ref(&keep),
            &[],
            &c,
            &projects,
        );
        assert!(
            matches!(&d.steps[0], Step::Hold(r) if r.contains("kept by") && r.contains("demo on Friday"))
        );
        let d = decide("j", 1, t(6), None, &[keep], &[], &c, &projects);
        assert_eq!(d.steps[0], Step::Act, "the keep has ended");
    }

    #[test]
    fn a_compute_of_a_kept_branch_is_held_and_its_mark_dropped() {
        let on = |id: &str| ActionSpec {
            resource_kind: ResourceKind::Endpoint,
            resource_id: id.into(),
            resource_name: None,
            project_id: Some("p-1".into()),
            action: Action::SuspendEndpoint,
            rule: Some("window".into()),
            reason: "inside window Mon-Sun".into(),
        };
        let (kept, other) = (on("ep-kept"), on("ep-other"));
        let c = vec![
            Some(Candidate {
                project_name: "proj",
                spec: &kept,
                on_branch: Some(("br-1", Some("preview/a"))),
                under_notice: true,
            }),
            Some(Candidate {
                project_name: "proj",
                spec: &other,
                on_branch: Some(("br-2", Some("preview/b"))),
                under_notice: true,
            }),
        ];
        // Kept by the branch's id; the endpoint's own id would not name it.
        let keep = Keep {
            project: "p-1".into(),
            branch: "br-1".into(),
            until: None,
            note: None,
            created_at: t(0),
        };
        let projects: BTreeSet<String> = ["p-1".to_string()].into();
        let earlier = decide(
            "j",
            1,
            t(0),
            Some(Duration::from_secs(60)),
            &[],
            &[],
            &c,
            &projects,
        );
        assert_eq!(earlier.new_marks.len(), 2, "both marked before the keep");
        let d = decide(
            "j",
            2,
            t(1),
            Some(Duration::from_secs(60)),
            std::slice::from_ref(&keep),
            &earlier.new_marks,
            &c,
            &projects,
        );
        assert!(
            matches!(&d.steps[0], Step::Hold(r) if r.contains("its branch is kept by `neon-steward keep p-1/br-1` until it is removed")),
            "{:?}",
            d.steps
        );
        assert!(matches!(&d.steps[1], Step::ActThenDrop(k) if k.resource_id == "ep-other"));
        let dropped: Vec<&str> = d
            .dropped
            .iter()
            .map(|(m, _)| m.resource_id.as_str())
            .collect();
        assert_eq!(dropped, ["ep-kept"]);
        // A keep naming the compute itself is not a keep of a branch.
        let by_endpoint = Keep {
            branch: "ep-other".into(),
            ..keep
        };
        let d = decide("j", 3, t(1), None, &[by_endpoint], &[], &c, &projects);
        assert_eq!(d.steps, vec![Step::Act, Step::Act]);
    }
}
