//! The typed Neon API client.
//!
//! The rest of the daemon uses [`NeonClient`] and the domain types of [`types`]; the serde
//! mirrors of Neon's JSON (`wire`) stay private to this module so that API changes are
//! absorbed here. Rate limiting (`ratelimit`) and retry policy (`retry`) are separate modules
//! because they are the parts whose behaviour is subtle enough to test alone.

mod client;
pub mod error;
pub mod ratelimit;
pub mod retry;
pub mod types;
mod wire;

pub use client::*;
pub use error::ApiError;
pub use types::*;
