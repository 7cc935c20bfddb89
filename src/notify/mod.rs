//! Notifications: what a run or a notice reports, written to the store's outbox in the same
//! transaction as the fact it reports, and delivered to the `[[notify]]` sinks by
//! [`deliver::Deliverer`] (one replica per row, retried with backoff, given up after the
//! sink's `give_up_after`).
//!
//! This module builds the outbox rows (one per sink that takes the event) and renders them
//! for each kind of sink; it imports nothing of the jobs or the scheduler.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::config::{JobConfig, NotifyEvent};
use crate::store::{ActionOutcome, ActionRecord, NewNotification, NoticeMark, RunId, RunStatus};

pub mod budget;
pub mod deliver;
pub mod sign;

pub use deliver::Deliverer;

/// The start of every refusal by `max_actions`/`max_actions_percent` (see
/// `jobs::limits::LimitExceeded`), which tells a refused plan from another failure.
pub const REFUSAL_PREFIX: &str = "refusing to act:";

/// A new outbox id: the Standard Webhooks `webhook-id`.
pub fn new_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One row per sink that takes `event` from `job`, each with its own id.
fn rows(job: &JobConfig, run_id: RunId, event: NotifyEvent, data: &Value) -> Vec<NewNotification> {
    rows_with_id(job, run_id, event, data, |_| new_id())
}

/// [`rows`], with the id of each sink's row from `id_for(sink)`.
fn rows_with_id(
    job: &JobConfig,
    run_id: RunId,
    event: NotifyEvent,
    data: &Value,
    id_for: impl Fn(&str) -> String,
) -> Vec<NewNotification> {
    job.routes_for(event)
        .map(|r| NewNotification {
            id: id_for(&r.sink),
            sink: r.sink.clone(),
            event: event.as_str().to_string(),
            job: Some(job.name.clone()),
            run_id: Some(run_id),
            payload: data.to_string(),
            give_up_after_ms: i64::try_from(r.give_up_after.as_millis()).unwrap_or(i64::MAX / 4),
        })
        .collect()
}

/// How a run ended, as the notifications of its end need it.
#[derive(Debug, Clone, Copy)]
pub struct RunEnd<'a> {
    pub run_id: RunId,
    pub status: RunStatus,
    pub succeeded: i64,
    pub failed: i64,
    pub error: Option<&'a str>,
    pub dry_run: bool,
}

impl RunEnd<'_> {
    /// Whether the run ended because its plan was refused by a limit.
    pub fn refused(&self) -> bool {
        self.status == RunStatus::Failed && self.error.is_some_and(|e| e.contains(REFUSAL_PREFIX))
    }
    /// Whether a digest needs the run's actions.
    pub fn wants_digest(&self, job: &JobConfig) -> bool {
        !self.dry_run && self.succeeded > 0 && job.routes_for(NotifyEvent::Digest).next().is_some()
    }
}

/// The notifications reporting how a run ended: `limit_refused`, `run_failed` (failed or
/// partial) and `digest` (what it destroyed or changed, from `actions`), for the sinks that
/// take them.
pub fn run_end(
    job: &JobConfig,
    end: &RunEnd<'_>,
    actions: &[ActionRecord],
    now: DateTime<Utc>,
) -> Vec<NewNotification> {
    let mut out = Vec::new();
    let base = |summary: String| {
        json!({
            "job": job.name,
            "kind": job.kind.as_str(),
            "run_id": end.run_id,
            "status": end.status.as_str(),
            "dry_run": end.dry_run,
            "at": rfc3339(now),
            "summary": summary,
            "error": end.error,
        })
    };
    if end.refused() {
        let data = base(format!(
            "job `{}`: its plan was refused by a limit; nothing was done",
            job.name
        ));
        out.extend(rows(job, end.run_id, NotifyEvent::LimitRefused, &data));
    } else if matches!(end.status, RunStatus::Failed | RunStatus::Partial) {
        let data = base(format!(
            "job `{}`: run {} ended {} ({} action(s) succeeded, {} failed)",
            job.name,
            end.run_id,
            end.status.as_str(),
            end.succeeded,
            end.failed
        ));
        out.extend(rows(job, end.run_id, NotifyEvent::RunFailed, &data));
    }
    if !end.dry_run {
        let done: Vec<Value> = actions
            .iter()
            .filter(|a| a.outcome == ActionOutcome::Succeeded)
            .map(|a| {
                json!({
                    "action": a.action,
                    "resource_kind": a.resource_kind,
                    "resource_id": a.resource_id,
                    "resource_name": a.resource_name,
                    "project_id": a.project_id,
                    "rule": a.rule,
                    "reason": a.reason,
                    "detail": a.detail,
                })
            })
            .collect();
        if !done.is_empty() {
            let mut data = base(format!(
                "job `{}`: run {} did {} action(s)",
                job.name,
                end.run_id,
                done.len()
            ));
            data["actions"] = Value::Array(done);
            out.extend(rows(job, end.run_id, NotifyEvent::Digest, &data));
        }
    }
    out
}

