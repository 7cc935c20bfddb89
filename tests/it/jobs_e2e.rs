//! The jobs end to end against neon-sim, part two: consumption collection (v2 and legacy,
//! resume, freshness, idempotence, exported gauges), `resume = true`, native branch expiry,
//! 423 at the jobs level with per-project serialisation, Neon's recovery window, and one
//! failing resource not stopping the others.
//!
//! These run on the test harness (`helpers::JobHarness`) because it records every request the
//! client sent, so the tests can assert *which* range was asked for.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;
use neon_sim::SimConfig;
use neon_steward::config::{self, JobConfig};
use neon_steward::neon::{ConsumptionPeriod, ConsumptionQuery, Granularity, OrgId};
use neon_steward::store::{ActionOutcome, ActionRecord, ConsumptionSample, NewRun, RunStatus};

use crate::helpers::{job_harness_with as harness, JobHarness as H, Sent};

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

fn job(toml_jobs: &str) -> Arc<JobConfig> {
    let text = format!("[api]\nconcurrency = 4\n\n{toml_jobs}");
    let cfg = config::parse_with_env(Path::new("jobs-e2e.toml"), &text, &|k| {
        (k == "NEON_API_KEY").then(|| "unused-in-tests".to_string())
    })
    .unwrap_or_else(|e| panic!("test policy must parse: {e}"));
    cfg.jobs[0].clone()
}

/// Decodes `%XX` escapes of a query-string component.
fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8(out).expect("test queries are UTF-8")
}

/// Every value of query parameter `key` of a sent request.
fn param(s: &Sent, key: &str) -> Vec<String> {
    s.query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| pct_decode(v))
        .collect()
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn consumption_calls(h: &H, path_suffix: &str) -> Vec<Sent> {
    h.sim
        .sent()
        .into_iter()
        .filter(|s| s.path.ends_with(path_suffix))
        .collect()
}

/// `(project, metric, start, end, value)`, sorted, of stored samples or of periods the
/// emulator reports.
type Row = (String, String, DateTime<Utc>, DateTime<Utc>, f64);

fn rows_of_samples(samples: &[ConsumptionSample]) -> Vec<Row> {
    let mut v: Vec<Row> = samples
        .iter()
        .map(|s| {
            (
                s.project_id.clone(),
                s.metric.clone(),
                s.timeframe_start,
                s.timeframe_end,
                s.value,
            )
        })
        .collect();
    v.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
    v
}

/// The rows of the configured `metrics` of what the emulator reports.
fn rows_of_periods(periods: &[ConsumptionPeriod], metrics: &[&str]) -> Vec<Row> {
    let mut v: Vec<Row> = periods
        .iter()
        .flat_map(|p| {
            p.metrics
                .iter()
                .filter(|(m, _)| metrics.contains(&m.as_str()))
                .map(move |(m, v)| {
                    (
                        p.project_id.to_string(),
                        m.clone(),
                        p.timeframe_start,
                        p.timeframe_end,
                        *v,
                    )
                })
        })
        .collect();
    v.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
    v
}

/// Parses the rendered exposition: `(project_id, metric) -> value` of one family and
/// granularity.
/// The harness's own exporter's gauges of one family and granularity.
fn gauges(
    h: &H,
    family: &str,
    granularity: &str,
) -> std::collections::BTreeMap<(String, String), f64> {
    let text = h.env.consumption.render();
    let prefix = format!("neon_steward_{family}{{");
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        let (labels, value) = line[prefix.len()..]
            .split_once("} ")
            .expect("exposition line has labels and a value");
        let label = |name: &str| {
            labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.trim_matches('"').to_string())
                .unwrap_or_default()
        };
        if label("granularity") == granularity {
            out.insert(
                (label("project_id"), label("metric")),
                value.parse::<f64>().expect("gauge value is a number"),
            );
        }
    }
    out
}

const CONSUMPTION_V2: &str = r#"
[[jobs]]
name = "usage-v2"
kind = "collect_consumption"
every = "1h"
granularity = "hourly"
metrics = ["compute_unit_seconds", "root_branch_bytes_month"]
org_id = "ORG"
max_projects_exported = 2
[jobs.prices]
compute_unit_seconds = 0.5
"#;

#[tokio::test]
async fn consumption_v2_collects_resumes_and_exports_capped_gauges() {
    let h = harness(SimConfig::default()).await;
    let org = h.add_org("metered");
    let mut pids = Vec::new();
    for i in 0..3 {
        let (pid, main) = h.sim.add_project(&format!("m{i}"), Some(&org));
        if i == 0 {
            h.busy_endpoint(&main);
        }
        pids.push(pid);
    }
    // A personal project the key also sees: not part of the org, so it must not be sent to
    // the org's v2 endpoint (Neon answers 404 for a project outside the org).
    h.sim.add_project("personal", None);
    let j = job(&CONSUMPTION_V2.replace("ORG", &org));

    // 12:00 start; at 17:10 the 16:00-17:00 hour ended only 10 minutes ago (Neon's ~15
    // minute freshness): it is not collected yet.
    h.sim.clock().advance(5 * HOUR + 10 * MINUTE);
    let now = h.now();
    let (r, actions) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    let calls = consumption_calls(&h, "/consumption_history/v2/projects");
    assert_eq!(calls.len(), 1, "3 projects, one call: {calls:?}");
    let first_from = now - TimeDelta::hours(168) + TimeDelta::minutes(50);
    assert_eq!(
        param(&calls[0], "from"),
        vec![first_from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)]
    );
    assert_eq!(param(&calls[0], "to"), vec!["2025-06-02T16:00:00Z"]);
    assert_eq!(param(&calls[0], "org_id"), vec![org.clone()]);
    let mut sent_ids = param(&calls[0], "project_ids");
    sent_ids.sort();
    let mut want_ids = pids.clone();
    want_ids.sort();
    assert_eq!(sent_ids, want_ids, "only the org's projects");

    let since = now - TimeDelta::hours(200);
    let stored = h.env.store.list_consumption("hourly", since).await.unwrap();
    assert!(
        stored
            .iter()
            .all(|s| s.timeframe_end <= t("2025-06-02T16:00:00Z")),
        "no incomplete or too-recent hour"
    );
    // What was stored is exactly what the emulator reports for the same period.
    let query = ConsumptionQuery {
        from: first_from,
        to: t("2025-06-02T16:00:00Z"),
        granularity: Granularity::Hourly,
        metrics: vec![
            "compute_unit_seconds".into(),
            "root_branch_bytes_month".into(),
        ],
        org_id: Some(OrgId::from(org.as_str())),
        project_ids: vec![],
    };
    let reported: Vec<ConsumptionPeriod> = h
        .env
        .client
        .consumption_v2_projects(query.clone())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        rows_of_samples(&stored),
        rows_of_periods(
            &reported,
            &["compute_unit_seconds", "root_branch_bytes_month"]
        )
    );
    let busy_hour = stored
        .iter()
        .find(|s| {
            s.project_id == pids[0]
                && s.metric == "compute_unit_seconds"
                && s.timeframe_start == t("2025-06-02T15:00:00Z")
        })
        .expect("the busy project's 15:00 hour");
    assert!(busy_hour.value > 0.0);

    // Gauges: the latest complete hour, 2 projects by name, the rest as "other"; cost from
    // the price table.
    let values = gauges(&h, "consumption", "hourly");
    let costs = gauges(&h, "estimated_cost", "hourly");
    let cu: Vec<(&String, &f64)> = values
        .iter()
        .filter(|((_, m), _)| m == "compute_unit_seconds")
        .map(|((p, _), v)| (p, v))
        .collect();
    assert_eq!(cu.len(), 3, "2 projects + other: {values:?}");
    assert!(cu.iter().any(|(p, _)| p.as_str() == "other"));
    assert_eq!(
        values[&(pids[0].clone(), "compute_unit_seconds".into())],
        busy_hour.value
    );
    assert_eq!(
        costs[&(pids[0].clone(), "compute_unit_seconds".into())],
        busy_hour.value * 0.5
    );
    assert!(
        !costs.keys().any(|(_, m)| m == "root_branch_bytes_month"),
        "no price, no cost series"
    );
    let latest_sum: f64 = stored
        .iter()
        .filter(|s| {
            s.metric == "root_branch_bytes_month" && s.timeframe_start == t("2025-06-02T15:00:00Z")
        })
        .map(|s| s.value)
        .sum();
    let exported_sum: f64 = values
        .iter()
        .filter(|((_, m), _)| m == "root_branch_bytes_month")
        .map(|(_, v)| v)
        .sum();
    assert!(
        (latest_sum - exported_sum).abs() < 1e-6,
        "nothing lost in `other`"
    );

    // Same instant again: nothing new is complete, no call.
    h.sim.clear_sent();
    let (r, _) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert!(consumption_calls(&h, "/consumption_history/").is_empty());

    // 17:20: the 16:00 hour is fresh now; only it is asked for and added.
    h.sim.clock().advance(10 * MINUTE);
    let (r, _) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    let calls = consumption_calls(&h, "/consumption_history/v2/projects");
    assert_eq!(calls.len(), 1);
    assert_eq!(param(&calls[0], "from"), vec!["2025-06-02T16:00:00Z"]);
    assert_eq!(param(&calls[0], "to"), vec!["2025-06-02T17:00:00Z"]);
    let after = h.env.store.list_consumption("hourly", since).await.unwrap();
    assert_eq!(
        after.len(),
        stored.len() + 3 * 2,
        "one new hour x 3 projects x 2 metrics"
    );
    let new: Vec<&ConsumptionSample> = after
        .iter()
        .filter(|s| s.timeframe_start == t("2025-06-02T16:00:00Z"))
        .collect();
    assert_eq!(new.len(), 6);

    // Re-collection (a crash after storing, before the cursor moved) adds no duplicate.
    let cursor = h
        .env
        .store
        .get_state(&j.name, "consumption_cursor/hourly")
        .await
        .unwrap()
        .expect("the first collection moved the cursor");
    let writer = h.writer_run().await;
    h.env
        .store
        .put_state(
            writer,
            &j.name,
            "consumption_cursor/hourly",
            Some(cursor.version),
            "2025-06-02T10:00:00Z",
        )
        .await
        .unwrap()
        .expect("nothing else writes the cursor");
    h.sim.clear_sent();
    let (r, _) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    let calls = consumption_calls(&h, "/consumption_history/v2/projects");
    assert_eq!(param(&calls[0], "from"), vec!["2025-06-02T10:00:00Z"]);
    let again = h.env.store.list_consumption("hourly", since).await.unwrap();
    assert_eq!(rows_of_samples(&again), rows_of_samples(&after));
}

