//! The `budget` notification: an `enforce_budget` threshold crossed, with the figures a
//! person needs to act on it (budget, month and zone, spent, projected, limit, currency,
//! threshold).
//!
//! It is written by the job's `notify` action itself, not at the run's end: the action is
//! the fact, and a run that fails later has still given the notice. Its id is derived from
//! what it reports (job, budget, month, threshold) and the sink, so the outbox holds it once
//! however often it is written: a notice given again after a crash between the write and the
//! job's record of it (its state, `noticed`) is not sent twice. That is what makes it "once
//! per threshold and month" without writing the outbox and the job's state in one
//! transaction.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{rfc3339, rows_with_id};
use crate::config::{JobConfig, NotifyEvent};
use crate::store::{NewNotification, RunId};
use crate::telemetry::events::budget::format_percent as percent;

/// A threshold of a budget crossed this month, as the notification reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossing<'a> {
    /// `all` (one budget over the selected projects) or a project id (`per_project`).
    pub budget: &'a str,
    /// `YYYY-MM`, in `timezone`.
    pub month: &'a str,
    pub timezone: &'a str,
    pub threshold_percent: f64,
    pub spent: f64,
    pub projected: f64,
    pub limit: f64,
    pub currency: &'a str,
}

/// The outbox id of `crossing` for `sink`: the same for the same fact, whichever run or
/// replica writes it.
pub fn id(job: &str, sink: &str, c: &Crossing<'_>) -> String {
    let mut h = Sha256::new();
    for part in [
        "budget",
        job,
        c.budget,
        c.month,
        &percent(c.threshold_percent),
        sink,
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// The `budget` notifications of one crossing, one per sink that takes the event from `job`.
pub fn crossed(
    job: &JobConfig,
    run_id: RunId,
    c: &Crossing<'_>,
    now: DateTime<Utc>,
) -> Vec<NewNotification> {
    let used = if c.limit > 0.0 {
        100.0 * c.spent / c.limit
    } else {
        0.0
    };
    let whose = if c.budget == "all" {
        format!("job `{}`", job.name)
    } else {
        format!("project `{}` (job `{}`)", c.budget, job.name)
    };
    let data = json!({
        "job": job.name,
        "kind": job.kind.as_str(),
        "run_id": run_id,
        "at": rfc3339(now),
        "summary": format!(
            "budget of {whose} reached its {}% threshold in {} ({}): {:.2} {cur} spent of {:.2} {cur} ({used:.1}%), {:.2} {cur} projected by the month's end",
            percent(c.threshold_percent),
            c.month,
            c.timezone,
            c.spent,
            c.limit,
            c.projected,
            cur = c.currency,
        ),
        "budget": c.budget,
        "month": c.month,
        "timezone": c.timezone,
        "threshold_percent": c.threshold_percent,
        "spent": c.spent,
        "projected": c.projected,
        "limit": c.limit,
        "currency": c.currency,
        "percent_of_limit": used,
    });
    rows_with_id(job, run_id, NotifyEvent::Budget, &data, |sink| {
        id(&job.name, sink, c)
    })
}

/// The lines a Slack message of a `budget` notification adds to its summary.
pub fn slack_lines(payload: &Value) -> String {
    let n = |k: &str| payload.get(k).and_then(Value::as_f64);
    let s = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("");
    let (Some(spent), Some(limit)) = (n("spent"), n("limit")) else {
        return String::new();
    };
    let cur = s("currency");
    let mut text = format!(
        "\n• budget `{}`, month {} ({})\n• spent {spent:.2} {cur} of {limit:.2} {cur}",
        s("budget"),
        s("month"),
        s("timezone"),
    );
    if let Some(p) = n("percent_of_limit") {
        text.push_str(&format!(" ({p:.1}%)"));
    }
    if let Some(p) = n("projected") {
        text.push_str(&format!("\n• projected by the month's end: {p:.2} {cur}"));
    }
    if let Some(t) = n("threshold_percent") {
        text.push_str(&format!("\n• threshold reached: {}%", percent(t)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(notify: &str, sink_events: &str) -> std::sync::Arc<JobConfig> {
        let text = format!(
            "[[jobs]]\nname = \"usage\"\nkind = \"collect_consumption\"\nevery = \"1h\"\nmetrics = [\"compute_unit_seconds\"]\norg_id = \"o\"\n[jobs.prices]\ncompute_unit_seconds = 0.001\n\
             [[jobs]]\nname = \"guard\"\nkind = \"enforce_budget\"\nevery = \"1h\"\n{notify}\n[jobs.projects]\norg_id = \"o\"\n[jobs.budget]\nconsumption_job = \"usage\"\nlimit = 100.0\ncurrency = \"EUR\"\ntimezone = \"Europe/Berlin\"\n[[jobs.budget.thresholds]]\npercent = 80\nactions = [\"notify\"]\n\
             [[notify]]\nname = \"ops\"\nkind = \"slack\"\nurl_env = \"U\"\n{sink_events}\n\
             [[notify]]\nname = \"other\"\nkind = \"slack\"\nurl_env = \"U\"\nevents = [\"run_failed\"]\n"
        );
        let env = |k: &str| {
            (k == "U")
                .then(|| "https://hooks.example.com/x".to_string())
                .or_else(|| (k == "NEON_API_KEY").then(|| "k".to_string()))
        };
        crate::config::parse_with_env(std::path::Path::new("p.toml"), &text, &env)
            .unwrap()
            .jobs[1]
            .clone()
    }

    fn crossing(threshold: f64) -> Crossing<'static> {
        Crossing {
            budget: "all",
            month: "2026-03",
            timezone: "Europe/Berlin",
            threshold_percent: threshold,
            spent: 81.0,
            projected: 94.58,
            limit: 100.0,
            currency: "EUR",
        }
    }

    #[test]
    fn a_crossing_goes_to_the_sinks_that_take_budget_events_with_an_id_of_its_own() {
        let j = job("", "");
        let now = Utc::now();
        let rows = crossed(&j, 3, &crossing(80.0), now);
        assert_eq!(rows.len(), 1, "`other` takes run_failed only: {rows:?}");
        assert_eq!(rows[0].sink, "ops");
        assert_eq!(rows[0].event, "budget");
        // The same fact, from another run: the same id; another threshold or month: another.
        let again = crossed(&j, 4, &crossing(80.0), now);
        assert_eq!(rows[0].id, again[0].id);
        assert_ne!(rows[0].id, crossed(&j, 3, &crossing(100.0), now)[0].id);
        let april = Crossing {
            month: "2026-04",
            ..crossing(80.0)
        };
        assert_ne!(rows[0].id, crossed(&j, 3, &april, now)[0].id);
        assert!(rows[0].id.starts_with("msg_") && rows[0].id.len() == 36);
        let data: Value = serde_json::from_str(&rows[0].payload).unwrap();
        assert_eq!(data["budget"], "all");
        assert_eq!(data["month"], "2026-03");
        assert_eq!(data["threshold_percent"], 80.0);
        assert_eq!(data["spent"], 81.0);
        assert_eq!(data["limit"], 100.0);
        assert_eq!(data["currency"], "EUR");
        // A job that does not send budget events, or a sink that does not take them: none.
        assert!(crossed(
            &job("notify = [\"run_failed\"]", ""),
            3,
            &crossing(80.0),
            now
        )
        .is_empty());
        assert!(crossed(&job("", "events = [\"digest\"]"), 3, &crossing(80.0), now).is_empty());
    }

    #[test]
    fn the_slack_text_of_a_crossing_names_every_figure() {
        let rows = crossed(&job("", ""), 3, &crossing(80.0), Utc::now());
        let data: Value = serde_json::from_str(&rows[0].payload).unwrap();
        let t = super::super::slack_text("budget", &data);
        for part in [
            "budget",
            "job `guard`",
            "80% threshold",
            "2026-03",
            "Europe/Berlin",
            "81.00 EUR spent of 100.00 EUR (81.0%)",
            "94.58 EUR projected",
            "threshold reached: 80%",
        ] {
            assert!(t.contains(part), "{part:?} missing from {t}");
        }
    }
}
