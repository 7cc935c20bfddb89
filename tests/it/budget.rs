//! `enforce_budget` end to end against neon-sim on its virtual clock: the real
//! `collect_consumption` job stores what the emulator bills (its computes' CU-seconds), and
//! the budget guard prices it, crosses its thresholds and acts, then restores at the month
//! boundary in the budget's zone (Europe/Berlin, in the month its clocks went forward).
//!
//! Figures are hand-computed from the emulator's billing: a compute bills its autoscaling
//! minimum (at least 0.25 CU) for every second it is active, and busy computes never idle.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use neon_sim::{ClockMode, SimConfig};
use neon_steward::config::{self, JobConfig};
use neon_steward::jobs::{run_job, JobEnv, RunContext, RunResult};
use neon_steward::store::{ActionOutcome, ActionRecord, NewRun, RunStatus, Trigger};
use neon_steward::telemetry::consumption::ConsumptionExporter;
use neon_steward::telemetry::metrics::metrics;

use crate::helpers::{spawn_sim, TestSim};

/// A collect job (hourly, 0.001 USD per CU-second) and a budget of 100 USD a month in
/// Berlin over the org's projects: 80% notifies; 100% notifies, suspends non-default
/// computes and lowers the maximum to 0.5 CU; 120% shortens the suspend timeout to 2m.
const POLICY: &str = r#"
[api]
concurrency = 2

[[jobs]]
name = "usage"
kind = "collect_consumption"
every = "1h"
granularity = "hourly"
metrics = ["compute_unit_seconds"]
org_id = "ORG"
[jobs.prices]
compute_unit_seconds = 0.001

[[jobs]]
name = "JOB"
kind = "enforce_budget"
every = "1h"
dry_run = DRY
max_actions = 10
[jobs.projects]
org_id = "ORG"
[jobs.budget]
consumption_job = "usage"
limit = LIMIT
currency = "USD"
timezone = "Europe/Berlin"
projection_days = 7
[[jobs.budget.thresholds]]
percent = 80
actions = ["notify"]
[[jobs.budget.thresholds]]
percent = 100
actions = ["notify", "suspend_computes", "lower_max_cu"]
max_cu = 0.5
[[jobs.budget.thresholds]]
percent = 120
actions = ["notify", "shorten_suspend_timeout"]
suspend_timeout = "2m"
"#;

fn jobs(org: &str, name: &str, limit: &str, dry_run: bool) -> (Arc<JobConfig>, Arc<JobConfig>) {
    let text = POLICY
        .replace("ORG", org)
        .replace("JOB", name)
        .replace("LIMIT", limit)
        .replace("DRY", if dry_run { "true" } else { "false" });
    let cfg = config::parse_with_env(Path::new("budget-e2e.toml"), &text, &|k| {
        (k == "NEON_API_KEY").then(|| "unused-in-tests".to_string())
    })
    .unwrap_or_else(|e| panic!("test policy must parse: {e}"));
    (cfg.jobs[0].clone(), cfg.jobs[1].clone())
}

