//! Notifications and notices end to end: a local webhook receiver (axum on port 0) checks
//! the Standard Webhooks signatures, and the deliverer is driven through a sink that
//! answers 500, answers too slowly, or is down; a crash between the fact and its delivery
//! still delivers once; a Slack receiver checks the message a person reads, the retries
//! and that the URL is in no error, log line or metric. Then the notice period against
//! neon-sim: notice -> keep -> nothing deleted, and notice -> still due -> deleted after the
//! period, not before; the same in `set_expires_at` mode and for a `suspend_computes` window
//! suspension; a kept branch's computes are not suspended; a run's digest.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, TimeDelta, Utc};
use neon_steward::config::{self, JobConfig, NotifyEvent, NotifyKind, SigningKey, SinkConfig};
use neon_steward::notify::deliver::{Deliverer, DeliveryTiming};
use neon_steward::store::{
    self, ActionCounts, ActionOutcome, ActionRecord, Keep, NewNotification, NewRun,
    NotificationStatus, RunStatus, Store, Trigger,
};

use crate::helpers::{job_harness as harness, JobHarness as H};

const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How the receiver answers its next requests (then 200 for ever).
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// Answers 200, but only after this long.
    Slow(Duration),
}

#[derive(Debug, Clone)]
struct Received {
    id: String,
    signature_ok: bool,
    body: serde_json::Value,
}

#[derive(Clone, Default)]
struct Receiver {
    script: Arc<Mutex<VecDeque<Answer>>>,
    got: Arc<Mutex<Vec<Received>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let key = SigningKey::parse(KEY).unwrap();
    let ts: i64 = h("webhook-timestamp").parse().unwrap_or(0);
    let signature_ok = neon_steward::notify::sign::verify(
        &key,
        &h("webhook-id"),
        ts,
        &body,
        &h("webhook-signature"),
    );
    let answer = r.script.lock().unwrap().pop_front();
    r.got.lock().unwrap().push(Received {
        id: h("webhook-id"),
        signature_ok,
        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    });
    if let Some(Answer::Slow(d)) = answer {
        tokio::time::sleep(d).await;
    }
    match answer {
        Some(Answer::Status(s)) => StatusCode::from_u16(s).unwrap(),
        _ => StatusCode::OK,
    }
}

async fn receiver(script: &[Answer]) -> (Receiver, String) {
    let r = Receiver::default();
    r.script.lock().unwrap().extend(script.iter().copied());
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

fn sink(url: &str, timeout: Duration) -> Arc<SinkConfig> {
    Arc::new(SinkConfig {
        name: "ops".into(),
        kind: NotifyKind::Webhook,
        url: neon_steward::secret::Secret::new(url),
        key: Some(SigningKey::parse(KEY).unwrap()),
        events: NotifyEvent::ALL.to_vec(),
        jobs: None,
        timeout,
        give_up_after: Duration::from_secs(3600),
    })
}

/// A Slack sink named `name` that takes every event.
fn slack_sink(name: &str, url: &str, timeout: Duration) -> Arc<SinkConfig> {
    Arc::new(SinkConfig {
        name: name.into(),
        kind: NotifyKind::Slack,
        url: neon_steward::secret::Secret::new(url),
        key: None,
        events: NotifyEvent::ALL.to_vec(),
        jobs: None,
        timeout,
        give_up_after: Duration::from_secs(3600),
    })
}

/// `notifications_total{sink, event, outcome}` now.
fn notified(sink: &str, event: &str, outcome: &str) -> u64 {
    neon_steward::telemetry::metrics::metrics()
        .notifications_total
        .with_label_values(&[sink, event, outcome])
        .get()
}

const FAST: DeliveryTiming = DeliveryTiming {
    poll: Duration::from_millis(10),
    first_backoff: Duration::from_millis(1),
    max_backoff: Duration::from_millis(5),
};

fn note(id: &str, give_up_after_ms: i64) -> NewNotification {
    NewNotification {
        id: id.into(),
        sink: "ops".into(),
        event: "run_failed".into(),
        job: Some("j".into()),
        run_id: None,
        payload: r#"{"summary":"job `j`: run 1 ended failed"}"#.into(),
        give_up_after_ms,
    }
}

struct Db {
    _dir: tempfile::TempDir,
    url: String,
}

fn db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    Db { _dir: dir, url }
}

async fn replica(url: &str, name: &str) -> Arc<dyn Store> {
    store::open_with(
        url,
        store::StoreOptions {
            replica: store::ReplicaId::named(name),
            lease: Duration::from_secs(3600),
        },
    )
    .await
    .unwrap()
}

/// A run of job `j` ended, with its notifications, on `s`.
async fn fact(s: &Arc<dyn Store>, notes: &[NewNotification]) {
    let run = s
        .claim_run(&NewRun {
            plan_id: None,
            job: "j".into(),
            kind: "expire_branches".into(),
            scheduled_for: Utc::now(),
            trigger: Trigger::Manual,
            dry_run: false,
            status: RunStatus::Running,
            error: None,
        })
        .await
        .unwrap()
        .unwrap();
    s.finish_run_notifying(
        run,
        RunStatus::Failed,
        ActionCounts::default(),
        Some("boom"),
        notes,
    )
    .await
    .unwrap();
}

