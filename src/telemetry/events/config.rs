//! The policy file's (re)loads.

use chrono::{DateTime, Utc};

use super::unix_seconds;
use crate::telemetry::metrics::metrics;

/// The policy file was loaded (at start) or reloaded (SIGHUP).
pub struct ConfigReloaded<'a> {
    pub path: &'a str,
    /// `Err` carries the full, human-readable reason (file, line, column).
    pub result: Result<(), &'a str>,
    pub at: DateTime<Utc>,
}

impl ConfigReloaded<'_> {
    /// The metrics are set before the line is logged, so whoever reads the line (a test, an
    /// operator) finds `/metrics` already saying the same.
    pub fn emit(&self) {
        let m = metrics();
        match self.result {
            Ok(()) => {
                m.config_last_reload_successful.set(1.0);
                m.config_last_reload_success_timestamp_seconds
                    .set(unix_seconds(self.at));
                m.config_reloads_total.with_label_values(&["success"]).inc();
                tracing::info!(path = self.path, "configuration loaded");
            }
            Err(error) => {
                m.config_last_reload_successful.set(0.0);
                m.config_reloads_total.with_label_values(&["failure"]).inc();
                tracing::error!(
                    path = self.path,
                    error,
                    "configuration reload failed; keeping the previous configuration"
                );
            }
        }
    }
}
