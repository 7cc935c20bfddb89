//! Name patterns, compiled once when the policy is read: a glob or a regular expression, as
//! the selectors of every job kind use them (`jobs::select`).

use globset::{GlobBuilder, GlobMatcher};
use regex::Regex;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("invalid glob {pattern:?} in `{field}`: {message}")]
    Glob {
        field: String,
        pattern: String,
        message: String,
    },
    #[error("invalid regex {pattern:?} in `{field}`: {message}")]
    Regex {
        field: String,
        pattern: String,
        message: String,
    },
}

/// A name pattern: a glob (`preview/*`, `pr-*`) or a regular expression.
///
/// Globs match the whole name and `*` also crosses `/` (branch names such as
/// `preview/feature/x` are matched by `preview/*`), which is what users of branch naming
/// schemes expect. Regexes are searched unanchored, as in most tools; write `^...$` to anchor.
#[derive(Debug, Clone)]
pub enum NamePattern {
    Glob {
        source: String,
        matcher: GlobMatcher,
    },
    Regex(Regex),
}

impl NamePattern {
    pub fn glob(field: &str, pattern: &str) -> Result<Self, SelectorError> {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| SelectorError::Glob {
                field: field.to_string(),
                pattern: pattern.to_string(),
                message: e.kind().to_string(),
            })?;
        Ok(NamePattern::Glob {
            source: pattern.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn regex(field: &str, pattern: &str) -> Result<Self, SelectorError> {
        Regex::new(pattern)
            .map(NamePattern::Regex)
            .map_err(|e| SelectorError::Regex {
                field: field.to_string(),
                pattern: pattern.to_string(),
                message: e.to_string(),
            })
    }

    pub fn globs(field: &str, patterns: &[String]) -> Result<Vec<Self>, SelectorError> {
        patterns.iter().map(|p| Self::glob(field, p)).collect()
    }

    pub fn is_match(&self, name: &str) -> bool {
        match self {
            NamePattern::Glob { matcher, .. } => {
                matcher.is_match_candidate(&globset::Candidate::from_bytes(name.as_bytes()))
            }
            NamePattern::Regex(r) => r.is_match(name),
        }
    }

    /// How the pattern reads in a reason: `glob "pr-*"` or `regex "^pr-\d+$"`.
    pub fn describe(&self) -> String {
        match self {
            NamePattern::Glob { source, .. } => format!("glob {source:?}"),
            NamePattern::Regex(r) => format!("regex {:?}", r.as_str()),
        }
    }
}
