//! The one integration-test binary of the root crate (one link instead of one per file).
//! Add a `mod` line per area; shared setup lives in `helpers`.

mod helpers;

mod architecture;
mod binary;
mod budget;
mod chaos;
mod client;
// `demo` needs the emulator in the binary (feature `demo`, on by default).
#[cfg(feature = "demo")]
mod demo;
mod forge;
// `forecast` runs neon-sim in process through the library (feature `demo`).
#[cfg(feature = "demo")]
mod forecast;
mod fuzz_input;
mod http;
mod jobs;
mod jobs_backup;
mod jobs_e2e;
mod jobs_safety;
mod kill;
mod kill_new_kinds;
mod notify;
mod requests;
mod saved_plan;
mod store;
mod store_tls;
