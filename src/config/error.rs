//! The user-facing configuration error: file, line, column and what was expected.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why the policy file could not be used. `Display` is the message shown to the operator
/// (`path:line:column: message`), so it must be complete on its own and never contain a
/// secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl ConfigError {
    /// An error about the file as a whole (cannot read it, no API key, ...).
    pub fn whole_file(path: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            position: None,
            message: message.into(),
        }
    }

    /// An error at a byte range of `source`.
    pub fn at(
        path: &Path,
        source: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            position: span.map(|s| line_col(source, s.start)),
            message: message.into(),
        }
    }

    /// From a toml/serde error, which carries the span of the offending key or value.
    pub(crate) fn from_toml(path: &Path, source: &str, err: &toml::de::Error) -> Self {
        // toml's own messages are good ("unknown field `x`, expected one of ..."); only
        // the trailing newline it sometimes adds is trimmed.
        let mut message = err.message().trim_end().to_string();
        if message.is_empty() {
            // The parser gives no text for some lexical errors (a NUL byte, another control
            // character); name the character it stopped at.
            message = match err
                .span()
                .and_then(|sp| source.get(sp.start..)?.chars().next())
            {
                Some(c) if c.is_control() => format!(
                    "invalid character U+{:04X} (a control character); TOML allows none but \
                     tab outside strings and comments, and none at all in them",
                    c as u32
                ),
                Some(c) => format!("unexpected character `{c}`"),
                None => "invalid TOML here".to_string(),
            };
        }
        Self::at(path, source, err.span(), message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.path.display(), self.message)
            }
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..floor_char_boundary(source, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let s = "a = 1\nbé = 2\n";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 6), (2, 1));
        assert_eq!(line_col(s, 9), (2, 3));
    }
}