/// Delivers until `done` or 200 rounds (each round waits at least the poll interval).
async fn deliver_until(d: &Deliverer, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        d.deliver_due().await;
        if done() {
            return;
        }
        tokio::time::sleep(FAST.poll).await;
    }
}

#[tokio::test]
async fn a_webhook_is_signed_and_retried_through_a_500_and_a_slow_answer_then_delivered_once() {
    let (r, url) = receiver(&[Answer::Status(500), Answer::Slow(Duration::from_secs(3))]).await;
    let db = db();
    let s = replica(&db.url, "a").await;
    fact(&s, &[note("msg_retried", 3_600_000)]).await;
    let d = Deliverer::new(s.clone(), &[sink(&url, Duration::from_millis(300))], FAST);
    let delivered = || r.got.lock().unwrap().len() >= 3;
    deliver_until(&d, delivered).await;
    // One more look: nothing is sent again once delivered.
    tokio::time::sleep(Duration::from_millis(20)).await;
    d.deliver_due().await;
    let got = r.got.lock().unwrap().clone();
    assert_eq!(
        got.len(),
        3,
        "500, too slow (the receiver saw it), then 200: {got:?}"
    );
    assert!(
        got.iter().all(|g| g.id == "msg_retried"),
        "the same webhook-id every time"
    );
    assert!(
        got.iter().all(|g| g.signature_ok),
        "every attempt is signed"
    );
    assert_eq!(got[2].body["type"], "neon_steward.run_failed");
    assert_eq!(
        got[2].body["data"]["summary"],
        "job `j`: run 1 ended failed"
    );
    let rows = s.list_notifications(&Default::default()).await.unwrap();
    assert_eq!(rows[0].status, NotificationStatus::Delivered);
    assert_eq!(rows[0].attempts, 3);
}

#[tokio::test]
async fn a_dead_sink_is_retried_then_given_up_and_recorded_without_its_url() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/secret-hook-path");
    let db = db();
    let s = replica(&db.url, "a").await;
    fact(&s, &[note("msg_dead", 200)]).await;
    let d = Deliverer::new(s.clone(), &[sink(&url, Duration::from_millis(300))], FAST);
    let s2 = s.clone();
    let failed = Arc::new(Mutex::new(false));
    for _ in 0..200 {
        d.deliver_due().await;
        let rows = s2.list_notifications(&Default::default()).await.unwrap();
        if rows[0].status == NotificationStatus::Failed {
            *failed.lock().unwrap() = true;
            break;
        }
        tokio::time::sleep(FAST.poll).await;
    }
    assert!(*failed.lock().unwrap(), "given up after give_up_after");
    let row = &s.list_notifications(&Default::default()).await.unwrap()[0];
    assert!(row.attempts >= 2, "retried before giving up: {row:?}");
    let err = row.last_error.as_deref().unwrap_or_default();
    assert!(err.contains("cannot connect"), "{err}");
    assert!(
        !err.contains("secret-hook-path") && !err.contains(&port.to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn a_crash_between_the_fact_and_its_delivery_still_delivers_once() {
    let (r, url) = receiver(&[]).await;
    let db = db();
    // Replica a records the fact and dies before delivering anything.
    {
        let a = replica(&db.url, "a").await;
        fact(&a, &[note("msg_crash", 3_600_000)]).await;
    }
    // Replica c claims it and dies during the delivery (its lease is 1 ms).
    {
        let c = replica(&db.url, "c").await;
        assert_eq!(c.claim_notifications(10, 1).await.unwrap().len(), 1);
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let b = replica(&db.url, "b").await;
    let d = Deliverer::new(b.clone(), &[sink(&url, Duration::from_secs(5))], FAST);
    deliver_until(&d, || !r.got.lock().unwrap().is_empty()).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        d.deliver_due().await;
    }
    let got = r.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].id, "msg_crash");
    let rows = b.list_notifications(&Default::default()).await.unwrap();
    assert_eq!(
        (rows[0].status, rows[0].attempts),
        (NotificationStatus::Delivered, 2)
    );
}

// ------------------------------------------------------------------ Slack over HTTP

