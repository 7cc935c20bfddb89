//! Logs and metrics. Every observable thing the daemon does is an event struct in
//! [`events`] (one file per area); its `emit()` writes the log line and updates the metric
//! together, so the two cannot drift and label cardinality is reviewed in one place. The
//! consumption gauges are set by [`consumption::ConsumptionExporter`], a component that
//! owns what the consumption jobs handed in.

pub mod consumption;
pub mod events;
pub mod logging;
pub mod metrics;

pub use logging::{init_logging, LogFormat};
