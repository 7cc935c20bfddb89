//! What Neon's own clients rely on beyond the document's required fields, and Neon's rules for
//! branch creation that the CI preview workflows use.

use neon_sim::SimConfig;
use reqwest::StatusCode;

use crate::support::Api;

#[tokio::test]
async fn users_me_carries_a_billing_account() {
    let api = Api::start(SimConfig::default()).await;
    let (st, me) = api.get("/users/me").await;
    assert_eq!(st, StatusCode::OK, "{me}");
    let ba = &me["billing_account"];
    assert_eq!(ba["state"], "active", "{me}");
    assert_eq!(ba["subscription_type"], "scale");
    assert_eq!(ba["payment_source"]["type"], "card");
    assert_eq!(ba["email"], me["email"]);
    assert!(ba["quota_reset_at_last"].as_str().unwrap().ends_with('Z'));
    api.sim.shutdown().await;
}
