//! Fault injection and rate limiting on a running emulator (admin route and library handle).

use std::time::Duration;

use neon_sim::faults::{Fault, FaultRule};
use neon_sim::openapi::validate_neon_response;
use neon_sim::ratelimit::RateLimitConfig;
use neon_sim::{Sim, SimConfig};
use serde_json::{json, Value};

async fn start(config: SimConfig) -> (Sim, reqwest::Client) {
    (
        Sim::start(config).await.expect("the emulator starts"),
        reqwest::Client::new(),
    )
}

#[tokio::test]
async fn admin_route_injects_a_status_with_the_request_id() {
    let (sim, http) = start(SimConfig::default().projects(1)).await;
    let rule = json!({"method": "GET", "route": "/projects",
                      "fault": {"kind": "status", "status": 503}, "times": 2});
    let r = http
        .post(format!("{}/_sim/faults", sim.root_url()))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let url = format!("{}/projects", sim.base_url());
    let r = http
        .get(&url)
        .bearer_auth(sim.api_key())
        .header("X-Request-ID", "conf-req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-request-id"], "conf-req-1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["request_id"], "conf-req-1");
    validate_neon_response("GET", "/projects", 503, Some(&body)).unwrap();

    // Without a caller id, the body carries the id the emulator generated for the header.
    let r = http
        .get(&url)
        .bearer_auth(sim.api_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let header = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["request_id"], header.as_str());

    let r = http
        .get(&url)
        .bearer_auth(sim.api_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the rule fired twice and retired");
    assert_eq!(sim.faults().injected().len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn faulted_mutations_are_not_in_the_mutation_log() {
    let (sim, http) = start(SimConfig::default()).await;
    sim.faults()
        .inject(
            FaultRule::on(
                "POST",
                "/projects",
                Fault::Status {
                    status: 500,
                    retry_after_secs: None,
                },
            )
            .times(1),
        )
        .unwrap();
    let r = http
        .post(format!("{}/projects", sim.base_url()))
        .bearer_auth(sim.api_key())
        .json(&json!({"project": {"name": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert!(sim.mutations().is_empty(), "{:?}", sim.mutations());
    sim.shutdown().await;
}

#[tokio::test]
async fn dropped_connection_and_malformed_body_through_the_emulator() {
    let (sim, http) = start(SimConfig::default()).await;
    let url = format!("{}/regions", sim.base_url());
    sim.faults()
        .inject(FaultRule::on("GET", "/regions", Fault::DropConnection).times(1))
        .unwrap();
    let err = http.get(&url).bearer_auth(sim.api_key()).send().await;
    assert!(err.is_err(), "the connection must drop: {err:?}");

    sim.faults()
        .inject(FaultRule::on("GET", "/regions", Fault::MalformedBody).times(1))
        .unwrap();
    let r = http
        .get(&url)
        .bearer_auth(sim.api_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    let r = http
        .get(&url)
        .bearer_auth(sim.api_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn a_hang_ends_when_the_emulator_shuts_down() {
    let (sim, http) = start(SimConfig::default()).await;
    sim.faults()
        .inject(FaultRule::prefix("/regions", Fault::Hang))
        .unwrap();
    let req = http
        .get(format!("{}/regions", sim.base_url()))
        .bearer_auth(sim.api_key())
        .send();
    let pending = tokio::spawn(req);
    // Wait until the request has reached the fault layer.
    for _ in 0..200 {
        if !sim.faults().injected().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(sim.faults().injected().len(), 1);
    tokio::time::timeout(Duration::from_secs(10), sim.shutdown())
        .await
        .expect("shutdown does not wait on a hung request");
    let r = pending.await.unwrap().unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn account_rate_limit_answers_429_with_retry_after() {
    let limits = RateLimitConfig {
        per_minute: 10,
        retry_after: true,
        ..RateLimitConfig::default()
    };
    let (sim, http) = start(SimConfig::default().rate_limit(limits)).await;
    let mut last = None;
    for i in 0..11 {
        let r = http
            .get(format!("{}/regions", sim.base_url()))
            .bearer_auth(sim.api_key())
            .send()
            .await
            .unwrap();
        if i < 10 {
            assert_eq!(r.status(), 200, "request {i}");
        } else {
            last = Some(r);
        }
    }
    let r = last.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    validate_neon_response("GET", "/regions", 429, Some(&body)).unwrap();
    // Admin routes are not limited.
    let r = http
        .get(format!("{}/_sim/clock", sim.root_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sim.shutdown().await;
}
