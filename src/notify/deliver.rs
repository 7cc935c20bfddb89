//! Delivering the outbox: claim due rows (a lease per row, by the store's clock, so exactly
//! one replica holds each), POST each to its sink with the sink's timeout, and settle it:
//! delivered, or retried with backoff until the row's `give_up_at`, then `failed`.
//!
//! The deliverer is its own task: a dead or slow sink delays only its own notifications,
//! never a job (runs only write rows).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::config::{NotifyKind, SinkConfig};
use crate::store::{Delivery, NotificationRecord, NotificationStatus, Store};
use crate::telemetry::events::NotificationAttempted;

/// How the deliverer paces itself.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryTiming {
    /// How often the outbox is looked at.
    pub poll: Duration,
    /// The wait after a first failed attempt; doubled after each, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for DeliveryTiming {
    fn default() -> Self {
        DeliveryTiming {
            poll: Duration::from_secs(2),
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(600),
        }
    }
}

/// Rows claimed per look at the outbox, and delivered at once.
const BATCH: u32 = 32;
const IN_FLIGHT: usize = 8;

pub struct Deliverer {
    store: Arc<dyn Store>,
    sinks: HashMap<String, Arc<SinkConfig>>,
    http: reqwest::Client,
    timing: DeliveryTiming,
}

impl Deliverer {
    pub fn new(store: Arc<dyn Store>, sinks: &[Arc<SinkConfig>], timing: DeliveryTiming) -> Self {
        Deliverer {
            store,
            sinks: sinks.iter().map(|s| (s.name.clone(), s.clone())).collect(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("neon-steward/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
            timing,
        }
    }

    /// Delivers until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            self.deliver_due().await;
            tokio::select! {
                _ = tokio::time::sleep(self.timing.poll) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// The lease of a claimed row: longer than any delivery can take.
    fn lease_ms(&self) -> i64 {
        let longest = self
            .sinks
            .values()
            .map(|s| s.timeout)
            .max()
            .unwrap_or(Duration::from_secs(10));
        i64::try_from((longest + Duration::from_secs(30)).as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// Claims and delivers what is due now; returns how many rows it settled.
    pub async fn deliver_due(&self) -> usize {
        let claimed = match self.store.claim_notifications(BATCH, self.lease_ms()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox now; trying again later");
                return 0;
            }
        };
        let n = claimed.len();
        let futs: Vec<_> = claimed.into_iter().map(|r| self.deliver_one(r)).collect();
        futures::stream::iter(futs)
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<()>>()
            .await;
        n
    }

    fn backoff_ms(&self, attempts: i64) -> i64 {
        let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
        let wait = self
            .timing
            .first_backoff
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.timing.max_backoff);
        i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 4)
    }

    async fn deliver_one(&self, row: NotificationRecord) {
        let result = match self.sinks.get(&row.sink) {
            Some(sink) => self.send(sink, &row).await,
            None => Err(format!("sink `{}` is no longer in the policy", row.sink)),
        };
        let delivery = match &result {
            Ok(()) => Delivery::Delivered,
            Err(e) => Delivery::Retry {
                after_ms: self.backoff_ms(row.attempts),
                error: e.clone(),
            },
        };
        let outcome = match self.store.settle_notification(&row.id, &delivery).await {
            Ok(Some(NotificationStatus::Delivered)) => "delivered",
            Ok(Some(NotificationStatus::Pending)) => "retry",
            Ok(Some(NotificationStatus::Failed)) => "gave_up",
            Ok(None) => {
                tracing::warn!(id = %row.id, sink = %row.sink, "the notification's lease was lost before it was settled; another replica holds it");
                return;
            }
            Err(e) => {
                // Left claimed: the lease expires and it is delivered again (same id).
                tracing::warn!(id = %row.id, sink = %row.sink, error = %e, "cannot record the delivery; it will be attempted again");
                return;
            }
        };
        NotificationAttempted {
            sink: &row.sink,
            event: &row.event,
            id: &row.id,
            attempt: row.attempts,
            outcome,
            error: result.as_ref().err().map(String::as_str),
        }
        .emit();
    }

    /// One POST. The error names what went wrong, never the URL.
    async fn send(&self, sink: &SinkConfig, row: &NotificationRecord) -> Result<(), String> {
        let data: serde_json::Value = serde_json::from_str(&row.payload)
            .map_err(|e| format!("the stored payload is not JSON ({e})"))?;
        let now = chrono::Utc::now();
        let req = self.http.post(sink.url.expose()).timeout(sink.timeout);
        let req = match sink.kind {
            NotifyKind::Webhook => {
                let body = serde_json::json!({
                    "type": format!("neon_steward.{}", row.event),
                    "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "data": data,
                })
                .to_string();
                let ts = now.timestamp();
                let sig = match &sink.key {
                    Some(k) => super::sign::signature(k, &row.id, ts, &body),
                    None => return Err("the webhook sink has no signing key".into()),
                };
                req.header("content-type", "application/json")
                    .header("webhook-id", &row.id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", sig)
                    .body(body)
            }
            NotifyKind::Slack => req.json(&serde_json::json!({
                "text": super::slack_text(&row.event, &data),
            })),
        };
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("the sink answered HTTP {}", r.status().as_u16())),
            Err(e) if e.is_timeout() => Err(format!(
                "no answer within {}",
                humantime::format_duration(sink.timeout)
            )),
            Err(e) if e.is_connect() => Err("cannot connect to the sink".into()),
            Err(e) => Err(format!("request failed: {}", e.without_url())),
        }
    }
}
