//! Integration tests of neon-sim over HTTP (one test binary; modules by area).

mod conf_consumption;
mod conf_faults;
mod conformance;
mod core_branches;
mod core_compat;
mod core_endpoints;
mod core_errors;
mod core_projects;
mod core_recovery;
mod core_seed;
mod core_snapshots;
mod independent;
mod support;
