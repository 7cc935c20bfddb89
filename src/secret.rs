//! Keeping secrets out of sight: [`Secret`], a string that must never be shown (API keys,
//! the admin token), and [`without_userinfo`], which takes credentials out of a URL quoted in
//! an error.
//!
//! A `Secret`'s `Debug` and `Display` print `[redacted]`, there is no `Serialize`, and the only way to the
//! value is [`Secret::expose`], which makes every use greppable.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for the one place that must send it (an `Authorization` header,
    /// a constant-time comparison).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares in time independent of where the first difference is, so response timing
    /// does not reveal a prefix of the token.
    pub fn constant_time_eq(&self, other: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), other.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Whether `value` can be a bearer token at all: visible ASCII without spaces, as Neon's API
/// keys and any token sent in an `Authorization` header are. The error says what is wrong
/// (to be completed by the caller with where the value came from) without showing it.
pub fn check_token_shape(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    if let Some((i, c)) = value
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_graphic())
    {
        let what = match c {
            '\n' | '\r' => "a line break",
            ' ' | '\t' => "a space or tab",
            c if c.is_control() => "a control character",
            _ => "a character that is not ASCII",
        };
        return Err(format!(
            "contains {what} (character {} of {}): it cannot be sent in an HTTP header; \
             check how the value was written (it is not shown here)",
            i + 1,
            value.chars().count()
        ));
    }
    Ok(())
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `s` with anything between `scheme://` and an `@` before the path removed (the user info
/// of a URL), so that a URL can be quoted in an error without its credentials.
pub fn without_userinfo(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("napi_supersecret");
        assert!(!format!("{s:?}").contains("supersecret"));
        assert!(!format!("{s}").contains("supersecret"));
        assert_eq!(s.expose(), "napi_supersecret");
    }

    #[test]
    fn token_shape() {
        assert!(check_token_shape("napi_abc123-XYZ").is_ok());
        for (bad, what) in [
            ("napi_abc\ndef", "line break"),
            ("napi abc", "space"),
            ("napi\u{0}abc", "control"),
            ("napié", "not ASCII"),
            ("", "empty"),
        ] {
            let e = check_token_shape(bad).unwrap_err();
            assert!(e.contains(what), "{bad:?}: {e}");
            assert!(bad.is_empty() || !e.contains("abc"), "{e}");
        }
    }

    #[test]
    fn comparison() {
        let s = Secret::new("abc");
        assert!(s.constant_time_eq("abc"));
        assert!(!s.constant_time_eq("abd"));
        assert!(!s.constant_time_eq("ab"));
    }
}
