//! The consumption job's events: a collection finished, gauges exported.

use chrono::{DateTime, Utc};

use super::unix_seconds;
use crate::telemetry::metrics::metrics;

/// A consumption collection finished successfully.
pub struct ConsumptionCollected<'a> {
    pub job: &'a str,
    pub granularity: &'a str,
    /// The per-branch collection (`/consumption_history/v2/branches`), not the projects'.
    pub per_branch: bool,
    pub projects: usize,
    pub samples: usize,
    pub at: DateTime<Utc>,
}

impl ConsumptionCollected<'_> {
    pub fn emit(&self) {
        tracing::info!(
            job = self.job,
            granularity = self.granularity,
            per_branch = self.per_branch,
            projects = self.projects,
            samples = self.samples,
            "consumption collected"
        );
        metrics()
            .consumption_last_collected_timestamp_seconds
            .set(unix_seconds(self.at));
    }
}

/// A job's consumption was exported: the gauges of its granularity were recomputed by the
/// [`ConsumptionExporter`](crate::telemetry::consumption::ConsumptionExporter), which sets
/// them (it owns what every job contributed); this event is the log line.
pub struct ConsumptionExported<'a> {
    pub job: &'a str,
    pub granularity: &'a str,
    /// Projects in the exported period, over every job of the granularity.
    pub projects: usize,
    /// `(project_id, metric)` series now exported for the granularity.
    pub series: usize,
    /// Projects summed into `project_id="other"`.
    pub capped: usize,
}

impl ConsumptionExported<'_> {
    pub fn emit(&self) {
        tracing::debug!(
            job = self.job,
            granularity = self.granularity,
            projects = self.projects,
            series = self.series,
            capped = self.capped,
            "consumption exported"
        );
    }
}