/// The command that keeps a marked branch (said in every notice).
pub fn keep_command(project: &str, branch: &str) -> String {
    format!("neon-steward keep {project}/{branch} --until YYYY-MM-DD --note \"why\"")
}

/// The `notice` notifications announcing newly marked resources.
pub fn notice(
    job: &JobConfig,
    run_id: RunId,
    marks: &[NoticeMark],
    now: DateTime<Utc>,
) -> Vec<NewNotification> {
    if marks.is_empty() {
        return Vec::new();
    }
    let items: Vec<Value> = marks
        .iter()
        .map(|m| {
            let branch = m.resource_name.as_deref().unwrap_or(&m.resource_id);
            json!({
                "action": m.action,
                "resource_kind": m.resource_kind,
                "resource_id": m.resource_id,
                "resource_name": m.resource_name,
                "project_id": m.project_id,
                "rule": m.rule,
                "reason": m.reason,
                "due_at": rfc3339(m.due_at),
                // A compute is kept through its branch (its `resource_name` is the branch's).
                "keep": (m.resource_kind == "branch" || m.resource_name.is_some())
                    .then(|| keep_command(&m.project_id, branch)),
            })
        })
        .collect();
    let first_due = marks.iter().map(|m| m.due_at).min().unwrap_or(now);
    let data = json!({
        "job": job.name,
        "kind": job.kind.as_str(),
        "run_id": run_id,
        "at": rfc3339(now),
        "summary": format!(
            "job `{}` will act on {} resource(s) from {} unless they are kept or no longer due",
            job.name,
            marks.len(),
            rfc3339(first_due)
        ),
        "how_to_keep": "neon-steward keep <project>/<branch> [--until DATE] [--note TEXT], or POST /api/v1/keeps",
        "items": items,
    });
    rows(job, run_id, NotifyEvent::Notice, &data)
}