const CONSUMPTION_LEGACY: &str = r#"
[[jobs]]
name = "usage-legacy"
kind = "collect_consumption"
every = "1h"
granularity = "daily"
endpoint = "legacy"
metrics = ["active_time_seconds", "compute_time_seconds"]
max_projects_exported = 1
[jobs.prices]
compute_time_seconds = 2.0
"#;

#[tokio::test]
async fn consumption_legacy_daily_without_org() {
    let h = harness(SimConfig::default()).await;
    let (busy, main) = h.sim.add_project("busy", None);
    h.busy_endpoint(&main);
    let (quiet, _) = h.sim.add_project("quiet", None);
    let j = job(CONSUMPTION_LEGACY);

    // Monday 12:00 + 2 days = Wednesday noon: Monday and Tuesday are complete.
    h.sim.clock().advance(48 * HOUR);
    let (r, actions) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    assert!(consumption_calls(&h, "/consumption_history/v2/projects").is_empty());
    let calls = consumption_calls(&h, "/consumption_history/projects");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        param(&calls[0], "org_id").is_empty(),
        "legacy without org_id"
    );
    assert_eq!(param(&calls[0], "to"), vec!["2025-06-04T00:00:00Z"]);
    assert_eq!(param(&calls[0], "granularity"), vec!["daily"]);
    let from = t(&param(&calls[0], "from")[0]);
    let stored = h.env.store.list_consumption("daily", from).await.unwrap();
    let reported: Vec<ConsumptionPeriod> = h
        .env
        .client
        .consumption_legacy_projects(ConsumptionQuery {
            from,
            to: t("2025-06-04T00:00:00Z"),
            granularity: Granularity::Daily,
            metrics: vec!["active_time_seconds".into(), "compute_time_seconds".into()],
            org_id: None,
            project_ids: vec![busy.as_str().into(), quiet.as_str().into()],
        })
        .try_collect()
        .await
        .unwrap();
    assert!(!reported.is_empty());
    assert!(
        reported
            .iter()
            .all(|p| p.metrics.iter().any(|(m, _)| m == "written_data_bytes")),
        "the legacy endpoint adds its required fields"
    );
    let configured = ["active_time_seconds", "compute_time_seconds"];
    assert_eq!(
        rows_of_samples(&stored),
        rows_of_periods(&reported, &configured)
    );
    assert!(stored
        .iter()
        .all(|s| configured.contains(&s.metric.as_str())));
    let tuesday = |p: &str, m: &str| {
        stored
            .iter()
            .find(|s| {
                s.project_id == p && s.metric == m && s.timeframe_start == t("2025-06-03T00:00:00Z")
            })
            .map(|s| s.value)
            .expect("Tuesday's sample")
    };
    assert_eq!(
        tuesday(&busy, "active_time_seconds"),
        86_400.0,
        "busy all day"
    );

    // Cap 1: the busy project (highest cost) by name, the quiet one as "other".
    let values = gauges(&h, "consumption", "daily");
    let costs = gauges(&h, "estimated_cost", "daily");
    let key = |p: &str, m: &str| (p.to_string(), m.to_string());
    assert_eq!(
        values[&key(&busy, "compute_time_seconds")],
        tuesday(&busy, "compute_time_seconds")
    );
    assert_eq!(
        costs[&key(&busy, "compute_time_seconds")],
        2.0 * tuesday(&busy, "compute_time_seconds")
    );
    assert_eq!(
        values[&key("other", "active_time_seconds")],
        tuesday(&quiet, "active_time_seconds")
    );
    assert!(!values.keys().any(|(p, _)| p == &quiet), "{values:?}");

    // Thursday 00:10: Wednesday ended 10 minutes ago, too fresh.
    h.sim.clock().set(t("2025-06-05T00:10:00Z"));
    h.sim.clear_sent();
    let (r, _) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert!(consumption_calls(&h, "/consumption_history/").is_empty());
    // Thursday 00:20: Wednesday is collected, and only Wednesday.
    h.sim.clock().set(t("2025-06-05T00:20:00Z"));
    let (r, _) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    let calls = consumption_calls(&h, "/consumption_history/projects");
    assert_eq!(calls.len(), 1);
    assert_eq!(param(&calls[0], "from"), vec!["2025-06-04T00:00:00Z"]);
    assert_eq!(param(&calls[0], "to"), vec!["2025-06-05T00:00:00Z"]);
    let after = h.env.store.list_consumption("daily", from).await.unwrap();
    assert_eq!(after.len(), stored.len() + 2 * 2);
}

