//! The Neon API client's events: requests and their retries.

use std::time::Duration;

use crate::telemetry::metrics::metrics;

/// A Neon API request finished (successfully or not). `route` is the path template.
pub struct ApiRequestCompleted<'a> {
    pub method: &'a str,
    pub route: &'a str,
    /// HTTP status, or `None` for a transport error / timeout.
    pub status: Option<u16>,
    pub elapsed: Duration,
    pub request_id: &'a str,
}

impl ApiRequestCompleted<'_> {
    pub fn emit(&self) {
        let class = match self.status {
            Some(s) => match s {
                100..=199 => "1xx",
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
            None => "error",
        };
        tracing::debug!(
            method = self.method,
            route = self.route,
            status = self.status,
            elapsed_ms = self.elapsed.as_millis() as u64,
            request_id = self.request_id,
            "neon api request"
        );
        let m = metrics();
        m.api_requests_total
            .with_label_values(&[self.method, self.route, class])
            .inc();
        m.api_request_duration_seconds
            .with_label_values(&[self.method, self.route])
            .observe(self.elapsed.as_secs_f64());
        if self.status == Some(429) {
            m.api_rate_limited_total
                .with_label_values(&[self.route])
                .inc();
        }
    }
}

/// A request is about to be retried.
pub struct ApiRetry<'a> {
    pub method: &'a str,
    pub route: &'a str,
    /// One of `rate_limited`, `unavailable`, `server_error`, `timeout`, `connect`.
    pub reason: &'static str,
    pub attempt: u32,
    pub delay: Duration,
}

impl ApiRetry<'_> {
    pub fn emit(&self) {
        tracing::info!(
            method = self.method,
            route = self.route,
            reason = self.reason,
            attempt = self.attempt,
            delay_ms = self.delay.as_millis() as u64,
            "retrying neon api request"
        );
        metrics()
            .api_retries_total
            .with_label_values(&[self.reason])
            .inc();
    }
}