/// The Slack message of a notification: what, where, why, when, in text a person reads.
pub fn slack_text(event: &str, payload: &Value) -> String {
    let s = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("");
    let mut text = format!("*neon-steward* · {event} · {}\n{}", s("at"), s("summary"));
    if let Some(e) = payload.get("error").and_then(Value::as_str) {
        text.push_str(&format!("\n> {e}"));
    }
    if event == NotifyEvent::Budget.as_str() {
        text.push_str(&budget::slack_lines(payload));
    }
    let list = payload
        .get("items")
        .or_else(|| payload.get("actions"))
        .and_then(Value::as_array);
    for item in list.into_iter().flatten().take(20) {
        let g = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
        // A branch is named by its name; an endpoint's `resource_name` is its branch's.
        let what = match (g("resource_kind"), g("resource_name")) {
            (kind, "") => format!("{kind} `{}`", g("resource_id")),
            ("branch", name) => format!("branch `{name}`"),
            (kind, branch) => format!("{kind} `{}` of branch `{branch}`", g("resource_id")),
        };
        text.push_str(&format!(
            "\n• `{}` {what} in project `{}`: {}",
            g("action"),
            g("project_id"),
            g("reason")
        ));
        if let Some(due) = item.get("due_at").and_then(Value::as_str) {
            text.push_str(&format!(" (falls due {due})"));
        }
        if let Some(keep) = item.get("keep").and_then(Value::as_str) {
            let what = if g("resource_kind") == "branch" {
                "it"
            } else {
                "its branch"
            };
            text.push_str(&format!("\n   keep {what}: `{keep}`"));
        }
    }
    if list.is_some_and(|l| l.len() > 20) {
        text.push_str(&format!(
            "\n… and {} more",
            list.map_or(0, |l| l.len() - 20)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(notify: &str) -> std::sync::Arc<JobConfig> {
        let text = format!(
            "[[jobs]]\nname = \"j\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"7d\"\n{notify}\n[[notify]]\nname = \"ops\"\nkind = \"slack\"\nurl_env = \"U\"\n"
        );
        let env = |k: &str| (k == "U").then(|| "https://hooks.example.com/x".to_string());
        crate::config::parse_with_env(std::path::Path::new("p.toml"), &text, &env)
            .unwrap()
            .jobs[0]
            .clone()
    }

    fn action(outcome: ActionOutcome) -> ActionRecord {
        ActionRecord {
            id: 1,
            run_id: 1,
            job: "j".into(),
            resource_kind: "branch".into(),
            resource_id: "br-1".into(),
            resource_name: Some("preview/a".into()),
            project_id: Some("p-1".into()),
            action: "delete_branch".into(),
            rule: Some("ttl".into()),
            reason: "age 9d > ttl 7d".into(),
            dry_run: false,
            outcome,
            detail: None,
            created_at: Utc::now(),
            finished_at: None,
            reconciled_at: None,
        }
    }

    #[test]
    fn a_runs_end_is_reported_by_event_and_only_to_the_sinks_that_take_it() {
        let j = job("");
        let end = |status, succeeded, error| RunEnd {
            run_id: 7,
            status,
            succeeded,
            failed: 1,
            error,
            dry_run: false,
        };
        let partial = end(RunStatus::Partial, 1, None);
        assert!(partial.wants_digest(&j));
        let rows = run_end(
            &j,
            &partial,
            &[
                action(ActionOutcome::Succeeded),
                action(ActionOutcome::Failed),
            ],
            Utc::now(),
        );
        let events: Vec<&str> = rows.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(events, ["run_failed", "digest"]);
        let digest: Value = serde_json::from_str(&rows[1].payload).unwrap();
        assert_eq!(
            digest["actions"].as_array().unwrap().len(),
            1,
            "only what was done"
        );
        assert_ne!(rows[0].id, rows[1].id);
        let refused = end(
            RunStatus::Failed,
            0,
            Some("refusing to act: too many; nothing was done"),
        );
        let events: Vec<String> = run_end(&j, &refused, &[], Utc::now())
            .into_iter()
            .map(|r| r.event)
            .collect();
        assert_eq!(events, ["limit_refused"]);
        // A job that sends only digests reports no failure; a dry run no digest.
        let j = job("notify = [\"digest\"]");
        assert!(run_end(&j, &refused, &[], Utc::now()).is_empty());
        let dry = RunEnd {
            dry_run: true,
            ..partial
        };
        assert!(!dry.wants_digest(&j));
        assert!(run_end(&j, &dry, &[action(ActionOutcome::Succeeded)], Utc::now()).is_empty());
    }

    #[test]
    fn slack_text_says_what_where_why_when() {
        let p = json!({
            "at": "2026-01-01T00:00:00Z",
            "summary": "job `x` will act on 1 resource(s)",
            "items": [{"action": "delete_branch", "resource_kind": "branch", "resource_name": "preview/a",
                       "resource_id": "br-1", "project_id": "p-1", "reason": "age 9d > ttl 7d",
                       "due_at": "2026-01-02T00:00:00Z", "keep": "neon-steward keep p-1/preview/a"}]
        });
        let t = slack_text("notice", &p);
        let endpoint = json!({"items": [{"action": "suspend_endpoint", "resource_kind": "endpoint",
            "resource_id": "ep-1", "resource_name": "dev", "project_id": "p-1", "reason": "inside window Sat-Sun",
            "keep": "neon-steward keep p-1/dev"}]});
        let e = slack_text("notice", &endpoint);
        assert!(
            e.contains("`suspend_endpoint` endpoint `ep-1` of branch `dev` in project `p-1`")
                && e.contains("keep its branch: `neon-steward keep p-1/dev`"),
            "{e}"
        );
        for part in [
            "notice",
            "2026-01-01",
            "delete_branch",
            "preview/a",
            "p-1",
            "age 9d > ttl 7d",
            "2026-01-02",
            "neon-steward keep",
        ] {
            assert!(t.contains(part), "{part} missing from {t}");
        }
    }
}
