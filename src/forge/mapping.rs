//! `[jobs.forge] branch`: how a Neon branch name names its pull request.
//!
//! A pattern is literal text with exactly one placeholder, `{number}` (the pull request's
//! number: `preview/pr-{number}-*`, `pr-{number}`, as Neon's GitHub integration names
//! branches) or `{ref}` (the pull request's head ref, the git branch: `preview/{ref}`, as
//! the Vercel integration does), and `*` for any text (not with `{ref}`, which would make
//! the ref ambiguous). It is compiled once, to an anchored regex.

use regex::Regex;

use super::ForgeKind;

/// What a branch name says about its pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullKey {
    Number(u64),
    Ref(String),
}

impl PullKey {
    /// "pull request #12", "the pull request from `feat/x`".
    pub fn describe(&self, kind: ForgeKind) -> String {
        match self {
            PullKey::Number(n) => kind.name_of(*n),
            PullKey::Ref(r) => format!("the {} from `{r}`", kind.noun()),
        }
    }
}

/// A compiled branch pattern.
#[derive(Debug, Clone)]
pub struct BranchMapping {
    pattern: String,
    regex: Regex,
    by_ref: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MappingError(String);

impl BranchMapping {
    pub fn parse(pattern: &str) -> Result<Self, MappingError> {
        let err = |m: String| Err(MappingError(m));
        let numbers = pattern.matches("{number}").count();
        let refs = pattern.matches("{ref}").count();
        if numbers + refs != 1 {
            return err(format!(
                "branch pattern `{pattern}` must contain exactly one placeholder, `{{number}}` \
                 (e.g. \"preview/pr-{{number}}-*\") or `{{ref}}` (e.g. \"preview/{{ref}}\")"
            ));
        }
        let by_ref = refs == 1;
        if by_ref && pattern.contains('*') {
            return err(format!(
                "branch pattern `{pattern}`: `*` cannot be combined with `{{ref}}` (a head ref \
                 can contain any text, so where it ends would be ambiguous)"
            ));
        }
        let mut re = String::from("^");
        let mut rest = pattern;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("{number}") {
                re.push_str("([0-9]{1,18})");
                rest = r;
            } else if let Some(r) = rest.strip_prefix("{ref}") {
                re.push_str("(.+)");
                rest = r;
            } else if let Some(r) = rest.strip_prefix('*') {
                re.push_str(".*");
                rest = r;
            } else {
                let c = rest.chars().next().unwrap_or_default();
                if c == '{' || c == '}' {
                    return err(format!(
                        "branch pattern `{pattern}` has a `{c}` that is not part of \
                         `{{number}}` or `{{ref}}`"
                    ));
                }
                re.push_str(&regex::escape(&c.to_string()));
                rest = &rest[c.len_utf8()..];
            }
        }
        re.push('$');
        let regex = Regex::new(&re)
            .map_err(|e| MappingError(format!("branch pattern `{pattern}`: {e}")))?;
        Ok(BranchMapping {
            pattern: pattern.to_string(),
            regex,
            by_ref,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The pull request a branch name names, or `None` when the name does not fit.
    pub fn key(&self, branch: &str) -> Option<PullKey> {
        let caps = self.regex.captures(branch)?;
        let m = caps.get(1)?.as_str();
        if self.by_ref {
            Some(PullKey::Ref(m.to_string()))
        } else {
            m.parse().ok().map(PullKey::Number)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_and_ref_patterns() {
        let m = BranchMapping::parse("preview/pr-{number}-*").unwrap();
        assert_eq!(
            m.key("preview/pr-123-fix-login"),
            Some(PullKey::Number(123))
        );
        assert_eq!(m.key("preview/pr-123-"), Some(PullKey::Number(123)));
        assert_eq!(m.key("preview/pr-abc-x"), None);
        assert_eq!(m.key("xpreview/pr-1-a"), None);
        let m = BranchMapping::parse("pr-{number}").unwrap();
        assert_eq!(m.key("pr-7"), Some(PullKey::Number(7)));
        assert_eq!(m.key("pr-7-x"), None);
        let m = BranchMapping::parse("preview/{ref}").unwrap();
        assert_eq!(
            m.key("preview/feat/login.v2"),
            Some(PullKey::Ref("feat/login.v2".into()))
        );
        assert_eq!(m.key("preview/"), None);
        assert_eq!(m.key("main"), None);
        // Regex metacharacters are literal.
        let m = BranchMapping::parse("a.b+{number}").unwrap();
        assert_eq!(m.key("a.b+1"), Some(PullKey::Number(1)));
        assert_eq!(m.key("axb+1"), None);
    }

    #[test]
    fn bad_patterns_say_why() {
        for (p, want) in [
            ("preview/*", "exactly one placeholder"),
            ("pr-{number}-{number}", "exactly one placeholder"),
            ("pr-{number}-{ref}", "exactly one placeholder"),
            ("preview/{ref}-*", "cannot be combined"),
            ("pr-{num}", "exactly one placeholder"),
            ("pr-{number}-{x}", "not part of"),
        ] {
            let e = BranchMapping::parse(p).unwrap_err().to_string();
            assert!(e.contains(want), "{p}: {e}");
        }
    }
}
