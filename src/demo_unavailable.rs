//! `neon-steward demo` in a build without the `demo` cargo feature (production builds:
//! `cargo build --release --no-default-features`, the container image). Such a binary holds
//! no emulator, so the subcommand is hidden from `--help` and, when typed anyway, says so
//! and how to get the demo instead of failing as an unknown subcommand.

use std::ffi::OsString;
use std::path::Path;

use crate::output::EXIT_CONFIG;

/// Whatever follows `demo` is accepted and ignored, so every spelling of the demo's options
/// (including `--help`) gets the same explanation.
#[derive(Debug, Clone, clap::Args)]
#[command(disable_help_flag = true)]
pub struct DemoArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., hide = true)]
    pub ignored: Vec<OsString>,
}

/// The message a `demo` without the feature prints (tests and CI look for it).
pub const UNAVAILABLE: &str = "demo: this binary was built without the `demo` cargo feature \
(production builds and the container image carry no Neon emulator). Run the demo from a source \
checkout with `cargo run -- demo`, or build with the default features \
(`cargo build --release`).";

/// Prints [`UNAVAILABLE`]; exit code 2 (a usage error).
pub fn run(_args: DemoArgs, _config: Option<&Path>) -> u8 {
    eprintln!("neon-steward: {UNAVAILABLE}");
    EXIT_CONFIG
}