#[derive(Clone, Default)]
struct SlackReceiver {
    script: Arc<Mutex<VecDeque<u16>>>,
    got: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

async fn slack_receive(
    State(r): State<SlackReceiver>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    r.got.lock().unwrap().push((content_type, body));
    let status = r.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

/// Log lines, captured for the current thread (the test's runtime is single-threaded, so
/// the deliverer's and the HTTP client's logs all land here).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_slack_notice_reads_what_where_why_when_and_is_retried_through_500s_without_its_url() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,neon_steward=trace",
        ))
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let r = SlackReceiver::default();
    r.script.lock().unwrap().extend([500, 503]);
    let token = "T0SECRET/B0SECRET/xoxbSecretToken123";
    let app = Router::new()
        .route("/services/{*rest}", post(slack_receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/services/{token}");
    tokio::spawn(async move { axum::serve(listener, app).await });

    // A notice as a run writes it: a branch due for deletion in a day.
    let marked = "2026-03-02T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
    let mark = store::NoticeMark {
        job: "previews".into(),
        project_id: "p-silent-41".into(),
        resource_kind: "branch".into(),
        resource_id: "br-old-1".into(),
        resource_name: Some("preview/old".into()),
        action: "delete_branch".into(),
        rule: Some("ttl".into()),
        reason: "age 10d > ttl 7d".into(),
        marked_at: marked,
        due_at: marked + TimeDelta::hours(24),
        run_id: Some(1),
    };
    let mut rows = neon_steward::notify::notice(&expire("7d"), 1, &[mark], marked);
    assert_eq!(rows.len(), 1);
    for row in &mut rows {
        row.sink = "slack-ops".into();
    }
    let db = db();
    let s = replica(&db.url, "a").await;
    fact(&s, &rows).await;

    let slack = slack_sink("slack-ops", &url, Duration::from_secs(5));
    let metric = |outcome: &str| notified("slack-ops", "notice", outcome);
    let debug = format!("{slack:?}");
    assert!(
        !debug.contains("xoxb") && !debug.contains("SECRET"),
        "{debug}"
    );
    let d = Deliverer::new(s.clone(), &[slack], FAST);
    let mut errors = Vec::new();
    for _ in 0..200 {
        d.deliver_due().await;
        let row = s.list_notifications(&Default::default()).await.unwrap()[0].clone();
        errors.extend(row.last_error.clone());
        if row.status != NotificationStatus::Pending {
            break;
        }
        tokio::time::sleep(FAST.poll).await;
    }
    // Nothing is sent again once delivered.
    tokio::time::sleep(Duration::from_millis(20)).await;
    d.deliver_due().await;

    let got = r.got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "500, 503, then 200: {got:?}");
    let row = &s.list_notifications(&Default::default()).await.unwrap()[0];
    assert_eq!(
        (row.status, row.attempts),
        (NotificationStatus::Delivered, 3)
    );
    assert_eq!((metric("retry"), metric("delivered")), (2, 1));
    for (content_type, body) in &got {
        assert_eq!(content_type, "application/json");
        assert_eq!(body, &got[0].1, "every attempt sends the same message");
    }
    let text = got[0].1["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{:?}", got[0].1));
    for (what, part) in [
        ("the event", "notice"),
        ("when it was said", "2026-03-02T10:00:00Z"),
        (
            "what will happen",
            "job `previews` will act on 1 resource(s) from 2026-03-03T10:00:00Z",
        ),
        (
            "what and where",
            "`delete_branch` branch `preview/old` in project `p-silent-41`",
        ),
        ("why", "age 10d > ttl 7d"),
        ("when it falls due", "(falls due 2026-03-03T10:00:00Z)"),
        (
            "how to keep it",
            "keep it: `neon-steward keep p-silent-41/preview/old --until YYYY-MM-DD",
        ),
    ] {
        assert!(text.contains(part), "{what} ({part}) missing from: {text}");
    }

    // The URL (its secret path, its port) is in no error, log line or metric.
    assert!(
        errors.iter().any(|e| e.contains("HTTP 500"))
            && errors.iter().any(|e| e.contains("HTTP 503")),
        "{errors:?}"
    );
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("notification not delivered; it will be retried")
            && logs.contains("notification delivered"),
        "the deliveries were logged: {logs}"
    );
    let metrics = neon_steward::telemetry::metrics::render();
    let stored = format!(
        "{:?}",
        s.list_notifications(&Default::default()).await.unwrap()
    );
    for secret in ["SECRET", "xoxb", &format!(":{port}")] {
        assert!(!stored.contains(secret), "{secret} in the outbox: {stored}");
        for e in &errors {
            assert!(!e.contains(secret), "{secret} in error {e}");
        }
        assert!(!logs.contains(secret), "{secret} in the logs: {logs}");
        assert!(!metrics.contains(secret), "{secret} in the metrics");
    }
}

