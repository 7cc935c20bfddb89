//! Consumption history over HTTP: values add up (branches to projects, hours to days, v2 to
//! legacy), pagination, parameter rules and retention windows.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use neon_sim::ratelimit::RateLimitConfig;
use neon_sim::state::Activity;
use neon_sim::SimConfig;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{assert_error, Api};

const BRANCH_METRICS: &str =
    "compute_unit_seconds,root_branch_bytes_month,child_branch_bytes_month,\
instant_restore_bytes_month,public_network_transfer_bytes,private_network_transfer_bytes";

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A seeded account with busy computes, a day of activity behind it.
async fn busy_account() -> (Api, String, DateTime<Utc>) {
    // Consumption has its own low rate limit; these tests query it many times.
    let api = Api::start(
        SimConfig::default()
            .orgs(1)
            .projects(4)
            .rate_limit(RateLimitConfig::disabled()),
    )
    .await;
    for p in api.sim.projects() {
        for e in api.sim.endpoints(&p.id) {
            api.sim.set_endpoint_activity(&e.id, Activity::Busy);
        }
    }
    api.sim.clock().advance(Duration::from_secs(30 * 3600));
    let now = api.sim.clock().now();
    let (_, orgs) = api.get("/users/me/organizations").await;
    let org = orgs["organizations"][0]["id"].as_str().unwrap().to_string();
    (api, org, now)
}