// ------------------------------------------------------------------ a failure is not fatal

const EXPIRE_FAILS: &str = r#"
[[jobs]]
name = "expire-partial"
kind = "expire_branches"
every = "15m"
ttl = "7d"
[jobs.branches]
names = ["preview/*"]
"#;

#[tokio::test]
async fn one_failing_delete_ends_partial_and_the_others_go_on() {
    let h = harness(SimConfig::default()).await;
    let (p, _) = h.sim.add_project("app", None);
    let ids: Vec<String> = ["preview/a", "preview/b", "preview/c"]
        .iter()
        .map(|n| h.branch_aged(&p, n, None, TimeDelta::days(10)))
        .collect();
    // Every attempt (the client's retries included) to delete preview/b fails with 500.
    h.sim
        .faults
        .inject(
            neon_sim::faults::FaultRule::on(
                "DELETE",
                &format!("/projects/{p}/branches/{}", ids[1]),
                neon_sim::faults::Fault::Status {
                    status: 500,
                    retry_after_secs: None,
                },
            )
            .with_probability(1.0)
            .times(50),
        )
        .unwrap();
    let failed_metric = || {
        neon_steward::telemetry::metrics::metrics()
            .actions_total
            .with_label_values(&["expire-partial", "delete_branch", "failed", "false"])
            .get()
    };
    let before = failed_metric();
    let (r, actions) = h.run(&job(EXPIRE_FAILS), false).await;
    assert_eq!(r.status, RunStatus::Partial, "{r:?}");
    assert_eq!((r.counts.succeeded, r.counts.failed), (2, 1), "{r:?}");
    assert!(r.error.as_deref().unwrap().contains("1 action(s) failed"));
    assert_eq!(h.branch_names(&p), vec!["main", "preview/b"]);
    let failed = actions
        .iter()
        .find(|a| a.outcome == ActionOutcome::Failed)
        .expect("the failure is in the ledger");
    assert_eq!(failed.resource_id, ids[1]);
    assert!(failed.finished_at.is_some());
    let detail = failed.detail.as_deref().unwrap();
    assert!(detail.contains("500"), "the error is recorded: {detail}");
    assert_eq!(failed_metric(), before + 1);
    assert!(
        h.sim.faults.injected().len() > 1,
        "the client retried before giving up"
    );
}

// ------------------------------------------------------------------ resume = true

const SUSPEND_RESUME: &str = r#"
[[jobs]]
name = "suspend-lunch"
kind = "suspend_computes"
every = "10m"
windows = ["Mon 12:00-14:00"]
window_timezone = "UTC"
resume = true
"#;

#[tokio::test]
async fn resume_starts_only_what_the_window_suspended() {
    let h = harness(SimConfig::default()).await;
    // Monday 2025-06-02 12:00Z: inside the window.
    let (p, main) = h.sim.add_project("app", None);
    let dev = h.branch_aged(&p, "dev", None, TimeDelta::days(1));
    let ours = h.busy_endpoint(&main);
    // Active now but without traffic from here on, so it stays suspended once suspended.
    h.sim
        .state()
        .settled()
        .endpoints
        .get_mut(&ours)
        .unwrap()
        .activity = neon_sim::state::Activity::Idle;
    // Already suspended before the job ran: not ours to start.
    let theirs = h.sim.add_endpoint(&dev);
    let state = |id: &str| h.sim.state().settled().endpoints[id].current_state;
    assert_eq!(state(&ours), neon_sim::state::EndpointState::Active);
    assert_ne!(state(&theirs), neon_sim::state::EndpointState::Active);
    let j = job(SUSPEND_RESUME);

    let (r, actions) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0].resource_id, ours);
    assert_eq!(state(&ours), neon_sim::state::EndpointState::Idle);

    // Still inside the window: nothing is started.
    h.sim.clock().advance(HOUR);
    h.sim.app.mutations.clear();
    let (r, actions) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert!(actions.is_empty(), "{actions:?}");
    assert!(h.sim.mutations().is_empty());

    // 14:10, the window is over: ours is started again, theirs is left alone.
    h.sim.clock().advance(HOUR + 10 * MINUTE);
    let (r, actions) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    let muts = h.sim.mutations();
    assert_eq!(muts.len(), 1, "{muts:?}");
    assert_eq!(muts[0].method, "POST");
    assert!(
        muts[0].path.ends_with(&format!("/endpoints/{ours}/start")),
        "{}",
        muts[0].path
    );
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].action, "start_endpoint");
    assert_eq!(actions[0].rule.as_deref(), Some("resume"));
    assert_eq!(actions[0].outcome, ActionOutcome::Succeeded);
    assert_eq!(state(&ours), neon_sim::state::EndpointState::Active);
    assert_ne!(state(&theirs), neon_sim::state::EndpointState::Active);

    // Started once: a later run (after it suspended itself again) does not start it again.
    h.sim.clock().advance(HOUR);
    assert_eq!(
        state(&ours),
        neon_sim::state::EndpointState::Idle,
        "autosuspended"
    );
    h.sim.app.mutations.clear();
    let (r, actions) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert!(actions.is_empty(), "{actions:?}");
    assert!(h.sim.mutations().is_empty());
}

// ------------------------------------------------------------------ set_expires_at

const NATIVE_EXPIRY: &str = r#"
[[jobs]]
name = "native-expiry"
kind = "expire_branches"
every = "1h"
ttl = "40d"
mode = "set_expires_at"
[jobs.branches]
names = ["*"]
"#;