struct H {
    sim: TestSim,
    env: JobEnv,
    ticks: AtomicI64,
    org: String,
    project: String,
    /// The busy compute of the default branch (0.25-2 CU) and of `dev` (1-4 CU).
    main_ep: String,
    dev_ep: String,
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The account at 2026-03-30T00:00Z (Berlin is on CEST since the 29th): one project of an
/// org with two busy computes, billing 0.25 + 1 = 1.25 CU, i.e. 4.5 USD an hour.
async fn harness() -> H {
    let sim = spawn_sim(SimConfig {
        clock: ClockMode::Virtual {
            start: Utc.with_ymd_and_hms(2026, 3, 30, 0, 0, 0).unwrap(),
        },
        ..SimConfig::default()
    })
    .await;
    let store = neon_steward::store::open("sqlite::memory:")
        .await
        .expect("store opens");
    let env = JobEnv {
        client: sim.client(),
        store,
        concurrency: 2,
        operation_deadline: Duration::from_secs(20),
        consumption: Arc::new(ConsumptionExporter::detached()),
    };
    let org = neon_sim::seed::insert_org(&mut sim.state().settled(), "metered");
    let (project, main) = sim.add_project("shop", Some(&org));
    let dev = sim.add_branch(&project, "dev", None);
    let main_ep = sim.add_endpoint(&main);
    let dev_ep = sim.add_endpoint(&dev);
    {
        let st = sim.state();
        let mut s = st.settled();
        for (ep, min, max) in [(&main_ep, 0.25, 2.0), (&dev_ep, 1.0, 4.0)] {
            let e = s
                .endpoints
                .get_mut(ep.as_str())
                .expect("endpoint just added");
            e.activity = neon_sim::state::Activity::Busy;
            e.autoscaling_limit_min_cu = min;
            e.autoscaling_limit_max_cu = max;
        }
        s.settle();
    }
    H {
        sim,
        env,
        ticks: AtomicI64::new(0),
        org,
        project,
        main_ep,
        dev_ep,
    }
}

impl H {
    fn now(&self) -> DateTime<Utc> {
        self.sim.clock().now()
    }

    async fn run(&self, job: &JobConfig) -> (RunResult, Vec<ActionRecord>) {
        let now = self.now();
        let tick = now + TimeDelta::milliseconds(self.ticks.fetch_add(1, Ordering::Relaxed));
        let run_id = self
            .env
            .store
            .claim_run(&NewRun {
                plan_id: None,
                job: job.name.clone(),
                kind: job.kind.as_str().to_string(),
                scheduled_for: tick,
                trigger: Trigger::Manual,
                dry_run: job.dry_run,
                status: RunStatus::Running,
                error: None,
            })
            .await
            .unwrap()
            .expect("fresh tick");
        let r = run_job(
            &self.env,
            job,
            RunContext {
                run_id,
                scheduled_for: tick,
                now,
                dry_run: job.dry_run,
            },
        )
        .await;
        let actions = self.env.store.actions_for_run(run_id).await.unwrap();
        (r, actions)
    }

    /// Collects, then runs the budget; the budget run's result and actions.
    async fn collect_and_guard(
        &self,
        usage: &JobConfig,
        budget: &JobConfig,
    ) -> (RunResult, Vec<ActionRecord>) {
        let (r, a) = self.run(usage).await;
        assert_eq!(r.status, RunStatus::Succeeded, "collect: {r:?} {a:?}");
        self.run(budget).await
    }

    /// `(min, max, suspend_timeout_seconds)` of an endpoint in the emulator.
    fn settings(&self, ep: &str) -> (f64, f64, i64) {
        let st = self.sim.state();
        let s = st.settled();
        let e = &s.endpoints[ep];
        (
            e.autoscaling_limit_min_cu,
            e.autoscaling_limit_max_cu,
            e.suspend_timeout_seconds,
        )
    }

