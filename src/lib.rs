//! neon-steward: a daemon that keeps Neon accounts tidy, cheap and backed up.
//!
//! See `docs/ARCHITECTURE.md` for the bird's-eye view. `main.rs` only parses the command
//! line and hands over to [`cli::run`].

pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod health;
pub mod http;
pub mod jobs;
pub mod neon;
pub mod schedule;
pub mod scheduler;
pub mod secret;
pub mod store;
pub mod telemetry;