#[tokio::test]
async fn set_expires_at_follows_neons_rules_and_neon_deletes() {
    let h = harness(SimConfig::default()).await;
    let (p, _) = h.sim.add_project("app", None);
    let now = h.now();
    let ancient = h.branch_aged(&p, "ancient", None, TimeDelta::days(50));
    let older = h.branch_aged(&p, "older", None, TimeDelta::days(20));
    let young = h.branch_aged(&p, "young", None, TimeDelta::days(5));
    let protected = h.branch_aged(&p, "protected", None, TimeDelta::days(50));
    h.sim
        .state()
        .settled()
        .branches
        .get_mut(&protected)
        .unwrap()
        .protected = true;
    let parent = h.branch_aged(&p, "parent", None, TimeDelta::days(50));
    let child = h.branch_aged(&p, "child", Some(&parent), TimeDelta::days(45));
    h.sim.app.mutations.clear();
    let j = job(NATIVE_EXPIRY);

    let (r, actions) = h.run(&j, true).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert!(h.sim.mutations().is_empty(), "dry run");
    assert_eq!(r.counts.planned, 3);

    let (r, actions_real) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions_real:?}");
    let muts = h.sim.mutations();
    let patched: std::collections::BTreeMap<String, String> = muts
        .iter()
        .map(|m| {
            assert_eq!(m.method, "PATCH", "{m:?}");
            let id = m.path.rsplit('/').next().unwrap().to_string();
            let at = m.body.as_ref().unwrap()["branch"]["expires_at"]
                .as_str()
                .unwrap()
                .to_string();
            (id, at)
        })
        .collect();
    let soon = now + TimeDelta::minutes(10);
    let expected: std::collections::BTreeMap<String, DateTime<Utc>> = [
        (ancient.clone(), soon),
        (
            older.clone(),
            now - TimeDelta::days(20) + TimeDelta::days(40),
        ),
        (child.clone(), soon),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        patched.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "never default, protected or parent; young is beyond 30 days: {muts:?}"
    );
    for (id, at) in &expected {
        assert_eq!(t(&patched[id]), *at, "{id}");
        assert_eq!(h.sim.state().settled().branches[id].expires_at, Some(*at));
    }
    assert!(h.sim.state().settled().branches[&young]
        .expires_at
        .is_none());
    let skipped: Vec<&str> = actions
        .iter()
        .chain(&actions_real)
        .filter(|a| a.outcome == ActionOutcome::Skipped)
        .filter_map(|a| a.resource_name.as_deref())
        .collect();
    for name in ["main", "protected", "parent"] {
        assert!(
            skipped.contains(&name),
            "{name} recorded as skipped: {skipped:?}"
        );
    }

    // Re-run: already set, nothing to do.
    h.sim.app.mutations.clear();
    let (r, _) = h.run(&j, false).await;
    assert_eq!(r.counts.succeeded, 0);
    assert!(h.sim.mutations().is_empty());

    // Neon enforces it: an hour later ancient and child are gone, then older after day 20.
    h.sim.clock().advance(HOUR);
    assert_eq!(
        h.branch_names(&p),
        vec!["main", "older", "parent", "protected", "young"]
    );
    h.sim.clock().advance(Duration::from_secs(21 * 86_400));
    assert_eq!(
        h.branch_names(&p),
        vec!["main", "parent", "protected", "young"]
    );
    let st = h.sim.state();
    let s = st.settled();
    assert!(s
        .deleted_branches
        .iter()
        .filter(|d| d.branch.project_id == p)
        .all(|d| d.deletion_method == "ttl"));
}

// ------------------------------------------------------------------ 423 and serialisation

#[tokio::test]
async fn locked_project_waits_while_others_proceed_and_mutations_are_serialised() {
    // Every operation takes 10 s of emulator time.
    let h = harness(SimConfig::default().operation_duration(Duration::from_secs(10))).await;
    let (a, _) = h.sim.add_project("locked", None);
    let (b, _) = h.sim.add_project("free", None);
    for p in [&a, &b] {
        for n in ["preview/1", "preview/2", "preview/3"] {
            h.branch_aged(p, n, None, TimeDelta::days(10));
        }
    }
    // Project `locked` is busy with a long operation (3 minutes): Neon answers 423 to any
    // mutation until it finishes.
    let lock_end = {
        let st = h.sim.state();
        let mut s = st.settled();
        s.push_operation(&a, None, None, "apply_config");
        let op = s.operations.last_mut().expect("just pushed");
        op.duration = TimeDelta::minutes(3);
        op.created_at + op.duration
    };
    h.sim.app.mutations.clear();
    let j = job(EXPIRE_FAILS
        .replace("expire-partial", "expire-locked")
        .as_str());
    // Neon's time passes five seconds per request the daemon makes (operations take 10 s,
    // the lock 3 minutes).
    h.sim
        .advance_clock_per_request(Some(Duration::from_secs(5)));
    let (r, actions) = h.run(&j, false).await;
    h.sim.advance_clock_per_request(None);
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    assert_eq!(r.counts.succeeded, 6);
    assert_eq!(h.branch_names(&a), vec!["main"]);
    assert_eq!(h.branch_names(&b), vec!["main"]);

    let muts = h.sim.mutations();
    let of = |p: &str, status: u16| -> Vec<DateTime<Utc>> {
        muts.iter()
            .filter(|m| m.path.contains(&format!("/projects/{p}/")) && m.status == status)
            .map(|m| m.at)
            .collect()
    };
    // The locked project was refused, waited, then succeeded after the lock ended.
    assert!(!of(&a, 423).is_empty(), "{muts:?}");
    let a_ok = of(&a, 200);
    assert_eq!(a_ok.len(), 3);
    assert!(
        a_ok.iter().all(|at| *at >= lock_end),
        "{a_ok:?} vs {lock_end}"
    );
    // The job itself waited for the project's operations (not only the client's retries):
    // it listed them between the last refusal and the success.
    let sent = h.sim.sent();
    let last_423 = sent
        .iter()
        .rposition(|s| s.status == 423 && s.path.contains(&a))
        .expect("a 423 was answered");
    let first_ok = sent
        .iter()
        .position(|s| s.method == "DELETE" && s.status == 200 && s.path.contains(&a))
        .expect("a delete succeeded");
    assert!(last_423 < first_ok);
    assert!(
        sent[last_423..first_ok]
            .iter()
            .any(|s| s.method == "GET" && s.path.ends_with(&format!("/projects/{a}/operations"))),
        "waited on the project's operations"
    );
    // The other project did not wait for it: all its deletes happened during the lock.
    let b_ok = of(&b, 200);
    assert_eq!(b_ok.len(), 3);
    assert!(
        b_ok.iter().all(|at| *at < lock_end),
        "{b_ok:?} vs {lock_end}"
    );
    assert!(of(&b, 423).is_empty(), "no 423 where the job waited itself");
    // Within a project, each mutation waited for the previous one's operations (10 s).
    for times in [&a_ok, &b_ok] {
        for w in times.windows(2) {
            assert!(w[1] - w[0] >= TimeDelta::seconds(10), "{times:?}");
        }
    }
}

// ------------------------------------------------------------------ recoverable_until

#[tokio::test]
async fn expire_records_the_recovery_window_neon_reports() {
    let h = harness(SimConfig::default()).await;
    let (p, _) = h.sim.add_project("app", None);
    let old = h.branch_aged(&p, "preview/old", None, TimeDelta::days(10));
    h.sim.clock().advance(HOUR);
    let deleted_at = h.now();
    let (r, actions) = h
        .run(
            &job(EXPIRE_FAILS
                .replace("expire-partial", "expire-recovery")
                .as_str()),
            false,
        )
        .await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    let reported = {
        let st = h.sim.state();
        let s = st.settled();
        let d = s
            .deleted_branches
            .iter()
            .find(|d| d.branch.id == old)
            .expect("soft-deleted in the emulator");
        assert_eq!(d.deleted_at, deleted_at);
        d.recoverable_until()
    };
    assert_eq!(
        reported,
        deleted_at + TimeDelta::days(7),
        "Neon's 7-day window"
    );
    assert_eq!(actions.len(), 1);
    assert_eq!(
        actions[0].detail.as_deref(),
        Some(format!("recoverable_until={}", reported.to_rfc3339()).as_str())
    );
    let asked = h.sim.sent().into_iter().any(|s| {
        s.path.ends_with(&format!("/projects/{p}/branches"))
            && param(&s, "include_deleted") == ["true"]
    });
    assert!(asked, "looked up with include_deleted=true");
    // Past the window Neon no longer lists it as recoverable.
    let pid = neon_steward::neon::ProjectId::from(p.as_str());
    let listed: Vec<_> = h
        .env
        .client
        .list_recoverable_branches(&pid)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    h.sim.clock().advance(Duration::from_secs(7 * 86_400));
    let listed: Vec<_> = h
        .env
        .client
        .list_recoverable_branches(&pid)
        .try_collect()
        .await
        .unwrap();
    assert!(listed.is_empty());
}

// ------------------------------------------------------------------ exclusions