async fn row(s: &Arc<dyn Store>, id: &str) -> store::NotificationRecord {
    s.list_notifications(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no outbox row {id}"))
}

#[tokio::test]
async fn a_slack_sink_that_does_not_answer_in_time_is_retried_then_given_up_and_counted() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep_open = held.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            keep_open.lock().unwrap().push(conn);
        }
    });
    let url = format!("http://127.0.0.1:{port}/services/T1/B1/tokenNeverShown");
    let db = db();
    let s = replica(&db.url, "a").await;
    // One row to be retried, and one that may take no time at all: its first failure gives
    // it up.
    let rows: Vec<NewNotification> = [note("msg_slow_slack", 3_600_000), note("msg_slow_gone", 0)]
        .into_iter()
        .map(|n| NewNotification {
            sink: "slack-slow".into(),
            ..n
        })
        .collect();
    fact(&s, &rows).await;
    let slack = slack_sink("slack-slow", &url, Duration::from_millis(200));
    let metric = |outcome: &str| notified("slack-slow", "run_failed", outcome);
    let d = Deliverer::new(s.clone(), &[slack], FAST);
    for _ in 0..200 {
        d.deliver_due().await;
        if row(&s, "msg_slow_slack").await.attempts >= 2 {
            break;
        }
        tokio::time::sleep(FAST.poll).await;
    }
    let slow = row(&s, "msg_slow_slack").await;
    assert!(slow.attempts >= 2, "retried: {slow:?}");
    assert_eq!(slow.status, NotificationStatus::Pending, "not given up yet");
    let gone = row(&s, "msg_slow_gone").await;
    assert_eq!(
        (gone.status, gone.attempts),
        (NotificationStatus::Failed, 1),
        "{gone:?}"
    );
    // Every settled attempt is counted by its outcome (each `deliver_due` settles what it
    // claimed before it returns).
    assert_eq!(
        (metric("retry"), metric("gave_up"), metric("delivered")),
        (u64::try_from(slow.attempts).unwrap(), 1, 0)
    );
    for r in [&slow, &gone] {
        let err = r.last_error.as_deref().unwrap_or_default();
        assert!(err.contains("no answer within 200ms"), "{err}");
        assert!(
            !err.contains("tokenNeverShown") && !err.contains(&port.to_string()),
            "{err}"
        );
    }
}

// ------------------------------------------------------------------ notice against neon-sim

fn policy(jobs: &str) -> Arc<JobConfig> {
    policy_with_hook(jobs, "http://127.0.0.1:9/hook")
}

fn policy_with_hook(jobs: &str, hook: &str) -> Arc<JobConfig> {
    let text = format!(
        "{jobs}\n[[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl_env = \"HOOK_URL\"\nsecret_env = \"HOOK_KEY\"\n"
    );
    let cfg = config::parse_with_env(Path::new("notice.toml"), &text, &|k| match k {
        "NEON_API_KEY" => Some("unused-in-tests".into()),
        "HOOK_URL" => Some(hook.into()),
        "HOOK_KEY" => Some(KEY.into()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("test policy must parse: {e}"));
    cfg.jobs[0].clone()
}

fn expire(ttl: &str) -> Arc<JobConfig> {
    policy(&format!(
        "[[jobs]]\nname = \"previews\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"{ttl}\"\nnotice = \"24h\"\n[jobs.branches]\nnames = [\"preview/*\"]\n"
    ))
}

fn reason_of<'a>(actions: &'a [ActionRecord], id: &str) -> &'a str {
    actions
        .iter()
        .find(|a| a.resource_id == id)
        .map(|a| a.reason.as_str())
        .unwrap_or_else(|| panic!("no action on {id}: {actions:?}"))
}

