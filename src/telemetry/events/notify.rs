//! Notices given by jobs, and deliveries of notifications to their sinks.

use crate::telemetry::metrics::metrics;

/// Every `outcome` label of `notifications_total`.
pub const NOTIFY_OUTCOMES: [&str; 3] = ["delivered", "retry", "gave_up"];

/// One delivery attempt of one notification ended. Never carries the sink's URL or key.
pub struct NotificationAttempted<'a> {
    pub sink: &'a str,
    pub event: &'a str,
    pub id: &'a str,
    pub attempt: i64,
    /// `delivered`, `retry` (it will be tried again) or `gave_up`.
    pub outcome: &'static str,
    pub error: Option<&'a str>,
}

impl NotificationAttempted<'_> {
    pub fn emit(&self) {
        match self.outcome {
            "delivered" => tracing::info!(
                sink = self.sink,
                event = self.event,
                id = self.id,
                attempt = self.attempt,
                "notification delivered"
            ),
            "retry" => tracing::warn!(
                sink = self.sink,
                event = self.event,
                id = self.id,
                attempt = self.attempt,
                error = self.error,
                "notification not delivered; it will be retried"
            ),
            _ => tracing::error!(
                sink = self.sink,
                event = self.event,
                id = self.id,
                attempt = self.attempt,
                error = self.error,
                "notification given up: not delivered within the sink's give_up_after"
            ),
        }
        metrics()
            .notifications_total
            .with_label_values(&[self.sink, self.event, self.outcome])
            .inc();
    }
}

/// A job marked resources under its `notice` (or dropped marks no longer due).
pub struct NoticeGiven<'a> {
    pub job: &'a str,
    pub run_id: i64,
    pub marked: usize,
    pub dropped: usize,
    pub sinks: usize,
}

impl NoticeGiven<'_> {
    pub fn emit(&self) {
        tracing::info!(
            job = self.job,
            run_id = self.run_id,
            marked = self.marked,
            dropped = self.dropped,
            sinks = self.sinks,
            "notice: resources marked; they are acted on when their notice ends, unless kept"
        );
    }
}

/// A `[[notify]]` sink of the policy, at start-up: creates its `notifications_total` series
/// for each event it takes x [`NOTIFY_OUTCOMES`] at 0, so that the alert on a failing sink
/// (an `increase()` of `retry`/`gave_up`) sees its first failures. At most 15 series a sink.
pub struct SinkDeclared<'a> {
    pub sink: &'a str,
    pub events: &'a [&'a str],
}

impl SinkDeclared<'_> {
    pub fn emit(&self) {
        tracing::debug!(
            sink = self.sink,
            events = self.events.len(),
            "notification sink declared"
        );
        let m = metrics();
        for event in self.events {
            for outcome in NOTIFY_OUTCOMES {
                m.notifications_total
                    .with_label_values(&[self.sink, event, outcome])
                    .inc_by(0);
            }
        }
    }
}