const SUSPEND_EXCLUSIONS: &str = r#"
[[jobs]]
name = "suspend-all-day"
kind = "suspend_computes"
every = "10m"
windows = ["Mon-Sun"]
window_timezone = "UTC"
[jobs.endpoints]
exclude_ids = ["EXCLUDED_ID"]
exclude_branches = ["release/*"]

[[jobs.exclusions]]
endpoint = "TIMED_ID"
until = "2025-07-01"
note = "sales demo"

[[jobs.exclusions]]
endpoint = "EXPIRED_ID"
until = "2025-06-01"

[[jobs.exclusions]]
project = "LAUNCH_PROJECT"
until = "2025-06-02T13:00:00Z"
"#;

#[tokio::test]
async fn excluded_endpoints_are_not_suspended_and_recorded_as_skipped() {
    let h = harness(SimConfig::default()).await;
    // Monday 2025-06-02 12:00Z.
    let (p, main) = h.sim.add_project("app", None);
    let (launch, launch_main) = h.sim.add_project("launch", None);
    let plain = h.busy_endpoint(&main);
    let by_id = h.busy_endpoint(&h.branch_aged(&p, "dev", None, TimeDelta::days(1)));
    let by_branch = h.busy_endpoint(&h.branch_aged(&p, "release/1.0", None, TimeDelta::days(1)));
    let timed = h.busy_endpoint(&h.branch_aged(&p, "demo", None, TimeDelta::days(1)));
    let expired = h.busy_endpoint(&h.branch_aged(&p, "old-demo", None, TimeDelta::days(1)));
    let in_launch = h.busy_endpoint(&launch_main);
    let policy = SUSPEND_EXCLUSIONS
        .replace("EXCLUDED_ID", &by_id)
        .replace("TIMED_ID", &timed)
        .replace("EXPIRED_ID", &expired)
        .replace("LAUNCH_PROJECT", &launch);
    let j = job(&policy);
    let state = |id: &str| h.sim.state().settled().endpoints[id].current_state;
    h.sim.app.mutations.clear();

    let (r, actions) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    let suspended: std::collections::BTreeSet<&str> = actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Succeeded)
        .map(|a| a.resource_id.as_str())
        .collect();
    assert_eq!(
        suspended,
        [plain.as_str(), expired.as_str()].into_iter().collect(),
        "{actions:?}"
    );
    let muts = h.sim.mutations();
    assert_eq!(muts.len(), 2, "only the two not excluded: {muts:?}");
    for id in [&by_id, &by_branch, &timed, &in_launch] {
        assert_eq!(state(id), neon_sim::state::EndpointState::Active, "{id}");
    }
    let skip = |id: &str| {
        actions
            .iter()
            .find(|a| a.resource_id == id)
            .unwrap_or_else(|| panic!("{id} is recorded: {actions:?}"))
    };
    for (id, rule, why) in [
        (
            &by_id,
            "exclude_ids",
            format!("endpoint {by_id} is listed in exclude_ids"),
        ),
        (
            &by_branch,
            "exclude_branches",
            "branch \"release/1.0\" matches exclusion glob \"release/*\"".to_string(),
        ),
        (
            &timed,
            "exclusions",
            format!("exclusion of endpoint {timed} until 2025-07-01T00:00:00+00:00 (sales demo)"),
        ),
        (
            &in_launch,
            "exclusions",
            format!("exclusion of project {launch} until 2025-06-02T13:00:00+00:00"),
        ),
    ] {
        let a = skip(id);
        assert_eq!(a.outcome, ActionOutcome::Skipped, "{a:?}");
        assert_eq!(a.action, "suspend_endpoint");
        assert_eq!(a.rule.as_deref(), Some(rule), "{a:?}");
        assert!(
            a.reason
                .starts_with("inside window \"Mon-Sun\"; but excluded: ")
                && a.reason.ends_with(&why),
            "{}",
            a.reason
        );
    }
    assert_eq!(r.counts.skipped, 4);

    // After the project's exclusion ends, its endpoint is suspended like any other.
    h.sim.clock().advance(HOUR + MINUTE);
    let (r, actions) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert!(
        actions
            .iter()
            .any(|a| a.resource_id == in_launch && a.outcome == ActionOutcome::Succeeded),
        "{actions:?}"
    );
    assert!(
        !actions
            .iter()
            .any(|a| a.resource_id == timed && a.outcome != ActionOutcome::Skipped),
        "the endpoint's own exclusion still holds: {actions:?}"
    );
}

// ------------------------------------------------------------------ set_expires_at take-back

fn native_expiry(ttl: &str, exclude: &[&str], dry_run: bool) -> Arc<JobConfig> {
    job(&format!(
        r#"
[[jobs]]
name = "native-take-back"
kind = "expire_branches"
every = "1h"
ttl = "{ttl}"
mode = "set_expires_at"
dry_run = {dry_run}
[jobs.branches]
names = ["preview/*"]
exclude = {exclude:?}
"#
    ))
}