#[tokio::test]
async fn notice_then_still_due_is_deleted_after_the_period_and_not_before() {
    let h = harness().await;
    let (p, _) = h.sim.add_project("app", None);
    let old = h.branch_aged(&p, "preview/old", None, TimeDelta::days(10));
    let job = expire("7d");

    // First run: marked and announced, not deleted.
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(actions[0].outcome, ActionOutcome::Skipped);
    assert!(
        reason_of(&actions, &old).contains("notice given: falls due at"),
        "{actions:?}"
    );
    assert_eq!(h.deletes(), 0);
    let marks = h.env.store.notice_marks("previews").await.unwrap();
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].due_at, h.now() + TimeDelta::hours(24));
    let outbox = h
        .env
        .store
        .list_notifications(&Default::default())
        .await
        .unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].event, "notice");
    let payload: serde_json::Value = serde_json::from_str(&outbox[0].payload).unwrap();
    assert!(
        payload["items"][0]["keep"]
            .as_str()
            .unwrap()
            .contains(&format!("neon-steward keep {p}/preview/old")),
        "{payload}"
    );

    // A plan shows it with the time it falls due.
    let (_, planned) = h.run(&job, true).await;
    assert!(
        reason_of(&planned, &old).contains("falls due at"),
        "{planned:?}"
    );

    // 23 hours later: still under notice.
    h.sim.clock().advance(Duration::from_secs(23 * 3600));
    let (_, actions) = h.run(&job, false).await;
    assert!(
        reason_of(&actions, &old).contains("under notice since"),
        "{actions:?}"
    );
    assert_eq!(h.deletes(), 0);
    assert_eq!(
        h.env
            .store
            .list_notifications(&Default::default())
            .await
            .unwrap()
            .len(),
        1,
        "announced once"
    );

    // Past the notice and still due: deleted, and the mark is spent.
    h.sim.clock().advance(Duration::from_secs(2 * 3600));
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(
        (r.status, r.counts.succeeded),
        (RunStatus::Succeeded, 1),
        "{actions:?}"
    );
    assert_eq!(h.branch_names(&p), vec!["main"]);
    assert!(h
        .env
        .store
        .notice_marks("previews")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn notice_then_keep_then_nothing_is_deleted() {
    let h = harness().await;
    let (p, _) = h.sim.add_project("app", None);
    let old = h.branch_aged(&p, "preview/old", None, TimeDelta::days(10));
    let job = expire("7d");
    h.run(&job, false).await;
    assert_eq!(h.env.store.notice_marks("previews").await.unwrap().len(), 1);
    // Someone keeps it, by the project's name and the branch's name.
    h.env
        .store
        .put_keep(&Keep {
            project: "app".into(),
            branch: "preview/old".into(),
            until: None,
            note: Some("demo on Friday".into()),
            created_at: h.now(),
        })
        .await
        .unwrap();
    h.sim.clock().advance(Duration::from_secs(25 * 3600));
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    let why = reason_of(&actions, &old);
    assert!(
        why.contains("kept by `neon-steward keep app/preview/old`")
            && why.contains("demo on Friday"),
        "{why}"
    );
    assert_eq!(h.deletes(), 0);
    assert_eq!(h.branch_names(&p), vec!["main", "preview/old"]);
    assert!(
        h.env
            .store
            .notice_marks("previews")
            .await
            .unwrap()
            .is_empty(),
        "a kept branch's mark is dropped"
    );
}

/// A run only writes its notifications to the outbox: a sink that accepts connections and
/// never answers is not even connected to by the job, so it cannot hold the run up.
#[tokio::test]
async fn a_run_never_calls_a_sink_itself_so_a_hung_sink_cannot_hold_it_up() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let held = accepted.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            held.lock().unwrap().push(conn);
        }
    });
    let h = harness().await;
    let (p, _) = h.sim.add_project("app", None);
    h.branch_aged(&p, "preview/old", None, TimeDelta::days(10));
    let job = policy_with_hook(
        "[[jobs]]\nname = \"previews\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"7d\"\nnotice = \"24h\"\n[jobs.branches]\nnames = [\"preview/*\"]\n",
        &hook,
    );
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{actions:?}");
    let outbox = h
        .env
        .store
        .list_notifications(&Default::default())
        .await
        .unwrap();
    assert_eq!(
        outbox
            .iter()
            .map(|o| (o.event.as_str(), o.status))
            .collect::<Vec<_>>(),
        [("notice", NotificationStatus::Pending)],
        "written for the deliverer"
    );
    assert!(
        accepted.lock().unwrap().is_empty(),
        "the run connected to the sink"
    );
}

