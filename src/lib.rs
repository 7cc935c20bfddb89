//! neon-steward: a daemon that keeps Neon accounts tidy, cheap and backed up.
//!
//! See `docs/ARCHITECTURE.md` for the bird's-eye view. `main.rs` only parses the command
//! line and hands over to [`cli::run`].

pub mod cli;
pub mod config;
pub mod daemon;
/// `demo`: the daemon against neon-sim in the same process (cargo feature `demo`, default).
#[cfg(feature = "demo")]
pub mod demo;
/// Without the `demo` feature: a hidden `demo` that explains how to get it.
#[cfg(not(feature = "demo"))]
#[path = "demo_unavailable.rs"]
pub mod demo;
/// Forecasts: `export-fixture`, `simulate`, `plan --at`.
pub mod forecast;
pub mod forge;
pub mod health;
pub mod http;
pub mod jobs;
pub mod keep;
pub mod neon;
pub mod notify;
pub mod output;
pub mod saved_plan;
pub mod schedule;
pub mod scheduler;
pub mod secret;
pub mod store;
pub mod telemetry;