#[tokio::test]
async fn set_expires_at_takes_back_only_its_own_expiries_when_no_longer_due() {
    let h = harness(SimConfig::default()).await;
    let (p, _) = h.sim.add_project("app", None);
    let now = h.now();
    let five_days = TimeDelta::days(5);
    let ours = h.branch_aged(&p, "preview/a", None, five_days);
    let leaving = h.branch_aged(&p, "preview/keep", None, five_days);
    let changed_later = h.branch_aged(&p, "preview/changed", None, five_days);
    let foreign = h.branch_aged(&p, "preview/foreign", None, five_days);
    let foreign_at = now + TimeDelta::days(1);
    let expires = |id: &str| h.sim.state().settled().branches[id].expires_at;
    h.sim
        .state()
        .settled()
        .branches
        .get_mut(&foreign)
        .unwrap()
        .expires_at = Some(foreign_at);
    let created = now - five_days;

    // ttl 7d: ours, leaving and changed_later get created + 7d; foreign's is earlier.
    let (r, actions) = h.run(&native_expiry("7d", &[], false), false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    assert_eq!(r.counts.succeeded, 3, "{actions:?}");
    for id in [&ours, &leaving, &changed_later] {
        assert_eq!(expires(id), Some(created + TimeDelta::days(7)), "{id}");
    }
    assert_eq!(expires(&foreign), Some(foreign_at));
    // Someone else moves changed_later's expiry: it is no longer ours.
    let theirs_later = now + TimeDelta::days(3);
    h.sim
        .state()
        .settled()
        .branches
        .get_mut(&changed_later)
        .unwrap()
        .expires_at = Some(theirs_later);

    // ttl 10d and preview/keep excluded: ours moves to created + 10d, leaving's expiry is
    // taken back; the others are not ours.
    h.sim.app.mutations.clear();
    let (r, actions) = h
        .run(&native_expiry("10d", &["preview/keep"], false), false)
        .await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert_eq!(expires(&ours), Some(created + TimeDelta::days(10)));
    let moved = actions.iter().find(|a| a.resource_id == ours).unwrap();
    assert_eq!(moved.action, "set_branch_expiry");
    assert!(moved.reason.contains("replaces"), "{}", moved.reason);
    assert_eq!(expires(&leaving), None);
    let cleared = actions.iter().find(|a| a.resource_id == leaving).unwrap();
    assert_eq!(
        (
            cleared.action.as_str(),
            cleared.rule.as_deref(),
            cleared.outcome
        ),
        (
            "clear_branch_expiry",
            Some("no_longer_due"),
            ActionOutcome::Succeeded
        )
    );
    assert!(
        cleared.reason.contains("no longer selected"),
        "{}",
        cleared.reason
    );
    assert_eq!(expires(&changed_later), Some(theirs_later));
    assert_eq!(expires(&foreign), Some(foreign_at));
    let muts = h.sim.mutations();
    assert_eq!(muts.len(), 2, "{muts:?}");
    let clear_body = muts
        .iter()
        .find(|m| m.path.ends_with(&leaving))
        .and_then(|m| m.body.clone())
        .unwrap();
    assert!(clear_body["branch"]["expires_at"].is_null(), "{clear_body}");

    // ttl 60d puts ours beyond Neon's horizon. A dry run plans the take-back and changes
    // nothing.
    h.sim.app.mutations.clear();
    let (r, actions) = h.run(&native_expiry("60d", &[], true), true).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert!(h.sim.mutations().is_empty(), "dry run");
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(
        (
            actions[0].resource_id.as_str(),
            actions[0].action.as_str(),
            actions[0].outcome
        ),
        (ours.as_str(), "clear_branch_expiry", ActionOutcome::Planned)
    );
    assert_eq!(expires(&ours), Some(created + TimeDelta::days(10)));

    // For real: cleared, recorded with rule and reason; nothing else touched.
    let (r, actions) = h.run(&native_expiry("60d", &[], false), false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    assert_eq!(actions.len(), 1, "{actions:?}");
    let a = &actions[0];
    assert_eq!(a.resource_id, ours);
    assert_eq!(a.action, "clear_branch_expiry");
    assert_eq!(a.outcome, ActionOutcome::Succeeded);
    assert!(
        a.reason.contains("beyond Neon's 30-day horizon"),
        "{}",
        a.reason
    );
    assert_eq!(expires(&ours), None);
    assert_eq!(expires(&changed_later), Some(theirs_later));
    assert_eq!(expires(&foreign), Some(foreign_at));
    assert_eq!(h.sim.mutations().len(), 1);

    // Taken back once: the job no longer counts it as its own, so a re-run does nothing.
    h.sim.app.mutations.clear();
    let (r, _) = h.run(&native_expiry("60d", &[], false), false).await;
    assert_eq!(r.counts.succeeded + r.counts.failed, 0);
    assert!(h.sim.mutations().is_empty());
}

#[tokio::test]
async fn take_back_obeys_max_actions() {
    let h = harness(SimConfig::default()).await;
    let (p, _) = h.sim.add_project("app", None);
    for n in ["preview/a", "preview/b", "preview/c"] {
        h.branch_aged(&p, n, None, TimeDelta::days(5));
    }
    let (r, _) = h.run(&native_expiry("7d", &[], false), false).await;
    assert_eq!(r.counts.succeeded, 3);
    let limited = job(r#"
[[jobs]]
name = "native-take-back"
kind = "expire_branches"
every = "1h"
ttl = "60d"
mode = "set_expires_at"
max_actions = 2
[jobs.branches]
names = ["preview/*"]
"#);
    h.sim.app.mutations.clear();
    let (r, _) = h.run(&limited, false).await;
    assert_eq!(r.status, RunStatus::Failed, "{r:?}");
    assert!(r.error.as_deref().unwrap().contains("max_actions"), "{r:?}");
    assert!(h.sim.mutations().is_empty());
}

// ------------------------------------------------------------------ unreadable job state

/// A store whose `get_state` fails while `fail` is set, and whose `finish_action` fails the
/// next `fail_finishes` times (everything else goes through).
struct FailingReads {
    inner: Arc<dyn neon_steward::store::Store>,
    fail: std::sync::atomic::AtomicBool,
    fail_finishes: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl neon_steward::store::Store for FailingReads {
    async fn migrate(&self) -> neon_steward::store::StoreResult<()> {
        self.inner.migrate().await
    }
    async fn ping(&self) -> neon_steward::store::StoreResult<()> {
        self.inner.ping().await
    }
    async fn claim_run(
        &self,
        run: &NewRun,
    ) -> neon_steward::store::StoreResult<Option<neon_steward::store::RunId>> {
        self.inner.claim_run(run).await
    }
    async fn finish_run(
        &self,
        id: neon_steward::store::RunId,
        status: RunStatus,
        counts: neon_steward::store::ActionCounts,
        error: Option<&str>,
    ) -> neon_steward::store::StoreResult<()> {
        self.inner.finish_run(id, status, counts, error).await
    }
    async fn get_run(
        &self,
        id: neon_steward::store::RunId,
    ) -> neon_steward::store::StoreResult<Option<neon_steward::store::RunRecord>> {
        self.inner.get_run(id).await
    }
    async fn list_runs(
        &self,
        filter: &neon_steward::store::RunFilter,
    ) -> neon_steward::store::StoreResult<Vec<neon_steward::store::RunRecord>> {
        self.inner.list_runs(filter).await
    }
    async fn last_scheduled_run(
        &self,
        job: &str,
    ) -> neon_steward::store::StoreResult<Option<neon_steward::store::RunRecord>> {
        self.inner.last_scheduled_run(job).await
    }
    async fn last_success(
        &self,
        job: &str,
    ) -> neon_steward::store::StoreResult<Option<neon_steward::store::RunRecord>> {
        self.inner.last_success(job).await
    }
    async fn begin_action(
        &self,
        action: &neon_steward::store::NewAction,
    ) -> neon_steward::store::StoreResult<neon_steward::store::ActionId> {
        self.inner.begin_action(action).await
    }
    async fn begin_actions(
        &self,
        actions: &[neon_steward::store::NewAction],
    ) -> neon_steward::store::StoreResult<Vec<neon_steward::store::ActionId>> {
        self.inner.begin_actions(actions).await
    }
    async fn finish_action(
        &self,
        id: neon_steward::store::ActionId,
        outcome: ActionOutcome,
        detail: Option<&str>,
    ) -> neon_steward::store::StoreResult<()> {
        let left = self.fail_finishes.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_finishes.store(left - 1, Ordering::SeqCst);
            return Err(neon_steward::store::StoreError::Corrupt(
                "injected write failure (the store is locked)".into(),
            ));
        }
        self.inner.finish_action(id, outcome, detail).await
    }
    async fn actions_for_run(
        &self,
        run: neon_steward::store::RunId,
    ) -> neon_steward::store::StoreResult<Vec<ActionRecord>> {
        self.inner.actions_for_run(run).await
    }
    async fn get_state(
        &self,
        job: &str,
        key: &str,
    ) -> neon_steward::store::StoreResult<Option<neon_steward::store::StateRecord>> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(neon_steward::store::StoreError::Corrupt(
                "injected read failure".into(),
            ));
        }
        self.inner.get_state(job, key).await
    }
    async fn put_state(
        &self,
        run: neon_steward::store::RunId,
        job: &str,
        key: &str,
        expected: Option<i64>,
        value: &str,
    ) -> neon_steward::store::StoreResult<Option<i64>> {
        self.inner.put_state(run, job, key, expected, value).await
    }
    async fn upsert_consumption(
        &self,
        samples: &[ConsumptionSample],
    ) -> neon_steward::store::StoreResult<u64> {
        self.inner.upsert_consumption(samples).await
    }
    async fn list_consumption(
        &self,
        granularity: &str,
        since: DateTime<Utc>,
    ) -> neon_steward::store::StoreResult<Vec<ConsumptionSample>> {
        self.inner.list_consumption(granularity, since).await
    }
    async fn latest_consumption_end(
        &self,
        granularity: &str,
    ) -> neon_steward::store::StoreResult<Option<DateTime<Utc>>> {
        self.inner.latest_consumption_end(granularity).await
    }
    async fn prune(
        &self,
        before: &neon_steward::store::PruneBefore,
    ) -> neon_steward::store::StoreResult<neon_steward::store::Pruned> {
        self.inner.prune(before).await
    }
}

/// An endpoint that is active now and gets no more traffic.
fn quiet_endpoint(h: &H, branch: &str) -> String {
    let ep = h.busy_endpoint(branch);
    h.sim
        .state()
        .settled()
        .endpoints
        .get_mut(&ep)
        .unwrap()
        .activity = neon_sim::state::Activity::Idle;
    ep
}

#[tokio::test]
async fn an_unreadable_suspend_record_fails_resume_and_window_suspends_and_is_never_overwritten() {
    let mut h = harness(SimConfig::default()).await;
    let inner = h.env.store.clone();
    let store = Arc::new(FailingReads {
        inner: inner.clone(),
        fail: std::sync::atomic::AtomicBool::new(false),
        fail_finishes: Default::default(),
    });
    h.env.store = store.clone();
    // Monday 2025-06-02 12:00Z: inside the window.
    let (p, main) = h.sim.add_project("app", None);
    let ours = quiet_endpoint(&h, &main);
    let j = job(SUSPEND_RESUME);
    let state = |id: &str| h.sim.state().settled().endpoints[id].current_state;
    let record = || async {
        inner
            .get_state("suspend-lunch", &format!("suspended_by_window/{p}"))
            .await
            .unwrap()
            .map(|r| r.value)
    };

    let (r, _) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(state(&ours), neon_sim::state::EndpointState::Idle);
    let written = record().await.expect("the suspension is recorded");
    assert!(written.contains(&ours), "{written}");

    // 12:30, reads fail: the record is neither taken for empty nor overwritten, and a
    // second endpoint due for the window is not suspended (its suspension could not be
    // recorded before the call, so it could never be resumed). Both parts are recorded as
    // failed with the store's error.
    h.sim.clock().advance(30 * MINUTE);
    let dev = h.branch_aged(&p, "dev", None, TimeDelta::days(1));
    let second = quiet_endpoint(&h, &dev);
    store.fail.store(true, Ordering::SeqCst);
    h.sim.app.mutations.clear();
    let (r, actions) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Failed, "{r:?} {actions:?}");
    let failed: Vec<_> = actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Failed)
        .collect();
    assert_eq!(failed.len(), 2, "{actions:?}");
    assert_eq!(
        (failed[0].action.as_str(), failed[0].rule.as_deref()),
        ("start_endpoint", Some("resume"))
    );
    assert!(
        failed[0]
            .reason
            .contains("reading which endpoints this job suspended"),
        "{:?}",
        failed[0]
    );
    assert_eq!(
        (failed[1].action.as_str(), failed[1].resource_id.as_str()),
        ("suspend_endpoint", second.as_str())
    );
    assert!(
        failed[1]
            .reason
            .contains("not suspended: which endpoints this job suspended cannot be read"),
        "{:?}",
        failed[1]
    );
    for f in &failed {
        assert!(
            f.detail
                .as_deref()
                .unwrap()
                .contains("injected read failure"),
            "{f:?}"
        );
    }
    assert!(h.sim.mutations().is_empty(), "{:?}", h.sim.mutations());
    assert_eq!(state(&second), neon_sim::state::EndpointState::Active);
    assert_eq!(
        record().await.as_deref(),
        Some(written.as_str()),
        "not overwritten"
    );

    // Reads work again; 14:10, after the window: the endpoint suspended earlier is started.
    store.fail.store(false, Ordering::SeqCst);
    h.sim.clock().advance(HOUR + 40 * MINUTE);
    h.sim.app.mutations.clear();
    let (r, actions) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    assert!(
        actions
            .iter()
            .any(|a| a.resource_id == ours && a.action == "start_endpoint"),
        "{actions:?}"
    );
    assert_eq!(state(&ours), neon_sim::state::EndpointState::Active);
}

