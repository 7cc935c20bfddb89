//! Logs and metrics. Every observable thing the daemon does is an event struct in
//! [`events`]; its `emit()` writes the log line and updates the metric together, so the two
//! cannot drift and label cardinality is reviewed in one place.

pub mod events;
pub mod logging;
pub mod metrics;

pub use logging::{init_logging, LogFormat};