    fn endpoint_mutations(&self) -> Vec<(String, String)> {
        self.sim
            .mutations()
            .into_iter()
            .filter(|m| m.path.contains("/endpoints/"))
            .map(|m| (m.method, m.path))
            .collect()
    }
}

fn gauge(job: &str, which: &str) -> f64 {
    let m = metrics();
    let g = match which {
        "spend" => &m.budget_spend,
        "projected" => &m.budget_projected,
        _ => &m.budget_limit,
    };
    g.with_label_values(&[job, "all", "USD"]).get()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// `(action, outcome, rule)` of the rows that are not skips.
fn rows(actions: &[ActionRecord]) -> Vec<(String, ActionOutcome, String)> {
    actions
        .iter()
        .map(|a| {
            (
                a.action.clone(),
                a.outcome,
                a.rule.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// Advances the clock to `at` (it only moves forward).
fn to(h: &H, at: &str) {
    let d = t(at) - h.now();
    h.sim.clock().advance(d.to_std().expect("forward in time"));
}

#[tokio::test]
async fn crosses_each_threshold_then_restores_at_the_berlin_month_boundary() {
    let h = harness().await;
    let job = "budget-e2e-month";
    let (usage, budget) = jobs(&h.org, job, "100.0", false);

    // 18:20Z: 18 complete hours of 4.5 USD = 81 USD, 81% of the budget: a notice only.
    to(&h, "2026-03-30T18:20:00Z");
    let (r, a) = h.collect_and_guard(&usage, &budget).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {a:?}");
    assert!(close(gauge(job, "spend"), 81.0), "{}", gauge(job, "spend"));
    assert_eq!(gauge(job, "limit"), 100.0);
    // The collection reached back 168 h (from 23 March 19:00Z, zeros before the account
    // existed), so the 7-day window is 167 h of data with 81 USD in it; 28 h are left until
    // 31 March 22:00Z (midnight CEST): 81 + 81 * 28 / 167.
    let projected = 81.0 + 81.0 * 28.0 / 167.0;
    assert!(
        close(gauge(job, "projected"), projected),
        "{} vs {projected}",
        gauge(job, "projected")
    );
    assert_eq!(
        rows(&a),
        vec![(
            "budget_notify".to_string(),
            ActionOutcome::Succeeded,
            "threshold 80%".to_string()
        )]
    );
    assert!(
        a[0].reason
            .contains("81.00 USD is 81.0% of the 100.00 USD budget for 2026-03"),
        "{}",
        a[0].reason
    );
    assert!(h.endpoint_mutations().is_empty());

    // Again at once: the notice is given once a month.
    let (_, a) = h.run(&budget).await;
    assert!(a.is_empty(), "{a:?}");

    // 23:20Z: 23 hours, 103.5 USD: the 100% threshold. Projection: 168 h window with all
    // 103.5 USD in it, 23 h left: 103.5 + 103.5 * 23 / 168.
    to(&h, "2026-03-30T23:20:00Z");
    let (r, a) = h.collect_and_guard(&usage, &budget).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {a:?}");
    assert!(close(gauge(job, "spend"), 103.5), "{}", gauge(job, "spend"));
    let projected = 103.5 + 103.5 * 23.0 / 168.0;
    assert!(close(gauge(job, "projected"), projected));
    let mut got = rows(&a);
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        got,
        vec![
            (
                "budget_lower_max_cu".to_string(),
                ActionOutcome::Succeeded,
                "threshold 100%".to_string()
            ),
            (
                "budget_lower_max_cu".to_string(),
                ActionOutcome::Succeeded,
                "threshold 100%".to_string()
            ),
            (
                "budget_notify".to_string(),
                ActionOutcome::Succeeded,
                "threshold 100%".to_string()
            ),
            (
                "budget_suspend_compute".to_string(),
                ActionOutcome::Succeeded,
                "threshold 100%".to_string()
            ),
        ]
    );
    // Only the dev branch's compute is suspended; both maxima are 0.5 CU, and dev's minimum
    // (1 CU) came down with it.
    let suspended: Vec<&ActionRecord> = a
        .iter()
        .filter(|x| x.action == "budget_suspend_compute")
        .collect();
    assert_eq!(suspended[0].resource_id, h.dev_ep);
    assert_eq!(h.settings(&h.main_ep), (0.25, 0.5, 0));
    assert_eq!(h.settings(&h.dev_ep), (0.5, 0.5, 0));
    let state = h
        .env
        .store
        .get_state(job, &format!("budget_changes/{}", h.project))
        .await
        .unwrap()
        .expect("the changes are recorded");
    assert!(
        state
            .value
            .contains(r#""previous":{"kind":"cu","min":1.0,"max":4.0}"#),
        "{}",
        state.value
    );

    // 21:30Z on the 31st is 23:30 CEST, still March in Berlin: nothing is restored. The
    // spend went on at 0.25 + 0.5 CU: the 23:00Z hour billed 20 min at 1.25 CU and 40 min at
    // 0.75 CU (3.3 USD), the 21 hours from 00:00Z 2.7 USD each: 103.5 + 3.3 + 56.7 = 163.5,
    // past 120%: its notice and the 2-minute suspend timeout on both computes; dev's compute
    // (busy, so started again by its traffic) is suspended again.
    to(&h, "2026-03-31T21:30:00Z");
    let (r, a) = h.collect_and_guard(&usage, &budget).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {a:?}");
    assert!(close(gauge(job, "spend"), 163.5), "{}", gauge(job, "spend"));
    let mut got = rows(&a);
    got.sort_by(|x, y| x.0.cmp(&y.0));
    let expect = |n: &str, rule: &str| (n.to_string(), ActionOutcome::Succeeded, rule.to_string());
    assert_eq!(
        got,
        vec![
            expect("budget_notify", "threshold 120%"),
            expect("budget_shorten_suspend_timeout", "threshold 120%"),
            expect("budget_shorten_suspend_timeout", "threshold 120%"),
            expect("budget_suspend_compute", "threshold 100%"),
        ]
    );
    assert_eq!(h.settings(&h.main_ep), (0.25, 0.5, 120));
    assert_eq!(h.settings(&h.dev_ep), (0.5, 0.5, 120));

    // 22:30Z is 00:30 on 1 April in Berlin (UTC and CET still say March): restored.
    to(&h, "2026-03-31T22:30:00Z");
    let (r, a) = h.collect_and_guard(&usage, &budget).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {a:?}");
    let restored: Vec<(String, ActionOutcome)> = a
        .iter()
        .filter(|x| x.action.starts_with("budget_restore"))
        .map(|x| (x.action.clone(), x.outcome))
        .collect();
    for lever in ["budget_restore_max_cu", "budget_restore_suspend_timeout"] {
        assert_eq!(
            restored
                .iter()
                .filter(|(n, o)| n == lever && *o == ActionOutcome::Succeeded)
                .count(),
            2,
            "{lever}: {a:?}"
        );
    }
    assert!(
        restored.contains(&("budget_restore_compute".to_string(), ActionOutcome::Skipped)),
        "a suspension has nothing to undo: {a:?}"
    );
    assert_eq!(h.settings(&h.main_ep), (0.25, 2.0, 0));
    assert_eq!(h.settings(&h.dev_ep), (1.0, 4.0, 0));
    // April's spend: its first hour is not complete yet.
    assert_eq!(gauge(job, "spend"), 0.0);
    let state = h
        .env
        .store
        .get_state(job, &format!("budget_changes/{}", h.project))
        .await
        .unwrap()
        .expect("record");
    assert!(state.value.contains(r#""changes":{}"#), "{}", state.value);
}

#[tokio::test]
async fn raising_the_budget_restores_and_a_dry_run_changes_nothing() {
    let h = harness().await;
    let job = "budget-e2e-raise";
    // 30 hours at 4.5 USD = 135 USD by 2026-03-31T06:20Z: 135% of 100, every threshold.
    to(&h, "2026-03-31T06:20:00Z");

    // The default dry run plans every action and makes no call.
    let (usage, dry) = jobs(&h.org, job, "100.0", true);
    let (r, a) = h.collect_and_guard(&usage, &dry).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {a:?}");
    assert!(close(gauge(job, "spend"), 135.0), "{}", gauge(job, "spend"));
    assert!(
        !a.is_empty() && a.iter().all(|x| x.outcome == ActionOutcome::Planned),
        "{a:?}"
    );
    assert_eq!(
        a.iter().filter(|x| x.action == "budget_notify").count(),
        3,
        "80, 100 and 120%"
    );
    assert!(h.endpoint_mutations().is_empty());

    let (_, live) = jobs(&h.org, job, "100.0", false);
    let (r, a) = h.run(&live).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {a:?}");
    // 120%: 2 minutes of suspend timeout on both computes (0 is Neon's 300 s default).
    assert_eq!(h.settings(&h.main_ep), (0.25, 0.5, 120));
    assert_eq!(h.settings(&h.dev_ep), (0.5, 0.5, 120));

    // The budget raised to 200: 135 USD is 67.5%, no threshold asks for anything: restored.
    let (_, raised) = jobs(&h.org, job, "200.0", false);
    let (r, a) = h.run(&raised).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {a:?}");
    assert_eq!(gauge(job, "limit"), 200.0);
    let restores = a
        .iter()
        .filter(|x| {
            x.outcome == ActionOutcome::Succeeded
                && (x.action == "budget_restore_max_cu"
                    || x.action == "budget_restore_suspend_timeout")
        })
        .count();
    assert_eq!(restores, 4, "{a:?}");
    assert_eq!(h.settings(&h.main_ep), (0.25, 2.0, 0));
    assert_eq!(h.settings(&h.dev_ep), (1.0, 4.0, 0));
    assert!(a.iter().all(|x| x.action != "budget_notify"), "{a:?}");
}

#[tokio::test]
async fn max_actions_bounds_a_run_and_unpriced_metrics_are_refused() {
    let h = harness().await;
    to(&h, "2026-03-31T06:20:00Z");
    let (usage, live) = jobs(&h.org, "budget-e2e-limit", "100.0", false);
    let mut tight = (*live).clone();
    tight.limits.max_actions = Some(2);
    let (r, a) = h.collect_and_guard(&usage, &tight).await;
    assert_eq!(r.status, RunStatus::Failed, "{r:?} {a:?}");
    assert!(h.endpoint_mutations().is_empty());

    let text = POLICY
        .replace("ORG", &h.org)
        .replace("JOB", "b")
        .replace("LIMIT", "1.0")
        .replace("DRY", "true")
        .replace("[jobs.prices]\ncompute_unit_seconds = 0.001\n", "");
    let err = config::parse_with_env(Path::new("p.toml"), &text, &|k| {
        (k == "NEON_API_KEY").then(|| "k".to_string())
    })
    .expect_err("no prices");
    assert!(
        err.to_string()
            .contains("has no price for compute_unit_seconds"),
        "{err}"
    );
}

/// What a local sink received: `(path, body)`.
type Got = std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;

/// A local receiver for a webhook sink (`/hook`) and a Slack sink (`/slack`), answering 200.
async fn receiver() -> (Got, String) {
    use axum::routing::post;
    let got: Got = Default::default();
    let record = |path: &'static str, got: Got| {
        move |body: String| async move {
            let v = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
            got.lock().unwrap().push((path.to_string(), v));
            axum::http::StatusCode::OK
        }
    };
    let app = axum::Router::new()
        .route("/hook", post(record("/hook", got.clone())))
        .route("/slack", post(record("/slack", got.clone())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (got, base)
}

#[tokio::test]
async fn each_threshold_crossed_sends_one_budget_notification_a_month() {
    use neon_steward::notify::deliver::{Deliverer, DeliveryTiming};
    let h = harness().await;
    let (got, base) = receiver().await;
    let job = "budget-e2e-notify";
    // The test policy with two sinks that take budget events (and one that does not).
    let text = format!(
        "{}\n[[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl_env = \"HOOK_URL\"\nsecret_env = \"HOOK_KEY\"\nevents = [\"budget\"]\n\
         [[notify]]\nname = \"chat\"\nkind = \"slack\"\nurl_env = \"SLACK_URL\"\nevents = [\"budget\", \"run_failed\"]\n\
         [[notify]]\nname = \"failures\"\nkind = \"slack\"\nurl_env = \"SLACK_URL\"\nevents = [\"run_failed\"]\n",
        POLICY
            .replace("ORG", &h.org)
            .replace("JOB", job)
            .replace("LIMIT", "100.0")
            .replace("DRY", "false")
    );
    let env = |k: &str| match k {
        "NEON_API_KEY" => Some("unused-in-tests".to_string()),
        "HOOK_URL" => Some(format!("{base}/hook")),
        "SLACK_URL" => Some(format!("{base}/slack")),
        "HOOK_KEY" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()),
        _ => None,
    };
    let cfg = config::parse_with_env(Path::new("budget-notify.toml"), &text, &env)
        .unwrap_or_else(|e| panic!("test policy must parse: {e}"));
    let (usage, budget) = (cfg.jobs[0].clone(), cfg.jobs[1].clone());
    let deliverer = Deliverer::new(
        h.env.store.clone(),
        &cfg.notify,
        DeliveryTiming {
            poll: Duration::from_millis(10),
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
        },
    );
    let deliver = |n: usize| {
        let got = got.clone();
        let d = &deliverer;
        async move {
            for _ in 0..200 {
                d.deliver_due().await;
                if got.lock().unwrap().len() >= n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // One more look: nothing else is due.
            d.deliver_due().await;
            got.lock().unwrap().clone()
        }
    };

    // 81 USD of 100: the 80% threshold, one notification to each sink that takes it.
    to(&h, "2026-03-30T18:20:00Z");
    let (r, a) = h.collect_and_guard(&usage, &budget).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {a:?}");
    let received = deliver(2).await;
    assert_eq!(received.len(), 2, "{received:#?}");
    let hook = &received
        .iter()
        .find(|(p, _)| p == "/hook")
        .expect("webhook")
        .1;
    assert_eq!(hook["type"], "neon_steward.budget");
    let data = &hook["data"];
    assert_eq!(data["job"], job);
    assert_eq!(data["budget"], "all");
    assert_eq!(data["month"], "2026-03");
    assert_eq!(data["timezone"], "Europe/Berlin");
    assert_eq!(data["threshold_percent"], 80.0);
    assert_eq!(data["limit"], 100.0);
    assert_eq!(data["currency"], "USD");
    assert!(close(data["spent"].as_f64().unwrap(), 81.0), "{data}");
    // As the gauge: 81 + 81 * 28 / 167 (see the test above).
    let projected = 81.0 + 81.0 * 28.0 / 167.0;
    assert!(
        close(data["projected"].as_f64().unwrap(), projected),
        "{data}"
    );
    let slack = received
        .iter()
        .find(|(p, _)| p == "/slack")
        .expect("slack")
        .1["text"]
        .as_str()
        .expect("a Slack text")
        .to_string();
    for part in [
        "80% threshold",
        "2026-03",
        "Europe/Berlin",
        "81.00 USD spent of 100.00 USD (81.0%)",
        &format!("projected by the month's end: {projected:.2} USD"),
    ] {
        assert!(slack.contains(part), "{part:?} missing from {slack}");
    }

    // Again in the same month: no notice, no notification.
    let (_, a) = h.run(&budget).await;
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(deliver(3).await.len(), 2);

    // 103.5 USD: the 100% threshold, one more to each sink.
    to(&h, "2026-03-30T23:20:00Z");
    let (r, a) = h.collect_and_guard(&usage, &budget).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {a:?}");
    let received = deliver(4).await;
    assert_eq!(received.len(), 4, "{received:#?}");
    let hundred: Vec<&serde_json::Value> = received[2..]
        .iter()
        .filter(|(p, _)| p == "/hook")
        .map(|(_, v)| &v["data"])
        .collect();
    assert_eq!(hundred.len(), 1, "{received:#?}");
    assert_eq!(hundred[0]["threshold_percent"], 100.0);
    assert!(close(hundred[0]["spent"].as_f64().unwrap(), 103.5));
    let rows = h
        .env
        .store
        .list_notifications(&Default::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 4, "one row per sink and threshold: {rows:#?}");
    assert!(rows
        .iter()
        .all(|r| r.event == "budget" && r.sink != "failures"));

    // The 80% notice given again by another run (as after a crash between the outbox write
    // and the job's record of the notice): the outbox already has it, nothing more is sent.
    let run_id = h
        .env
        .store
        .claim_run(&NewRun {
            plan_id: None,
            job: job.to_string(),
            kind: "enforce_budget".into(),
            scheduled_for: h.now() + TimeDelta::minutes(1),
            trigger: Trigger::Manual,
            dry_run: false,
            status: RunStatus::Running,
            error: None,
        })
        .await
        .unwrap()
        .expect("fresh tick");
    let again = neon_steward::jobs::budget::Notice {
        run_id,
        budget: "all".into(),
        month: "2026-03".into(),
        timezone: "Europe/Berlin".into(),
        threshold: 80.0,
        spent: 81.0,
        projected,
        limit: 100.0,
        currency: "USD".into(),
    };
    neon_steward::jobs::budget::notify(&h.env, &budget, &again, h.now())
        .await
        .expect("the outbox takes it");
    let rows = h
        .env
        .store
        .list_notifications(&Default::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 4, "{rows:#?}");
    assert_eq!(deliver(5).await.len(), 4);
}

#[tokio::test]
async fn per_project_budgets_are_each_projects_own() {
    let h = harness().await;
    // A second project of the org: one busy compute at its 0.25 CU minimum, 0.9 USD an hour.
    let (blog, blog_main) = h.sim.add_project("blog", Some(&h.org));
    let blog_ep = h.sim.add_endpoint(&blog_main);
    {
        let st = h.sim.state();
        let mut s = st.settled();
        let e = s
            .endpoints
            .get_mut(blog_ep.as_str())
            .expect("endpoint just added");
        e.activity = neon_sim::state::Activity::Busy;
        e.autoscaling_limit_min_cu = 0.25;
        e.autoscaling_limit_max_cu = 1.0;
        s.settle();
    }
    let job = "budget-e2e-per-project";
    let text = POLICY
        .replace("ORG", &h.org)
        .replace("JOB", job)
        .replace("LIMIT", "50.0")
        .replace("DRY", "false")
        .replace(
            "projection_days = 7\n",
            "projection_days = 7\nper_project = true\n",
        );
    let cfg = config::parse_with_env(Path::new("per-project.toml"), &text, &|k| {
        (k == "NEON_API_KEY").then(|| "unused-in-tests".to_string())
    })
    .unwrap_or_else(|e| panic!("test policy must parse: {e}"));
    let (usage, budget) = (cfg.jobs[0].clone(), cfg.jobs[1].clone());

    // 18 complete hours: the shop spent 81 USD (162% of its 50), the blog 16.2 (32.4%).
    to(&h, "2026-03-30T18:20:00Z");
    let (r, a) = h.collect_and_guard(&usage, &budget).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {a:?}");
    let m = metrics();
    let spend = |p: &str| m.budget_spend.with_label_values(&[job, p, "USD"]).get();
    assert!(close(spend(&h.project), 81.0), "{}", spend(&h.project));
    assert!(close(spend(&blog), 16.2), "{}", spend(&blog));
    assert!(
        m.budget_spend.with_label_values(&[job, "all", "USD"]).get() == 0.0,
        "no budget over all projects"
    );
    // Every threshold of the shop's own budget, noticed as the shop's; nothing for the blog.
    let notices: Vec<(&str, &str)> = a
        .iter()
        .filter(|x| x.action == "budget_notify")
        .map(|x| (x.resource_id.as_str(), x.rule.as_deref().unwrap_or("")))
        .collect();
    let shop = h.project.as_str();
    assert_eq!(
        notices,
        vec![
            (shop, "threshold 80%"),
            (shop, "threshold 100%"),
            (shop, "threshold 120%")
        ]
    );
    assert!(
        a.iter().all(|x| x.project_id.as_deref() == Some(shop)),
        "{a:?}"
    );
    assert!(a.iter().any(|x| x.action == "budget_lower_max_cu"), "{a:?}");
    assert!(
        h.endpoint_mutations()
            .iter()
            .all(|(_, path)| !path.contains(&blog)),
        "{:?}",
        h.endpoint_mutations()
    );
    let st = h.sim.state();
    let s = st.settled();
    assert_eq!(s.endpoints[blog_ep.as_str()].autoscaling_limit_max_cu, 1.0);
}