#[tokio::test]
async fn set_expires_at_sets_nothing_it_could_not_remember() {
    let mut h = harness(SimConfig::default()).await;
    let store = Arc::new(FailingReads {
        inner: h.env.store.clone(),
        fail: std::sync::atomic::AtomicBool::new(true),
        fail_finishes: Default::default(),
    });
    h.env.store = store.clone();
    let (p, _) = h.sim.add_project("app", None);
    let b = h.branch_aged(&p, "preview/a", None, TimeDelta::days(5));
    h.sim.app.mutations.clear();
    let (r, actions) = h.run(&native_expiry("7d", &[], false), false).await;
    // Nothing succeeded and one part failed: the run failed.
    assert_eq!(r.status, RunStatus::Failed, "{r:?} {actions:?}");
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0].outcome, ActionOutcome::Failed);
    assert!(
        actions[0]
            .reason
            .contains("reading the expiries this job set"),
        "{:?}",
        actions[0]
    );
    assert!(h.sim.mutations().is_empty());
    assert_eq!(h.sim.state().settled().branches[&b].expires_at, None);
    store.fail.store(false, Ordering::SeqCst);
    let (r, _) = h.run(&native_expiry("7d", &[], false), false).await;
    assert_eq!((r.status, r.counts.succeeded), (RunStatus::Succeeded, 1));
}

// ------------------------------------------------------------------ already deleted

/// The expire job's delete is carried out but its answer is lost (done, then 500): the client
/// retries, Neon answers 204 ("already deleted"), and the job counts that as success — the
/// branch is gone, which is what the job wanted — not as a failed action or a partial run.
#[tokio::test]
async fn expire_counts_an_already_deleted_branch_as_success() {
    let h = harness(SimConfig::default()).await;
    let (p, _) = h.sim.add_project("app", None);
    let old = h.branch_aged(&p, "preview/old", None, TimeDelta::days(10));
    h.sim
        .fail_after_processing("DELETE", &format!("/branches/{old}"), 1);
    let (r, actions) = h
        .run(
            &job(EXPIRE_FAILS
                .replace("expire-partial", "expire-already-gone")
                .as_str()),
            false,
        )
        .await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!((r.counts.succeeded, r.counts.failed), (1, 0), "{r:?}");
    assert_eq!(h.branch_names(&p), vec!["main"]);
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].resource_id, old);
    assert_eq!(actions[0].outcome, ActionOutcome::Succeeded);
    assert_eq!(actions[0].detail.as_deref(), Some("already deleted"));
    let statuses: Vec<u16> = h
        .sim
        .mutations()
        .iter()
        .filter(|m| m.method == "DELETE")
        .map(|m| m.status)
        .collect();
    assert_eq!(statuses, [200, 204]);
}

// ------------------------------------------------------------------ intents before calls

