//! The policy's hash, which a saved plan carries (`plan --out`) and `apply` compares.
//!
//! It is the SHA-256 of the **normalised** policy: the TOML document as parsed (so comments,
//! whitespace, quoting styles, key order within a table and inline-vs-standard tables do not
//! count), written out canonically: tables with their keys sorted, arrays in order, strings
//! JSON-escaped, numbers, booleans and dates in TOML's own form. Anything that changes what
//! the file says (a job, a selector, a limit, the API's URL, the store) changes the hash.
//! Written as `sha256:<64 hex digits>`.

use sha2::{Digest, Sha256};

/// The hash of the policy text `text` (which has been parsed already; if it does not parse
/// as TOML the text itself is hashed).
pub fn policy_hash(text: &str) -> String {
    let canonical = match text.parse::<toml::Table>() {
        Ok(table) => {
            let mut out = String::new();
            write_table(&mut out, &table);
            out
        }
        Err(_) => text.to_string(),
    };
    let digest = Sha256::digest(canonical.as_bytes());
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256:");
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

fn write_table(out: &mut String, t: &toml::Table) {
    let mut keys: Vec<&String> = t.keys().collect();
    keys.sort();
    out.push('{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, k);
        out.push(':');
        write_value(out, &t[k]);
    }
    out.push('}');
}

fn write_value(out: &mut String, v: &toml::Value) {
    match v {
        toml::Value::String(s) => write_str(out, s),
        toml::Value::Integer(i) => out.push_str(&i.to_string()),
        // `{:?}` keeps a float a float (`1.0`, not `1`) and is exact.
        toml::Value::Float(f) => out.push_str(&format!("{f:?}")),
        toml::Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        toml::Value::Datetime(d) => {
            out.push_str("datetime:");
            write_str(out, &d.to_string());
        }
        toml::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, x);
            }
            out.push(']');
        }
        toml::Value::Table(t) => write_table(out, t),
    }
}

fn write_str(out: &mut String, s: &str) {
    // serde_json's string escaping: unambiguous, and a string can never end early.
    out.push_str(&serde_json::Value::String(s.to_string()).to_string());
}

#[cfg(test)]
mod tests {
    use super::policy_hash;

    const POLICY: &str = r#"
[api]
concurrency = 4

[[jobs]]
name = "expire-previews"
kind = "expire_branches"
every = "1h"
ttl = "7d"
branches = ["preview/*"]
"#;

    #[test]
    fn formatting_comments_and_key_order_do_not_count() {
        let same = r#"
# the same policy, written differently
[api]
concurrency = 4   # four at a time

[[jobs]]
kind = 'expire_branches'
name = "expire-previews"
branches = [ "preview/*" ]
ttl = "7d"
every = "1h"
"#;
        let h = policy_hash(POLICY);
        assert!(h.starts_with("sha256:") && h.len() == 7 + 64, "{h}");
        assert_eq!(h, policy_hash(same));
    }

    #[test]
    fn any_change_of_meaning_counts() {
        let h = policy_hash(POLICY);
        for changed in [
            POLICY.replace("\"7d\"", "\"8d\""),
            POLICY.replace("preview/*", "preview/**"),
            POLICY.replace("concurrency = 4", "concurrency = 5"),
            format!("{POLICY}max_actions = 3\n"),
            // A string that looks like a number is not the number.
            POLICY.replace("concurrency = 4", "concurrency = \"4\""),
        ] {
            assert_ne!(h, policy_hash(&changed), "{changed}");
        }
    }
}
