//! Shared helpers: start an emulator, call it.

use neon_sim::{Sim, SimConfig};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub struct Api {
    pub sim: Sim,
    pub http: reqwest::Client,
    pub key: String,
}

impl Api {
    pub async fn start(config: SimConfig) -> Api {
        let sim = Sim::start(config).await.expect("emulator starts");
        let key = sim.api_key();
        Api {
            sim,
            http: reqwest::Client::new(),
            key,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with_key(&self.key.clone(), method, path, body)
            .await
    }

    pub async fn call_with_key(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.sim.base_url(), path))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request reaches the emulator");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let json =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON body {text:?}: {e}"));
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }
}

/// Asserts a GeneralError body with the given status.
pub fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, message_part: &str) {
    assert_eq!(status, expected, "body: {body}");
    assert!(body["code"].is_string(), "code missing: {body}");
    assert!(body["request_id"].is_string(), "request_id missing: {body}");
    let msg = body["message"].as_str().expect("message");
    assert!(
        msg.contains(message_part),
        "message {msg:?} lacks {message_part:?}"
    );
}