/// A window suspension is written to the job's record *before* its call: a daemon that dies
/// while Neon is carrying it out (here: the call never answers and the run is dropped, as a
/// killed process drops it) still starts the endpoint again when the window ends.
#[tokio::test]
async fn a_window_suspension_is_recorded_before_its_call() {
    let h = harness(SimConfig::default()).await;
    // Monday 2025-06-02 12:00Z: inside the window.
    let (p, main) = h.sim.add_project("app", None);
    let ours = quiet_endpoint(&h, &main);
    let j = job(SUSPEND_RESUME);
    h.sim
        .faults
        .inject(
            neon_sim::faults::FaultRule::on(
                "POST",
                "/projects/{project_id}/endpoints/{endpoint_id}/suspend",
                neon_sim::faults::Fault::Hang,
            )
            .times(1),
        )
        .unwrap();
    let hung = async {
        while h.sim.faults.injected().is_empty() {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::select! {
        (r, _) = h.run(&j, false) => panic!("the run cannot end while its call hangs: {r:?}"),
        () = hung => {}
    }
    let record = h
        .env
        .store
        .get_state("suspend-lunch", &format!("suspended_by_window/{p}"))
        .await
        .unwrap()
        .expect("the intent is recorded before the call");
    assert!(record.value.contains(&ours), "{record:?}");

    // Neon carried the suspend out (the emulator's state says so now); after the window the
    // next run starts the endpoint, because the record says the job suspended it.
    h.sim
        .state()
        .settled()
        .endpoints
        .get_mut(&ours)
        .unwrap()
        .current_state = neon_sim::state::EndpointState::Idle;
    h.sim.clock().advance(2 * HOUR + 10 * MINUTE);
    let (r, actions) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    assert!(
        actions
            .iter()
            .any(|a| a.resource_id == ours && a.action == "start_endpoint"),
        "{actions:?}"
    );
}

/// The store cannot be written for a while after a call was made (another process holds
/// SQLite's lock, PostgreSQL restarts): the outcome is held and written once it can be, not
/// dropped, and the run is not failed for it.
#[tokio::test]
async fn an_outcome_the_store_cannot_take_yet_is_held_and_written_later() {
    let mut h = harness(SimConfig::default()).await;
    let store = Arc::new(FailingReads {
        inner: h.env.store.clone(),
        fail: std::sync::atomic::AtomicBool::new(false),
        fail_finishes: std::sync::atomic::AtomicU32::new(2),
    });
    h.env.store = store.clone();
    let (p, _) = h.sim.add_project("app", None);
    h.branch_aged(&p, "preview/old", None, TimeDelta::days(10));
    let (r, actions) = h
        .run(
            &job(EXPIRE_FAILS
                .replace("expire-partial", "expire-held")
                .as_str()),
            false,
        )
        .await;
    assert_eq!(
        store.fail_finishes.load(Ordering::SeqCst),
        0,
        "it was retried"
    );
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0].outcome, ActionOutcome::Succeeded);
    assert_eq!(h.branch_names(&p), vec!["main"]);
}

const CONSUMPTION_PER_BRANCH: &str = r#"
[[jobs]]
name = "usage-branches"
kind = "collect_consumption"
every = "1h"
granularity = "hourly"
metrics = ["compute_unit_seconds", "snapshot_storage_bytes_month"]
org_id = "ORG"
per_branch = true
"#;

/// `per_branch = true`: every branch of the org's projects is collected from
/// `/consumption_history/v2/branches` (paged by branches, no empty last page), only with the
/// metrics that endpoint takes, into the per-branch store, beside the project collection; the
/// branches of a project add up to the project's own number, and the per-branch cursor resumes.
#[tokio::test]
async fn consumption_per_branch_is_collected_paged_and_adds_up_to_the_projects() {
    let mut h = harness(SimConfig::default()).await;
    let mut cc = h.sim.client_config();
    cc.page_size = 2;
    h.env.client = neon_steward::neon::NeonClient::new(cc).expect("client builds");
    let org = h.add_org("metered");
    let (a, a_main) = h.sim.add_project("a", Some(&org));
    let mut branches = vec![a_main.clone()];
    for i in 0..3 {
        branches.push(h.branch_aged(&a, &format!("dev-{i}"), None, TimeDelta::hours(1)));
    }
    h.busy_endpoint(&branches[2]);
    let (b, b_main) = h.sim.add_project("b", Some(&org));
    branches.push(b_main);
    h.busy_endpoint(&a_main);
    let j = job(&CONSUMPTION_PER_BRANCH.replace("ORG", &org));

    h.sim.clock().advance(5 * HOUR + 10 * MINUTE);
    let (r, actions) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    assert_eq!(
        actions
            .iter()
            .filter(|a| a.outcome == ActionOutcome::Succeeded)
            .count(),
        2,
        "one project call and one per-branch call: {actions:?}"
    );
    let calls = consumption_calls(&h, "/consumption_history/v2/branches");
    assert_eq!(calls.len(), 3, "5 branches, 2 a page: 2 + 2 + 1: {calls:?}");
    for c in &calls {
        assert_eq!(param(c, "metrics"), vec!["compute_unit_seconds"], "{c:?}");
        assert_eq!(param(c, "limit"), vec!["2"]);
        let mut ids = param(c, "project_ids");
        ids.sort();
        let mut want = vec![a.clone(), b.clone()];
        want.sort();
        assert_eq!(ids, want);
    }
    assert_eq!(
        consumption_calls(&h, "/consumption_history/v2/projects").len(),
        1
    );

    let since = h.now() - TimeDelta::hours(200);
    let per_branch = h
        .env
        .store
        .list_branch_consumption("hourly", since)
        .await
        .unwrap();
    let mut seen: Vec<&str> = per_branch.iter().map(|s| s.branch_id.as_str()).collect();
    seen.sort();
    seen.dedup();
    let mut want: Vec<&str> = branches.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(seen, want, "every branch of both projects");
    assert!(per_branch.iter().all(
        |s| s.metric == "compute_unit_seconds" && s.timeframe_end <= t("2025-06-02T16:00:00Z")
    ));
    assert!(per_branch
        .iter()
        .any(|s| s.branch_id == branches[2] && s.value > 0.0));
    // Each project-hour is the sum of its branches' hours.
    let projects = h.env.store.list_consumption("hourly", since).await.unwrap();
    let mut checked = 0;
    for p in projects
        .iter()
        .filter(|s| s.metric == "compute_unit_seconds")
    {
        let sum: f64 = per_branch
            .iter()
            .filter(|s| s.project_id == p.project_id && s.timeframe_start == p.timeframe_start)
            .map(|s| s.value)
            .sum();
        assert!(
            (sum - p.value).abs() < 1e-6,
            "{} at {}: branches {sum}, project {}",
            p.project_id,
            p.timeframe_start,
            p.value
        );
        checked += usize::from(p.value > 0.0);
    }
    assert!(checked >= 2, "busy hours were compared, not only zeros");
    let cursor = h
        .env
        .store
        .get_state(&j.name, "consumption_branch_cursor/hourly")
        .await
        .unwrap()
        .expect("the per-branch cursor moved");
    assert_eq!(cursor.value, t("2025-06-02T16:00:00Z").to_rfc3339());

    // Nothing new complete: no call. 17:20: only the new hour, from the per-branch cursor.
    h.sim.clear_sent();
    let (r, _) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert!(consumption_calls(&h, "/consumption_history/").is_empty());
    h.sim.clock().advance(10 * MINUTE);
    let (r, _) = h.run(&j, false).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    let calls = consumption_calls(&h, "/consumption_history/v2/branches");
    assert!(!calls.is_empty());
    assert!(calls
        .iter()
        .all(|c| param(c, "from") == vec!["2025-06-02T16:00:00Z"]
            && param(c, "to") == vec!["2025-06-02T17:00:00Z"]));
    let after = h
        .env
        .store
        .list_branch_consumption("hourly", since)
        .await
        .unwrap();
    assert_eq!(
        after.len(),
        per_branch.len() + 5,
        "one new hour x 5 branches"
    );
}
