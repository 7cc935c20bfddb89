//! The four job kinds and what they share: selectors, limits, retention, the branch-tree
//! safety rules, calendar windows, dry-run and the audit ledger.

pub mod branch_tree;
pub mod consumption;
pub mod engine;
pub mod expire;
pub mod ledger;
pub mod limits;
pub mod retention;
pub mod select;
pub mod snapshot;
pub mod suspend;
pub mod windows;

pub use engine::{run_job, run_job_with, JobEnv, RunContext, RunControl, RunResult};
