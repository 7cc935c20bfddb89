//! The `neon-steward` binary: everything lives in the library; see [`neon_steward::cli`].

fn main() -> std::process::ExitCode {
    neon_steward::cli::main()
}
