//! Process-wide log output: human-readable lines by default, one JSON object per line with
//! `--log-format json` (for log shippers). Logs go to stderr so stdout stays free for the
//! CLI's own output (`plan --output json`, `history`).

use std::str::FromStr;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

/// Environment variable with a full filter directive (`info,neon_steward::neon=debug`); it
/// wins over `RUST_LOG`, which wins over the level given on the command line.
pub const LOG_ENV: &str = "NEON_STEWARD_LOG";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl FromStr for LogFormat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => anyhow::bail!("unknown log format {other:?}: expected \"human\" or \"json\""),
        }
    }
}

/// Picks the filter directive: `NEON_STEWARD_LOG`, else `RUST_LOG`, else `level`.
fn directive(
    level: &str,
    ours: Option<String>,
    rust_log: Option<String>,
) -> (String, &'static str) {
    match (ours, rust_log) {
        (Some(d), _) if !d.trim().is_empty() => (d, LOG_ENV),
        (_, Some(d)) if !d.trim().is_empty() => (d, "RUST_LOG"),
        _ => (level.to_string(), "the log level"),
    }
}

/// Installs the global subscriber. Call once, early in `main`; a second call returns an
/// error instead of replacing the first subscriber.
pub fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let (directive, source) = directive(
        level,
        std::env::var(LOG_ENV).ok(),
        std::env::var("RUST_LOG").ok(),
    );
    let filter = EnvFilter::try_new(&directive)
        .with_context(|| format!("invalid log filter {directive:?} from {source}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_precedence() {
        let d = |ours: Option<&str>, rust: Option<&str>| {
            directive("info", ours.map(Into::into), rust.map(Into::into))
        };
        assert_eq!(d(Some("debug"), Some("trace")), ("debug".into(), LOG_ENV));
        assert_eq!(d(None, Some("trace")), ("trace".into(), "RUST_LOG"));
        assert_eq!(d(Some(" "), None), ("info".into(), "the log level"));
    }

    #[test]
    fn log_format_parses() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("human".parse::<LogFormat>().unwrap(), LogFormat::Human);
        assert!("xml"
            .parse::<LogFormat>()
            .unwrap_err()
            .to_string()
            .contains("\"xml\""));
    }
}
