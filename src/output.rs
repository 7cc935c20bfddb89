//! What the commands write to the terminal, and their exit codes: shared by the command
//! line (`cli`) and `demo`, so that neither needs the other.

use std::io::Write;

/// A line on stdout. A reader that went away (`neon-steward history | head`) is not an
/// error of the command: the rest of the output is dropped quietly, where `println!` would
/// panic. Any other write error is reported once on stderr.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// A line on stderr; like [`say!`], never a panic when stderr is closed.
macro_rules! complain {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
pub(crate) use {complain, say};

/// The writer behind [`say!`].
pub fn write_stdout(line: std::fmt::Arguments<'_>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static FAILED: AtomicBool = AtomicBool::new(false);
    if FAILED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        FAILED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            complain!("neon-steward: cannot write to stdout: {e}");
        }
    }
}

/// An error and its causes on one line, each text once. Many errors show their cause in
/// their own message too (`store: {source}`, sqlx's "error returned from database: {msg}"
/// over the database's `{msg}`), so printing the chain naively repeats it; a cause whose text
/// the line already holds is left out.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || out.contains(text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    out
}

pub const EXIT_OK: u8 = 0;
pub const EXIT_RUN_FAILED: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
