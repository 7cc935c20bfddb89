//! The scheduler.
pub mod schedule;