#[tokio::test]
async fn a_mark_no_longer_due_is_dropped_and_recorded() {
    let h = harness().await;
    let (p, _) = h.sim.add_project("app", None);
    let old = h.branch_aged(&p, "preview/old", None, TimeDelta::days(10));
    h.run(&expire("7d"), false).await;
    // The policy now gives branches 30 days: no longer due.
    h.sim.clock().advance(Duration::from_secs(25 * 3600));
    let (_, actions) = h.run(&expire("30d"), false).await;
    assert!(
        reason_of(&actions, &old).contains("dropped: no longer due"),
        "{actions:?}"
    );
    assert!(h
        .env
        .store
        .notice_marks("previews")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(h.deletes(), 0);
}

#[tokio::test]
async fn notice_in_set_expires_at_mode_sets_the_expiry_only_after_the_period_and_never_on_a_kept_branch(
) {
    let h = harness().await;
    let (p, _) = h.sim.add_project("app", None);
    let old = h.branch_aged(&p, "preview/old", None, TimeDelta::days(10));
    let kept = h.branch_aged(&p, "preview/kept", None, TimeDelta::days(10));
    let created = h.sim.state().settled().branches[&old].created_at;
    let job = policy(
        "[[jobs]]\nname = \"native\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"14d\"\nmode = \"set_expires_at\"\nnotice = \"24h\"\n[jobs.branches]\nnames = [\"preview/*\"]\n",
    );
    let patches = || {
        h.sim
            .mutations()
            .iter()
            .filter(|m| m.method == "PATCH")
            .map(|m| m.path.rsplit('/').next().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    let expiry = |id: &str| h.sim.state().settled().branches[id].expires_at;

    // First run: both marked and announced; no expiry handed to Neon yet.
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(
        (r.status, r.counts.succeeded),
        (RunStatus::Succeeded, 0),
        "{actions:?}"
    );
    for id in [&old, &kept] {
        assert!(
            reason_of(&actions, id).contains("notice given: falls due at"),
            "{actions:?}"
        );
        assert_eq!(expiry(id), None);
    }
    assert!(patches().is_empty(), "{:?}", h.sim.mutations());
    let marks = h.env.store.notice_marks("native").await.unwrap();
    assert_eq!(marks.len(), 2, "{marks:?}");
    assert!(
        marks.iter().all(|m| m.action == "set_branch_expiry"),
        "{marks:?}"
    );

    keep(&h, "app", "preview/kept", None).await;
    // 23 hours later: still under notice.
    h.sim.clock().advance(Duration::from_secs(23 * 3600));
    let (_, actions) = h.run(&job, false).await;
    assert!(
        reason_of(&actions, &old).contains("under notice since"),
        "{actions:?}"
    );
    assert!(patches().is_empty());

    // After the period: the expiry is set on the branch still due, never on the kept one.
    h.sim.clock().advance(Duration::from_secs(2 * 3600));
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(
        (r.status, r.counts.succeeded),
        (RunStatus::Succeeded, 1),
        "{actions:?}"
    );
    assert_eq!(patches(), vec![old.clone()]);
    assert_eq!(expiry(&old), Some(created + TimeDelta::days(14)));
    assert_eq!(expiry(&kept), None);
    assert!(
        reason_of(&actions, &kept).contains("kept by `neon-steward keep app/preview/kept`"),
        "{actions:?}"
    );
    assert!(h.env.store.notice_marks("native").await.unwrap().is_empty());
}

/// An active endpoint that never suspends itself and has no traffic: it stays active until
/// the job suspends it, and suspended afterwards.
fn active_endpoint(h: &H, branch: &str) -> String {
    let ep = h.sim.add_endpoint(branch);
    let st = h.sim.state();
    let mut s = st.settled();
    let e = s.endpoints.get_mut(&ep).expect("endpoint just added");
    e.activity = neon_sim::state::Activity::Busy;
    e.suspend_timeout_seconds = -1;
    s.settle();
    let e = s.endpoints.get_mut(&ep).expect("endpoint just added");
    e.activity = neon_sim::state::Activity::Idle;
    ep
}

fn suspend_posts(h: &H, ep: &str) -> usize {
    h.sim
        .mutations()
        .iter()
        .filter(|m| m.method == "POST" && m.path.ends_with(&format!("/endpoints/{ep}/suspend")))
        .count()
}

#[tokio::test]
async fn a_window_suspension_under_notice_waits_for_the_period_then_suspends() {
    let h = harness().await;
    let (_p, main) = h.sim.add_project("app", None);
    let ep = active_endpoint(&h, &main);
    let state = |id: &str| h.sim.state().settled().endpoints[id].current_state;
    assert_eq!(state(&ep), neon_sim::state::EndpointState::Active);
    // Every day, all day: whenever the job runs it is inside a window, so it stays due.
    let job = policy(
        "[[jobs]]\nname = \"nights\"\nkind = \"suspend_computes\"\nevery = \"10m\"\nwindows = [\"Mon-Sun\"]\nwindow_timezone = \"UTC\"\nnotice = \"24h\"\n",
    );

    // First run: marked and announced, not suspended.
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    assert_eq!(r.counts.succeeded, 0, "{actions:?}");
    assert!(
        reason_of(&actions, &ep).contains("notice given: falls due at"),
        "{actions:?}"
    );
    assert_eq!(suspend_posts(&h, &ep), 0);
    assert_eq!(state(&ep), neon_sim::state::EndpointState::Active);
    let marks = h.env.store.notice_marks("nights").await.unwrap();
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(marks[0].resource_id, ep);
    assert_eq!(marks[0].action, "suspend_endpoint");
    assert_eq!(marks[0].due_at, h.now() + TimeDelta::hours(24));
    let outbox = h
        .env
        .store
        .list_notifications(&Default::default())
        .await
        .unwrap();
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    assert_eq!(outbox[0].event, "notice");
    let payload: serde_json::Value = serde_json::from_str(&outbox[0].payload).unwrap();
    assert_eq!(payload["items"][0]["resource_id"], ep.as_str(), "{payload}");

    // 23 hours later, still inside a window: still under notice, still active.
    h.sim.clock().advance(Duration::from_secs(23 * 3600));
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(r.counts.succeeded, 0, "{actions:?}");
    assert!(
        reason_of(&actions, &ep).contains("under notice since"),
        "{actions:?}"
    );
    assert_eq!(suspend_posts(&h, &ep), 0);
    assert_eq!(state(&ep), neon_sim::state::EndpointState::Active);
    assert_eq!(
        h.env
            .store
            .list_notifications(&Default::default())
            .await
            .unwrap()
            .len(),
        1,
        "announced once"
    );

    // Past the due time and still inside a window: suspended, and the mark is spent.
    h.sim.clock().advance(Duration::from_secs(2 * 3600));
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(
        (r.status, r.counts.succeeded),
        (RunStatus::Succeeded, 1),
        "{actions:?}"
    );
    let done = actions
        .iter()
        .find(|a| a.resource_id == ep && a.outcome == ActionOutcome::Succeeded)
        .unwrap_or_else(|| panic!("no suspension of {ep}: {actions:?}"));
    assert_eq!(done.action, "suspend_endpoint");
    assert_eq!(suspend_posts(&h, &ep), 1);
    assert_eq!(state(&ep), neon_sim::state::EndpointState::Idle);
    assert!(h.env.store.notice_marks("nights").await.unwrap().is_empty());
}

/// A suspend job whose window is always open, with `extra` lines (e.g. `notice`).
fn always_window(extra: &str) -> Arc<JobConfig> {
    policy(&format!(
        "[[jobs]]\nname = \"nights\"\nkind = \"suspend_computes\"\nevery = \"10m\"\nwindows = [\"Mon-Sun\"]\nwindow_timezone = \"UTC\"\n{extra}"
    ))
}

/// A project `app` with two branches, each with a compute that stays active until suspended.
struct TwoComputes {
    project: String,
    kept_branch: String,
    kept: String,
    other: String,
}

fn two_computes(h: &H) -> TwoComputes {
    let (project, _) = h.sim.add_project("app", None);
    let kept_branch = h.sim.add_branch(&project, "preview/demo", None);
    let other_branch = h.sim.add_branch(&project, "preview/other", None);
    TwoComputes {
        kept: active_endpoint(h, &kept_branch),
        other: active_endpoint(h, &other_branch),
        project,
        kept_branch,
    }
}

fn endpoint_state(h: &H, id: &str) -> neon_sim::state::EndpointState {
    h.sim.state().settled().endpoints[id].current_state
}

async fn keep(h: &H, project: &str, branch: &str, note: Option<&str>) {
    h.env
        .store
        .put_keep(&Keep {
            project: project.into(),
            branch: branch.into(),
            until: None,
            note: note.map(str::to_string),
            created_at: h.now(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_kept_branchs_compute_is_not_suspended_in_a_window_and_the_ledger_says_why() {
    let h = harness().await;
    let c = two_computes(&h);
    // By the project's and the branch's names: the job lists the names because of the keep.
    keep(&h, "app", "preview/demo", Some("demo on Friday")).await;
    let job = always_window("");

    // A plan says so too.
    let (_, planned) = h.run(&job, true).await;
    assert!(
        reason_of(&planned, &c.kept).contains("its branch is kept by"),
        "{planned:?}"
    );

    let (r, actions) = h.run(&job, false).await;
    assert_eq!(
        (r.status, r.counts.succeeded),
        (RunStatus::Succeeded, 1),
        "{actions:?}"
    );
    let held = actions
        .iter()
        .find(|a| a.resource_id == c.kept)
        .unwrap_or_else(|| panic!("nothing recorded on {}: {actions:?}", c.kept));
    assert_eq!(
        (held.outcome, held.action.as_str()),
        (ActionOutcome::Skipped, "suspend_endpoint")
    );
    assert!(
        held.reason.contains(
            "not acted on: its branch is kept by `neon-steward keep app/preview/demo` until it is removed (demo on Friday)"
        ),
        "{}",
        held.reason
    );
    assert_eq!(suspend_posts(&h, &c.kept), 0);
    assert_eq!(
        endpoint_state(&h, &c.kept),
        neon_sim::state::EndpointState::Active
    );
    // The compute of a branch nobody kept is suspended as before.
    assert_eq!(suspend_posts(&h, &c.other), 1);
    assert_eq!(
        endpoint_state(&h, &c.other),
        neon_sim::state::EndpointState::Idle
    );

    // Once the keep is removed, the window applies to it again.
    assert!(h
        .env
        .store
        .remove_keep("app", "preview/demo")
        .await
        .unwrap());
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(r.counts.succeeded, 1, "{actions:?}");
    assert_eq!(suspend_posts(&h, &c.kept), 1);
}

#[tokio::test]
async fn a_compute_under_notice_whose_branch_is_then_kept_is_never_suspended() {
    let h = harness().await;
    let c = two_computes(&h);
    let job = always_window("notice = \"24h\"\n");

    // Both computes are marked and announced; the notice says how to keep each one's branch.
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(r.counts.succeeded, 0, "{actions:?}");
    let why = reason_of(&actions, &c.kept);
    assert!(
        why.contains(&format!(
            "keep its branch with `neon-steward keep {}/preview/demo",
            c.project
        )),
        "{why}"
    );
    assert_eq!(h.env.store.notice_marks("nights").await.unwrap().len(), 2);
    let outbox = h
        .env
        .store
        .list_notifications(&Default::default())
        .await
        .unwrap();
    let payload: serde_json::Value = serde_json::from_str(&outbox[0].payload).unwrap();
    let item = payload["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["resource_id"] == c.kept.as_str())
        .unwrap_or_else(|| panic!("{payload}"))
        .clone();
    assert!(
        item["keep"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("neon-steward keep {}/preview/demo", c.project)),
        "{item}"
    );

    // Someone keeps the branch, by ids this time.
    keep(&h, &c.project, &c.kept_branch, None).await;
    h.sim.clock().advance(Duration::from_secs(25 * 3600));
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(
        (r.status, r.counts.succeeded),
        (RunStatus::Succeeded, 1),
        "{actions:?}"
    );
    assert!(
        reason_of(&actions, &c.kept).contains(&format!(
            "its branch is kept by `neon-steward keep {}/{}`",
            c.project, c.kept_branch
        )),
        "{actions:?}"
    );
    assert_eq!(suspend_posts(&h, &c.kept), 0);
    assert_eq!(
        endpoint_state(&h, &c.kept),
        neon_sim::state::EndpointState::Active
    );
    assert_eq!(suspend_posts(&h, &c.other), 1, "the other's notice ran out");
    let marks = h.env.store.notice_marks("nights").await.unwrap();
    assert!(
        marks.is_empty(),
        "the kept compute's mark is dropped, the other's spent: {marks:?}"
    );
}

// ------------------------------------------------------------------ a run's end, through the scheduler

struct Reports(neon_steward::scheduler::RunReport);

#[async_trait::async_trait]
impl neon_steward::scheduler::Executor for Reports {
    async fn execute(
        &self,
        _: Arc<JobConfig>,
        _: neon_steward::scheduler::RunHandle,
    ) -> neon_steward::scheduler::RunReport {
        self.0.clone()
    }
}

async fn run_reporting(
    job: Arc<JobConfig>,
    report: neon_steward::scheduler::RunReport,
) -> Vec<store::NotificationRecord> {
    let db = db();
    let s = replica(&db.url, "a").await;
    neon_steward::scheduler::run_now(
        s.clone(),
        Arc::new(Reports(report)),
        Arc::new(neon_steward::scheduler::SystemClock),
        job,
        false,
        tokio_util::sync::CancellationToken::new(),
        Default::default(),
    )
    .await
    .unwrap()
    .unwrap();
    s.list_notifications(&Default::default()).await.unwrap()
}

#[tokio::test]
async fn a_failed_or_refused_run_writes_its_notification_with_its_end() {
    let job = expire("7d");
    let failed = run_reporting(
        job.clone(),
        neon_steward::scheduler::RunReport {
            status: RunStatus::Partial,
            counts: ActionCounts {
                succeeded: 0,
                failed: 2,
                skipped: 0,
                planned: 0,
            },
            error: Some("2 action(s) failed; see the run's actions".into()),
        },
    )
    .await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        (failed[0].event.as_str(), failed[0].sink.as_str()),
        ("run_failed", "ops")
    );
    assert!(
        failed[0].payload.contains("ended partial"),
        "{}",
        failed[0].payload
    );

    let refused = run_reporting(
        job.clone(),
        neon_steward::scheduler::RunReport::failed(
            "refusing to act: the plan has 9 actions but at most 2 are allowed (max_actions = 2); nothing was done",
        ),
    )
    .await;
    let events: Vec<&str> = refused.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(events, ["limit_refused"]);

    let fine = run_reporting(
        job,
        neon_steward::scheduler::RunReport::succeeded(ActionCounts::default()),
    )
    .await;
    assert!(fine.is_empty(), "nothing to report: {fine:?}");
}

struct SimClock(neon_sim::Clock);

impl neon_steward::scheduler::Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

/// The digest end to end: a real run (the daemon's executor, through the scheduler) that
/// deletes a branch writes a `digest` naming what it destroyed, with the run's end; a dry
/// run of the same writes none.
#[tokio::test]
async fn a_run_that_destroys_something_writes_its_digest_and_a_dry_run_none() {
    let h = harness().await;
    let (p, _) = h.sim.add_project("app", None);
    let old = h.branch_aged(&p, "preview/old", None, TimeDelta::days(10));
    let job = policy(
        "[[jobs]]\nname = \"previews\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"7d\"\nnotify = [\"digest\"]\n[jobs.branches]\nnames = [\"preview/*\"]\n",
    );
    let run = |dry_run: bool| {
        let exec = neon_steward::daemon::JobsExecutor::new(
            h.env.clone(),
            Arc::new(SimClock(h.sim.clock())),
        );
        neon_steward::scheduler::run_now(
            h.env.store.clone(),
            Arc::new(exec),
            Arc::new(SimClock(h.sim.clock())),
            job.clone(),
            dry_run,
            tokio_util::sync::CancellationToken::new(),
            Default::default(),
        )
    };
    let outbox = || async {
        h.env
            .store
            .list_notifications(&Default::default())
            .await
            .unwrap()
    };

    let (_, report) = run(true).await.unwrap().unwrap();
    assert_eq!(report.counts.planned, 1, "{report:?}");
    assert!(outbox().await.is_empty(), "a dry run destroys nothing");

    h.sim.clock().advance(Duration::from_secs(3600));
    let (run_id, report) = run(false).await.unwrap().unwrap();
    assert_eq!(
        (report.status, report.counts.succeeded),
        (RunStatus::Succeeded, 1),
        "{report:?}"
    );
    let rows = outbox().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (
            rows[0].event.as_str(),
            rows[0].sink.as_str(),
            rows[0].run_id
        ),
        ("digest", "ops", Some(run_id))
    );
    let data: serde_json::Value = serde_json::from_str(&rows[0].payload).unwrap();
    let done = data["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("{data}"));
    assert_eq!(done.len(), 1, "{data}");
    assert_eq!(done[0]["action"], "delete_branch");
    assert_eq!(done[0]["resource_id"], old.as_str());
    assert_eq!(done[0]["resource_name"], "preview/old");
    assert_eq!(done[0]["project_id"], p.as_str());
    assert!(
        done[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("ttl"),
        "{data}"
    );
}