/// `(id, timeframe_start, metric) -> value` from a v2 response's `projects` or `branches`.
fn v2_values(body: &Value, list: &str, id_field: &str) -> BTreeMap<(String, String, String), i64> {
    let mut out = BTreeMap::new();
    for item in body[list].as_array().unwrap() {
        let id = item[id_field].as_str().unwrap().to_string();
        for period in item["periods"].as_array().unwrap() {
            for tf in period["consumption"].as_array().unwrap() {
                let start = tf["timeframe_start"].as_str().unwrap().to_string();
                for m in tf["metrics"].as_array().unwrap() {
                    out.insert(
                        (
                            id.clone(),
                            start.clone(),
                            m["metric_name"].as_str().unwrap().to_string(),
                        ),
                        m["value"].as_i64().unwrap(),
                    );
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn branches_add_up_to_projects_and_hours_to_days() {
    let (api, org, now) = busy_account().await;
    let day = now.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let (from, to) = (rfc(day - TimeDelta::days(2)), rfc(day));
    let ids: Vec<String> = api.sim.projects().iter().map(|p| p.id.clone()).collect();
    let pids = ids.join(",");

    let q = |g: &str| {
        format!("from={from}&to={to}&granularity={g}&org_id={org}&metrics={BRANCH_METRICS}")
    };
    let (st, projects_daily) = api
        .get(&format!(
            "/consumption_history/v2/projects?{}&project_ids={pids}",
            q("daily")
        ))
        .await;
    assert_eq!(st, StatusCode::OK, "{projects_daily}");
    let (st, branches_daily) = api
        .get(&format!(
            "/consumption_history/v2/branches?{}&project_ids={pids}",
            q("daily")
        ))
        .await;
    assert_eq!(st, StatusCode::OK, "{branches_daily}");
    let (st, projects_hourly) = api
        .get(&format!(
            "/consumption_history/v2/projects?{}&project_ids={pids}",
            q("hourly")
        ))
        .await;
    assert_eq!(st, StatusCode::OK, "{projects_hourly}");

    let pd = v2_values(&projects_daily, "projects", "project_id");
    let ph = v2_values(&projects_hourly, "projects", "project_id");
    // Two daily timeframes, 48 hourly ones, for every project and metric.
    assert_eq!(pd.len(), ids.len() * 2 * 6);
    assert_eq!(ph.len(), ids.len() * 48 * 6);
    let busy: i64 = pd
        .iter()
        .filter(|((_, _, m), _)| m == "compute_unit_seconds")
        .map(|(_, v)| v)
        .sum();
    assert!(busy > 0, "busy computes must consume: {pd:?}");

    // Branches -> projects.
    let mut from_branches: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for item in branches_daily["branches"].as_array().unwrap() {
        let p = item["project_id"].as_str().unwrap().to_string();
        for period in item["periods"].as_array().unwrap() {
            for tf in period["consumption"].as_array().unwrap() {
                let start = tf["timeframe_start"].as_str().unwrap().to_string();
                for m in tf["metrics"].as_array().unwrap() {
                    *from_branches
                        .entry((
                            p.clone(),
                            start.clone(),
                            m["metric_name"].as_str().unwrap().to_string(),
                        ))
                        .or_default() += m["value"].as_i64().unwrap();
                }
            }
        }
    }
    assert_eq!(
        from_branches, pd,
        "per-branch values must add up to per-project values"
    );

    // Hours -> days.
    let mut from_hours: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for ((p, start, m), v) in &ph {
        let t = DateTime::parse_from_rfc3339(start)
            .unwrap()
            .with_timezone(&Utc);
        let day = rfc(t - TimeDelta::hours(i64::from(t.hour())));
        *from_hours.entry((p.clone(), day, m.clone())).or_default() += v;
    }
    assert_eq!(from_hours, pd, "hourly values must add up to daily values");

    // Legacy account compute time = sum of v2 compute units over the org's projects.
    let (st, account) = api
        .get(&format!(
            "/consumption_history/account?from={from}&to={to}&granularity=daily&org_id={org}"
        ))
        .await;
    assert_eq!(st, StatusCode::OK, "{account}");
    let legacy: i64 = account["periods"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["consumption"].as_array().unwrap().clone())
        .map(|tf| tf["compute_time_seconds"].as_i64().unwrap())
        .sum();
    assert_eq!(legacy, busy);

    // Deterministic: asking again gives the same answer.
    let (_, again) = api
        .get(&format!(
            "/consumption_history/v2/projects?{}&project_ids={pids}",
            q("daily")
        ))
        .await;
    assert_eq!(again, projects_daily);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn cursor_pagination_visits_every_project_once() {
    let (api, org, now) = busy_account().await;
    let (from, to) = (rfc(now - TimeDelta::days(1)), rfc(now));
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut path = format!(
            "/consumption_history/v2/projects?from={from}&to={to}&granularity=daily&org_id={org}\
             &metrics=compute_unit_seconds&limit=1"
        );
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (st, body) = api.get(&path).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let page = body["projects"].as_array().unwrap();
        if page.is_empty() {
            break;
        }
        assert_eq!(page.len(), 1);
        seen.push(page[0]["project_id"].as_str().unwrap().to_string());
        cursor = body["pagination"]["cursor"].as_str().map(str::to_string);
        assert!(cursor.is_some(), "a non-empty page carries a cursor");
    }
    let mut all: Vec<String> = api.sim.projects().iter().map(|p| p.id.clone()).collect();
    let mut got = seen.clone();
    all.sort();
    got.sort();
    assert_eq!(got, all, "pages: {seen:?}");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn parameters_and_retention_windows() {
    let (api, org, now) = busy_account().await;
    let to = rfc(now);
    let base =
        format!("/consumption_history/v2/projects?org_id={org}&metrics=compute_unit_seconds");

    // Windows: hourly 168 h, daily 60 days, monthly a year -> 406 beyond.
    for (g, back) in [
        ("hourly", TimeDelta::hours(170)),
        ("daily", TimeDelta::days(62)),
        ("monthly", TimeDelta::days(400)),
    ] {
        let (st, body) = api
            .get(&format!(
                "{base}&granularity={g}&from={}&to={to}",
                rfc(now - back)
            ))
            .await;
        assert_error(st, &body, StatusCode::NOT_ACCEPTABLE, "granularity");
    }
    for (g, back) in [
        ("hourly", TimeDelta::hours(160)),
        ("daily", TimeDelta::days(58)),
        ("monthly", TimeDelta::days(300)),
    ] {
        let (st, body) = api
            .get(&format!(
                "{base}&granularity={g}&from={}&to={to}",
                rfc(now - back)
            ))
            .await;
        assert_eq!(st, StatusCode::OK, "{g}: {body}");
    }
    let from = rfc(now - TimeDelta::days(2));
    // Missing required parameters and bad values -> 400 naming them.
    let (st, body) = api
        .get(&format!(
            "/consumption_history/v2/projects?org_id={org}&granularity=daily&from={from}&to={to}"
        ))
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "metrics");
    let (st, body) = api
        .get(&format!("{base}&granularity=daily&from={from}"))
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "`to`");
    let (st, body) = api
        .get(&format!("{base}&granularity=daily&from=yesterday&to={to}"))
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "RFC 3339");
    let many: Vec<String> = (0..101).map(|i| format!("p-{i}")).collect();
    let (st, body) = api
        .get(&format!(
            "{base}&granularity=daily&from={from}&to={to}&project_ids={}",
            many.join(",")
        ))
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "at most 100");
    let (st, body) = api
        .get(&format!(
            "/consumption_history/v2/branches?org_id={org}&granularity=daily&from={from}&to={to}\
             &project_ids=p-1&metrics=extra_branches_month"
        ))
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "extra_branches_month");
    let (st, body) = api
        .get(&format!(
            "/consumption_history/v2/projects?org_id=org-not-mine-1&granularity=daily&from={from}&to={to}\
             &metrics=compute_unit_seconds"
        ))
        .await;
    assert_error(st, &body, StatusCode::NOT_FOUND, "org-not-mine-1");
    api.sim.shutdown().await;
}

/// A `to` beyond the current timeframe lies outside every retention window: 406, answered
/// promptly on every consumption endpoint (it used to enumerate every hourly timeframe up to
/// the year 2400 under the model's lock, freezing the emulator). A `to` inside the current,
/// incomplete timeframe is still fine, and the emulator keeps serving afterwards.
#[tokio::test]
async fn far_future_to_is_406_promptly_on_every_endpoint() {
    let (api, org, now) = busy_account().await;
    let pid = api.sim.projects()[0].id.clone();
    let from = rfc(now - TimeDelta::hours(3));
    let far = "2400-01-01T00:00:00Z";
    let paths = [
        format!("/consumption_history/v2/projects?org_id={org}&metrics=compute_unit_seconds"),
        format!(
            "/consumption_history/v2/branches?org_id={org}&project_ids={pid}\
             &metrics=compute_unit_seconds"
        ),
        "/consumption_history/projects?limit=1".to_string(),
        "/consumption_history/account?limit=1".to_string(),
    ];
    for path in &paths {
        for g in ["hourly", "daily", "monthly"] {
            let url = format!("{path}&granularity={g}&from={from}&to={far}");
            let (st, body) = tokio::time::timeout(Duration::from_secs(10), api.get(&url))
                .await
                .unwrap_or_else(|_| panic!("no answer within 10 s to {url}"));
            assert_error(st, &body, StatusCode::NOT_ACCEPTABLE, "future");
        }
        // Slightly ahead of now (within the current hour's end) is accepted.
        let soon = rfc(now + TimeDelta::minutes(59 - i64::from(now.minute())));
        let (st, body) = api
            .get(&format!("{path}&granularity=hourly&from={from}&to={soon}"))
            .await;
        assert_eq!(st, StatusCode::OK, "{path}: {body}");
    }
    // Two timeframes past the current one is refused too (not only absurd dates).
    let next_next = rfc(now + TimeDelta::hours(2));
    let (st, body) = api
        .get(&format!(
            "{}&granularity=hourly&from={from}&to={next_next}",
            paths[0]
        ))
        .await;
    assert_error(st, &body, StatusCode::NOT_ACCEPTABLE, "future");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn consumption_has_its_own_lower_rate_limit() {
    let api = Api::start(SimConfig::default().orgs(1).projects(1)).await;
    let now = api.sim.clock().now();
    let path = format!(
        "/consumption_history/account?from={}&to={}&granularity=hourly",
        rfc(now - TimeDelta::hours(2)),
        rfc(now)
    );
    let mut statuses = Vec::new();
    for _ in 0..31 {
        statuses.push(api.get(&path).await.0.as_u16());
    }
    // 30 per minute: the 31st within the minute is refused.
    assert_eq!(&statuses[..30], &[200; 30]);
    assert_eq!(statuses[30], 429);
    api.sim.shutdown().await;
}

#[test]
fn consumption_operations_are_listed_as_emulated() {
    for op in neon_sim::consumption::CONSUMPTION_OPERATIONS {
        assert!(
            neon_sim::EMULATED_OPERATIONS.contains(op),
            "{op:?} missing from EMULATED_OPERATIONS"
        );
    }
}
